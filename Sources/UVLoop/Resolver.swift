import CLibUV

/// Host names to addresses through libuv's `uv_getaddrinfo` (the system resolver, run on libuv's thread pool),
/// awaited on a loop with a deadline.
public enum Resolver {
    /// A name that does not resolve, and why. `isLocal`: this machine could not ask (no resolver reachable, out
    /// of memory), as opposed to the name having no address.
    public struct Failure: Error, Sendable, CustomStringConvertible {
        public let name: String
        public let error: UVError
        public var isLocal: Bool {
            error != UVError(UV_EAI_NONAME.rawValue) && error != UVError(UV_EAI_NODATA.rawValue)
        }
        public var description: String {
            isLocal ? "cannot resolve '\(name)': \(error.message)" : "'\(name)' has no IPv4 or IPv6 address (\(error.message))"
        }
    }

    /// The addresses of `name`, both families (an address is returned as itself), in the resolver's order
    /// (RFC 6724), without duplicates. Both: asked for one family, glibc goes on to DNS when the hosts file has
    /// only the other, so a name without such an address would read as an unreachable resolver; filter instead.
    public static func resolve(_ name: String, on loop: EventLoop,
                               timeout: Duration = .seconds(5)) async throws -> [IPAddress] {
        if let address = IPAddress(name) { return [address] }
        return try await LoopBound(loop).resolve(name, timeout: timeout)
    }
}

extension LoopBound {
    func resolve(_ name: String, timeout: Duration) async throws -> [IPAddress] {
        try await loop.await(timeout: timeout) { (completion: Completion<[IPAddress]>) in
            let request = uvAllocate(uv_getaddrinfo_t.self)
            // The request outlives a deadline: its callback always comes (ECANCELED after uv_cancel) and frees it.
            request.pointee.data = Unmanaged.passRetained(ResolveRequest(name: name, completion: completion)).toOpaque()
            var hints = addrinfo()
            hints.ai_family = AF_UNSPEC
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            let rc = uv_getaddrinfo(loop.uv, request, { request, status, result in
                let box = Unmanaged<ResolveRequest>.fromOpaque(request!.pointee.data).takeRetainedValue()
                defer {
                    uv_freeaddrinfo(result)
                    UnsafeMutableRawPointer(request!).deallocate()
                }
                guard status == 0 else {
                    return box.completion.fail(Resolver.Failure(name: box.name, error: UVError(status)))
                }
                var addresses: [IPAddress] = []
                var entry = result
                while let current = entry {
                    if let sa = current.pointee.ai_addr, let address = SocketAddress(UnsafePointer(sa)),
                       !addresses.contains(address.ip) {
                        addresses.append(address.ip)
                    }
                    entry = current.pointee.ai_next
                }
                if addresses.isEmpty {
                    box.completion.fail(Resolver.Failure(name: box.name, error: UVError(UV_EAI_NODATA.rawValue)))
                } else {
                    box.completion.succeed(addresses)
                }
            }, name, nil, &hints)
            if rc < 0 {
                Unmanaged<ResolveRequest>.fromOpaque(request.pointee.data).release()
                UnsafeMutableRawPointer(request).deallocate()
                return completion.fail(Resolver.Failure(name: name, error: UVError(rc)))
            }
            completion.abort = { _ in _ = uv_cancel(UnsafeMutableRawPointer(request).assumingMemoryBound(to: uv_req_t.self)) }
        }
    }
}

/// What a getaddrinfo request carries to its callback.
private final class ResolveRequest {
    let name: String
    let completion: Completion<[IPAddress]>
    init(name: String, completion: Completion<[IPAddress]>) {
        self.name = name
        self.completion = completion
    }
}
