//! `.isccignore` patterns, matched the way iscc-sum's tree walk matches them (gitignore
//! wildcards as the `pathspec` package interprets them; the last matching pattern wins).
//!
//! Patterns are matched against paths relative to the walk's root, also those read from an
//! ignore file in a subdirectory: iscc-sum does so, and the order and content of a tree's
//! ISCC must not depend on which tool computed it.

/// One compiled pattern.
#[derive(Clone, Debug)]
struct Pattern {
    /// Path segments; `**` stands for any number of segments.
    segments: Vec<String>,
    /// A trailing `**`: something must follow what the segments matched.
    needs_more: bool,
    /// `!pattern`: a match re-includes the path.
    negated: bool,
}

/// The patterns in force for one directory (its own and its ancestors').
#[derive(Clone, Debug, Default)]
pub struct IgnoreSpec {
    patterns: Vec<Pattern>,
}

impl IgnoreSpec {
    /// Adds the patterns of one ignore file.
    pub fn add_lines(&mut self, text: &str) {
        self.patterns.extend(text.lines().filter_map(parse));
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `rel` (a `/`-separated path relative to the walk's root) is ignored; iscc-sum
    /// asks this for `rel` and for `rel/`.
    pub fn is_ignored(&self, rel: &str) -> bool {
        let matches = |p: &str| {
            let components: Vec<&str> = p.split('/').collect();
            let mut verdict = None;
            for pattern in &self.patterns {
                if pattern.matches(&components) {
                    verdict = Some(!pattern.negated);
                }
            }
            verdict.unwrap_or(false)
        };
        matches(rel) || matches(&format!("{rel}/"))
    }
}

fn parse(line: &str) -> Option<Pattern> {
    let line = if line.ends_with("\\ ") { line } else { line.trim_end() };
    if line.is_empty() || line.starts_with('#') || line == "/" {
        return None;
    }
    let (negated, body) = match line.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    let mut segments: Vec<String> = body.split('/').map(str::to_owned).collect();
    if segments[0].is_empty() {
        segments.remove(0); // anchored at the root
    } else if (segments.len() == 1 || (segments.len() == 2 && segments[1].is_empty())) && segments[0] != "**"
    {
        segments.insert(0, "**".into()); // a bare name matches at any depth
    }
    if segments.is_empty() {
        return None;
    }
    if segments.last().is_some_and(String::is_empty) {
        *segments.last_mut().expect("not empty") = "**".into();
    }
    segments.dedup_by(|a, b| a == "**" && b == "**");
    let needs_more = segments.len() > 1 && segments.last().is_some_and(|s| s == "**");
    if needs_more {
        segments.pop();
    }
    Some(Pattern { segments, needs_more, negated })
}

impl Pattern {
    fn matches(&self, components: &[&str]) -> bool {
        match_from(&self.segments, components, self.needs_more)
    }
}

/// Whether `segments` match a prefix of `components` that ends on a component boundary, with
/// at least one component left over when `needs_more`. A lone `**` matches any non-empty path.
fn match_from(segments: &[String], components: &[&str], needs_more: bool) -> bool {
    let Some((first, rest)) = segments.split_first() else {
        return if needs_more {
            !components.is_empty()
        } else {
            true // the pattern is used up: the path is that match or something inside it
        };
    };
    if first == "**" {
        if rest.is_empty() {
            return components.iter().any(|c| !c.is_empty());
        }
        return (0..components.len()).any(|skip| match_from(rest, &components[skip..], needs_more));
    }
    match components.split_first() {
        Some((component, remaining)) if glob(first.as_bytes(), component.as_bytes()) => {
            match_from(rest, remaining, needs_more)
        }
        _ => false,
    }
}

/// Matches one path component against one glob segment (`*`, `?`, `[...]`, `\x`).
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    if pattern == b"*" {
        return !name.is_empty();
    }
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, n));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    n += 1;
                    continue;
                }
                b'[' => {
                    if let Some((hit, next)) = class(&pattern[p..], name[n]) {
                        if hit {
                            p += next;
                            n += 1;
                            continue;
                        }
                    } else if name[n] == b'[' {
                        p += 1;
                        n += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() && pattern[p + 1] == name[n] => {
                    p += 2;
                    n += 1;
                    continue;
                }
                c if c == name[n] => {
                    p += 1;
                    n += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, sn)) => {
                p = sp + 1;
                n = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A `[...]` class at the start of `pattern`: whether `byte` is in it and the class's length;
/// `None` if the bracket is not closed (then it is a literal `[`).
fn class(pattern: &[u8], byte: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pattern.get(i), Some(b'!') | Some(b'^'));
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    while i < pattern.len() {
        let c = pattern[i];
        if c == b']' && !first {
            return Some((hit != negate, i + 1));
        }
        first = false;
        let lo = if c == b'\\' && i + 1 < pattern.len() {
            i += 1;
            pattern[i]
        } else {
            c
        };
        if pattern.get(i + 1) == Some(&b'-') && pattern.get(i + 2).is_some_and(|&h| h != b']') {
            let hi = pattern[i + 2];
            hit |= lo <= byte && byte <= hi;
            i += 3;
        } else {
            hit |= lo == byte;
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(lines: &str) -> IgnoreSpec {
        let mut s = IgnoreSpec::default();
        s.add_lines(lines);
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
    fn globs() {
        assert!(glob(b"a*c", b"abbbc"));
        assert!(glob(b"a?c", b"abc"));
        assert!(!glob(b"a?c", b"ac"));
        assert!(glob(b"[a-c]x", b"bx"));
        assert!(!glob(b"[!a-c]x", b"bx"));
        assert!(glob(b"\\*", b"*"));
        assert!(!glob(b"*", b""));
    }
}
