//! Lua literals as Rust writes them: the REPL showing a value, `runbook test --from-run`
//! writing a test.
use std::fmt::Write;

/// A Lua string literal that reads back as `s` (controls escaped, `\ddd` always three digits so
/// a digit after it is not taken in).
pub fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\{:03}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Whether `s` can be a table key without brackets (a name, not a keyword).
pub fn is_identifier(s: &str) -> bool {
    const KEYWORDS: &[&str] = &[
        "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if", "in", "local", "nil",
        "not", "or", "repeat", "return", "then", "true", "until", "while",
    ];
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !KEYWORDS.contains(&s)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_quoted_string_reads_back_the_same() {
        let lua = mlua::Lua::new();
        for s in ["plain", "q\"uote\\", "\u{1}2", "line\nbreak\t", "\u{85}next", "é✓"] {
            let back: String = lua.load(format!("return {}", super::quoted(s))).eval().unwrap();
            assert_eq!(back, s);
        }
    }
}
