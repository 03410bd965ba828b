import Foundation
import PortsweepEngine
import PortsweepHTTP
import Synchronization

/// The listen's roster (`ListenerRoster`) once it is known: the whole listen's, never one worker's share, so
/// nothing is answered until every port has been tried. Written once per start (or worker replacement), read by
/// every echo connection that asks.
final class RosterBoard: Sendable {
    private let answer = Mutex<[UInt8]?>(nil)

    func publish(_ roster: ListenerRoster) {
        let line = roster.answer
        answer.withLock { $0 = line }
    }

    var current: [UInt8]? { answer.withLock { $0 } }
}

/// Echo: every byte back, except that a connection whose first bytes are exactly the roster question
/// (`ListenerRoster.question`) gets the roster line instead and is closed. Bytes that could still become the
/// question are held back (at most the question's length) until they cannot; a connection that ends while they
/// are held gets them echoed first. Until the roster is known, the question is echoed like anything else.
final class EchoReply: ConnectionHandler {
    private enum State {
        /// Nothing or a prefix of the question has arrived.
        case sniffing([UInt8])
        case echoing
        case answered
    }

    private let roster: RosterBoard
    private var state = State.sniffing([])

    init(roster: RosterBoard) { self.roster = roster }

    func received(_ bytes: UnsafeRawBufferPointer, on connection: Connection) {
        switch state {
        case .echoing: connection.send(bytes)
        case .answered: break
        case .sniffing(let held):
            // The common case (a probe line, anyone's data) costs one comparison and no copy.
            if held.isEmpty && !EchoReply.couldBeQuestion(bytes) {
                state = .echoing
                return connection.send(bytes)
            }
            let seen = held + bytes
            if seen.count < ListenerRoster.question.count && EchoReply.couldBeQuestion(seen) {
                state = .sniffing(seen)
            } else if seen.elementsEqual(ListenerRoster.question), let answer = roster.current {
                state = .answered
                connection.send(answer)
                connection.finish(end: "roster sent")
            } else {
                state = .echoing
                connection.send(seen)
            }
        }
    }

    func peerEnded(_ connection: Connection) {
        if case .sniffing(let held) = state, !held.isEmpty { connection.send(held) }
        state = .echoing
        connection.finish(end: "closed by client")
    }

    /// True when `bytes` are the question's first bytes (or all of it).
    private static func couldBeQuestion<C: Collection<UInt8>>(_ bytes: C) -> Bool {
        bytes.count <= ListenerRoster.question.count && ListenerRoster.question.starts(with: bytes)
    }
}
