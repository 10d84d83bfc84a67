//! `.isccignore` patterns, matched exactly as iscc-sum matches them: each line compiled the
//! way the `pathspec` package (1.1, its `gitwildmatch` patterns) compiles it into a Python
//! regular expression, searched in a path relative to the walk's root; the last matching
//! pattern wins.
//!
//! Exact means Python's rules, not a glob library's: `?` and `*` take characters (code points)
//! not bytes; a bracket expression is handed to Python's `re` as a character set, so its
//! backslashes are literal, a range may end in `\`, `[a-]` holds `-`, and `[[:alpha:]]` is the
//! set `[:alph` followed by `]`; an unclosed bracket drops the whole pattern; `$` also matches
//! before a final newline; lines are split by Python's universal newlines and stripped of
//! Python's whitespace. What `pathspec` or `re` refuse (a trailing escape, `!` alone, a
//! reversed range) makes iscc-sum fail: here it is an error of the walk.
//!
//! Patterns are matched against paths relative to the walk's root, also those read from an
//! ignore file in a subdirectory: iscc-sum does so, and the order and content of a tree's
//! ISCC must not depend on which tool computed it.

use regex::Regex;

/// One compiled pattern.
#[derive(Clone, Debug)]
struct Pattern {
    regex: Regex,
    /// `true`: a match ignores the path; `false` (`!pattern`): a match keeps it.
    ignores: bool,
}

/// The patterns in force for one directory (its own and its ancestors').
#[derive(Clone, Debug, Default)]
pub struct IgnoreSpec {
    patterns: Vec<Pattern>,
}

impl IgnoreSpec {
    /// Adds the patterns of one ignore file (its bytes). Errors where iscc-sum fails.
    pub fn add_file(&mut self, bytes: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8 text ({e})"))?;
        self.add_lines(text)
    }

