//! End to end, prune-images at registry scale: the fan-out over its SQS work
//! queue and deadline awareness, with the real binary against the local AWS.
//!
//! The queue is moto's SQS (a work queue with a redrive policy to a
//! dead-letter queue). Lambda's event source mapping is not emulated by moto,
//! so [`EventSourceMapping`] stands in for it, doing what Lambda's SQS poller
//! does: receive one message (BatchSize 1), invoke the function with the SQS
//! event, delete the message unless the answer lists it in
//! `batchItemFailures`; a failed message reappears after the visibility
//! timeout, and moto moves it to the dead-letter queue after
//! `maxReceiveCount` receives.
//!
//! The invocation deadline comes from the tests' Runtime API proxy
//! ([`Lambda::start_with_timeout`]), since cargo-lambda sends none.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use autopilot_e2e::queue::EventSourceMapping;
use autopilot_e2e::world::World;
use autopilot_e2e::{enable_fake_clock, event, moto, serial, FaultProxy, Lambda};
use serde_json::{json, Value};

const POLICY: &str = r#"{"rules":[{"rulePriority":1,"description":"keep the newest image","selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#;
const DESCRIBE_IMAGES: &str = "AmazonEC2ContainerRegistry_V20150921.DescribeImages";

/// `count` repositories, each with an image pushed five days ago (tagged
/// `build-1`) and a newer one (`latest`, `build-2`): the policy expires the
/// old one in each.
async fn registry(world: &World, prefix: &str, count: usize) -> Vec<String> {
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}-{i:02}")).collect();
    for name in &names {
        world.repository(name).await;
    }
    moto().set_clock("-5d");
    for name in &names {
        world.push_image(name, &["build-1"], "arm64", &format!("{name}-old")).await;
    }
    moto().set_clock("+0d");
    for name in &names {
        world.push_image(name, &["latest", "build-2"], "arm64", &format!("{name}-new")).await;
    }
    names
}

/// Images left per repository.
async fn images_left(world: &World, names: &[String]) -> BTreeMap<String, usize> {
    let mut left = BTreeMap::new();
    for name in names {
        let out = world.ecr.describe_images().repository_name(name).send().await.expect("describe_images");
        left.insert(name.clone(), out.image_details().len());
    }
    left
}

