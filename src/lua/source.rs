//! A runbook's source as Lua compiles it: tail calls that would hide the failing line kept as
//! ordinary calls, and a parser's "C stack overflow" placed on its line.
//!
//! Lua reuses the caller's frame for `return f(x)`. When `f` is a primitive (a connection's
//! method, `exec`, `http.get` ...) the runbook's own frame is gone by the time it fails, and the
//! error can only name the `step(` line. [`keep_frames`] rewrites exactly those returns as
//! `return (function(...) return ... end)(f(x))`, on the same line: the call runs in the
//! runbook's frame, every result is still returned, and line numbers do not move. Plain-name
//! calls of the runbook's own functions (`return loop(n - 1)`) stay tail calls, so recursion
//! keeps its constant stack.
use std::borrow::Cow;

/// Globals whose calls are primitives (the rest are the runbook's own functions). `step` and
/// `approve` are left out: they declare, and a helper that returns `step(...)` means the step
/// to be placed at its caller's line, as the tail call does.
const PRIMITIVE_GLOBALS: &[&str] = &["exec", "sleep", "secret", "fail", "env"];

const KEEP_OPEN: &str = "(function(...) return ... end)(";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Name,
    Keyword,
    Str,
    Other,
    Open(u8),
    Close,
    Dot,
    Colon,
    Semi,
}

#[derive(Debug, Clone, Copy)]
struct Token {
    kind: Kind,
    start: usize,
    end: usize,
}

const KEYWORDS: &[&str] = &[
    "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if", "in", "local", "nil",
    "not", "or", "repeat", "return", "then", "true", "until", "while",
];

/// The length of a long bracket opener `[`, `[=`, `[==` ... followed by `[` at `i`, if any.
fn long_bracket(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'[') {
        return None;
    }
    let mut j = i + 1;
    while b.get(j) == Some(&b'=') {
        j += 1;
    }
    (b.get(j) == Some(&b'[')).then_some(j - i - 1)
}

/// The end of a long string or comment whose body starts at `i` with `level` equals signs.
fn long_end(b: &[u8], mut i: usize, level: usize) -> Option<usize> {
    while i < b.len() {
        if b[i] == b']' {
            let mut j = i + 1;
            while j < b.len() && b[j] == b'=' {
                j += 1;
            }
            if j - i - 1 == level && b.get(j) == Some(&b']') {
                return Some(j + 1);
            }
        }
        i += 1;
    }
    None
}

/// Lua's tokens, as far as finding calls needs; `None` when the text does not lex (the Lua
/// parser reports that, on the unchanged text).
fn tokens(src: &str) -> Option<Vec<Token>> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        let kind = match c {
            b' ' | b'\t' | b'\r' | b'\n' | b'\x0b' | b'\x0c' => {
                i += 1;
                continue;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i += 2;
                if let Some(level) = long_bracket(b, i) {
                    i = long_end(b, i + level + 2, level)?;
                } else {
                    while i < b.len() && b[i] != b'\n' {
                        i += 1;
                    }
                }
                continue;
            }
            b'"' | b'\'' => {
                i += 1;
                loop {
                    match b.get(i)? {
                        b'\\' => i += 2,
                        b'\n' => return None,
                        &q if q == c => break,
                        _ => i += 1,
                    }
                }
                i += 1;
                Kind::Str
            }
            b'[' if long_bracket(b, i).is_some() => {
                let level = long_bracket(b, i)?;
                i = long_end(b, i + level + 2, level)?;
                Kind::Str
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                if KEYWORDS.contains(&&src[start..i]) {
                    Kind::Keyword
                } else {
                    Kind::Name
                }
            }
            b'0'..=b'9' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
                    let exp = matches!(b[i], b'e' | b'E' | b'p' | b'P');
                    i += 1;
                    if exp && matches!(b.get(i), Some(b'+' | b'-')) {
                        i += 1;
                    }
                }
                Kind::Other
            }
            b'.' if b.get(i + 1) == Some(&b'.') => {
                while b.get(i) == Some(&b'.') {
                    i += 1;
                }
                Kind::Other
            }
            b'.' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                i += 1;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
                Kind::Other
            }
            b':' if b.get(i + 1) == Some(&b':') => {
                i += 2;
                Kind::Other
            }
            _ => {
                i += 1;
                match c {
                    b'(' | b'[' | b'{' => Kind::Open(c),
                    b')' | b']' | b'}' => Kind::Close,
                    b'.' => Kind::Dot,
                    b':' => Kind::Colon,
                    b';' => Kind::Semi,
                    _ => Kind::Other,
                }
            }
        };
        out.push(Token { kind, start, end: i });
    }
    Some(out)
}

