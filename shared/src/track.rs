//! `autopilot:track`: which pushed tags a service follows.
//!
//! | value | accepts |
//! |---|---|
//! | `<tag>` | exactly that tag |
//! | `glob:<pattern>` | tags matching the glob (`*`, `?`, `[…]`, `{a,b}`) |
//! | `semver:<range>` | tags that are semantic versions (a leading `v` allowed) in the range |
//! | `regex:<re>` | tags the whole of which match the regular expression |

use globset::{Glob, GlobMatcher};
use regex::{Regex, RegexBuilder};
use semver::{Version, VersionReq};

use crate::image_ref::is_valid_tag;

/// The longest `regex:` pattern accepted, in characters.
pub const MAX_REGEX_LEN: usize = 256;
/// The most heap a compiled `regex:` pattern may use (the regex crate's
/// `size_limit`, in bytes). Matching is linear in the tag's length whatever
/// the pattern (the regex crate has no backtracking), so a pattern's cost is
/// bounded by its compiled size, and this bounds that.
pub const MAX_REGEX_COMPILED_BYTES: usize = 64 * 1024;

#[derive(Clone, Debug)]
pub enum Track {
    Exact(String),
    Glob(GlobMatcher),
    Semver(VersionReq),
    Regex(Regex),
}

impl Track {
    /// Parses a tag value; the error says what is wrong with it.
    pub fn parse(value: &str) -> Result<Track, String> {
        let value = value.trim();
        if let Some(pattern) = value.strip_prefix("glob:") {
            let glob = Glob::new(pattern).map_err(|e| format!("invalid glob {pattern:?}: {e}"))?;
            return Ok(Track::Glob(glob.compile_matcher()));
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
            Track::Glob(g) => g.is_match(tag),
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
            Track::Glob(g) => write!(f, "glob:{}", g.glob()),
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
    let compile = |text: &str| {
        RegexBuilder::new(text)
            .size_limit(MAX_REGEX_COMPILED_BYTES)
            .build()
            .map_err(|e| format!("invalid regex {pattern:?}: {e}"))
    };
    compile(pattern)?;
    compile(&format!("^(?:{pattern})$"))
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
            ("two words", "is neither a tag"),
            ("", "is neither a tag"),
        ] {
            let err = Track::parse(policy).expect_err(policy);
            assert!(err.contains(expect), "{policy}: {err}");
        }
    }

    #[test]
    fn display_round_trips() {
        for policy in ["latest", "glob:release-*", "semver:^1", "regex:main-.*"] {
            assert_eq!(Track::parse(policy).expect("valid").to_string(), policy);
        }
    }
}
