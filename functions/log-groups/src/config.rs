//! log-groups configuration, read and validated once at cold start.

use autopilot::config::Vars;
use autopilot::Error;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `LOG_RETENTION_DAYS`: set on groups that have none. One of the values
    /// CloudWatch Logs accepts.
    pub retention_days: i32,
    /// `LOG_KMS_KEY_ARN`: encrypts groups we create.
    pub kms_key_arn: Option<String>,
    /// `CLUSTERS`: comma-separated names or ARNs to sweep; empty means all.
    pub clusters: Vec<String>,
    /// `DRY_RUN`: report what would change and write nothing.
    pub dry_run: bool,
    /// `SWEEP_CONCURRENCY`: AWS calls in flight at once during a sweep.
    pub concurrency: usize,
    /// `DEADLINE_MARGIN_SECS`: with less left before the deadline, nothing new starts.
    pub deadline_margin: std::time::Duration,
    /// `METRICS_NAMESPACE`: the CloudWatch namespace of our EMF metrics.
    pub metrics_namespace: String,
}

impl Config {
    pub fn from_env() -> Result<Self, Error> {
        Self::from_vars(&Vars::from_env())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        Self::from_vars(&Vars::new(lookup))
    }

    fn from_vars<F: Fn(&str) -> Option<String>>(vars: &Vars<F>) -> Result<Self, Error> {
        Ok(Config {
            retention_days: vars.log_retention_days()?,
            kms_key_arn: vars.arn("LOG_KMS_KEY_ARN", "kms")?,
            clusters: vars.clusters()?,
            dry_run: vars.bool("DRY_RUN", false)?,
            concurrency: vars.sweep_concurrency()?,
            deadline_margin: vars.deadline_margin(autopilot::deadline::SHORT_MARGIN_SECS)?,
            metrics_namespace: vars.metrics_namespace(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autopilot::log_groups::RETENTION_DAYS_ALLOWED;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, Error> {
        Config::from_lookup(autopilot::config::lookup_from(pairs))
    }

    #[test]
    fn defaults() {
        let c = config(&[]).unwrap();
        assert_eq!(c.retention_days, 30);
        assert_eq!(c.kms_key_arn, None);
        assert!(c.clusters.is_empty());
        assert!(!c.dry_run);
        assert_eq!(c.concurrency, 4);
        assert_eq!(c.metrics_namespace, "ECRAutopilot");
    }

    #[test]
    fn tutorial_one_day_retention_is_valid() {
        assert_eq!(config(&[("LOG_RETENTION_DAYS", "1")]).unwrap().retention_days, 1);
    }

    #[test]
    fn every_value_cloudwatch_accepts_is_accepted_and_nothing_else() {
        for days in 0..=4000 {
            let ok = config(&[("LOG_RETENTION_DAYS", &days.to_string())]).is_ok();
            assert_eq!(ok, RETENTION_DAYS_ALLOWED.contains(&days), "{days}");
        }
    }

    #[test]
    fn invalid_retention_names_the_variable_and_the_allowed_values() {
        let err = config(&[("LOG_RETENTION_DAYS", "2")]).unwrap_err().to_string();
        assert!(
            err.starts_with("invalid configuration: LOG_RETENTION_DAYS=\"2\": allowed: 1, 3, 5, 7, 14, 30"),
            "{err}"
        );
        assert!(err.ends_with("3288, 3653"), "{err}");
        assert!(config(&[("LOG_RETENTION_DAYS", "thirty")]).is_err());
    }

    #[test]
    fn other_variables_are_validated() {
        assert!(config(&[("DRY_RUN", "maybe")]).is_err());
        assert!(config(&[("LOG_KMS_KEY_ARN", "my-key")]).is_err());
        assert!(config(&[("SWEEP_CONCURRENCY", "0")]).is_err());
        let c = config(&[("CLUSTERS", "prod,staging"), ("DRY_RUN", "true")]).unwrap();
        assert_eq!(c.clusters, ["prod", "staging"]);
        assert!(c.dry_run);
    }
}
