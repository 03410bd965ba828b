import PortsweepReport

/// The listen dashboard's page: status, the form (checked on the server by `ListenForm`, the command line's own
/// checks), Start and Stop, counters, the busiest ports, the live log (timestamps, auto-scroll, pause, clear,
/// filter by port or client) and the grid of every port by state. The page keeps at most `maxLines` log lines.
enum ListenDashboardPage {
    static let maxLines = 1000

    /// The grid's states and colours (Okabe–Ito), the legend's order; hover text names the state in words.
    static let legend: [(word: String, colour: String, meaning: String)] = [
        ("listening", "#009E73", "held by this listen"),
        ("hit recently", "#E69F00", "a connection or datagram in the last 10 s"),
        ("held by another program", "#0072B2", "could not be listened on: in use"),
        ("error", "#000000", "could not be listened on: another reason"),
        ("untested", "#E4E4E4", "not listening"),
    ]

    static var document: String {
        """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>portsweep listen</title>
        <style>\(PortGridPage.style)
        form { display: flex; flex-wrap: wrap; gap: .75rem; align-items: end; margin: 1rem 0 .25rem; }
        label { display: flex; flex-direction: column; gap: .2rem; font-size: .9rem; }
        label.inline { flex-direction: row; align-items: center; gap: .3rem; }
        .light { display: inline-block; width: .8rem; height: .8rem; border-radius: 50%; background: #8e8e93; vertical-align: -.05rem; margin-right: .3rem; }
        .light.listening { background: #009E73; } .light.error { background: #D55E00; }
        #phase { font-weight: 600; } .error { color: #b00020; }
        .counters { display: flex; flex-wrap: wrap; gap: 1.5rem; } .counters b { font-family: ui-monospace, monospace; }
        .logbar { display: flex; flex-wrap: wrap; gap: .75rem; align-items: center; }
        #log { font-family: ui-monospace, monospace; font-size: .85rem; height: 16rem; overflow-y: auto; background: #fff;
               border: 1px solid #c7c7cc; padding: .25rem .5rem; white-space: pre; }
        #log.no-time .time { display: none; }
        </style>
        </head><body>
        <h1>portsweep listen</h1>
        <p><span id="light" class="light"></span><span id="phase">Connecting…</span> <span id="description" class="muted"></span></p>
        <p id="reason" class="error"></p>
        <form id="form" novalidate>
        <label>Ports <input id="ports" name="ports" placeholder="8080 or 8000-8100 or -" required></label>
        <label>Bind address <input id="bind" name="bind" value="0.0.0.0"></label>
        <label>Protocols <select id="protocols"><option value="both">TCP and UDP</option><option value="tcp">TCP</option><option value="udp">UDP</option></select></label>
        <label>Reply <select id="reply"><option value="http">HTTP OK</option><option value="echo">Echo</option><option value="silent">Silent</option></select></label>
        <button id="start" type="submit">Start</button> <button id="stop" type="button">Stop</button>
        </form>
        <p id="error" class="error" aria-live="polite"></p>
        <div class="counters">
        <span>Connections <b id="connections">0</b></span><span>Datagrams <b id="datagrams">0</b></span>
        <span>Rejected <b id="rejected">0</b></span><span>Last client <b id="last-client">none</b></span>
        <span>Uptime <b id="uptime">–</b></span>
        </div>
        <h2>Log</h2>
        <div class="logbar">
        <label class="inline"><input id="timestamps" type="checkbox" checked> timestamps</label>
        <label class="inline"><input id="autoscroll" type="checkbox" checked> auto-scroll</label>
        <button id="pause" type="button">Pause</button> <button id="clear" type="button">Clear</button>
        <label class="inline">Filter <input id="filter" placeholder="port or client"></label>
        <span id="skipped" class="muted"></span>
        </div>
        <div id="log" role="log" aria-live="off"></div>
        <h2>Busiest ports</h2>
        <table id="busiest"><thead><tr><th>Protocol</th><th>Port</th><th>Hits</th></tr></thead><tbody></tbody></table>
        <h2>Every port</h2>
        <ul class="legend">\(legend.map { "<li data-verdict=\"\($0.word)\"><span class=\"swatch\" style=\"background:\($0.colour)\"></span><b>\($0.word == "untested" ? "not listening" : $0.word)</b> <span class=\"muted\">\($0.meaning)</span></li>" }.joined())</ul>
        <div class="grids">\(PortGridPage.figure(.tcp))\(PortGridPage.figure(.udp))</div>
        <p id="readout" class="readout" aria-live="polite"></p>
        <script>\(PortGridPage.script)
        \(script)</script>
        </body></html>
        """
    }

