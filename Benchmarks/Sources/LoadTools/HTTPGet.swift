import UVLoop

/// One `GET` over a fresh connection (`Connection: close`), read to the end: the client side of the latency
/// benchmarks, on the same loops as everything else.
public enum HTTPGet {
    public static func body(_ address: SocketAddress, _ target: String, on loop: EventLoop,
                            timeout: Duration = .seconds(30)) async throws -> String {
        let connection = try await TCPConnection.connect(to: address, on: loop, timeout: timeout)
        let request = "GET \(target) HTTP/1.1\r\nHost: \(address)\r\nConnection: close\r\n\r\n"
        try await connection.write(Array(request.utf8), timeout: timeout)
        var response: [UInt8] = []
        while true {
            let chunk = try await connection.read(timeout: timeout)
            if chunk.isEmpty { break }
            response += chunk
        }
        await connection.close()
        return String(decoding: response, as: UTF8.self)
    }
}
