//! `autopilot:track`: which pushed tags a service follows.
//!
//! | value | accepts |
//! |---|---|
//! | `<tag>` | exactly that tag |
//! | `glob:<pattern>` | tags matching the glob (`*`, `?`, `[…]`, `{a,b}`) |
//! | `semver:<range>` | tags that are semantic versions (a leading `v` allowed) in the range |
//! | `regex:<re>` | tags the whole of which match the regular expression |

use regex_lite::{Regex, RegexBuilder};
use semver::{Version, VersionReq};

use crate::image_ref::is_valid_tag;

/// The longest `regex:` pattern accepted, in characters.
pub const MAX_REGEX_LEN: usize = 256;
/// The most heap a compiled `regex:` or `glob:` pattern may use
/// (regex-lite's `size_limit`, in bytes). Matching takes time linear in the
/// tag's length times the compiled size whatever the pattern (regex-lite
/// guarantees `O(m * n)` searches), so this bounds a pattern's cost.
pub const MAX_REGEX_COMPILED_BYTES: usize = 64 * 1024;

#[derive(Clone, Debug)]
pub enum Track {
    Exact(String),
    /// The glob as written, and the anchored regular expression it became.
    Glob(String, Regex),
    Semver(VersionReq),
    Regex(Regex),
}

impl Track {
    /// Parses a tag value; the error says what is wrong with it.
    pub fn parse(value: &str) -> Result<Track, String> {
        let value = value.trim();
        if let Some(pattern) = value.strip_prefix("glob:") {
            let re = glob_to_regex(pattern).map_err(|e| format!("invalid glob {pattern:?}: {e}"))?;
            let re = compile(&format!("^(?:{re})$")).map_err(|e| format!("invalid glob {pattern:?}: {e}"))?;
            return Ok(Track::Glob(pattern.to_string(), re));
        }
        if let Some(range) = value.strip_prefix("semver:") {
            let req = VersionReq::parse(range.trim()).map_err(|e| format!("invalid semver range {range:?}: {e}"))?;
            return Ok(Track::Semver(req));
        }
        if let Some(re) = value.strip_prefix("regex:") {
            return regex(re).map(Track::Regex);
        }
        if is_valid_tag(value) {
            Ok(Track::Exact(value.to_string()))
        } else {
            Err(format!("{value:?} is neither a tag nor glob:<pattern>, semver:<range> or regex:<expression>"))
        }
    }

    pub fn accepts(&self, tag: &str) -> bool {
        match self {
            Track::Exact(t) => t == tag,
            Track::Glob(_, re) => re.is_match(tag),
            Track::Semver(req) => version_of(tag).is_some_and(|v| req.matches(&v)),
            Track::Regex(re) => re.is_match(tag),
        }
    }

    pub fn is_semver(&self) -> bool {
        matches!(self, Track::Semver(_))
    }
}

impl std::fmt::Display for Track {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Track::Exact(t) => write!(f, "{t}"),
            Track::Glob(g, _) => write!(f, "glob:{g}"),
            Track::Semver(r) => write!(f, "semver:{r}"),
            Track::Regex(re) => {
                let s = re.as_str();
                write!(f, "regex:{}", &s[4..s.len() - 2])
            }
        }
    }
}

/// A `regex:` pattern, anchored so that it must match the whole tag. The
/// pattern must be a regular expression on its own first: wrapped blindly,
/// `x)|(.*` would close our group early and match every tag.
fn regex(pattern: &str) -> Result<Regex, String> {
    let length = pattern.chars().count();
    if length > MAX_REGEX_LEN {
        return Err(format!("regex is {length} characters long; at most {MAX_REGEX_LEN} are allowed"));
    }
    let compile = |text: &str| compile(text).map_err(|e| format!("invalid regex {pattern:?}: {e}"));
    compile(pattern)?;
    compile(&format!("^(?:{pattern})$"))
}

fn compile(text: &str) -> Result<Regex, regex_lite::Error> {
    RegexBuilder::new(text).size_limit(MAX_REGEX_COMPILED_BYTES).build()
}

/// A `glob:` pattern as a regular expression (unanchored): `*` any run of
/// characters, `?` one character, `[…]` a class (`[!…]` or `[^…]` negated,
/// a `]` first is literal, ranges with `-`), `{a,b}` alternatives (nested
/// allowed), `\x` a literal `x`; any other character stands for itself.
/// Tags have no `/`, so there are no path rules.
fn glob_to_regex(glob: &str) -> Result<String, String> {
    let mut re = String::new();
    let mut chars = glob.chars().peekable();
    let mut open_braces = 0usize;
    while let Some(c) = chars.next() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            '\\' => {
                let escaped = chars.next().ok_or("dangling '\\' at the end")?;
                re.push_str(&regex_lite::escape(&escaped.to_string()));
            }
            '{' => {
                open_braces += 1;
                re.push_str("(?:");
            }
            '}' if open_braces > 0 => {
                open_braces -= 1;
                re.push(')');
            }
            '}' => return Err("'}' without an opening '{'".into()),
            ',' if open_braces > 0 => re.push('|'),
            '[' => {
                re.push('[');
                if chars.next_if(|&c| c == '!' || c == '^').is_some() {
                    re.push('^');
                }
                let mut first = true;
                loop {
                    match chars.next() {
                        None => return Err("unclosed character class; missing ']'".into()),
                        Some(']') if !first => break,
                        Some('-') if !first && chars.peek().is_some_and(|&n| n != ']') => re.push('-'),
                        Some(c) => re.push_str(&regex_lite::escape(&c.to_string())),
                    }
                    first = false;
                }
                re.push(']');
            }
            c => re.push_str(&regex_lite::escape(&c.to_string())),
        }
    }
    if open_braces > 0 {
        return Err("unclosed alternate group; missing '}'".into());
    }
    Ok(re)
}

