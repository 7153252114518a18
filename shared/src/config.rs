//! Reading configuration from the environment, once, at cold start.
//!
//! Each function has its own config struct with `from_env()` and a
//! `from_lookup(fn)` twin for tests; both go through [`Vars`], so every bad
//! value fails the same way: an [`Error::Config`] that names the variable, the
//! value and what is allowed.

use crate::Error;

/// A view of the environment (or of a test's map) with typed, validating getters.
pub struct Vars<F: Fn(&str) -> Option<String>> {
    lookup: F,
}

impl Vars<fn(&str) -> Option<String>> {
    pub fn from_env() -> Self {
        Vars { lookup: |name| std::env::var(name).ok() }
    }
}

impl<F: Fn(&str) -> Option<String>> Vars<F> {
    pub fn new(lookup: F) -> Self {
        Vars { lookup }
    }

    /// The value, trimmed; an unset or blank variable is `None`.
    pub fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
    }

    /// `true` or `false` (case-insensitive); anything else is an error rather
    /// than a silent `false`, because DRY_RUN=yes must not write.
    pub fn bool(&self, name: &'static str, default: bool) -> Result<bool, Error> {
        match self.get(name) {
            None => Ok(default),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(v) => Err(invalid(name, v, "allowed: true, false")),
        }
    }

    /// A comma-separated list; blanks between commas are ignored.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.get(name)
            .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect())
            .unwrap_or_default()
    }

    /// A whole number that must be one of `allowed`.
    pub fn one_of(&self, name: &'static str, default: i32, allowed: &[i32]) -> Result<i32, Error> {
        let Some(raw) = self.get(name) else {
            return Ok(default);
        };
        let listed = || {
            let all: Vec<String> = allowed.iter().map(i32::to_string).collect();
            format!("allowed: {}", all.join(", "))
        };
        match raw.parse::<i32>() {
            Ok(n) if allowed.contains(&n) => Ok(n),
            _ => Err(invalid(name, raw, &listed())),
        }
    }

    /// A whole number in `min..=max`.
    pub fn in_range(&self, name: &'static str, default: u64, min: u64, max: u64) -> Result<u64, Error> {
        let Some(raw) = self.get(name) else {
            return Ok(default);
        };
        match raw.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(invalid(name, raw, &format!("allowed: a whole number from {min} to {max}"))),
        }
    }

    /// An ARN of the given service (`arn:<partition>:<service>:...`), if set.
    pub fn arn(&self, name: &'static str, service: &str) -> Result<Option<String>, Error> {
        let Some(raw) = self.get(name) else {
            return Ok(None);
        };
        let parts: Vec<&str> = raw.splitn(6, ':').collect();
        let ok = parts.len() == 6
            && parts[0] == "arn"
            && parts[1].starts_with("aws")
            && parts[2] == service
            && !parts[5].is_empty();
        if ok {
            Ok(Some(raw))
        } else {
            Err(invalid(
                name,
                raw,
                &format!("expected an ARN of the form arn:aws:{service}:<region>:<account>:<resource>"),
            ))
        }
    }
}

/// The namespace of our EMF metrics unless `METRICS_NAMESPACE` says otherwise.
pub const DEFAULT_METRICS_NAMESPACE: &str = "ECRAutopilot";

impl<F: Fn(&str) -> Option<String>> Vars<F> {
    /// `METRICS_NAMESPACE`, the one namespace every function publishes in.
    pub fn metrics_namespace(&self) -> String {
        self.get("METRICS_NAMESPACE").unwrap_or_else(|| DEFAULT_METRICS_NAMESPACE.into())
    }

    /// `CLUSTERS`: comma-separated cluster names or cluster ARNs, whitespace
    /// around each trimmed; empty means every cluster.
    pub fn clusters(&self) -> Result<Vec<String>, Error> {
        let clusters = self.list("CLUSTERS");
        for cluster in &clusters {
            if !is_cluster_name_or_arn(cluster) {
                return Err(invalid(
                    "CLUSTERS",
                    self.get("CLUSTERS").unwrap_or_default(),
                    &format!(
                        "{cluster:?} is neither a cluster name (letters, digits, - and _, up to 255) \
                         nor a cluster ARN (arn:aws:ecs:<region>:<account>:cluster/<name>)"
                    ),
                ));
            }
        }
        Ok(clusters)
    }

    /// `SWEEP_CONCURRENCY`: AWS calls in flight during a sweep, 1 to 16, default 4.
    pub fn sweep_concurrency(&self) -> Result<usize, Error> {
        Ok(self.in_range("SWEEP_CONCURRENCY", 4, 1, 16)? as usize)
    }

