use autopilot::aws::{cold_start, ecr::EcrAdapter, ecs::EcsAdapter};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use quota_scan::{handle, Config, Deps};

/// Wiring only: cold start (tracing, config, SDK), adapters, the handler.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let start = cold_start(Config::from_env).await?;
    let deps = Deps {
        ecs: Box::new(EcsAdapter::new(&start.sdk, &start.api_calls)),
        ecr: Box::new(EcrAdapter::new(&start.sdk, &start.api_calls)),
        config: start.config,
        region: start.region,
        api_calls: start.api_calls,
    };
    run(service_fn(|event: LambdaEvent<serde_json::Value>| handle(&deps, event.payload))).await
}
