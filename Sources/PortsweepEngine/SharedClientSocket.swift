import UVLoop

extension UDPSlab {
    /// Opens slot 0 as a sweep loop's shared UDP client socket (inbound and outbound probes alike): bound to an
    /// ephemeral port of the wildcard, buffers for a whole window of replies (or they are dropped between two
    /// reads), ICMP errors to the error queue with the original destination, receiving. On failure the socket
    /// closes without its delegate: the probe is not made.
    func openSharedClient(family: IPAddress.Family, window: Int) throws(UVError) {
        if let error = open(0, family: family) { throw error }
        if let error = bind(0, to: PortAddress(family == .v4 ? .anyV4 : .anyV6), port: 0) { throw abandon(error) }
        set(.receiveBuffer, Int32(min(16 << 20, max(1 << 20, window * 8192))), on: 0)
        set(.sendBuffer, Int32(min(4 << 20, max(256 << 10, window * 2048))), on: 0)
        receiveErrors(on: 0, family: family)
        if let error = startReceiving(0) { throw abandon(error) }
    }

    private func abandon(_ error: UVError) -> UVError {
        delegate = nil
        close(0)
        return error
    }
}
