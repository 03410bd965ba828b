import PortsweepEngine
import PortsweepReport

/// The sweep dashboard's page: progress, ports/s, ETA, counts per verdict, the grid of every port coloured as
/// verdicts arrive (the report's `PortGrid`), downloads. Fed by `/events`; a page that reconnects is sent
/// everything again, so it never shows half a sweep after a lost connection.
enum SweepDashboardPage {
    static func document(title: String, transports: [Transport]) -> String {
        """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>\(HTMLReport.escape(title))</title>
        <style>\(PortGridPage.style)
        progress { width: 100%; max-width: 40rem; height: 1.1rem; }
        #phase { font-weight: 600; } .live { color: #007a55; } .lost { color: #b00020; }
        #counts td:nth-child(n+2), #counts th:nth-child(n+2) { text-align: right; }
        .downloads a { margin-right: 1rem; }
        </style>
        </head><body>
        <h1>\(HTMLReport.escape(title))</h1>
        <p><span id="phase">Starting…</span> <span id="connection" class="muted"></span></p>
        <progress id="bar" max="1" value="0"></progress>
        <p id="progress" class="readout"></p>
        <p id="summary"></p>
        <table id="counts"><thead><tr><th>Verdict</th>\(transports.map { "<th>\($0.rawValue)</th>" }.joined())</tr></thead><tbody></tbody></table>
        <p class="downloads">Results so far, one record per port: <a id="jsonl" href="/results.jsonl" download>JSON Lines</a>
        <a id="csv" href="/results.csv" download>CSV</a></p>
        <h2>Every port</h2>
        \(PortGridPage.verdictGrids(transports))
        <script>\(PortGridPage.script)
        \(PortGridPage.verdictGridsScript)
        \(script(transports))</script>
        </body></html>
        """
    }

    static func script(_ transports: [Transport]) -> String {
        """
        const PROTOCOLS = [\(transports.map { "\"\($0.rawValue)\"" }.joined(separator: ","))];
        const $ = id => document.getElementById(id);
        const PHASES = { running: "Sweeping…", done: "Done", interrupted: "Interrupted", failed: "Stopped early" };
        const state = { updates: 0, last: null, grids, phases: [] };
        window.portsweep = state;
        function number(n, digits) { return n.toLocaleString("en-US", { maximumFractionDigits: digits || 0 }); }
        function apply(u) {
          for (const [protocol, first, last, word, reason] of u.groups)
            grids[protocol]?.set(Number(first), Number(last), word, reason);
          Object.values(grids).forEach(g => g.draw());
          $("phase").textContent = PHASES[u.phase] || u.phase;
          $("bar").max = Math.max(1, u.total); $("bar").value = u.done;
          let text = number(u.done) + " of " + number(u.total) + " ports · " + number(u.rate) + " ports/s · " +
                     number(u.elapsed, 1) + " s";
          if (u.phase === "running") text += " · ETA " + (u.eta == null ? "?" : number(u.eta, 1) + " s");
          $("progress").textContent = text;
          $("summary").textContent = u.summary;
          const words = PORTSWEEP_ORDER.filter(w => PROTOCOLS.some(p => (u.counts[p] || {})[w]));
          for (const p of PROTOCOLS) for (const w of Object.keys(u.counts[p] || {})) if (!words.includes(w)) words.push(w);
          const body = $("counts").tBodies[0];
          body.replaceChildren(...words.map(w => {
            const row = document.createElement("tr");
            row.dataset.verdict = w;
            const name = document.createElement("td"), swatch = document.createElement("span");
            swatch.className = "swatch"; swatch.style.background = portsweepColourOf(w);
            name.append(swatch, w); row.append(name);
            for (const p of PROTOCOLS) {
              const cell = document.createElement("td");
              cell.textContent = number((u.counts[p] || {})[w] || 0); row.append(cell);
            }
            return row;
          }));
          if (state.phases.at(-1)?.phase !== u.phase) state.phases.push({ phase: u.phase, done: u.done, total: u.total });
          state.updates++; state.last = u;
        }
        const source = new EventSource("/events");
        source.addEventListener("open", () => { $("connection").textContent = "live"; $("connection").className = "live"; });
        source.addEventListener("error", () => {
          $("connection").textContent = "connection lost: reconnecting…"; $("connection").className = "lost";
        });
        source.addEventListener("update", e => apply(JSON.parse(e.data)));
        """
    }
}
