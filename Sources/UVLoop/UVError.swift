import CLibUV

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

    /// Turns a libuv return value into a thrown error when it is negative.
    @discardableResult
    public static func check(_ status: Int32) throws(UVError) -> Int32 {
        if status < 0 { throw UVError(status) }
        return status
    }
}

extension UVError {
    /// The errno name for a positive errno value (for results that keep only the number).
    public static func name(ofErrno errno: Int32) -> String { UVError(-errno).name }
}
