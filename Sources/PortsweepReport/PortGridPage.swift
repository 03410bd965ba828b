public import PortsweepEngine

/// The parts of every portsweep page, compiled into the binary (nothing is fetched: pages work offline and from
/// a file): the style sheet, and the script that draws the 256×256 grid of all 65535 ports.
///
/// The grid is one canvas per protocol, a pixel per port (port p at column p % 256, row p / 256), scaled up
/// with crisp edges. Colours are the Okabe–Ito palette, told apart with the common colour-vision deficiencies;
/// the state is also readable without colour: hovering (or focusing and typing a port) names the port, its
/// protocol and its verdict in text, and every page lists the groups as text beside the grid.
public enum PortGridPage {
    /// Each verdict's colour and its meaning, in the order of the legend. A port with several bits
    /// (`SEND+RECV`) takes the colour of its first bit in this order.
    public static let legend: [(word: String, colour: String, meaning: String)] = [
        ("PASS", "#009E73", "got through both ways"),
        ("FAIL", "#D55E00", "no connection"),
        ("SEND", "#E69F00", "the probe was not received"),
        ("RECV", "#CC79A7", "the answer did not come back"),
        ("USED", "#0072B2", "held by another program"),
        ("SUDO", "#56B4E9", "needs privileges"),
        ("ERRO", "#000000", "a local error"),
        ("untested", "#E4E4E4", "not in this sweep"),
    ]

    public static let style = """
        :root { font-family: system-ui, sans-serif; color: #1d1d1f; background: #fafafa; }
        body { margin: 1.5rem auto; max-width: 72rem; padding: 0 1rem; }
        h1 { font-size: 1.4rem; margin: 0 0 .25rem; } h2 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
        .muted { color: #6e6e73; }
        .grids { display: flex; flex-wrap: wrap; gap: 1.5rem; align-items: flex-start; }
        figure { margin: 0; } figcaption { font-weight: 600; margin-bottom: .25rem; }
        canvas.grid { width: 512px; height: 512px; image-rendering: pixelated; border: 1px solid #c7c7cc;
                      cursor: crosshair; background: #E4E4E4; }
        .legend { list-style: none; padding: 0; display: grid; grid-template-columns: repeat(auto-fill, minmax(15rem, 1fr)); gap: .25rem .75rem; }
        .swatch { display: inline-block; width: 1rem; height: 1rem; vertical-align: -.15rem; margin-right: .4rem;
                  border: 1px solid #8e8e93; }
        .readout { font-family: ui-monospace, monospace; min-height: 1.4em; }
        table { border-collapse: collapse; font-family: ui-monospace, monospace; font-size: .9rem; }
        th, td { text-align: left; padding: .15rem .75rem .15rem 0; border-bottom: 1px solid #e5e5ea; }
        input, select, button { font: inherit; }
        """

    /// A canvas per protocol, for `PortGrid`.
    public static func figure(_ transport: Transport) -> String {
        "<figure><figcaption>\(transport.rawValue)</figcaption>"
            + "<canvas class=\"grid\" id=\"grid-\(transport.rawValue)\" data-protocol=\"\(transport.rawValue)\"></canvas></figure>"
    }

    /// The verdict grids' section of a page: legend, port finder, a canvas per protocol, the hover readout.
    public static func verdictGrids(_ transports: [Transport]) -> String {
        """
        \(legendHTML)
        <p><label>Find a port <input id="find" type="number" min="1" max="65535" inputmode="numeric"></label>
        <span id="found" class="readout" aria-live="polite"></span></p>
        <div class="grids">\(transports.map(figure).joined())</div>
        <p id="readout" class="readout" aria-live="polite"></p>
        """
    }

    /// After `script`, on a page with `verdictGrids`: `grids` (a `PortGrid` per protocol) and the finder.
    public static let verdictGridsScript = """
        const grids = {};
        for (const canvas of document.querySelectorAll("canvas.grid"))
          grids[canvas.dataset.protocol] = new PortGrid(canvas, document.getElementById("readout"), canvas.dataset.protocol);
        document.getElementById("find").addEventListener("input", e => {
          const port = Number(e.target.value);
          document.getElementById("found").textContent = Object.values(grids).map(g => g.text(port)).filter(t => t).join("; ");
        });
        """

