import Foundation
public import PortsweepEngine
import UVLoop

/// `--format html`: one self-contained file (style, script and data inline; nothing fetched) with the grid of
/// every port per protocol, the legend, a port finder, the summary and the groups as a table. For CI artefacts
/// and mail: it opens from disk, without a server.
public struct HTMLReport {
    public var title: String
    /// The summary line, as the sweep prints it on stderr.
    public var summary: String
    /// When the sweep ran, for the reader (`2026-12-03 11:40 UTC`).
    public var generated: String
    public var transports: [Transport]
    /// Groups of consecutive ports per protocol (not merged across protocols), with errno and holder.
    public private(set) var groups: [PortGroup] = []
    private var grouper = Grouper(byErrno: true)

    public init(title: String, transports: [Transport], generated: String) {
        self.title = title
        self.transports = transports
        self.generated = generated
        summary = ""
    }

    /// Results in port order per protocol, as they come.
    public mutating func add(_ result: PortResult) {
        if let group = grouper.add(result) { groups.append(group) }
    }

    public var document: String {
        var open = grouper
        let groups = self.groups + open.finish()
        let rows = groups.sorted { ($0.transport.rawValue, $0.first) < ($1.transport.rawValue, $1.first) }
        return """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>\(Self.escape(title))</title>
            <style>\(PortGridPage.style)</style>
            </head><body>
            <h1>\(Self.escape(title))</h1>
            <p class="muted">\(Self.escape(generated))</p>
            <p id="summary">\(Self.escape(summary))</p>
            <h2>Every port</h2>
            \(PortGridPage.verdictGrids(transports))
            <h2>Groups</h2>
            <table id="groups"><thead><tr><th>Protocol</th><th>Ports</th><th>Verdict</th><th>Reason</th></tr></thead><tbody>
            \(rows.map(Self.row).joined(separator: "\n"))
            </tbody></table>
            <script type="application/json" id="data">\(Self.data(rows))</script>
            <script>\(PortGridPage.script)
            \(PortGridPage.verdictGridsScript)
            \(Self.startScript)</script>
            </body></html>
            """
    }

    public static func reason(_ group: PortGroup) -> String {
        guard group.errno != 0 else { return "" }
        return UVError.name(ofErrno: group.errno) + (group.holder.map { ", \($0)" } ?? "")
    }

    static func row(_ group: PortGroup) -> String {
        "<tr><td>\(group.transport.rawValue)</td><td>\(group.portText)</td><td>\(group.outcome.word)</td>"
            + "<td>\(escape(reason(group)))</td></tr>"
    }

    /// The groups as JSON for the script: `[protocol, first, last, word, reason]`. `<` is escaped so that no
    /// text (a holder's process name) can end the script element.
    static func data(_ groups: [PortGroup]) -> String {
        let rows = groups.map { [$0.transport.rawValue, "\($0.first)", "\($0.last)", $0.outcome.word, reason($0)] }
        let json = (try? JSONEncoder().encode(rows)).map { String(decoding: $0, as: UTF8.self) } ?? "[]"
        return json.replacingOccurrences(of: "<", with: "\\u003c")
    }

    static let startScript = """
        for (const [protocol, first, last, word, reason] of JSON.parse(document.getElementById("data").textContent))
          grids[protocol]?.set(Number(first), Number(last), word, reason);
        Object.values(grids).forEach(g => g.draw());
        window.portsweep = { grids };
        """

    /// Text for HTML element content and attribute values.
    public static func escape(_ text: String) -> String { Markup.escape(text, xml: false) }
}