/// The index just past the bracket that closes the one opened at `i`.
fn skip_balanced(t: &[Token], mut i: usize) -> Option<usize> {
    let mut depth = 0usize;
    while i < t.len() {
        match t[i].kind {
            Kind::Open(_) => depth += 1,
            Kind::Close => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Call arguments at `i` (`(...)`, a string, a table): the index past them.
fn call_args(t: &[Token], i: usize) -> Option<usize> {
    match t.get(i)?.kind {
        Kind::Open(b'(') | Kind::Open(b'{') => skip_balanced(t, i),
        Kind::Str => Some(i + 1),
        _ => None,
    }
}

/// The token range of `return <call>` when it is a tail call worth keeping: a method or field
/// call, or a primitive global.
fn kept_call(src: &str, t: &[Token], ret: usize) -> Option<(usize, usize)> {
    let first = ret + 1;
    let mut i = match t.get(first)?.kind {
        Kind::Name => first + 1,
        Kind::Open(b'(') => skip_balanced(t, first)?,
        _ => return None,
    };
    let mut calls_last = false;
    let mut selected = false;
    while let Some(tok) = t.get(i) {
        match tok.kind {
            Kind::Dot if t.get(i + 1).map(|n| n.kind) == Some(Kind::Name) => {
                i += 2;
                selected = true;
                calls_last = false;
            }
            Kind::Open(b'[') => {
                i = skip_balanced(t, i)?;
                selected = true;
                calls_last = false;
            }
            Kind::Colon if t.get(i + 1).map(|n| n.kind) == Some(Kind::Name) => {
                i = call_args(t, i + 2)?;
                selected = true;
                calls_last = true;
            }
            Kind::Open(b'(') | Kind::Open(b'{') | Kind::Str => {
                i = call_args(t, i)?;
                calls_last = true;
            }
            _ => break,
        }
    }
    let ends_block = match t.get(i) {
        None => true,
        Some(tok) => {
            tok.kind == Kind::Semi
                || (tok.kind == Kind::Keyword
                    && matches!(&src[tok.start..tok.end], "end" | "else" | "elseif" | "until"))
        }
    };
    let callee = &src[t[first].start..t[first].end];
    let worth = selected || (t[first].kind == Kind::Name && PRIMITIVE_GLOBALS.contains(&callee));
    (calls_last && ends_block && worth).then_some((first, i - 1))
}

/// The source with primitive tail calls kept as ordinary calls (see the module docs); the text
/// unchanged when there are none or it does not lex.
pub fn keep_frames(src: &str) -> Cow<'_, str> {
    let Some(t) = tokens(src) else { return Cow::Borrowed(src) };
    let mut edits: Vec<(usize, usize)> = Vec::new();
    for (i, tok) in t.iter().enumerate() {
        if tok.kind == Kind::Keyword && &src[tok.start..tok.end] == "return" {
            if let Some((first, last)) = kept_call(src, &t, i) {
                edits.push((t[first].start, t[last].end));
            }
        }
    }
    if edits.is_empty() {
        return Cow::Borrowed(src);
    }
    let mut out = String::with_capacity(src.len() + edits.len() * (KEEP_OPEN.len() + 1));
    let mut at = 0;
    // Calls nest (`return a:b(function() return c:d() end)`): open and close points are
    // applied in text order, closes at the same point first.
    let mut points: Vec<(usize, bool)> = edits.iter().flat_map(|&(s, e)| [(s, true), (e, false)]).collect();
    points.sort_by_key(|&(pos, open)| (pos, open));
    for (pos, open) in points {
        out.push_str(&src[at..pos]);
        out.push_str(if open { KEEP_OPEN } else { ")" });
        at = pos;
    }
    out.push_str(&src[at..]);
    Cow::Owned(out)
}

/// The line where a chunk's nesting first overflows the parser's C stack, found by compiling
/// ever shorter prefixes of it (a prefix that overflows has the culprit in it).
pub fn overflow_line(lua: &mlua::Lua, src: &str) -> Option<u32> {
    let ends: Vec<usize> = src.match_indices('\n').map(|(i, _)| i).chain([src.len()]).collect();
    let overflows = |n: usize| {
        let prefix = &src[..ends[n]];
        matches!(lua.load(prefix).into_function(), Err(e) if e.to_string().contains("C stack overflow"))
    };
    if !overflows(ends.len() - 1) {
        return None;
    }
    let (mut lo, mut hi) = (0, ends.len() - 1);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if overflows(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(lo as u32 + 1)
}

/// Lua quotes the token it stopped at whole; a megabyte-long one is cut to its start.
pub fn shorten_near(message: &str) -> Cow<'_, str> {
    const KEEP: usize = 60;
    let Some(at) = message.find(" near '") else { return Cow::Borrowed(message) };
    let token = &message[at + 7..];
    let Some(close) = token.rfind('\'') else { return Cow::Borrowed(message) };
    if close <= KEEP {
        return Cow::Borrowed(message);
    }
    let mut cut = KEEP;
    while !token.is_char_boundary(cut) {
        cut -= 1;
    }
    Cow::Owned(format!("{}{}...' ({} characters){}", &message[..at + 7], &token[..cut], close, &token[close + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_and_field_tail_calls_are_kept_in_the_callers_frame() {
        assert_eq!(
            keep_frames("step('s', function()\n  return conn:scalar(\"selec\")\nend)"),
            "step('s', function()\n  return (function(...) return ... end)(conn:scalar(\"selec\"))\nend)"
        );
        assert_eq!(
            keep_frames("return http.get{ url = u }:json() end"),
            "return (function(...) return ... end)(http.get{ url = u }:json()) end"
        );
        assert_eq!(keep_frames("return exec 'ls'"), "return (function(...) return ... end)(exec 'ls')");
    }

    #[test]
    fn the_runbooks_own_recursion_and_non_calls_are_left_alone() {
        for src in [
            "return loop(n - 1)",
            "return conn:scalar('x') + 1",
            "return a.b",
            "return a:b(), c:d()",
            "return",
            "x = 'return a:b()' -- return a:b()",
            "x = [==[ return a:b() ]==]",
            "--[[ return a:b() ]] y = 1",
        ] {
            assert_eq!(keep_frames(src), src, "{src}");
        }
    }

    #[test]
    fn nested_kept_calls_close_in_order() {
        let out = keep_frames("return a:b(function() return c:d() end)");
        assert_eq!(
            out,
            "return (function(...) return ... end)(a:b(function() return (function(...) return ... end)(c:d()) end))"
        );
        let lua = mlua::Lua::new();
        lua.load(out.as_ref()).into_function().expect("still Lua");
    }

    #[test]
    fn kept_calls_return_every_result() {
        let lua = mlua::Lua::new();
        let src = "local t = { f = function() return 1, nil, 3 end }\nlocal function g() return t.f() end\nreturn select('#', g())";
        let n: i64 = lua.load(keep_frames(src).as_ref()).eval().unwrap();
        assert_eq!(n, 3);
    }

    #[test]
    fn an_overflow_is_placed_on_its_line() {
        let lua = mlua::Lua::new();
        let deep = format!("local a = 1\nlocal b = 2\nlocal x = {}1{}\nlocal c = 3", "(".repeat(300), ")".repeat(300));
        assert_eq!(overflow_line(&lua, &deep), Some(3));
        assert_eq!(overflow_line(&lua, "local a = (1)"), None);
    }

    #[test]
    fn a_huge_token_is_cut_in_messages() {
        let long = format!("a.lua:2: malformed number near '{}'", "1..".repeat(1000));
        let short = shorten_near(&long);
        assert!(short.len() < 150, "{short}");
        assert!(short.ends_with("(3000 characters)"), "{short}");
        assert_eq!(shorten_near("x near 'end'"), "x near 'end'");
    }
}
