import CLibUV
#if canImport(Glibc)
import Glibc
#endif

/// A libuv error: the negative status code a libuv call returned, with its errno name for people.
public struct UVError: Error, Sendable, Hashable, CustomStringConvertible {
    /// libuv's status code (negative; on Unix, `-errno`).
    public let code: Int32

    public init(_ code: Int32) { self.code = code }

    /// The positive errno value behind the code.
    public var errno: Int32 { -code }

    /// The symbolic name, such as `ECONNREFUSED`.
    public var name: String { String(cString: uv_err_name(code)) }

    /// The human description, such as `connection refused`.
    public var message: String { String(cString: uv_strerror(code)) }

    public var description: String { "\(name) (\(message))" }

    public static let timedOut = UVError(UV_ETIMEDOUT.rawValue)
    public static let cancelled = UVError(UV_ECANCELED.rawValue)
    public static let endOfFile = UVError(UV_EOF.rawValue)
    public static let addressInUse = UVError(UV_EADDRINUSE.rawValue)
    public static let accessDenied = UVError(UV_EACCES.rawValue)
    public static let badHandle = UVError(UV_EBADF.rawValue)
    public static let addressNotAvailable = UVError(UV_EADDRNOTAVAIL.rawValue)

    /// Turns a libuv return value into a thrown error when it is negative.
    @discardableResult
    public static func check(_ status: Int32) throws(UVError) -> Int32 {
        if status < 0 { throw UVError(status) }
        return status
    }
}

extension UVError {
    /// The errno name for a positive errno value (for results that keep only the number).
    /// EBADMSG, which the probes use for an answer that is not the expected text, is one libuv has no name for.
    public static func name(ofErrno errno: Int32) -> String { errno == EBADMSG ? "EBADMSG" : UVError(-errno).name }

    /// The errno of a name as `name(ofErrno:)` writes it (`EADDRINUSE`); nil for a name it never writes.
    public static func errno(named name: String) -> Int32? { errnos[name] }

    private static let errnos: [String: Int32] = {
        var table: [String: Int32] = [:]
        for errno in Int32(1)...Int32(133) { table[UVError.name(ofErrno: errno)] = errno }
        return table
    }()
}

extension UVError {
    /// The one classification of errors the modes act on.
    public enum Kind: Sendable, Equatable {
        /// The peer said no: refused, reset, aborted, broken pipe.
        case refused
        /// No way there: host or network unreachable or down.
        case unreachable
        /// Another socket holds the address (EADDRINUSE).
        case inUse
        /// Not allowed: a privileged port, or a firewall of this machine (EACCES, EPERM).
        case privilege
        /// This machine ran short: descriptors, buffers, memory, ephemeral ports (EADDRNOTAVAIL on connect).
        case localShortage
        case timedOut
        case cancelled
        case other
    }

    public var kind: Kind {
        switch code {
        case UV_ECONNREFUSED.rawValue, UV_ECONNRESET.rawValue, UV_ECONNABORTED.rawValue, UV_EPIPE.rawValue: return .refused
        case UV_EHOSTUNREACH.rawValue, UV_ENETUNREACH.rawValue, UV_EHOSTDOWN.rawValue, UV_ENETDOWN.rawValue: return .unreachable
        case UV_EADDRINUSE.rawValue: return .inUse
        case UV_EACCES.rawValue, UV_EPERM.rawValue: return .privilege
        case UV_EMFILE.rawValue, UV_ENFILE.rawValue, UV_ENOBUFS.rawValue, UV_ENOMEM.rawValue, UV_EAGAIN.rawValue,
             UV_EADDRNOTAVAIL.rawValue: return .localShortage
        case UV_ETIMEDOUT.rawValue: return .timedOut
        case UV_ECANCELED.rawValue: return .cancelled
        default: return .other
        }
    }
}
