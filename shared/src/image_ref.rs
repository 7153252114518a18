//! Container image references, and which ECR registry they point at.
//!
//! Task definitions name images in every form Docker accepts: `repo:tag`,
//! `repo@sha256:…`, `repo:tag@sha256:…`, and on ECR hosts that may be the
//! standard, FIPS, dual-stack or China ones. deploy-on-push must recognise the
//! pushed repository in all of them, and keep the host a service already uses
//! when it pins the new digest.

/// One parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// The registry host, e.g. `123456789012.dkr.ecr.us-east-1.amazonaws.com`;
    /// empty for Docker Hub short names such as `nginx`.
    pub host: String,
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<64 hex>` when the reference is pinned.
    pub digest: Option<String>,
}

/// The account and region of an ECR registry host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EcrRegistry {
    pub account: String,
    pub region: String,
}

impl ImageRef {
    pub fn parse(image: &str) -> Option<ImageRef> {
        let image = image.trim();
        if image.is_empty() || image.chars().any(char::is_whitespace) {
            return None;
        }
        let (name, digest) = match image.split_once('@') {
            Some((name, digest)) => (name, Some(digest)),
            None => (image, None),
        };
        if let Some(d) = digest {
            if !is_digest(d) {
                return None;
            }
        }
        let (host, path) = match name.split_once('/') {
            Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => (first, rest),
            _ => ("", name),
        };
        // A tag follows the last ':' of the last path segment (a ':' before a
        // '/' would be a registry port, handled above).
        let last_slash = path.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match path[last_slash..].rfind(':') {
            Some(i) => (&path[..last_slash + i], Some(&path[last_slash + i + 1..])),
            None => (path, None),
        };
        if repository.is_empty() || tag.is_some_and(|t| !is_valid_tag(t)) {
            return None;
        }
        Some(ImageRef {
            host: host.to_string(),
            repository: repository.to_string(),
            tag: tag.map(String::from),
            digest: digest.map(String::from),
        })
    }

    /// The ECR registry this reference points at, if it is an ECR host.
    pub fn ecr_registry(&self) -> Option<EcrRegistry> {
        ecr_registry(&self.host)
    }

    /// The same repository on the same host, pinned to `digest`, no tag.
    pub fn pinned(&self, digest: &str) -> String {
        format!("{}/{}@{digest}", self.host, self.repository)
    }
}

/// `sha256:` followed by 64 lowercase hex digits.
pub fn is_digest(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// Docker's tag grammar: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn is_valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Recognises `<account>.dkr.ecr.<region>.amazonaws.com`, its FIPS form
/// (`dkr.ecr-fips`), its China form (`….amazonaws.com.cn`) and the dual-stack
/// forms (`<account>.dkr-ecr[-fips].<region>.on.aws`).
pub fn ecr_registry(host: &str) -> Option<EcrRegistry> {
    let labels: Vec<&str> = host.split('.').collect();
    let account = *labels.first()?;
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let region = match labels[1..] {
        ["dkr", "ecr" | "ecr-fips", region, "amazonaws", "com"] => region,
        ["dkr", "ecr" | "ecr-fips", region, "amazonaws", "com", "cn"] => region,
        ["dkr-ecr" | "dkr-ecr-fips", region, "on", "aws"] => region,
        _ => return None,
    };
    let region_ok =
        !region.is_empty() && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    region_ok.then(|| EcrRegistry { account: account.to_string(), region: region.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn every_reference_form() {
        let host = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
        let cases = [
            (format!("{host}/users:latest"), "users", Some("latest"), None),
            (format!("{host}/users@{D}"), "users", None, Some(D)),
            (format!("{host}/users:1.2.0@{D}"), "users", Some("1.2.0"), Some(D)),
            (format!("{host}/team/users"), "team/users", None, None),
            ("localhost:5000/app:dev".to_string(), "app", Some("dev"), None),
            ("nginx".to_string(), "nginx", None, None),
            ("library/nginx:1.27".to_string(), "library/nginx", Some("1.27"), None),
        ];
        for (image, repository, tag, digest) in cases {
            let r = ImageRef::parse(&image).unwrap_or_else(|| panic!("{image}"));
            assert_eq!(
                (r.repository.as_str(), r.tag.as_deref(), r.digest.as_deref()),
                (repository, tag, digest),
                "{image}"
            );
        }
    }

    #[test]
    fn ecr_hosts_standard_fips_dual_stack_and_china() {
        let cases = [
            ("123456789012.dkr.ecr.us-east-1.amazonaws.com", Some("us-east-1")),
            ("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com", Some("us-gov-west-1")),
            ("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn", Some("cn-north-1")),
            ("123456789012.dkr-ecr.eu-west-1.on.aws", Some("eu-west-1")),
            ("123456789012.dkr-ecr-fips.us-east-2.on.aws", Some("us-east-2")),
            ("public.ecr.aws", None),
            ("12345.dkr.ecr.us-east-1.amazonaws.com", None),
            ("123456789012.dkr.ecr.us-east-1.example.com", None),
            ("", None),
        ];
        for (host, region) in cases {
            assert_eq!(ecr_registry(host).map(|r| r.region), region.map(String::from), "{host}");
        }
    }

    #[test]
    fn pinning_keeps_the_host_and_drops_the_tag() {
        let r = ImageRef::parse("123456789012.dkr-ecr.eu-west-1.on.aws/users:latest").expect("parses");
        assert_eq!(r.pinned(D), format!("123456789012.dkr-ecr.eu-west-1.on.aws/users@{D}"));
    }

    #[test]
    fn malformed_references_are_rejected() {
        for bad in ["", "repo@sha256:short", "repo@md5:abc", "repo:bad tag", "repo:", "repo:-x", "has space/x"] {
            assert_eq!(ImageRef::parse(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn pinned_references_parse_back(
            repo in "[a-z][a-z0-9]{0,8}(/[a-z][a-z0-9-]{0,8}){0,2}",
            tag in proptest::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"),
            hex in "[0-9a-f]{64}",
        ) {
            let host = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
            let digest = format!("sha256:{hex}");
            let image = match &tag { Some(t) => format!("{host}/{repo}:{t}"), None => format!("{host}/{repo}") };
            let r = ImageRef::parse(&image).expect("valid reference");
            prop_assert_eq!(&r.repository, &repo);
            prop_assert_eq!(&r.tag, &tag);
            let pinned = ImageRef::parse(&r.pinned(&digest)).expect("pinned parses");
            prop_assert_eq!(pinned.repository, repo);
            prop_assert_eq!(pinned.tag, None);
            prop_assert_eq!(pinned.digest, Some(digest));
        }
    }
}
