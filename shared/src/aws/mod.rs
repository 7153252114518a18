//! Adapters: the ports implemented on the AWS SDK for Rust.
//!
//! One `aws_config` load per cold start ([`load_config`]) builds every client.
//! It honours `AWS_ENDPOINT_URL` (and the per-service `AWS_ENDPOINT_URL_ECS`,
//! …) like every SDK, so the same binary talks to moto in tests and to AWS in
//! production. Errors are classified once, here, into [`AwsError`].

pub mod blob;
pub mod ecr;
pub mod ecs;
#[cfg(any(test, feature = "in-use-sources"))]
pub mod events;
#[cfg(any(test, feature = "in-use-sources"))]
pub mod lambda;
pub mod logs;
#[cfg(any(test, feature = "in-use-sources"))]
pub mod scheduler;
pub mod sns;

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_ecs::error::ProvideErrorMetadata;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;

use crate::AwsError;

/// Attempts per call (first try included) unless `AWS_MAX_ATTEMPTS` says
/// otherwise. Standard mode backs off exponentially with jitter, and retries
/// throttling, 5xx and timeouts.
const DEFAULT_MAX_ATTEMPTS: u32 = 5;

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

/// Loads the shared SDK configuration once per cold start.
pub async fn load_config() -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if std::env::var_os("AWS_MAX_ATTEMPTS").is_none() {
        loader = loader.retry_config(RetryConfig::standard().with_max_attempts(DEFAULT_MAX_ATTEMPTS));
    }
    loader.load().await
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
