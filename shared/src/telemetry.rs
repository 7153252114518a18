//! Logs and metrics.
//!
//! Logs go through `tracing`, as JSON when Lambda's `LoggingConfig.LogFormat`
//! is `JSON` (it sets `AWS_LAMBDA_LOG_FORMAT`). Metrics are CloudWatch Embedded
//! Metric Format documents: one JSON line on stdout each, turned into metrics
//! by CloudWatch Logs, so publishing them costs no API call.

use std::io::Write;

use serde_json::{json, Map, Value};

/// CloudWatch's limit of metrics per EMF directive.
pub const MAX_METRICS_PER_DOCUMENT: usize = 100;
/// CloudWatch's limit of keys per EMF dimension set.
pub const MAX_DIMENSIONS: usize = 30;

/// JSON logs when the runtime asks for them; level from `AWS_LAMBDA_LOG_LEVEL`
/// or `RUST_LOG`. What `lambda_runtime::tracing::init_default_subscriber` does,
/// without tracing-subscriber's `env-filter` (README, "Binary size"):
/// `RUST_LOG` takes a level and `target=level` directives, not span or field
/// filters. Never colours: Lambda's log lines are read in CloudWatch.
pub fn init_tracing() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    let var = |name: &str| std::env::var(name).ok();
    let filter = log_filter(var("AWS_LAMBDA_LOG_LEVEL").as_deref(), var("RUST_LOG").as_deref());
    let json = var("AWS_LAMBDA_LOG_FORMAT").is_some_and(|f| f.eq_ignore_ascii_case("json"));
    let text = tracing_subscriber::fmt::layer().with_target(false).without_time().with_ansi(false);
    let layer = if json { text.json().boxed() } else { text.boxed() };
    // Err only if a subscriber is already set (a test's): keep that one.
    let _ = tracing_subscriber::registry().with(layer.with_filter(filter)).try_init();
}