/// A tag as a semantic version: `1.2.3`, `v1.2.3`, `1.2.3-rc.1`.
pub fn version_of(tag: &str) -> Option<Version> {
    Version::parse(tag.strip_prefix('v').unwrap_or(tag)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(policy: &str, tag: &str) -> bool {
        Track::parse(policy).expect("valid policy").accepts(tag)
    }

    #[test]
    fn exact() {
        assert!(accepts("latest", "latest"));
        assert!(!accepts("latest", "latest2"));
    }

    #[test]
    fn glob() {
        assert!(accepts("glob:release-*", "release-42"));
        assert!(!accepts("glob:release-*", "prerelease-42"));
        assert!(accepts("glob:{main,develop}-*", "main-abc123"));
        assert!(!accepts("glob:{main,develop}-*", "feature-abc123"));
    }

    #[test]
    fn glob_wildcards_classes_alternates_and_escapes() {
        assert!(accepts("glob:v?.?", "v1.2"));
        assert!(!accepts("glob:v?.?", "v1x2"), "a dot is a literal dot");
        assert!(!accepts("glob:v?.?", "v1.23"));
        assert!(accepts("glob:*", "anything-at.all_1"));
        assert!(accepts("glob:build-[0-9][0-9]", "build-42"));
        assert!(!accepts("glob:build-[0-9][0-9]", "build-4a"));
        assert!(accepts("glob:[!a-c]*", "dev"));
        assert!(!accepts("glob:[!a-c]*", "beta"));
        assert!(accepts("glob:[^a-c]*", "dev"));
        assert!(accepts("glob:x[]-]y", "x]y") && accepts("glob:x[]-]y", "x-y"));
        assert!(accepts("glob:{a,b{c,d}}-1", "bd-1"));
        assert!(!accepts("glob:{a,b{c,d}}-1", "b-1"));
        assert!(accepts("glob:a,b", "a,b"), "a comma outside braces is literal");
        assert!(accepts("glob:\\*x", "*x"));
        assert!(!accepts("glob:\\*x", "ax"));
        assert!(accepts("glob:1.0+build", "1.0+build"), "regex metacharacters are literal");
        assert!(!accepts("glob:1.0+build", "1.00build"));
        assert!(!accepts("glob:release-*", "release"), "anchored at both ends");
        assert!(accepts("glob:release-*", "release-"));
    }

    #[test]
    fn semver_with_or_without_v() {
        assert!(accepts("semver:^1", "1.4.2"));
        assert!(accepts("semver:^1", "v1.0.0"));
        assert!(!accepts("semver:^1", "2.0.0"));
        assert!(!accepts("semver:^1", "latest"));
        assert!(!accepts("semver:^1", "1.5.0-rc.1"), "prereleases need an explicit range");
        assert!(accepts("semver:>=1.2.0, <1.3.0", "1.2.9"));
    }

    #[test]
    fn regex_is_anchored() {
        assert!(accepts("regex:main-[0-9a-f]{7}", "main-abc1234"));
        assert!(!accepts("regex:main-[0-9a-f]{7}", "xmain-abc1234"));
        assert!(!accepts("regex:main-[0-9a-f]{7}", "main-abc12345"));
    }

    #[test]
    fn an_alternation_stays_inside_the_anchors() {
        assert!(accepts("regex:main|release", "main"));
        assert!(accepts("regex:main|release", "release"));
        assert!(!accepts("regex:main|release", "main-1"), "both branches are anchored");
        assert!(!accepts("regex:main|release", "xrelease"));
    }

    #[test]
    fn a_pattern_that_would_escape_the_anchoring_is_refused() {
        for escape in ["x)|(.*", ".*)|(?:", "a)(b"] {
            let err = Track::parse(&format!("regex:{escape}")).expect_err(escape);
            assert!(err.starts_with("invalid regex"), "{escape}: {err}");
        }
    }

    #[test]
    fn a_pattern_longer_than_the_limit_is_refused() {
        let at_limit = "a".repeat(MAX_REGEX_LEN);
        assert!(Track::parse(&format!("regex:{at_limit}")).is_ok());
        let err = Track::parse(&format!("regex:{at_limit}a")).expect_err("too long");
        assert_eq!(err, format!("regex is {} characters long; at most 256 are allowed", MAX_REGEX_LEN + 1));
    }

    #[test]
    fn a_pattern_whose_compiled_size_exceeds_the_limit_is_refused() {
        // short, but each counted repetition multiplies the program's size
        let huge = "(?:[a-z0-9]{100}){100}";
        assert!(huge.len() <= MAX_REGEX_LEN);
        let err = Track::parse(&format!("regex:{huge}")).expect_err("too big compiled");
        assert!(err.starts_with("invalid regex") && err.contains("size limit"), "{err}");
    }

    #[test]
    fn invalid_policies_say_why() {
        for (policy, expect) in [
            ("semver:not-a-range", "invalid semver range"),
            ("regex:(", "invalid regex"),
            ("glob:[", "invalid glob"),
            ("glob:{a,b", "invalid glob"),
            ("glob:a}", "invalid glob"),
            ("glob:a\\", "invalid glob"),
            ("two words", "is neither a tag"),
            ("", "is neither a tag"),
        ] {
            let err = Track::parse(policy).expect_err(policy);
            assert!(err.contains(expect), "{policy}: {err}");
        }
    }

    #[test]
    fn display_round_trips() {
        for policy in ["latest", "glob:release-*", "glob:{a,b}[!x]", "semver:^1", "regex:main-.*"] {
            assert_eq!(Track::parse(policy).expect("valid").to_string(), policy);
        }
    }
}
