//! Adapters: the ports implemented on the AWS SDK for Rust.
//!
//! One `aws_config` load per cold start ([`load_config`]) builds every client.
//! It honours `AWS_ENDPOINT_URL` (and the per-service `AWS_ENDPOINT_URL_ECS`,
//! …) like every SDK, so the same binary talks to moto in tests and to AWS in
//! production. Errors are classified once, here, into [`AwsError`].

#[cfg(any(test, feature = "ecr"))]
pub mod blob;
#[cfg(any(test, feature = "ecr"))]
pub mod ecr;
pub mod ecs;
#[cfg(any(test, feature = "in-use-sources"))]
pub mod events;
#[cfg(any(test, feature = "in-use-sources"))]
pub mod lambda;
#[cfg(any(test, feature = "logs"))]
pub mod logs;
#[cfg(any(test, feature = "in-use-sources"))]
pub mod scheduler;
#[cfg(any(test, feature = "sns"))]
pub mod sns;
#[cfg(any(test, feature = "queue"))]
pub mod sqs;

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_ecs::error::ProvideErrorMetadata;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;

use crate::AwsError;

/// Attempts per call (first try included) unless `AWS_MAX_ATTEMPTS` says
/// otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// What every function's `main` needs after a cold start: its validated
/// configuration, the one SDK configuration, its region and the call counter
/// its adapters share.
pub struct ColdStart<C> {
    pub config: C,
    pub sdk: SdkConfig,
    pub region: String,
    pub api_calls: ApiCalls,
}

/// Tracing, then the configuration (a bad variable stops the cold start with
/// an error naming it, logged first), then one aws-config load.
pub async fn cold_start<C>(
    config: impl FnOnce() -> Result<C, crate::Error>,
) -> Result<ColdStart<C>, lambda_runtime::Error> {
    crate::telemetry::init_tracing();
    let config = config().inspect_err(|e| tracing::error!(error = %e, "cold start failed"))?;
    let sdk = load_config().await;
    let region = sdk.region().map(ToString::to_string).ok_or("AWS_REGION is not set")?;
    Ok(ColdStart { config, sdk, region, api_calls: ApiCalls::default() })
}

/// The HTTPS client every SDK client shares: the SDK's own (hyper, rustls),
/// with ring as rustls's crypto provider. The SDK crates are built without
/// `default-https-client`, whose aws-lc provider made every bootstrap about
/// a megabyte larger (README, "Binary size"); so a configuration that is not
/// given this client has none, and its first call fails saying so.
pub fn https_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// Loads the shared SDK configuration once per cold start.
pub async fn load_config() -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(https_client());
    if let Some(retry) = retry_config(|name| std::env::var(name).ok()) {
        loader = loader.retry_config(retry);
    }
    loader.load().await
}

/// Standard retry mode (exponential backoff with jitter; throttling, 5xx and
/// timeouts retried), [`DEFAULT_MAX_ATTEMPTS`] attempts or `AWS_MAX_ATTEMPTS`.
///
/// Not adaptive mode, measured: adaptive adds a client-side rate limiter
/// that, after a throttle, refills at a share of the rate it had measured.
/// These functions make short bursts of calls, so that measured rate is
/// low, and with one throttle on the first call of each operation (the
/// fault matrix's case) the limiter fell to its floor and a two-repository
/// quota-scan passed the harness's 120 s invoke timeout; in standard mode
/// the same case finishes within the test's 45 s. The request rate is
/// bounded instead by `SWEEP_CONCURRENCY` and the work queue's
/// `FanOutConcurrency`. `AWS_RETRY_MODE=adaptive` still selects it.
/// `None` leaves retries to aws-config's own reading of the environment: when
/// `AWS_RETRY_MODE` is set, or `AWS_MAX_ATTEMPTS` is not a number aws-config
/// accepts (it reports that itself).
pub fn retry_config(var: impl Fn(&str) -> Option<String>) -> Option<RetryConfig> {
    if var("AWS_RETRY_MODE").is_some() {
        return None;
    }
    let attempts = match var("AWS_MAX_ATTEMPTS") {
        None => DEFAULT_MAX_ATTEMPTS,
        Some(value) => match value.trim().parse::<u32>() {
            Ok(n) if n >= 1 => n,
            _ => return None,
        },
    };
    Some(RetryConfig::standard().with_max_attempts(attempts))
}

/// Error codes that mean "try again later", for calls whose SDK retries are
/// already exhausted when we see them.
const TRANSIENT_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "ServerException",
    "InternalFailure",
    "OperationAbortedException",
    "RequestTimeout",
];