    /// The legend as HTML: swatch, word, meaning.
    public static var legendHTML: String {
        "<ul class=\"legend\">" + legend.map { entry in
            "<li data-verdict=\"\(entry.word)\"><span class=\"swatch\" style=\"background:\(entry.colour)\"></span>"
                + "<b>\(entry.word)</b> <span class=\"muted\">\(entry.meaning)</span></li>"
        }.joined() + "</ul>"
    }

    /// `PortGrid`: `new PortGrid(canvas, readout, protocol[, palette])` (a page with states of its own, not
    /// verdicts, passes `{word: colour}` with an `untested` entry), `.set(first, last, word, detail)`, `.draw()`,
    /// `.verdict(port)`, `.pixel(port)` (the colour drawn, read back from the canvas: what the tests check).
    public static let script = """
        const PORTSWEEP_COLOURS = {\(legend.map { "\"\($0.word)\":\"\($0.colour)\"" }.joined(separator: ","))};
        const PORTSWEEP_ORDER = [\(legend.map { "\"\($0.word)\"" }.joined(separator: ","))];
        function portsweepColourOf(word) {
          for (const w of PORTSWEEP_ORDER) if (word === w || word.split("+").includes(w)) return PORTSWEEP_COLOURS[w];
          return PORTSWEEP_COLOURS.ERRO;
        }
        function portsweepRGB(hex) { return [1, 3, 5].map(i => parseInt(hex.slice(i, i + 2), 16)); }
        class PortGrid {
          constructor(canvas, readout, protocol, palette) {
            this.canvas = canvas; this.readout = readout; this.protocol = protocol; this.palette = palette || null;
            canvas.width = 256; canvas.height = 256;
            this.ctx = canvas.getContext("2d");
            this.image = this.ctx.createImageData(256, 256);
            this.words = new Array(65536).fill("untested");
            this.details = new Map();
            const untested = portsweepRGB(this.colourOf("untested"));
            for (let p = 0; p < 65536; p++) this.paint(p, untested);
            canvas.tabIndex = 0;
            canvas.setAttribute("role", "img");
            canvas.setAttribute("aria-label", protocol + " ports 1-65535 by verdict; hover or focus for a port's verdict");
            canvas.addEventListener("mousemove", e => {
              const r = canvas.getBoundingClientRect();
              const x = Math.floor((e.clientX - r.left) * 256 / r.width), y = Math.floor((e.clientY - r.top) * 256 / r.height);
              this.show(Math.min(255, Math.max(0, y)) * 256 + Math.min(255, Math.max(0, x)));
            });
            canvas.addEventListener("mouseleave", () => { this.readout.textContent = ""; });
          }
          colourOf(word) { return this.palette ? (this.palette[word] || this.palette.untested) : portsweepColourOf(word); }
          paint(port, rgb) {
            const i = port * 4, d = this.image.data;
            d[i] = rgb[0]; d[i + 1] = rgb[1]; d[i + 2] = rgb[2]; d[i + 3] = 255;
          }
          set(first, last, word, detail) {
            const rgb = portsweepRGB(this.colourOf(word));
            for (let p = first; p <= last; p++) { this.words[p] = word; this.paint(p, rgb); }
            if (detail) for (let p = first; p <= last; p++) this.details.set(p, detail);
          }
          draw() { this.ctx.putImageData(this.image, 0, 0); }
          verdict(port) { return this.words[port]; }
          pixel(port) { return Array.from(this.ctx.getImageData(port % 256, Math.floor(port / 256), 1, 1).data.slice(0, 3)); }
          text(port) {
            if (port < 1 || port > 65535) return "";
            const detail = this.details.get(port);
            return this.protocol + " " + port + ": " + this.words[port] + (detail ? " (" + detail + ")" : "");
          }
          show(port) { this.readout.textContent = this.text(port); this.canvas.title = this.text(port); }
        }
        """
}
