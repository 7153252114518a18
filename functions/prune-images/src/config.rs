//! prune-images configuration, read and validated once at cold start.

use autopilot::config::Vars;
use autopilot::lifecycle::{Policy, DEFAULT_POLICY};
use autopilot::prune::Safety;
use autopilot::Error;

/// What a repository without an `autopilot:prune` tag gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    On,
    Off,
    DryRun,
}

impl Mode {
    pub fn parse(value: &str) -> Option<Mode> {
        match value.trim().to_ascii_lowercase().as_str() {
            "on" => Some(Mode::On),
            "off" => Some(Mode::Off),
            "dry-run" => Some(Mode::DryRun),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::On => "on",
            Mode::Off => "off",
            Mode::DryRun => "dry-run",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `PRUNE_POLICY`: the lifecycle-policy JSON; default: untagged images
    /// older than 1 day, and keep the newest 30.
    pub policy: Policy,
    /// `PRUNE_MAX_DELETE_PERCENT`: the safety brake, per repository.
    pub max_delete_percent: u32,
    /// `PRUNE_MIN_AGE_HOURS`: the age floor; nothing younger is deleted.
    pub min_age_hours: u32,
    /// `PRUNE_DEFAULT_MODE`: for repositories without an `autopilot:prune`
    /// tag; `dry-run` unless set, so a new install deletes nothing until its
    /// owner has read a report and switched it on.
    pub default_mode: Mode,
    /// `DRY_RUN`: plan everywhere, delete nothing.
    pub dry_run: bool,
    /// `METRICS_NAMESPACE`.
    pub metrics_namespace: String,
    /// `SWEEP_CONCURRENCY`: repositories pruned at once (and calls in flight
    /// while reading what is in use).
    pub concurrency: usize,
    /// `PROTECT_REGIONS`: where else consumers of our images live.
    pub protect_regions: Vec<String>,
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
        let mode_text = vars.get("PRUNE_DEFAULT_MODE").unwrap_or_else(|| "dry-run".into());
        let default_mode = Mode::parse(&mode_text).ok_or_else(|| Error::Config {
            variable: "PRUNE_DEFAULT_MODE",
            value: mode_text.clone(),
            problem: "allowed: on, off, dry-run".into(),
        })?;
        Ok(Config {
            policy,
            max_delete_percent: vars.prune_max_delete_percent()?,
            min_age_hours: vars.prune_min_age_hours()?,
            default_mode,
            dry_run: vars.bool("DRY_RUN", false)?,
            metrics_namespace: vars.metrics_namespace(),
            concurrency: vars.sweep_concurrency()?,
            protect_regions: vars.protect_regions()?,
            fanout: vars.fanout()?,
        })
    }
}

impl Config {
    /// The planner's brake and age floor.
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
    fn defaults() {
        let c = config(&[]).expect("defaults");
        assert_eq!(c.policy.rules.len(), 2);
        assert_eq!((c.max_delete_percent, c.default_mode, c.dry_run), (80, Mode::DryRun, false));
        assert_eq!(c.safety(), Safety { max_delete_percent: 80, min_age_seconds: 3600 });
        assert_eq!((c.fanout.work_queue_url, c.fanout.batch_size, c.fanout.deadline_margin.as_secs()), (None, 200, 60));
    }

    #[test]
    fn an_invalid_policy_fails_the_cold_start_naming_the_rule() {
        let bad = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"tagged","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#;
        let err = config(&[("PRUNE_POLICY", bad)]).expect_err("invalid").to_string();
        assert!(err.starts_with("invalid configuration: PRUNE_POLICY="), "{err}");
        assert!(err.contains("rule 1 (rulePriority 1): a tagged rule needs tagPrefixList or tagPatternList"), "{err}");
        assert!(config(&[("PRUNE_MAX_DELETE_PERCENT", "0")]).is_err());
        assert!(config(&[("PROTECT_REGIONS", "mars-1")]).unwrap_err().to_string().contains("PROTECT_REGIONS"));
        assert!(config(&[("PRUNE_MIN_AGE_HOURS", "soon")])
            .unwrap_err()
            .to_string()
            .starts_with("invalid configuration: PRUNE_MIN_AGE_HOURS=\"soon\""));
        assert!(config(&[("SWEEP_CONCURRENCY", "0")]).unwrap_err().to_string().contains("SWEEP_CONCURRENCY"));
        assert!(config(&[("WORK_QUEUE_URL", "prune-work")]).unwrap_err().to_string().contains("WORK_QUEUE_URL"));
        assert!(config(&[("FANOUT_BATCH_SIZE", "501")]).unwrap_err().to_string().contains("FANOUT_BATCH_SIZE"));
        assert!(config(&[("DEADLINE_MARGIN_SECS", "0")]).unwrap_err().to_string().contains("DEADLINE_MARGIN_SECS"));
        assert!(config(&[("PRUNE_DEFAULT_MODE", "maybe")])
            .unwrap_err()
            .to_string()
            .contains("allowed: on, off, dry-run"));
    }
}
