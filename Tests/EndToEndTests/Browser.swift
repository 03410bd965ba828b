import Foundation
import Testing

/// A real browser for the pages: Debian's chromium, headless, driven through Selenium (Debian's
/// python3-selenium and chromium-driver; nothing is downloaded). A test hands in the Python body of a session
/// (`driver`, `By`, `ActionChains`, `WebDriverWait`, `shot(name)` and `texts(selector)` in scope; it fills the dict `result`) and gets
/// `result` back as JSON. Screenshots go to `Browser.screenshots` (docs/ has one of each page, copied from there).
enum Browser {
    static let python = "/usr/bin/python3"
    static let available = FileManager.default.isExecutableFile(atPath: "/usr/bin/chromedriver")
        && FileManager.default.isExecutableFile(atPath: "/usr/bin/chromium")
        && (try? Portsweep.shell([python, "-c", "import selenium; print('ok')"])) == "ok\n"
    static let screenshots = FileManager.default.temporaryDirectory.appendingPathComponent("portsweep-screenshots")

    static let prelude = """
        import json, sys
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.support.ui import WebDriverWait
        options = webdriver.ChromeOptions()
        for argument in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,1400", "--lang=en-US"]:
            options.add_argument(argument)
        options.binary_location = "/usr/bin/chromium"
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        driver.set_page_load_timeout(20)
        shots = sys.argv[1]
        def shot(name):
            driver.save_screenshot(shots + "/" + name + ".png")
        def texts(selector, shown_only=False):
            # Read in one script: a live page redraws its tables and log on each update, so elements found
            # first and read one by one after could be gone by then (StaleElementReferenceException). Spaces
            # are collapsed as Selenium's .text does (a table row's cells are tab-separated in innerText).
            return driver.execute_script("return [...document.querySelectorAll(arguments[0])]"
                                         + ".filter(e => !arguments[1] || e.offsetParent !== null)"
                                         + ".map(e => e.innerText.replace(/\\s+/g, ' ').trim())",
                                         selector, shown_only)
        def cell_offset(canvas, port):
            # Selenium offsets are from the element's centre; a cell is canvas width / 256 wide.
            size = canvas.size
            x = (port % 256 + 0.5) * size["width"] / 256 - size["width"] / 2
            y = (port // 256 + 0.5) * size["height"] / 256 - size["height"] / 2
            return int(x), int(y)
        result = {}
        try:

        """

    static let epilogue = """

        except Exception as error:
            result["error"] = type(error).__name__ + ": " + str(error)
        finally:
            print(json.dumps(result))
            driver.quit()
        """

    /// Runs the session; `netns`: inside that network namespace (the page's server lives there).
    static func session(_ body: String, netns: String? = nil) throws -> [String: Any] {
        try FileManager.default.createDirectory(at: screenshots, withIntermediateDirectories: true)
        let indented = body.split(separator: "\n", omittingEmptySubsequences: false).map { "    " + $0 }.joined(separator: "\n")
        let script = prelude + indented + epilogue
        var command = [python, "-c", script, screenshots.path]
        if let netns { command = ["/usr/sbin/ip", "netns", "exec", netns] + command }
        let out = try Portsweep.shell(command)
        let last = out.split(separator: "\n").last.map(String.init) ?? ""
        guard let object = try JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any] else {
            throw BrowserError(output: out)
        }
        return object
    }

    struct BrowserError: Error, CustomStringConvertible {
        let output: String
        var description: String { "the browser session printed no result: \(output)" }
    }
}
