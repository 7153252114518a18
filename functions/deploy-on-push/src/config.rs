//! deploy-on-push configuration, read and validated once at cold start.

use autopilot::config::Vars;
use autopilot::Error;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `CLUSTERS`: comma-separated names or ARNs to look in; empty means all.
    pub clusters: Vec<String>,
    /// `DRY_RUN`: plan every rollout and write nothing.
    pub dry_run: bool,
    /// `SWEEP_CONCURRENCY`: AWS calls in flight during discovery.
    pub concurrency: usize,
    /// `DEADLINE_MARGIN_SECS`: with less left before the deadline, nothing new starts.
    pub deadline_margin: std::time::Duration,
    /// `LOG_RETENTION_DAYS`: retention for log groups a new revision needs.
    pub retention_days: i32,
    /// `LOG_KMS_KEY_ARN`: encrypts those log groups.
    pub kms_key_arn: Option<String>,
    /// `METRICS_NAMESPACE`: the CloudWatch namespace of our EMF metrics.
    pub metrics_namespace: String,
    /// `ALARM_TOPIC_ARN`: the SNS topic a failed or rolled-back rollout is
    /// reported to; unset means metrics only.
    pub alarm_topic_arn: Option<String>,
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
            clusters: vars.clusters()?,
            dry_run: vars.bool("DRY_RUN", false)?,
            concurrency: vars.sweep_concurrency()?,
            deadline_margin: vars.deadline_margin(autopilot::deadline::SHORT_MARGIN_SECS)?,
            retention_days: vars.log_retention_days()?,
            kms_key_arn: vars.arn("LOG_KMS_KEY_ARN", "kms")?,
            metrics_namespace: vars.metrics_namespace(),
            alarm_topic_arn: vars.arn("ALARM_TOPIC_ARN", "sns")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, Error> {
        Config::from_lookup(autopilot::config::lookup_from(pairs))
    }

    #[test]
    fn defaults_and_validation() {
        let c = config(&[]).expect("defaults");
        assert!(c.clusters.is_empty() && !c.dry_run && c.concurrency == 4 && c.retention_days == 30);
        assert!(config(&[("DRY_RUN", "1")]).unwrap_err().to_string().contains("DRY_RUN"));
        assert!(config(&[("LOG_RETENTION_DAYS", "10")]).unwrap_err().to_string().contains("LOG_RETENTION_DAYS"));
        assert_eq!(config(&[("CLUSTERS", "prod, staging")]).expect("ok").clusters, ["prod", "staging"]);
        let arn = "arn:aws:ecs:us-east-1:123456789012:cluster/prod";
        assert_eq!(config(&[("CLUSTERS", &format!(" {arn} ,\tstaging "))]).expect("ok").clusters, [arn, "staging"]);
        for bad in ["prod staging", "arn:aws:ecs:us-east-1:123456789012:service/prod/users", "a/b"] {
            assert!(config(&[("CLUSTERS", bad)]).unwrap_err().to_string().contains("CLUSTERS"), "{bad}");
        }
        assert!(config(&[("ALARM_TOPIC_ARN", "alarms")]).unwrap_err().to_string().contains("ALARM_TOPIC_ARN"));
    }
}
