use autopilot::aws::{ecr::EcrAdapter, ecs::EcsAdapter, load_config, ApiCalls};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use quota_scan::{handle, Config, Deps};

/// Wiring only: tracing, config, one SDK config load, clients, the handler.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    autopilot::telemetry::init_tracing();
    // A bad quota or threshold stops the cold start with a message naming it.
    let config = Config::from_env().inspect_err(|e| tracing::error!(error = %e, "cold start failed"))?;
    let sdk = load_config().await;
    let region = sdk.region().map(ToString::to_string).ok_or("AWS_REGION is not set")?;
    let api_calls = ApiCalls::default();
    let deps = Deps {
        config,
        region,
        ecs: Box::new(EcsAdapter::new(&sdk, &api_calls)),
        ecr: Box::new(EcrAdapter::new(&sdk, &api_calls)),
        api_calls,
    };
    run(service_fn(|event: LambdaEvent<serde_json::Value>| handle(&deps, event.payload))).await
}
