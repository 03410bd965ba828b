public import PortsweepEngine

/// The end-of-sweep summary for people: counts per verdict, elapsed time, ports per second.
public enum SummaryText {
    /// `total` counts tests (a port tested for TCP and UDP counts twice); `protocols` is how many were tested.
    /// `interrupted`: the signal that stopped the sweep short, and how many tests it left untested.
    public static func line(counts: [Outcome: Int], total: Int, seconds: Double, retried: Int = 0,
                            protocols: Int = 1, interrupted: (signal: String, untested: Int)? = nil) -> String {
        let rate = seconds > 0 ? Double(total) / seconds : 0
        let parts = counts.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key.word)" }
        var what: String
        if let interrupted {
            let planned = total + interrupted.untested
            what = protocols > 1
                ? "interrupted by \(interrupted.signal): \(total) of \(planned) tests (\(plural(planned / protocols, "port")), TCP and UDP) done, \(interrupted.untested) left untested,"
                : "interrupted by \(interrupted.signal): \(total) of \(plural(planned, "port")) tested, \(interrupted.untested) left untested,"
        } else {
            what = protocols > 1
                ? "\(plural(total / protocols, "port")), TCP and UDP (\(plural(total, "test")))"
                : plural(total, "port")
        }
        var text = "\(what) in \(format(seconds, digits: 2)) s"
            + " (\(grouped(Int(rate.rounded()))) \(protocols > 1 ? "tests" : "ports")/s): " + parts.joined(separator: ", ")
        if retried > 0 { text += "; \(retried) retried after EADDRINUSE" }
        return text
    }

    /// `1 port`, `2 ports`.
    public static func plural(_ count: Int, _ noun: String) -> String { "\(count) \(noun)\(count == 1 ? "" : "s")" }

    /// `12345678` → `12,345,678`.
    public static func grouped(_ value: Int) -> String {
        let digits = String(value.magnitude)
        var out = ""
        for (i, c) in digits.enumerated() {
            if i > 0 && (digits.count - i) % 3 == 0 { out += "," }
            out.append(c)
        }
        return value < 0 ? "-" + out : out
    }

    public static func format(_ value: Double, digits: Int) -> String {
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let scaled = Int((value * scale).rounded())
        let whole = scaled / Int(scale)
        let frac = String(abs(scaled % Int(scale)))
        return digits == 0 ? "\(whole)" : "\(whole)." + String(repeating: "0", count: digits - frac.count) + frac
    }
}
