/// Escaping for the markup the reports write: HTML pages and JUnit XML.
enum Markup {
    /// The entities of `& < > " '`. `xml`: the apostrophe as `&apos;`, and the characters XML 1.0 forbids
    /// (controls but tab, newline and return; U+FFFE, U+FFFF) replaced by U+FFFD; HTML takes them as they are,
    /// with the apostrophe as `&#39;` (HTML 4 has no `&apos;`).
    static func escape(_ text: String, xml: Bool) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += xml ? "&apos;" : "&#39;"
            case "\t", "\n", "\r": out.unicodeScalars.append(scalar)
            default:
                let forbidden = scalar.value < 0x20 || (0xFFFE...0xFFFF).contains(scalar.value)
                if xml && forbidden { out += "\u{FFFD}" } else { out.unicodeScalars.append(scalar) }
            }
        }
        return out
    }
}