    /// `PROTECT_REGIONS`: the regions whose consumers keep images in use, a
    /// comma list of region names. Empty means the function's own region,
    /// which is always protected (see [`crate::in_use::protect_regions`]).
    pub fn protect_regions(&self) -> Result<Vec<String>, Error> {
        let regions = self.list("PROTECT_REGIONS");
        if let Some(bad) = regions.iter().find(|r| !crate::in_use::is_region_name(r)) {
            return Err(invalid(
                "PROTECT_REGIONS",
                self.get("PROTECT_REGIONS").unwrap_or_default(),
                &format!("{bad:?} is not a region name; expected a comma list such as us-east-1,eu-west-1"),
            ));
        }
        Ok(regions)
    }

    /// `LOG_RETENTION_DAYS`: one of the values CloudWatch Logs accepts, default 30.
    pub fn log_retention_days(&self) -> Result<i32, Error> {
        self.one_of("LOG_RETENTION_DAYS", 30, crate::log_groups::RETENTION_DAYS_ALLOWED)
    }

    /// `PRUNE_MAX_DELETE_PERCENT`: the prune safety brake, 1 to 100, default 80.
    pub fn prune_max_delete_percent(&self) -> Result<u32, Error> {
        Ok(self.in_range("PRUNE_MAX_DELETE_PERCENT", 80, 1, 100)? as u32)
    }

    /// `PRUNE_MIN_AGE_HOURS`: the age floor, whole hours from 0 (no floor) to
    /// 8760 (a year), default 1. Nothing younger is deleted or archived.
    pub fn prune_min_age_hours(&self) -> Result<u32, Error> {
        Ok(self.in_range("PRUNE_MIN_AGE_HOURS", 1, 0, 8760)? as u32)
    }

    /// `WORK_QUEUE_URL`: the SQS queue a large registry is fanned out over
    /// ([`crate::fanout`]); unset or empty: every run is inline.
    pub fn work_queue_url(&self) -> Result<Option<String>, Error> {
        let Some(url) = self.get("WORK_QUEUE_URL").filter(|u| !u.trim().is_empty()) else { return Ok(None) };
        if crate::fanout::queue_arn(url.trim(), "region").is_none() {
            return Err(invalid(
                "WORK_QUEUE_URL",
                url,
                "expected a queue URL such as https://sqs.us-east-1.amazonaws.com/123456789012/prune-work",
            ));
        }
        Ok(Some(url.trim().to_string()))
    }

    /// The fan-out settings of prune-images and quota-scan.
    pub fn fanout(&self) -> Result<crate::fanout::Settings, Error> {
        Ok(crate::fanout::Settings {
            work_queue_url: self.work_queue_url()?,
            batch_size: self.fanout_batch_size()?,
            deadline_margin: self.deadline_margin(crate::deadline::DEFAULT_MARGIN_SECS)?,
        })
    }

    /// `FANOUT_BATCH_SIZE`: repositories per work-queue batch, and the most a
    /// run handles inline; 1 to 500, default 200.
    pub fn fanout_batch_size(&self) -> Result<usize, Error> {
        let max = crate::fanout::MAX_BATCH_SIZE as u64;
        Ok(self.in_range("FANOUT_BATCH_SIZE", crate::fanout::DEFAULT_BATCH_SIZE as u64, 1, max)? as usize)
    }

    /// `DEADLINE_MARGIN_SECS`: with less than this left before the
    /// invocation's deadline, nothing new starts ([`crate::deadline`]); 1 to
    /// 840, default `default_secs` (the function's: a repository, a service
    /// or a log group takes different time).
    pub fn deadline_margin(&self, default_secs: u64) -> Result<std::time::Duration, Error> {
        let secs = self.in_range("DEADLINE_MARGIN_SECS", default_secs, 1, 840)?;
        Ok(std::time::Duration::from_secs(secs))
    }

    /// A lifecycle-policy document (see [`crate::lifecycle`]); `default` when unset.
    pub fn lifecycle_policy(&self, name: &'static str, default: &str) -> Result<crate::lifecycle::Policy, Error> {
        let raw = self.get(name).unwrap_or_else(|| default.to_string());
        crate::lifecycle::Policy::parse(&raw).map_err(|problem| Error::Config {
            variable: name,
            value: raw.chars().take(200).collect(),
            problem,
        })
    }
}