/// A registry of 7 repositories in batches of 3: the schedule fans it out
/// (3 batches) and prunes nothing itself; the second batch delivered fails
/// once (DescribeImages answers 503 throughout its delivery) and comes back
/// alone; every repository ends pruned, no other batch ran twice, and
/// nothing is in the dead-letter queue.
#[tokio::test]
async fn a_registry_in_three_batches_is_pruned_whole_and_a_failed_batch_alone_is_retried() {
    let _serial = serial().await;
    enable_fake_clock();
    moto().reset();
    let world = World::new().await;
    let names = registry(&world, "fan", 7).await;
    let mapping = EventSourceMapping::create("prune-work", 3).await;
    let proxy = FaultProxy::start();
    let env = [
        ("PRUNE_POLICY", POLICY),
        ("PRUNE_DEFAULT_MODE", "on"),
        ("WORK_QUEUE_URL", mapping.url.as_str()),
        ("FANOUT_BATCH_SIZE", "3"),
        ("AWS_ENDPOINT_URL", proxy.endpoint.as_str()),
    ];
    let lambda = Lambda::start("prune-images", &env);

    let summary = lambda.invoke(&event("prune-images-schedule.json")).expect("fanned out");
    assert_eq!(summary["fanOut"]["batches"], 3, "{summary:#}");
    assert_eq!(summary["fanOut"]["repositories"], 7, "{summary:#}");
    assert_eq!(summary["imagesDeleted"], 0);
    assert!(images_left(&world, &names).await.values().all(|n| *n == 2), "the fan-out itself deletes nothing");
    assert!(
        !summary["apiCalls"].as_object().expect("apiCalls").keys().any(|op| op.contains("ListClusters")),
        "the fan-out does not read what is in use; each batch does: {summary:#}"
    );

    // The second delivery fails: every DescribeImages call answers 503.
    let deliveries = mapping
        .drain(&lambda, 49, |n| match n {
            1 => proxy.plan(json!([{"operation": DESCRIBE_IMAGES, "calls": "all", "kind": "503"}])),
            2 => proxy.clear(),
            _ => {}
        })
        .await;
    let seen: Vec<(u64, bool)> =
        deliveries.iter().map(|d| (d.batch["batch"].as_u64().expect("batch number"), d.failed)).collect();
    assert_eq!(seen.len(), 4, "3 batches and one retry: {seen:?}");
    let failed: Vec<u64> = seen.iter().filter(|(_, f)| *f).map(|(b, _)| *b).collect();
    assert_eq!(failed.len(), 1, "{seen:?}");
    let mut times: BTreeMap<u64, usize> = BTreeMap::new();
    for (batch, _) in &seen {
        *times.entry(*batch).or_default() += 1;
    }
    for (batch, n) in &times {
        let expected = if *batch == failed[0] { 2 } else { 1 };
        assert_eq!(*n, expected, "batch {batch} ran {n} times: {seen:?}");
    }
    assert_eq!(times.len(), 3);
    let covered: BTreeSet<String> = deliveries
        .iter()
        .flat_map(|d| d.batch["repositories"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| r.as_str().map(String::from))
        .collect();
    assert_eq!(covered, names.iter().cloned().collect::<BTreeSet<_>>(), "every repository is in a batch");
    assert!(deliveries.iter().all(|d| d.batch["cycle"] == summary["fanOut"]["cycle"]), "one cycle: {deliveries:?}");

    let left = images_left(&world, &names).await;
    assert!(left.values().all(|n| *n == 1), "every repository pruned once the failed batch came back: {left:?}");
    assert_eq!(mapping.dead_letters().await, 0);

    // Each batch read what is in use for itself, and logged its summary.
    let batch_summaries: Vec<Value> = lambda
        .log_records()
        .into_iter()
        .filter_map(|r| r["fields"]["summary"].as_str().and_then(|s| serde_json::from_str::<Value>(s).ok()))
        .filter(|s| s["trigger"] == "batch")
        .collect();
    assert_eq!(batch_summaries.len(), 4, "one summary per delivery");
    assert!(batch_summaries.iter().all(|s| s["inUse"]["reads"].as_u64() >= Some(1)), "{batch_summaries:#?}");
    let deleted: u64 = batch_summaries.iter().filter_map(|s| s["imagesDeleted"].as_u64()).sum();
    assert_eq!(deleted, 7, "the batch summaries add up to the cycle");
}

/// A run that reaches its deadline margin stops starting repositories: the
/// ones it started are pruned whole, the rest untouched and handed to the
/// work queue as a deferred batch, which then prunes them.
///
/// Timing: every DescribeImages takes 5 s (fault-proxy latency), one
/// repository at a time, a 45 s deadline and a 20 s margin. Repositories
/// start while less than 25 s have passed: the first does unless reading
/// the registry and what is in use took 25 s (6 to 14 s here, on a loaded
/// moto), and the sixth cannot (the five before it take 25 s).
#[tokio::test]
async fn near_its_deadline_a_run_hands_the_repositories_it_did_not_start_to_the_queue() {
    let _serial = serial().await;
    enable_fake_clock();
    moto().reset();
    let world = World::new().await;
    let names = registry(&world, "late", 6).await;
    let mapping = EventSourceMapping::create("prune-deferred", 3).await;
    let proxy = FaultProxy::start();
    proxy.plan(json!([{"operation": DESCRIBE_IMAGES, "calls": "all", "kind": "latency", "latencyMs": 5000}]));
    let env = [
        ("PRUNE_POLICY", POLICY),
        ("PRUNE_DEFAULT_MODE", "on"),
        ("WORK_QUEUE_URL", mapping.url.as_str()),
        ("SWEEP_CONCURRENCY", "1"),
        ("DEADLINE_MARGIN_SECS", "20"),
        ("AWS_ENDPOINT_URL", proxy.endpoint.as_str()),
    ];
    let lambda = Lambda::start_with_timeout("prune-images", &env, Duration::from_secs(45));
    let report = lambda.invoke_detailed(&json!({"dryRun": false})).expect("a run with deferred repositories");

    let deferred: BTreeSet<String> = report["repositories"]
        .as_array()
        .expect("repositories")
        .iter()
        .filter(|r| r["deferred"] == true)
        .filter_map(|r| r["repository"].as_str().map(String::from))
        .collect();
    assert!(!deferred.is_empty() && deferred.len() < names.len(), "deferred {deferred:?}\n{report:#}");
    assert_eq!(report["deferred"]["repositories"], deferred.len());
    assert_eq!(report["deferred"]["handedOff"], true);
    let left = images_left(&world, &names).await;
    for (name, n) in &left {
        let expected = if deferred.contains(name) { 2 } else { 1 };
        assert_eq!(*n, expected, "{name}: pruned whole or not started at all: {left:?}");
    }

    // The deferred batch, consumed without a deadline, prunes the rest.
    proxy.clear();
    let consumer = Lambda::start("prune-images", &env);
    let deliveries = mapping.drain(&consumer, 49, |_| {}).await;
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    assert_eq!(deliveries[0].batch["deferred"], true);
    assert_eq!(deliveries[0].batch["dryRun"], false, "the cycle's decision travels with the batch");
    let handed: BTreeSet<String> = deliveries[0].batch["repositories"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str().map(String::from))
        .collect();
    assert_eq!(handed, deferred);
    assert!(images_left(&world, &names).await.values().all(|n| *n == 1));
}
