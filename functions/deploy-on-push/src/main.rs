use autopilot::aws::{cold_start, ecr::EcrAdapter, ecs::EcsAdapter, logs::LogsAdapter, sns::SnsNotifier};
use autopilot::deadline::Deadline;
use autopilot::payload::Payload;
use autopilot::ports::Notifier;
use deploy_on_push::{invoke, Config, Deps};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

/// Wiring only: cold start (tracing, config, SDK), adapters, the handler.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let start = cold_start(Config::from_env).await?;
    let deps = Deps {
        ecs: Box::new(EcsAdapter::new(&start.sdk, &start.api_calls)),
        ecr: Box::new(EcrAdapter::new(&start.sdk, &start.api_calls)),
        logs: Box::new(LogsAdapter::new(&start.sdk, &start.api_calls)),
        notifier: start
            .config
            .alarm_topic_arn
            .as_deref()
            .map(|topic| Box::new(SnsNotifier::new(&start.sdk, &start.api_calls, topic)) as Box<dyn Notifier>),
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