/// The log filter: `RUST_LOG`'s directives (`info`, `autopilot=debug,warn`),
/// under `AWS_LAMBDA_LOG_LEVEL` as the default level when Lambda's logging
/// controls set it; `info` when neither says otherwise. Lambda's `FATAL` is
/// `error` here.
pub fn log_filter(lambda_level: Option<&str>, rust_log: Option<&str>) -> tracing_subscriber::filter::Targets {
    use std::str::FromStr;
    use tracing_subscriber::filter::{LevelFilter, Targets};

    let level = |s: &str| match s.trim() {
        l if l.eq_ignore_ascii_case("fatal") => Some(LevelFilter::ERROR),
        l => LevelFilter::from_str(l).ok(),
    };
    let directives = rust_log.and_then(|r| Targets::from_str(r).ok()).unwrap_or_default();
    let default = lambda_level.and_then(level).or_else(|| directives.default_level()).unwrap_or(LevelFilter::INFO);
    directives.with_default(default)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Count,
    Bytes,
    Percent,
    Milliseconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Bytes => "Bytes",
            Unit::Percent => "Percent",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// The metrics of one dimension set. [`Metrics::documents`] renders them as
/// EMF, split so no directive exceeds CloudWatch's limits.
#[derive(Clone, Debug)]
pub struct Metrics {
    namespace: String,
    dimensions: Vec<(String, String)>,
    values: Vec<(String, f64, Unit)>,
    properties: Map<String, Value>,
}

impl Metrics {
    pub fn new(namespace: impl Into<String>) -> Self {
        Metrics { namespace: namespace.into(), dimensions: Vec::new(), values: Vec::new(), properties: Map::new() }
    }

    /// Adds a dimension; past [`MAX_DIMENSIONS`] further ones are ignored.
    pub fn dimension(mut self, key: &str, value: &str) -> Self {
        if self.dimensions.len() < MAX_DIMENSIONS {
            self.dimensions.push((key.into(), value.into()));
        }
        self
    }

    pub fn put(&mut self, name: &str, value: f64, unit: Unit) -> &mut Self {
        self.values.push((name.into(), value, unit));
        self
    }

    /// A searchable field in the log line that is not a metric.
    pub fn property(&mut self, key: &str, value: Value) -> &mut Self {
        self.properties.insert(key.into(), value);
        self
    }

    /// The EMF documents, each at most [`MAX_METRICS_PER_DOCUMENT`] metrics.
    pub fn documents(&self, timestamp_ms: u128) -> Vec<Value> {
        let dimension_keys: Vec<&str> = self.dimensions.iter().map(|(k, _)| k.as_str()).collect();
        self.values
            .chunks(MAX_METRICS_PER_DOCUMENT)
            .map(|chunk| {
                let mut doc = self.properties.clone();
                for (k, v) in &self.dimensions {
                    doc.insert(k.clone(), json!(v));
                }
                let definitions: Vec<Value> = chunk
                    .iter()
                    .map(|(name, value, unit)| {
                        doc.insert(name.clone(), json!(value));
                        json!({"Name": name, "Unit": unit.as_str()})
                    })
                    .collect();
                doc.insert(
                    "_aws".into(),
                    json!({
                        "Timestamp": timestamp_ms,
                        "CloudWatchMetrics": [{
                            "Namespace": self.namespace,
                            "Dimensions": [dimension_keys],
                            "Metrics": definitions,
                        }],
                    }),
                );
                Value::Object(doc)
            })
            .collect()
    }

    /// Writes the documents to stdout, one line each, stamped now.
    pub fn emit(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let mut out = std::io::stdout().lock();
        for doc in self.documents(now) {
            // A lost metrics line must not fail the invocation.
            let _ = writeln!(out, "{doc}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_level_comes_from_lambda_then_rust_log_then_info() {
        use tracing::Level;
        let info = log_filter(None, None);
        assert!(info.would_enable("autopilot", &Level::INFO) && !info.would_enable("autopilot", &Level::DEBUG));
        let rust_log = log_filter(None, Some("warn,autopilot=debug"));
        assert!(rust_log.would_enable("autopilot::prune", &Level::DEBUG));
        assert!(!rust_log.would_enable("aws_config", &Level::INFO), "default from RUST_LOG: warn");
        let lambda = log_filter(Some("DEBUG"), Some("warn,hyper=error"));
        assert!(lambda.would_enable("autopilot", &Level::DEBUG), "AWS_LAMBDA_LOG_LEVEL wins the default");
        assert!(!lambda.would_enable("hyper::proto", &Level::WARN), "RUST_LOG's target directives still apply");
        assert!(!log_filter(Some("FATAL"), None).would_enable("autopilot", &Level::WARN));
        assert!(log_filter(Some("nonsense"), Some("not=a=filter")).would_enable("autopilot", &Level::INFO));
    }

    #[test]
    fn document_has_the_emf_structure() {
        let mut m = Metrics::new("ECRAutopilot").dimension("Function", "log-groups");
        m.put("LogGroupsCreated", 2.0, Unit::Count);
        m.property("trigger", json!("schedule"));
        let docs = m.documents(1_700_000_000_000);
        assert_eq!(docs.len(), 1);
        let d = &docs[0];
        assert_eq!(d["Function"], "log-groups");
        assert_eq!(d["LogGroupsCreated"], 2.0);
        assert_eq!(d["trigger"], "schedule");
        let cw = &d["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(d["_aws"]["Timestamp"], 1_700_000_000_000u64);
        assert_eq!(cw["Namespace"], "ECRAutopilot");
        assert_eq!(cw["Dimensions"], json!([["Function"]]));
        assert_eq!(cw["Metrics"], json!([{"Name": "LogGroupsCreated", "Unit": "Count"}]));
    }

    #[test]
    fn more_than_100_metrics_split_into_documents() {
        let mut m = Metrics::new("N");
        for i in 0..250 {
            m.put(&format!("M{i}"), i as f64, Unit::Count);
        }
        let docs = m.documents(0);
        let sizes: Vec<usize> =
            docs.iter().map(|d| d["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().map_or(0, Vec::len)).collect();
        assert_eq!(sizes, [100, 100, 50]);
        assert_eq!(docs[2]["M249"], 249.0);
    }

    #[test]
    fn dimension_sets_are_capped() {
        let mut m = Metrics::new("N");
        for i in 0..40 {
            m = m.dimension(&format!("D{i}"), "v");
        }
        m.put("X", 1.0, Unit::Count);
        let docs = m.documents(0);
        let keys = docs[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0].as_array().map_or(0, Vec::len);
        assert_eq!(keys, MAX_DIMENSIONS);
    }
}