    /// Adds the patterns of an ignore file's text.
    pub fn add_lines(&mut self, text: &str) -> Result<(), String> {
        for (n, line) in universal_lines(text).into_iter().enumerate() {
            if let Some(pattern) = compile(&line).map_err(|e| format!("line {}: {e}", n + 1))? {
                self.patterns.push(pattern);
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `rel` (a `/`-separated path relative to the walk's root) is ignored; iscc-sum
    /// asks this for `rel` and for `rel/`.
    pub fn is_ignored(&self, rel: &str) -> bool {
        self.matches(rel) || self.matches(&format!("{rel}/"))
    }

    /// pathspec's `match_file`: the verdict of the last pattern found in `path`.
    pub fn matches(&self, path: &str) -> bool {
        self.patterns.iter().rev().find(|p| p.regex.is_match(path)).is_some_and(|p| p.ignores)
    }
}

/// Lines as Python's text mode gives them: `\r\n`, `\r` and `\n` each end a line and become
/// `\n`, which stays part of the line (the last line may have none).
fn universal_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' || c == '\n' {
            if c == '\r' && chars.peek() == Some(&'\n') {
                chars.next();
            }
            line.push('\n');
            lines.push(std::mem::take(&mut line));
        } else {
            line.push(c);
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// Python's `str.isspace()`: Unicode white space and the separators U+001C..U+001F.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// A pattern line to its regular expression, as pathspec's `GitIgnoreSpecPattern`; `None` for
/// lines that match nothing (blank, comment, `/`, an unclosed bracket).
fn compile(line: &str) -> Result<Option<Pattern>, String> {
    let mut pattern = if line.ends_with("\\ ") { line } else { line.trim_end_matches(is_python_space) };
    if pattern.is_empty() || pattern.starts_with('#') || pattern == "/" {
        return Ok(None);
    }
    let ignores = match pattern.strip_prefix('!') {
        Some(rest) => {
            pattern = rest;
            false
        }
        None => true,
    };
    let mut segments: Vec<&str> = pattern.split('/').collect();
    let is_dir_pattern = segments.last().is_some_and(|s| s.is_empty());
    if segments[0].is_empty() {
        segments.remove(0);
    } else if (segments.len() == 1 || (segments.len() == 2 && segments[1].is_empty())) && segments[0] != "**"
    {
        segments.insert(0, "**");
    }
    if segments.is_empty() {
        return Err(format!("invalid pattern {line:?}: it normalizes to nothing"));
    }
    if segments.last().is_some_and(|s| s.is_empty()) {
        *segments.last_mut().expect("not empty") = "**";
    }
    segments.dedup_by(|a, b| *a == "**" && *b == "**");
    let regex = match segments.as_slice() {
        ["**"] => if is_dir_pattern { "/" } else { "." }.to_string(),
        ["**", "*"] => ".".to_string(),
        ["**", "*", "**"] => "/".to_string(),
        _ => match translate(&segments)? {
            Some(regex) => regex,
            None => return Ok(None),
        },
    };
    let regex = Regex::new(&regex).map_err(|e| format!("invalid pattern {line:?}: {e}"))?;
    Ok(Some(Pattern { regex, ignores }))
}

/// Python's `$` without MULTILINE: the end, or just before a newline that ends the string.
const END: &str = r"\n?\z";

/// The segments to a regular expression (pathspec's `__translate_segments`); `None` if a
/// bracket expression is unclosed (git and pathspec drop such a pattern). A reversed range
/// is an error only of a pattern that is not dropped: Python sees it when it compiles the
/// finished expression.
fn translate(segments: &[&str]) -> Result<Option<String>, String> {
    let mut bad_range = None;
    let mut out = String::new();
    let mut need_slash = false;
    let end = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate() {
        if *seg == "**" {
            if i == 0 {
                out.push_str("^(?:.+/)?");
            } else if i < end {
                out.push_str("(?:/.+)?");
                need_slash = true;
            } else {
                // A trailing `**` (from a trailing `/`, or written): something below. pathspec's
                // directory mark is a plain '/' when a pattern is only searched, as here.
                out.push('/');
            }
            continue;
        }
        if i == 0 {
            out.push('^');
        }
        if need_slash {
            out.push('/');
        }
        if *seg == "*" {
            out.push_str("[^/]+");
        } else {
            match glob(seg, &mut bad_range)? {
                Some(regex) => out.push_str(&regex),
                None => return Ok(None),
            }
        }
        if i == end {
            out.push_str(&format!("(?:/|{END})"));
        }
        need_slash = true;
    }
    match bad_range {
        Some(error) => Err(error),
        None => Ok(Some(out)),
    }
}

/// One segment's glob to a regular expression (pathspec's `_translate_segment_glob`).
fn glob(seg: &str, bad_range: &mut Option<String>) -> Result<Option<String>, String> {
    let chars: Vec<char> = seg.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let mut escape = false;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        if escape {
            escape = false;
            out.push_str(&regex::escape(c.encode_utf8(&mut [0; 4])));
        } else if c == '\\' {
            escape = true;
        } else if c == '*' {
            out.push_str("[^/]*");
        } else if c == '?' {
            out.push_str("[^/]");
        } else if c == '[' {
            // Where the bracket expression ends: after an optional `!`/`^`, a first `]` is a
            // member; the next `]` closes it. Escapes are not honoured here.
            let mut j = i;
            if j < chars.len() && (chars[j] == '!' || chars[j] == '^') {
                j += 1;
            }
            if j < chars.len() && chars[j] == ']' {
                j += 1;
            }
            while j < chars.len() && chars[j] != ']' {
                j += 1;
            }
            if j >= chars.len() {
                return Ok(None);
            }
            let negate = chars[i] == '!' || chars[i] == '^';
            let body = &chars[if negate { i + 1 } else { i }..j];
            match python_set(body, negate, seg) {
                Ok(set) => out.push_str(&set),
                Err(error) => {
                    bad_range.get_or_insert(error);
                }
            }
            i = j + 1;
        } else {
            out.push_str(&regex::escape(c.encode_utf8(&mut [0; 4])));
        }
    }
    if escape {
        return Err(format!("invalid pattern segment {seg:?}: it ends with an escape ('\\')"));
    }
    Ok(Some(out))
}

/// A character set as Python's `re` reads `[` + body + `]` (every backslash literal, as
/// pathspec doubles them): a first `]` is a member, `a-z` a range, a `-` before the end a
/// member; a reversed range is an error.
fn python_set(body: &[char], negate: bool, seg: &str) -> Result<String, String> {
    let mut members: Vec<(char, char)> = Vec::new();
    let mut k = 0;
    while k < body.len() {
        let lo = body[k];
        k += 1;
        if body.get(k) == Some(&'-') {
            match body.get(k + 1) {
                None => {
                    // `a-` at the end: both are members.
                    members.push((lo, lo));
                    members.push(('-', '-'));
                    k += 1;
                }
                Some(&hi) => {
                    if hi < lo {
                        return Err(format!(
                            "invalid pattern segment {seg:?}: bad character range {lo}-{hi}"
                        ));
                    }
                    members.push((lo, hi));
                    k += 2;
                }
            }
        } else {
            members.push((lo, lo));
        }
    }
    let mut set = String::from(if negate { "[^" } else { "[" });
    for (lo, hi) in members {
        if lo == hi {
            set.push_str(&format!("\\x{{{:x}}}", lo as u32));
        } else {
            set.push_str(&format!("\\x{{{:x}}}-\\x{{{:x}}}", lo as u32, hi as u32));
        }
    }
    set.push(']');
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(lines: &str) -> IgnoreSpec {
        let mut s = IgnoreSpec::default();
        s.add_lines(lines).unwrap();
        s
    }

    #[test]
    fn common_patterns() {
        let s = spec("*.log\n/build\ncache/\n# comment\n!keep.log\ndocs/**/*.tmp\n");
        assert!(s.is_ignored("a.log"));
        assert!(s.is_ignored("sub/b.log"));
        assert!(!s.is_ignored("keep.log"));
        assert!(s.is_ignored("build"));
        assert!(!s.is_ignored("sub/build"));
        assert!(s.is_ignored("cache"));
        assert!(s.is_ignored("x/cache"));
        assert!(s.is_ignored("docs/a/b/c.tmp"));
        assert!(s.is_ignored("docs/c.tmp"));
        assert!(!s.is_ignored("data.tif"));
    }

    #[test]
    fn characters_not_bytes() {
        let s = spec("?\n[ä]x\n");
        assert!(s.is_ignored("ä"));
        assert!(s.is_ignored("äx"));
        assert!(!s.is_ignored("ab"));
    }

    #[test]
    fn what_iscc_sum_refuses_is_an_error() {
        for bad in ["foo\\\n", "!\n", "[z-a]\n"] {
            assert!(IgnoreSpec::default().add_lines(bad).is_err(), "{bad:?}");
        }
        // An unclosed bracket drops the pattern; it is no error.
        assert!(!spec("[abc\n").is_ignored("[abc"));
    }
}
