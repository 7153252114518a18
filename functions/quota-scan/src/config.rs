//! quota-scan configuration, read and validated once at cold start.

use autopilot::config::Vars;
use autopilot::lifecycle::{Policy, DEFAULT_POLICY};
use autopilot::prune::Safety;
use autopilot::quota::{Quotas, DEFAULT_IMAGES_PER_REPOSITORY, FREE_TIER_BYTES};
use autopilot::Error;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `STORAGE_QUOTA_BYTES` (default 500 000 000), `IMAGES_PER_REPOSITORY_QUOTA`
    /// (default 20 000) and `WARN_PERCENT` (default 80).
    pub quotas: Quotas,
    /// `QUOTA_DEDUPE_LAYERS`: also count each layer once (reads manifests,
    /// which counts as pulls).
    pub dedupe_layers: bool,
    /// `METRICS_TOP_REPOSITORIES`: per-repository metrics for the N largest only.
    pub top_repositories: usize,
    /// `PRUNE_POLICY` and `PRUNE_MAX_DELETE_PERCENT`, for the reclaimable figures.
    pub policy: Policy,
    pub max_delete_percent: u32,
    /// `PRUNE_MIN_AGE_HOURS`: what prune-images would not delete yet.
    pub min_age_hours: u32,
    /// `SWEEP_CONCURRENCY`: repositories scanned at once.
    pub concurrency: usize,
    /// `DRY_RUN`: report only, publish no metrics.
    pub dry_run: bool,
    /// `PROTECT_REGIONS`: where else consumers of our images live, for the
    /// reclaimable figures.
    pub protect_regions: Vec<String>,
    pub metrics_namespace: String,
    /// `PRUNE_DEFAULT_MODE` (prune-images' own, default `dry-run`): whether
    /// prune-images deletes in a repository without an `autopilot:prune`
    /// tag, for the audit's "two deleters" finding.
    pub prune_default_mode: String,
    /// `WORK_QUEUE_URL`, `FANOUT_BATCH_SIZE` and `DEADLINE_MARGIN_SECS`.
    pub fanout: autopilot::fanout::Settings,
}

impl Config {
    pub fn from_env() -> Result<Self, Error> {
        Self::from_vars(&Vars::from_env())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        Self::from_vars(&Vars::new(lookup))
    }

    fn from_vars<F: Fn(&str) -> Option<String>>(vars: &Vars<F>) -> Result<Self, Error> {
        let policy = vars.lifecycle_policy("PRUNE_POLICY", DEFAULT_POLICY)?;
        let mode = vars.get("PRUNE_DEFAULT_MODE").unwrap_or_else(|| "dry-run".into());
        let prune_default_mode = mode.trim().to_ascii_lowercase();
        if !matches!(prune_default_mode.as_str(), "on" | "off" | "dry-run") {
            return Err(Error::Config {
                variable: "PRUNE_DEFAULT_MODE",
                value: mode,
                problem: "allowed: on, off, dry-run".into(),
            });
        }
        Ok(Config {
            quotas: Quotas {
                storage_bytes: vars.in_range("STORAGE_QUOTA_BYTES", FREE_TIER_BYTES, 1, u64::MAX / 1000)?,
                images_per_repository: vars.in_range(
                    "IMAGES_PER_REPOSITORY_QUOTA",
                    DEFAULT_IMAGES_PER_REPOSITORY,
                    1,
                    10_000_000,
                )?,
                warn_percent: vars.in_range("WARN_PERCENT", 80, 1, 100)? as u32,
            },
            dedupe_layers: vars.bool("QUOTA_DEDUPE_LAYERS", false)?,
            top_repositories: vars.in_range("METRICS_TOP_REPOSITORIES", 10, 0, 1000)? as usize,
            policy,
            max_delete_percent: vars.prune_max_delete_percent()?,
            min_age_hours: vars.prune_min_age_hours()?,
            concurrency: vars.sweep_concurrency()?,
            dry_run: vars.bool("DRY_RUN", false)?,
            protect_regions: vars.protect_regions()?,
            metrics_namespace: vars.metrics_namespace(),
            prune_default_mode,
            fanout: vars.fanout()?,
        })
    }
}

impl Config {
    /// The same brake and age floor prune-images plans with.
    pub fn safety(&self) -> Safety {
        Safety { max_delete_percent: self.max_delete_percent, min_age_seconds: i64::from(self.min_age_hours) * 3600 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, Error> {
        Config::from_lookup(autopilot::config::lookup_from(pairs))
    }

    #[test]
    fn defaults_are_the_free_tier_and_ecr_defaults() {
        let c = config(&[]).expect("defaults");
        assert_eq!(c.quotas, Quotas { storage_bytes: 500_000_000, images_per_repository: 100_000, warn_percent: 80 });
        assert!(!c.dedupe_layers);
        assert_eq!(c.top_repositories, 10);
        assert_eq!(c.prune_default_mode, "dry-run", "prune-images' own default");
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value) in [
            ("STORAGE_QUOTA_BYTES", "500MB"),
            ("STORAGE_QUOTA_BYTES", "0"),
            ("WARN_PERCENT", "120"),
            ("IMAGES_PER_REPOSITORY_QUOTA", "-1"),
            ("QUOTA_DEDUPE_LAYERS", "yes"),
            ("METRICS_TOP_REPOSITORIES", "many"),
            ("PROTECT_REGIONS", "us-east-1,,x"),
            ("PRUNE_MIN_AGE_HOURS", "-1"),
            ("PRUNE_DEFAULT_MODE", "sometimes"),
        ] {
            let err = config(&[(var, value)]).expect_err(var).to_string();
            assert!(err.starts_with(&format!("invalid configuration: {var}=")), "{err}");
        }
    }
}
