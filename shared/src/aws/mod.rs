//! Adapters: the ports implemented on the AWS SDK for Rust.
//!
//! One SDK configuration per cold start ([`load_config`], built from the
//! environment without aws-config's default chains) builds every client.
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

use aws_config::retry::{RetryConfig, RetryMode};
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
    if let Some(bundle) = ca_bundle_only(|name| std::env::var(name).ok(), || openssl_probe::probe().cert_file) {
        // Read by the HTTPS client when it loads the trust store, after this.
        // Sound: the functions' `main` runs a current-thread runtime and calls
        // this first, so no other thread reads the environment yet (Rust
        // 2024 makes `set_var` unsafe for that reason).
        std::env::set_var("SSL_CERT_FILE", &bundle);
    }
    let sdk = load_config().inspect_err(|e| tracing::error!(error = %e, "cold start failed"))?;
    let region = sdk.region().map(ToString::to_string).ok_or("AWS_REGION is not set")?;
    Ok(ColdStart { config, sdk, region, api_calls: ApiCalls::default() })
}

/// The system's CA bundle, to trust alone, unless `SSL_CERT_FILE` or
/// `SSL_CERT_DIR` says which certificates to trust (`var`): the first file
/// of `probe` (openssl-probe's list of the bundles distributions keep, e.g.
/// AL2023's `/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem`, Debian's
/// `/etc/ssl/certs/ca-certificates.crt`). `None`: the HTTPS client chooses,
/// as before.
///
/// Why: with neither variable set, the client (rustls-native-certs) reads
/// the bundle and then every file of the certificate directories, which hold
/// the same certificates one per file beside their hash links (Debian's
/// `/etc/ssl/certs` does, and AL2023's is reported to, golang/go#79018). Parsing them all again
/// was half of every cold start (README, "Benchmarks"). OpenSSL itself
/// reads a certificate directory only to look up a hash link on demand; the
/// distributions' tools (`update-ca-trust`, `update-ca-certificates`) write
/// the bundle and the directory from the same list. To trust a directory
/// too, set `SSL_CERT_DIR` (and `SSL_CERT_FILE` for the bundle).
pub fn ca_bundle_only(
    var: impl Fn(&str) -> Option<String>,
    probe: impl FnOnce() -> Option<std::path::PathBuf>,
) -> Option<std::path::PathBuf> {
    let chosen = |name: &str| var(name).is_some_and(|v| !v.is_empty());
    if chosen("SSL_CERT_FILE") || chosen("SSL_CERT_DIR") {
        return None;
    }
    probe()
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

/// Builds the shared SDK configuration once per cold start, from the
/// environment alone. See [`sdk_config`].
pub fn load_config() -> Result<SdkConfig, crate::Error> {
    let vars = std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    sdk_config(vars)
}

/// The SDK configuration, built by hand from environment variables (`vars`,
/// the process environment in [`load_config`]).
///
/// Not `aws_config::defaults(..).load()`: its default chains link an IMDS
/// client, the shared config/credentials file parser, STS (web identity,
/// assume role) and more, 0.55 MB of prune-images' bootstrap (README,
/// "Binary size"), for sources Lambda never uses. What is read, as aws-config reads
/// it from the environment:
/// - region: `AWS_REGION`, then `AWS_DEFAULT_REGION`;
/// - credentials: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
///   `AWS_SESSION_TOKEN`, how Lambda provides them (aws-config's own
///   environment provider), behind a lazy identity cache;
/// - endpoints: `AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_<SERVICE>` (e.g.
///   `AWS_ENDPOINT_URL_ECS`, `AWS_ENDPOINT_URL_CLOUDWATCH_LOGS`), unless
///   `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`;
/// - retries: [`retry_config`];
/// - `AWS_USE_FIPS_ENDPOINT`, `AWS_USE_DUALSTACK_ENDPOINT` (`true`/`false`)
///   and `AWS_SDK_UA_APP_ID`;
/// - aws-config's default connect timeout (3.1 s), the tokio sleep and the
///   system clock, [`https_client`], `BehaviorVersion::latest()`.
///
/// Not read: profile files (`AWS_PROFILE`, `AWS_CONFIG_FILE`), IMDS, web
/// identity, SSO and the container credentials endpoint
/// (`AWS_CONTAINER_CREDENTIALS_*`: measured at 62 KB of prune-images, for a
/// source Lambda does not use), and the rarely used request-compression, checksum,
/// account-ID-endpoint and auth-scheme variables (the SDK's defaults apply).
/// An empty variable counts as unset. A value we cannot use is an
/// [`crate::Error::Config`] naming the variable, where aws-config panicked
/// (retries) or logged and ignored it (booleans).
pub fn sdk_config(vars: impl IntoIterator<Item = (String, String)>) -> Result<SdkConfig, crate::Error> {
    use aws_config::environment::EnvironmentVariableCredentialsProvider;

    let env = EnvVars(vars.into_iter().filter(|(_, v)| !v.is_empty()).collect());
    let var = |name: &str| env.0.get(name).cloned();
    let http = https_client();
    let sleep = aws_smithy_async::rt::sleep::default_async_sleep();
    let time = aws_smithy_async::time::SharedTimeSource::default();

    let region = var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")).map(aws_config::Region::new);
    let credentials = EnvironmentVariableCredentialsProvider::new();
    let app_name = match var("AWS_SDK_UA_APP_ID") {
        None => None,
        Some(value) => {
            Some(aws_config::AppName::new(value.clone()).map_err(|e| invalid("AWS_SDK_UA_APP_ID", value, e))?)
        }
    };
    let ignore_endpoints = flag(var, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")?.unwrap_or(false);
    let endpoint_url = if ignore_endpoints { None } else { var("AWS_ENDPOINT_URL") };

    let mut builder = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(http)
        .time_source(time)
        .retry_config(retry_config(var)?)
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(std::time::Duration::from_millis(3100))
                .build(),
        )
        .identity_cache(aws_config::identity::IdentityCache::lazy().build())
        .credentials_provider(aws_sdk_ecs::config::SharedCredentialsProvider::new(credentials))
        .service_config(ServiceEndpoints { vars: env.clone(), ignore: ignore_endpoints });
    builder.set_region(region);
    builder.set_sleep_impl(sleep);
    builder.set_endpoint_url(endpoint_url);
    builder.set_app_name(app_name);
    builder.set_use_fips(flag(var, "AWS_USE_FIPS_ENDPOINT")?);
    builder.set_use_dual_stack(flag(var, "AWS_USE_DUALSTACK_ENDPOINT")?);
    Ok(builder.build())
}

/// The environment [`sdk_config`] read, empty values left out.
#[derive(Clone, Debug)]
struct EnvVars(std::collections::BTreeMap<String, String>);

/// The per-service settings each SDK client asks its `SdkConfig` for when it
/// is built: today only its endpoint, `AWS_ENDPOINT_URL_<SERVICE ID>` (the
/// service ID upper-cased, spaces as `_`) before `AWS_ENDPOINT_URL`, as
/// aws-config's environment lookup does.
#[derive(Debug)]
struct ServiceEndpoints {
    vars: EnvVars,
    ignore: bool,
}

impl aws_types::service_config::LoadServiceConfig for ServiceEndpoints {
    fn load_config(&self, key: aws_types::service_config::ServiceConfigKey<'_>) -> Option<String> {
        if self.ignore && key.env() == "AWS_ENDPOINT_URL" {
            return None;
        }
        let specific = format!("{}_{}", key.env(), key.service_id().to_uppercase().replace(' ', "_"));
        self.vars.0.get(&specific).or_else(|| self.vars.0.get(key.env())).cloned()
    }
}

fn invalid(variable: &'static str, value: String, problem: impl std::fmt::Display) -> crate::Error {
    crate::Error::Config { variable, value, problem: problem.to_string() }
}

/// A `true`/`false` variable (any case), as aws-config parses them.
fn flag(var: impl Fn(&str) -> Option<String>, name: &'static str) -> Result<Option<bool>, crate::Error> {
    match var(name) {
        None => Ok(None),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(v) => Err(invalid(name, v, "expected true or false")),
    }
}

/// Retries: standard mode (exponential backoff with jitter; throttling, 5xx
/// and timeouts retried), [`DEFAULT_MAX_ATTEMPTS`] attempts.
/// `AWS_RETRY_MODE` (`standard`, `adaptive`, or `legacy`: the other SDKs'
/// older mode, which the SDK for Rust does not have, so `standard` here) and
/// `AWS_MAX_ATTEMPTS` (a whole number, at least 1)
/// override them, independently; any other value is an error naming the
/// variable. `AWS_NEW_RETRIES_2026=true` selects the SDK's retry behaviour
/// 2.1, as aws-config does.
///
/// Not adaptive mode by default, measured: adaptive adds a client-side rate
/// limiter that, after a throttle, refills at a share of the rate it had
/// measured. These functions make short bursts of calls, so that measured
/// rate is low, and with one throttle on the first call of each operation
/// (the fault matrix's case) the limiter fell to its floor and a
/// two-repository quota-scan passed the harness's 120 s invoke timeout; in
/// standard mode the same case finishes within the test's 45 s. The request
/// rate is bounded instead by `SWEEP_CONCURRENCY` and the work queue's
/// `FanOutConcurrency`.
pub fn retry_config(var: impl Fn(&str) -> Option<String>) -> Result<RetryConfig, crate::Error> {
    let mode = match var("AWS_RETRY_MODE") {
        None => RetryMode::Standard,
        Some(v) if ["standard", "legacy"].iter().any(|m| v.trim().eq_ignore_ascii_case(m)) => RetryMode::Standard,
        Some(v) if v.trim().eq_ignore_ascii_case("adaptive") => RetryMode::Adaptive,
        Some(v) => return Err(invalid("AWS_RETRY_MODE", v, "expected standard, adaptive or legacy")),
    };
    let attempts = match var("AWS_MAX_ATTEMPTS") {
        None => DEFAULT_MAX_ATTEMPTS,
        Some(value) => match value.trim().parse::<u32>() {
            Ok(n) if n >= 1 => n,
            _ => return Err(invalid("AWS_MAX_ATTEMPTS", value, "expected a whole number of attempts, at least 1")),
        },
    };
    let mut retry = RetryConfig::standard().with_retry_mode(mode).with_max_attempts(attempts);
    if var("AWS_NEW_RETRIES_2026").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        retry = retry.with_retry_spec(aws_smithy_types::retry::RetrySpec::v2_1());
    }
    Ok(retry)
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

    fn env(set: &[(&str, &str)]) -> Vec<(String, String)> {
        set.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_system_bundle_alone_is_trusted_unless_a_certificate_variable_chooses() {
        let bundle = || Some(std::path::PathBuf::from("/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem"));
        assert_eq!(ca_bundle_only(vars(&[]), bundle), bundle());
        // An empty variable counts as unset, as everywhere in the configuration.
        assert_eq!(ca_bundle_only(vars(&[("SSL_CERT_FILE", ""), ("SSL_CERT_DIR", "")]), bundle), bundle());
        // Either variable is the user's choice, left to the HTTPS client as is.
        assert_eq!(ca_bundle_only(vars(&[("SSL_CERT_FILE", "/opt/corp/ca.pem")]), bundle), None);
        assert_eq!(ca_bundle_only(vars(&[("SSL_CERT_DIR", "/opt/corp/certs")]), bundle), None);
        // No bundle found: the HTTPS client looks where it always has.
        assert_eq!(ca_bundle_only(vars(&[]), || None), None);
    }

    /// The configuration from [`sdk_config`], with fixed credentials (the
    /// process environment of a unit test has none).
    fn configured(set: &[(&str, &str)]) -> SdkConfig {
        sdk_config(env(set))
            .expect("valid")
            .to_builder()
            .credentials_provider(aws_sdk_ecs::config::SharedCredentialsProvider::new(
                aws_sdk_ecs::config::Credentials::new("k", "s", None, None, "test"),
            ))
            .build()
    }

    /// The SDK crates are built without a default HTTP client: this checks
    /// that the configuration [`sdk_config`] builds really sends (to a closed
    /// loopback port: a connection failure, not "no HTTP client").
    #[tokio::test]
    async fn the_https_client_dials_out() {
        let sdk = configured(&[
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", "https://127.0.0.1:9"),
            ("AWS_MAX_ATTEMPTS", "1"),
        ]);
        let error = aws_sdk_ecs::Client::new(&sdk).list_clusters().send().await.expect_err("nothing listens there");
        assert!(matches!(error, SdkError::DispatchFailure(_)), "{error:?}");
        let classified = classify("ListClusters", error);
        assert!(classified.retryable);
    }

    /// `AWS_ENDPOINT_URL_ECS` wins over `AWS_ENDPOINT_URL` for the ECS
    /// client: the call reaches the listener it names.
    #[tokio::test]
    async fn a_service_endpoint_variable_wins_over_the_global_one() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let sdk = configured(&[
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
            ("AWS_ENDPOINT_URL_ECS", &format!("http://127.0.0.1:{port}")),
            ("AWS_MAX_ATTEMPTS", "1"),
        ]);
        let call = tokio::spawn(async move { aws_sdk_ecs::Client::new(&sdk).list_clusters().send().await });
        let accepted = tokio::time::timeout(std::time::Duration::from_secs(10), listener.accept()).await;
        assert!(matches!(accepted, Ok(Ok(_))), "no connection to AWS_ENDPOINT_URL_ECS: {accepted:?}");
        call.abort();
    }

    #[test]
    fn service_ids_with_spaces_name_their_endpoint_variable_with_underscores() {
        use aws_types::service_config::{LoadServiceConfig, ServiceConfigKey};
        let key = |service| {
            ServiceConfigKey::builder()
                .service_id(service)
                .env("AWS_ENDPOINT_URL")
                .profile("endpoint_url")
                .build()
                .unwrap()
        };
        let vars = EnvVars(
            env(&[("AWS_ENDPOINT_URL", "http://all"), ("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS", "http://logs")])
                .into_iter()
                .collect(),
        );
        let endpoints = ServiceEndpoints { vars: vars.clone(), ignore: false };
        assert_eq!(endpoints.load_config(key("CloudWatch Logs")).as_deref(), Some("http://logs"));
        assert_eq!(endpoints.load_config(key("ECS")).as_deref(), Some("http://all"));
        let ignored = ServiceEndpoints { vars, ignore: true };
        assert_eq!(ignored.load_config(key("CloudWatch Logs")), None);
    }

    #[test]
    fn region_comes_from_aws_region_then_aws_default_region() {
        let region = |set: &[(&str, &str)]| sdk_config(env(set)).expect("valid").region().map(ToString::to_string);
        assert_eq!(
            region(&[("AWS_REGION", "eu-west-1"), ("AWS_DEFAULT_REGION", "us-east-2")]).as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(region(&[("AWS_REGION", ""), ("AWS_DEFAULT_REGION", "us-east-2")]).as_deref(), Some("us-east-2"));
        assert_eq!(region(&[]), None);
    }

    #[test]
    fn the_configuration_carries_what_every_client_needs() {
        let sdk = sdk_config(env(&[
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
            ("AWS_USE_FIPS_ENDPOINT", "TRUE"),
            ("AWS_SDK_UA_APP_ID", "autopilot"),
        ]))
        .expect("valid");
        assert!(sdk.credentials_provider().is_some() && sdk.identity_cache().is_some());
        assert!(sdk.http_client().is_some() && sdk.sleep_impl().is_some() && sdk.time_source().is_some());
        assert_eq!(sdk.behavior_version(), Some(BehaviorVersion::latest()));
        assert_eq!(sdk.endpoint_url(), Some("http://127.0.0.1:5000"));
        assert_eq!(sdk.use_fips(), Some(true));
        assert_eq!(sdk.use_dual_stack(), None);
        assert_eq!(sdk.app_name().map(|a| a.to_string()).as_deref(), Some("autopilot"));
        assert_eq!(
            sdk.timeout_config().and_then(|t| t.connect_timeout()),
            Some(std::time::Duration::from_millis(3100))
        );
        let ignored =
            sdk_config(env(&[("AWS_ENDPOINT_URL", "http://x"), ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")]));
        assert_eq!(ignored.expect("valid").endpoint_url(), None);
    }

    #[test]
    fn a_bad_variable_is_an_error_that_names_it() {
        for (name, value) in [
            ("AWS_USE_FIPS_ENDPOINT", "yes"),
            ("AWS_USE_DUALSTACK_ENDPOINT", "1"),
            ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "on"),
            ("AWS_RETRY_MODE", "fast"),
            ("AWS_MAX_ATTEMPTS", "0"),
        ] {
            match sdk_config(env(&[(name, value)])) {
                Err(crate::Error::Config { variable, value: v, .. }) => {
                    assert_eq!((variable, v.as_str()), (name, value))
                }
                other => panic!("{name}={value}: {:?}", other.map(|_| ())),
            }
        }
    }

    #[test]
    fn retries_are_standard_with_five_attempts_by_default() {
        let retry = retry_config(vars(&[])).expect("valid");
        assert_eq!(retry.mode(), RetryMode::Standard);
        assert_eq!(retry.max_attempts(), DEFAULT_MAX_ATTEMPTS);
    }

    #[test]
    fn max_attempts_from_the_environment_keeps_standard_mode() {
        let retry = retry_config(vars(&[("AWS_MAX_ATTEMPTS", " 2 ")])).expect("valid");
        assert_eq!((retry.mode(), retry.max_attempts()), (RetryMode::Standard, 2));
    }

    #[test]
    fn the_retry_mode_and_the_attempts_are_read_independently() {
        let retry = |set: &[(&str, &str)]| {
            let r = retry_config(vars(set)).expect("valid");
            (r.mode(), r.max_attempts())
        };
        assert_eq!(retry(&[("AWS_RETRY_MODE", "adaptive")]), (RetryMode::Adaptive, DEFAULT_MAX_ATTEMPTS));
        assert_eq!(retry(&[("AWS_RETRY_MODE", "Adaptive"), ("AWS_MAX_ATTEMPTS", "3")]), (RetryMode::Adaptive, 3));
        assert_eq!(retry(&[("AWS_RETRY_MODE", "legacy")]), (RetryMode::Standard, DEFAULT_MAX_ATTEMPTS));
        assert_eq!(retry(&[("AWS_RETRY_MODE", "standard"), ("AWS_MAX_ATTEMPTS", "7")]), (RetryMode::Standard, 7));
    }

    #[test]
    fn an_unknown_retry_mode_or_an_odd_attempt_count_is_refused() {
        for (name, value) in [
            ("AWS_RETRY_MODE", "fast"),
            ("AWS_MAX_ATTEMPTS", "0"),
            ("AWS_MAX_ATTEMPTS", "many"),
            ("AWS_MAX_ATTEMPTS", "-1"),
        ] {
            match retry_config(vars(&[(name, value)])) {
                Err(crate::Error::Config { variable, .. }) => assert_eq!(variable, name),
                other => panic!("{name}={value}: {other:?}"),
            }
        }
    }
}