/// Turns an SDK error into our [`AwsError`], keeping it as the source.
pub(crate) fn classify<E>(operation: &'static str, error: SdkError<E, HttpResponse>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let code = error.code().map(String::from);
    let retryable = match &error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(ctx) => {
            ctx.raw().status().is_server_error() || code.as_deref().is_some_and(|c| TRANSIENT_CODES.contains(&c))
        }
        _ => false,
    };
    let message = match error.message() {
        Some(m) => m.to_string(),
        None => error_chain(&error),
    };
    AwsError { operation, code, message, retryable, source: Some(Box::new(error)) }
}

/// The full error chain on one line, for errors that carry no service message
/// (timeouts, connection failures).
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// Counts every HTTP attempt per operation (each page and each retry is one),
/// through an SDK interceptor on every client. Reports give the per-invocation
/// figures, so "how many calls did that cost" is answered by the run itself.
#[derive(Clone, Debug, Default)]
pub struct ApiCalls(std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>>);

impl ApiCalls {
    pub fn snapshot(&self) -> std::collections::BTreeMap<String, u64> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Calls made since `before` (a [`ApiCalls::snapshot`]).
    pub fn since(&self, before: &std::collections::BTreeMap<String, u64>) -> std::collections::BTreeMap<String, u64> {
        self.snapshot()
            .into_iter()
            .map(|(op, n)| {
                let earlier = before.get(&op).copied().unwrap_or(0);
                (op, n - earlier)
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

impl aws_smithy_runtime_api::client::interceptors::Intercept for ApiCalls {
    fn name(&self) -> &'static str {
        "ApiCalls"
    }

    fn read_before_transmit(
        &self,
        _context: &aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_sdk_ecs::config::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let operation = cfg
            .load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
            .map(|m| m.name().to_string())
            .unwrap_or_else(|| "unknown".into());
        if let Ok(mut counts) = self.0.lock() {
            *counts.entry(operation).or_default() += 1;
        }
        Ok(())
    }
}

/// The sources of "in use" in each region, on the AWS SDK: one client per
/// service and region, all from the one SDK configuration.
#[cfg(any(test, feature = "in-use-sources"))]
pub fn in_use_sources(
    sdk: &SdkConfig,
    calls: &ApiCalls,
    regions: &[String],
    concurrency: usize,
) -> crate::in_use::readers::Sources {
    let regions = regions
        .iter()
        .map(|region| {
            let r = Some(region.as_str());
            crate::in_use::readers::RegionSources {
                region: region.clone(),
                ecs: Box::new(ecs::EcsAdapter::in_region(sdk, calls, r)),
                rules: Box::new(events::EventBridgeAdapter::new(sdk, calls, r)),
                schedules: Box::new(scheduler::SchedulerAdapter::new(sdk, calls, r)),
                functions: Box::new(lambda::LambdaAdapter::new(sdk, calls, r)),
            }
        })
        .collect();
    crate::in_use::readers::Sources { regions, concurrency }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_config::retry::RetryMode;

    fn vars<'a>(set: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| set.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    /// The SDK crates are built without a default HTTP client: this checks
    /// that a configuration given [`https_client`] really sends (to a closed
    /// loopback port: a connection failure, not "no HTTP client").
    #[tokio::test]
    async fn the_https_client_dials_out() {
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .http_client(https_client())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_ecs::config::Credentials::new("k", "s", None, None, "test"))
            .endpoint_url("https://127.0.0.1:9")
            .retry_config(RetryConfig::disabled())
            .load()
            .await;
        let error = aws_sdk_ecs::Client::new(&sdk).list_clusters().send().await.expect_err("nothing listens there");
        assert!(matches!(error, SdkError::DispatchFailure(_)), "{error:?}");
        let classified = classify("ListClusters", error);
        assert!(classified.retryable);
    }

    #[test]
    fn retries_are_standard_with_five_attempts_by_default() {
        let retry = retry_config(vars(&[])).expect("ours");
        assert_eq!(retry.mode(), RetryMode::Standard);
        assert_eq!(retry.max_attempts(), DEFAULT_MAX_ATTEMPTS);
    }

    #[test]
    fn max_attempts_from_the_environment_keeps_standard_mode() {
        let retry = retry_config(vars(&[("AWS_MAX_ATTEMPTS", "2")])).expect("ours");
        assert_eq!((retry.mode(), retry.max_attempts()), (RetryMode::Standard, 2));
    }

    #[test]
    fn an_explicit_retry_mode_or_an_odd_attempt_count_is_left_to_aws_config() {
        assert!(retry_config(vars(&[("AWS_RETRY_MODE", "standard")])).is_none());
        assert!(retry_config(vars(&[("AWS_MAX_ATTEMPTS", "0")])).is_none());
        assert!(retry_config(vars(&[("AWS_MAX_ATTEMPTS", "many")])).is_none());
    }
}