/// An ECS cluster name, or a cluster ARN whose name is one.
pub fn is_cluster_name_or_arn(value: &str) -> bool {
    let name_ok = |n: &str| {
        (1..=255).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    match value.strip_prefix("arn:") {
        None => name_ok(value),
        Some(rest) => {
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            parts.len() == 5
                && parts[0].starts_with("aws")
                && parts[1] == "ecs"
                && parts[4].strip_prefix("cluster/").is_some_and(name_ok)
        }
    }
}

/// A lookup over fixed pairs, for configuration tests.
#[cfg(any(test, feature = "test-support"))]
pub fn lookup_from(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

fn invalid(variable: &'static str, value: String, problem: &str) -> Error {
    Error::Config { variable, value, problem: problem.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars<impl Fn(&str) -> Option<String>> {
        Vars::new(lookup_from(pairs))
    }

    #[test]
    fn bool_rejects_words_that_are_not_true_or_false() {
        let v = vars(&[("DRY_RUN", "yes")]);
        let err = v.bool("DRY_RUN", false).unwrap_err().to_string();
        assert_eq!(err, "invalid configuration: DRY_RUN=\"yes\": allowed: true, false");
        assert!(vars(&[("DRY_RUN", "TRUE")]).bool("DRY_RUN", false).unwrap());
        assert!(!vars(&[]).bool("DRY_RUN", false).unwrap());
    }

    #[test]
    fn list_splits_and_trims() {
        let v = vars(&[("CLUSTERS", " prod, ,staging ,")]);
        assert_eq!(v.list("CLUSTERS"), vec!["prod", "staging"]);
        assert!(vars(&[("CLUSTERS", "  ")]).list("CLUSTERS").is_empty());
    }

    #[test]
    fn one_of_lists_what_is_allowed() {
        let v = vars(&[("N", "2")]);
        let err = v.one_of("N", 1, &[1, 3]).unwrap_err().to_string();
        assert!(err.ends_with("allowed: 1, 3"), "{err}");
        assert_eq!(vars(&[("N", "3")]).one_of("N", 1, &[1, 3]).unwrap(), 3);
        assert!(vars(&[("N", "3.0")]).one_of("N", 1, &[1, 3]).is_err());
    }

    #[test]
    fn in_range_bounds() {
        assert_eq!(vars(&[]).in_range("C", 4, 1, 16).unwrap(), 4);
        assert!(vars(&[("C", "0")]).in_range("C", 4, 1, 16).is_err());
        assert!(vars(&[("C", "17")]).in_range("C", 4, 1, 16).is_err());
        assert_eq!(vars(&[("C", "16")]).in_range("C", 4, 1, 16).unwrap(), 16);
    }

    #[test]
    fn protect_regions_are_region_names() {
        assert!(vars(&[]).protect_regions().unwrap().is_empty());
        let v = vars(&[("PROTECT_REGIONS", "us-east-1, eu-west-1")]);
        assert_eq!(v.protect_regions().unwrap(), ["us-east-1", "eu-west-1"]);
        let err = vars(&[("PROTECT_REGIONS", "us-east-1,europe")]).protect_regions().unwrap_err().to_string();
        assert!(
            err.starts_with(
                "invalid configuration: PROTECT_REGIONS=\"us-east-1,europe\": \"europe\" is not a region name"
            ),
            "{err}"
        );
    }

    #[test]
    fn the_age_floor_is_whole_hours_up_to_a_year() {
        assert_eq!(vars(&[]).prune_min_age_hours().unwrap(), 1);
        assert_eq!(vars(&[("PRUNE_MIN_AGE_HOURS", "0")]).prune_min_age_hours().unwrap(), 0);
        assert_eq!(vars(&[("PRUNE_MIN_AGE_HOURS", "48")]).prune_min_age_hours().unwrap(), 48);
        for bad in ["-1", "1.5", "8761", "1h"] {
            let err = vars(&[("PRUNE_MIN_AGE_HOURS", bad)]).prune_min_age_hours().unwrap_err().to_string();
            assert_eq!(
                err,
                format!("invalid configuration: PRUNE_MIN_AGE_HOURS={bad:?}: allowed: a whole number from 0 to 8760")
            );
        }
    }

    #[test]
    fn arn_checks_service() {
        let ok = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        assert_eq!(vars(&[("K", ok)]).arn("K", "kms").unwrap().as_deref(), Some(ok));
        assert!(vars(&[("K", "alias/logs")]).arn("K", "kms").is_err());
        assert!(vars(&[("K", "arn:aws:s3:::bucket")]).arn("K", "kms").is_err());
    }
}