    static var script: String {
        """
        const PALETTE = {\(legend.map { "\"\($0.word)\":\"\($0.colour)\"" }.joined(separator: ","))};
        const $ = id => document.getElementById(id);
        const grids = {};
        for (const canvas of document.querySelectorAll("canvas.grid"))
          grids[canvas.dataset.protocol] = new PortGrid(canvas, $("readout"), canvas.dataset.protocol, PALETTE);
        const PHASES = { stopped: "Stopped", listening: "Listening", error: "Error" };
        const state = { updates: 0, last: null, grids, paused: false, held: [], formFilled: false };
        window.portsweep = state;
        const log = $("log");
        function lineMatches(div) {
          const f = $("filter").value.trim();
          return !f || div.dataset.port === f || div.dataset.client.includes(f);
        }
        function addLine(l) {
          const div = document.createElement("div");
          div.className = "line"; div.dataset.port = String(l.port); div.dataset.client = l.client;
          const time = document.createElement("span");
          time.className = "time"; time.textContent = new Date(l.time * 1000).toISOString() + " ";
          const where = (l.protocol ? l.protocol + " " + l.port + " " : "") + (l.client ? l.client + " " : "");
          div.append(time, where + l.text);
          div.style.display = lineMatches(div) ? "" : "none";
          log.append(div);
          while (log.childElementCount > \(maxLines)) log.firstElementChild.remove();
        }
        function showLines(lines) {
          if (state.paused) { state.held.push(...lines); state.held.splice(0, Math.max(0, state.held.length - \(maxLines))); return; }
          lines.forEach(addLine);
          if ($("autoscroll").checked) log.scrollTop = log.scrollHeight;
        }
        function apply(u) {
          $("phase").textContent = PHASES[u.phase] || u.phase;
          $("light").className = "light " + u.phase;
          $("description").textContent = u.phase === "listening" ? u.description : "";
          $("reason").textContent = u.reason;
          $("connections").textContent = u.connections; $("datagrams").textContent = u.datagrams;
          $("rejected").textContent = u.rejected; $("last-client").textContent = u.lastClient || "none";
          $("uptime").textContent = u.uptime == null ? "–" : u.uptime.toFixed(0) + " s";
          if (u.form && !state.formFilled) {
            state.formFilled = true;
            $("ports").value = u.form.ports; $("bind").value = u.form.bind;
            $("protocols").value = u.form.protocols; $("reply").value = u.form.reply;
          }
          if (u.skipped) $("skipped").textContent = u.skipped + " lines not shown (more than the page keeps up with)";
          showLines(u.lines);
          $("busiest").tBodies[0].replaceChildren(...u.busiest.map(([p, port, n]) => {
            const row = document.createElement("tr");
            for (const text of [p, port, n]) { const cell = document.createElement("td"); cell.textContent = text; row.append(cell); }
            return row;
          }));
          for (const g of Object.values(grids)) { g.details = new Map(); g.set(1, 65535, "untested", ""); }
          for (const [protocol, first, last, word, detail] of u.grid) grids[protocol]?.set(Number(first), Number(last), word, detail);
          Object.values(grids).forEach(g => g.draw());
          state.updates++; state.last = u;
        }
        async function post(path, body) {
          const answer = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" },
                                             body: JSON.stringify(body || {}) });
          const reply = await answer.json().catch(() => ({}));
          $("error").textContent = answer.ok ? "" : (reply.error || "HTTP " + answer.status);
          return answer.ok;
        }
        $("form").addEventListener("submit", async e => {
          e.preventDefault();
          $("start").disabled = true;
          try {
            await post("/start", { ports: $("ports").value, bind: $("bind").value, protocols: $("protocols").value, reply: $("reply").value });
          } catch (error) { $("error").textContent = String(error); } finally { $("start").disabled = false; }
        });
        $("stop").addEventListener("click", () => post("/stop").catch(error => { $("error").textContent = String(error); }));
        $("timestamps").addEventListener("change", e => log.classList.toggle("no-time", !e.target.checked));
        $("pause").addEventListener("click", () => {
          state.paused = !state.paused;
          $("pause").textContent = state.paused ? "Resume" : "Pause";
          if (!state.paused) { const held = state.held; state.held = []; showLines(held); }
        });
        $("clear").addEventListener("click", () => { log.replaceChildren(); state.held = []; });
        $("filter").addEventListener("input", () => { for (const div of log.children) div.style.display = lineMatches(div) ? "" : "none"; });
        const source = new EventSource("/events");
        source.addEventListener("update", e => apply(JSON.parse(e.data)));
        source.addEventListener("error", () => { $("phase").textContent = "Connection to portsweep lost: reconnecting…"; $("light").className = "light error"; });
        """
    }
}
