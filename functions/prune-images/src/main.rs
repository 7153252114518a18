use autopilot::aws::{cold_start, ecr::EcrAdapter, in_use_sources, sqs::SqsWorkQueue};
use autopilot::deadline::Deadline;
use autopilot::in_use::protect_regions;
use autopilot::payload::Payload;
use autopilot::ports::WorkQueue;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use prune_images::{invoke, Config, Deps};

/// Wiring only: cold start (tracing, config, SDK), adapters, the handler.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let start = cold_start(Config::from_env).await?;
    let regions = protect_regions(&start.config.protect_regions, &start.region);
    let margin = start.config.fanout.deadline_margin;
    let deps = Deps {
        in_use: Box::new(in_use_sources(&start.sdk, &start.api_calls, &regions, start.config.concurrency)),
        ecr: Box::new(EcrAdapter::new(&start.sdk, &start.api_calls)),
        queue: start
            .config
            .fanout
            .work_queue_url
            .as_deref()
            .map(|url| Box::new(SqsWorkQueue::new(&start.sdk, &start.api_calls, url)) as Box<dyn WorkQueue>),
        config: start.config,
        region: start.region,
        api_calls: start.api_calls,
    };
    run(service_fn(|event: LambdaEvent<Payload>| {
        let deadline = Deadline::from_epoch_ms(event.context.deadline, margin);
        invoke(&deps, event.payload.into_value(), deadline)
    }))
    .await
}
