use autopilot::aws::{cold_start, ecs::EcsAdapter, logs::LogsAdapter};
use autopilot::deadline::Deadline;
use autopilot::payload::Payload;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use log_groups::{invoke, Config, Deps};

/// Wiring only: cold start (tracing, config, SDK), adapters, the handler.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let start = cold_start(Config::from_env).await?;
    let deps = Deps {
        ecs: Box::new(EcsAdapter::new(&start.sdk, &start.api_calls)),
        logs: Box::new(LogsAdapter::new(&start.sdk, &start.api_calls)),
        config: start.config,
        region: start.region,
        api_calls: start.api_calls,
    };
    run(service_fn(|event: LambdaEvent<Payload>| {
        let deadline = Deadline::from_epoch_ms(event.context.deadline, deps.config.deadline_margin);
        invoke(&deps, event.payload.into_value(), deadline)
    }))
    .await
}
