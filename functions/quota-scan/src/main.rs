use autopilot::aws::{cold_start, ecr::EcrAdapter, in_use_sources};
use autopilot::in_use::protect_regions;
use autopilot::payload::Payload;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use quota_scan::{invoke, Config, Deps};

/// Wiring only: cold start (tracing, config, SDK), adapters, the handler.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let start = cold_start(Config::from_env).await?;
    let regions = protect_regions(&start.config.protect_regions, &start.region);
    let deps = Deps {
        in_use: Box::new(in_use_sources(&start.sdk, &start.api_calls, &regions, start.config.concurrency)),
        ecr: Box::new(EcrAdapter::new(&start.sdk, &start.api_calls)),
        policies: Box::new(EcrAdapter::new(&start.sdk, &start.api_calls)),
        config: start.config,
        region: start.region,
        api_calls: start.api_calls,
    };
    run(service_fn(|event: LambdaEvent<Payload>| invoke(&deps, event.payload.into_value()))).await
}
