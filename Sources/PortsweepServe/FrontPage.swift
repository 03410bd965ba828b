import HTTPTypes
import PortsweepHTTP
import PortsweepReport
import UVLoop

/// serve's root URL, for people: a form that calls `/check_port` and says what the status means, the caller's
/// address as this server sees it (the address a check probes), the checks left in the rate limit, and the API
/// with curl examples. Everything is in the one response (nothing fetched from elsewhere); the only thing of the
/// caller's it shows is its address, printed from the parsed address, never from a header's text.
enum FrontPage {
    struct Budget {
        var left: Int
        var rule: RateLimit
    }

    /// One line on what each status means, for the page (and the tests, which read it back).
    static let meanings: [(status: String, meaning: String)] = [
        ("Reachable and Verified", "Something on this port accepted the connection and sent your confirmation data back: the port is open to the internet and it is your program answering."),
        ("Reachable", "Something on this port answered from the internet: the port is open (send confirmation data to make sure it is your program)."),
        ("Unreachable", "The connection was refused: the path is open, but nothing listens on this port (or a firewall rejects it)."),
        ("Filtered", "No answer at all: a firewall drops what is sent to this port, or the host is offline."),
        ("Reachable or Filtered", "No answer, and no error either: UDP cannot tell an open port that stays silent from a firewall that drops it. Send confirmation data that your program echoes to know."),
    ]

    static func response(client: Result<IPAddress, ClientAddress.Refusal>, budget: (IPAddress) -> Budget?) -> ServerResponse {
        var headers = HTTPFields()
        headers[.contentType] = "text/html; charset=utf-8"
        headers[.cacheControl] = "no-store"
        // Nothing but this page's own inline parts and same-origin calls; no framing by another site.
        headers[HTTPField.Name("Content-Security-Policy")!] =
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
        headers[HTTPField.Name("X-Content-Type-Options")!] = "nosniff"
        return ServerResponse(status: .ok, headers: headers, body: Array(page(client: client, budget: budget).utf8))
    }

    static func page(client: Result<IPAddress, ClientAddress.Refusal>, budget: (IPAddress) -> Budget?) -> String {
        let address: String
        var budgetText = "No rate limit on this server."
        switch client {
        case .success(let ip):
            address = "Your address, as this server sees it: <b id=\"address\">\(ip)</b> (checks probe this address)."
            if let budget = budget(ip) {
                budgetText = "<span id=\"left\">\(budget.left)</span> of \(budget.rule.count) checks left in any "
                    + "\(budget.rule.window.components.seconds) s."
            }
        case .failure(let refusal):
            address = "This server cannot tell your address: \(HTMLReport.escape(refusal.description))."
        }
        return """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>portsweep: is my port open?</title>
            <style>\(PortGridPage.style)
            form { display: flex; flex-wrap: wrap; gap: .75rem; align-items: end; margin: 1rem 0; }
            label { display: flex; flex-direction: column; gap: .2rem; font-size: .9rem; }
            #meanings { font-family: inherit; } #status { font-size: 1.3rem; font-weight: 600; } #meaning { margin-top: .25rem; } .error { color: #b00020; }
            pre { background: #f0f0f2; padding: .6rem .8rem; overflow-x: auto; }
            </style>
            </head><body>
            <h1>Is my port open from the internet?</h1>
            <p>\(address)</p>
            <p id="budget" class="muted">\(budgetText)</p>
            <form id="check" novalidate>
            <label>Port <input id="port" name="port" type="number" min="1" max="65535" required inputmode="numeric"></label>
            <label>Protocol <select id="protocol" name="protocol"><option value="tcp">TCP</option><option value="udp">UDP</option></select></label>
            <label>Confirmation data (optional, up to 20 bytes) <input id="confirmation" name="confirmation_data" maxlength="20"></label>
            <button id="submit" type="submit">Check</button>
            </form>
            <div id="result" aria-live="polite"><div id="status"></div><div id="meaning"></div></div>
            <h2>What the statuses mean</h2>
            <table id="meanings"><tbody>
            \(meanings.map { "<tr><td><b>\($0.status)</b></td><td>\($0.meaning)</td></tr>" }.joined(separator: "\n"))
            </tbody></table>
            <h2>The API</h2>
            <p><code>GET /check_port?port=P&amp;protocol=tcp|udp[&amp;confirmation_data=D][&amp;format=json|text]</code> probes
            the caller's own address on port P. The answer's <code>RateLimit-Remaining</code> header says how many
            checks are left; over the limit it is 429 with <code>Retry-After</code>.</p>
            <pre>curl '<span class="origin">http://this-server:8000</span>/check_port?port=443&amp;protocol=tcp'
            curl '<span class="origin">http://this-server:8000</span>/check_port?port=3000&amp;protocol=udp&amp;confirmation_data=hello&amp;format=text'</pre>
            <p>Every port at once, both directions: <code>portsweep sweep --ports - --via <span class="origin">http://this-server:8000</span></code>
            (<code>POST /sweep</code>, JSON Lines, one record per port). <code>/healthz</code> and <code>/metrics</code> are for operators.</p>
            <script>\(script)</script>
            </body></html>
            """
    }

    static let script = """
        const meanings = {\(meanings.map { "\"\($0.status)\":\"\($0.meaning)\"" }.joined(separator: ","))};
        for (const span of document.querySelectorAll(".origin")) span.textContent = location.origin;
        const form = document.getElementById("check"), status = document.getElementById("status"),
              meaning = document.getElementById("meaning"), button = document.getElementById("submit");
        function say(text, line, error) {
          status.textContent = text; meaning.textContent = line || "";
          status.className = error ? "error" : "";
        }
        form.addEventListener("submit", async event => {
          event.preventDefault();
          const port = document.getElementById("port").value.trim();
          if (!/^[0-9]+$/.test(port) || Number(port) < 1 || Number(port) > 65535)
            return say("Port must be an integer from 1 to 65535", "", true);
          const query = new URLSearchParams({ port, protocol: document.getElementById("protocol").value, format: "json" });
          const confirmation = document.getElementById("confirmation").value;
          if (confirmation) query.set("confirmation_data", confirmation);
          button.disabled = true; say("Checking…", "");
          try {
            const answer = await fetch("/check_port?" + query, { headers: { Accept: "application/json" } });
            const body = await answer.json().catch(() => ({}));
            const left = answer.headers.get("RateLimit-Remaining"), counter = document.getElementById("left");
            if (left !== null && counter) counter.textContent = left;
            if (answer.ok) say(body.port_status, meanings[body.port_status] +
                (body.received_data ? " It sent back: " + JSON.stringify(body.received_data) : ""));
            else say(body.error || ("HTTP " + answer.status), body.wait_time ? "Wait " + body.wait_time + "." : "", true);
          } catch (error) {
            say("The server did not answer", String(error), true);
          } finally { button.disabled = false; }
        });
        """
}
