public import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// One port probed once, over the async face of the loop: what listen's self-test and serve's check service
/// both do (connect, say something, listen for the answer), each then naming the result in its own words.
public enum PortProber {
    /// What one TCP exchange came to.
    public enum TCPExchange: Sendable, Equatable {
        /// No connection: refused, unreachable, timed out (`UVError.timedOut`), or this machine's own trouble.
        case notConnected(UVError)
        /// Connected; `payload` sent (when there was one) and what came back before the peer closed, the
        /// answer was long enough, or the deadline passed (`error` says which failure ended it, if any).
        case connected(received: [UInt8], error: UVError?)
    }

    /// Connects to `target`, sends `payload` (if any), and reads at most `maxBytes` until `enough` says so, the
    /// peer closes, or a step misses `timeout`. The connection is closed with a reset (no TIME-WAIT left here).
    public static func tcp(_ target: SocketAddress, payload: [UInt8]?, maxBytes: Int = 1 << 20, timeout: Duration,
                           on loop: EventLoop, enough: @escaping @Sendable ([UInt8]) -> Bool = { _ in false }) async -> TCPExchange {
        let connection: TCPConnection
        do {
            connection = try await TCPConnection.connect(to: target, on: loop, timeout: timeout)
        } catch {
            return .notConnected(error as? UVError ?? .cancelled)
        }
        guard let payload, !payload.isEmpty else {
            await connection.close(reset: true)
            return .connected(received: [], error: nil)
        }
        var received: [UInt8] = []
        var failure: UVError?
        do {
            try await connection.write(payload, timeout: timeout)
            while received.count < maxBytes && !enough(received) {
                let chunk = try await connection.read(maxBytes: maxBytes - received.count, timeout: timeout)
                if chunk.isEmpty { break }
                received += chunk
            }
        } catch {
            failure = error as? UVError ?? .cancelled
        }
        await connection.close(reset: true)
        return .connected(received: received, error: failure)
    }

    /// What one UDP exchange came to.
    public enum UDPExchange: Sendable, Equatable {
        /// The first datagram that came back.
        case answered([UInt8])
        /// Nothing within the tries: dropped either way, or a listener that does not answer.
        case silence
        /// An error: ICMP port unreachable (ECONNREFUSED) and the like, or this machine's own trouble.
        case failed(UVError)
    }

    /// Sends `payload` to `target` from a connected socket up to `tries` times within `timeout`, and waits for
    /// an answer (an ICMP error reaches a connected socket as the next receive's error).
    public static func udp(_ target: SocketAddress, payload: [UInt8], tries: Int = 1, timeout: Duration,
                           on loop: EventLoop) async -> UDPExchange {
        let connection: UDPConnection
        do {
            connection = try await UDPConnection.connect(to: target, on: loop)
        } catch {
            return .failed(error as? UVError ?? .cancelled)
        }
        var outcome = UDPExchange.silence
        let tries = max(1, tries)
        for _ in 0..<tries {
            do {
                try await connection.send(payload)
                outcome = .answered(try await connection.receive(timeout: timeout / tries))
                break
            } catch let error as UVError where error == .timedOut {
                continue
            } catch {
                outcome = .failed(error as? UVError ?? .cancelled)
                break
            }
        }
        await connection.close()
        return outcome
    }

    /// Whether a failure says something about the probed port or the path to it. Anything else is this
    /// machine's own trouble (out of descriptors, memory or ephemeral ports, its own firewall refusing to send:
    /// EPERM) and must not be reported as the port being unreachable.
    public static func isAboutThePath(_ error: UVError) -> Bool {
        switch error.kind {
        case .refused, .unreachable: return true
        default: return error.errno == ENOPROTOOPT || error.errno == EPROTO
        }
    }
}
