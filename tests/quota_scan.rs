//! End to end: the real `quota-scan` binary behind cargo-lambda's Runtime
//! API, against moto with known manifests. moto sets `imageSizeInBytes` to
//! the config blob's size (1,469 bytes in our manifests) and gives index rows
//! no size, so these tests assert our arithmetic over what the API returns.
//! Every EMF line the function writes is checked against the specification.

use autopilot_e2e::world::World;
use autopilot_e2e::{check_emf, enable_fake_clock, event, moto, serial, Lambda};
use serde_json::{json, Value};

const CONFIG: u64 = 1469;
const LAYER: u64 = 3_208_942;

/// users: `latest`, an old untagged leftover, and a multi-arch index `multi`
/// (two children); posts: `latest`. Five manifests and one index row.
async fn registry() -> World {
    enable_fake_clock();
    moto().reset();
    let world = World::new().await;
    world.repository("users").await;
    world.repository("posts").await;
    moto().set_clock("-5d");
    world.push_image("users", &[], "arm64", "leftover").await;
    moto().set_clock("+0d");
    world.push_image("users", &["latest"], "arm64", "users-latest").await;
    let children = [
        world.push_image("users", &[], "amd64", "multi-amd64").await,
        world.push_image("users", &[], "arm64", "multi-arm64").await,
    ];
    world.push_index("users", "multi", &children).await;
    world.push_image("posts", &["latest"], "arm64", "posts-latest").await;
    world
}

fn repository<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["repositories"].as_array().and_then(|r| r.iter().find(|r| r["repository"] == name)).expect("repository")
}

fn checked_emf(lambda: &Lambda) -> Vec<Value> {
    let docs = lambda.emf_documents();
    for doc in &docs {
        if let Err(problem) = check_emf(doc) {
            panic!("invalid EMF ({problem}): {doc}");
        }
    }
    docs
}

#[tokio::test]
async fn index_rows_are_not_double_counted_and_statuses_follow_the_thresholds() {
    let _serial = serial().await;
    registry().await;
    // 5 * 1469 = 7345 bytes stored; users has 5 rows; quota 10,000 bytes, 5 images.
    let lambda = Lambda::start(
        "quota-scan",
        &[("STORAGE_QUOTA_BYTES", "10000"), ("IMAGES_PER_REPOSITORY_QUOTA", "5"), ("METRICS_TOP_REPOSITORIES", "1")],
    );
    let report = lambda.invoke_detailed(&event("quota-scan-schedule.json")).expect("scan");
    let users = repository(&report, "users");
    assert_eq!(users["imageCount"], 5, "every row counts as an image, the index too");
    assert_eq!(users["indexRows"], 1);
    assert_eq!(users["storedBytes"], 4 * CONFIG, "the index row adds nothing");
    assert_eq!(users["rank"], 1);
    assert_eq!(users["imageCountPercent"], 100.0);
    assert_eq!(users["status"], "over", "5 of 5 images");
    let posts = repository(&report, "posts");
    assert_eq!((posts["storedBytes"].as_u64(), posts["rank"].as_u64()), (Some(CONFIG), Some(2)));
    assert_eq!(posts["status"], "ok");
    assert_eq!(report["registry"]["storageBytes"], 5 * CONFIG);
    assert_eq!(report["registry"]["storagePercent"], 73.45);
    assert_eq!(report["registry"]["status"], "ok");
    // The old untagged leftover is what the default policy would reclaim.
    assert_eq!(users["reclaimableImages"], 1);
    assert_eq!(report["registry"]["reclaimableBytes"], CONFIG);
    assert_eq!(report["registry"]["storageBytesAfterPrune"], 4 * CONFIG);
    assert!(lambda.log_text().contains("repository at or over its threshold"), "a WARN line for users");

    let docs = checked_emf(&lambda);
    assert_eq!(docs.len(), 2, "the registry and the top 1 repository: {docs:?}");
    assert_eq!(docs[0]["RegistryStorageUtilization"], 73.45);
    assert_eq!(docs[0]["RegistryStorageBytes"], (5 * CONFIG) as f64);
    assert_eq!(docs[1]["Repository"], "users");
    assert_eq!(docs[1]["RepositoryImageCount"], 5.0);

    // At the warn threshold and at the quota.
    for (quota, status) in [("9181", "warn"), ("7345", "over"), ("7346", "warn"), ("1000000", "ok")] {
        let lambda = Lambda::start("quota-scan", &[("STORAGE_QUOTA_BYTES", quota)]);
        let report = lambda.invoke_detailed(&json!({})).expect("scan");
        assert_eq!(report["registry"]["status"], status, "quota {quota}: {}", report["registry"]);
        checked_emf(&lambda);
    }
}

#[tokio::test]
async fn deduplicated_bytes_count_each_layer_once() {
    let _serial = serial().await;
    registry().await;
    let lambda = Lambda::start("quota-scan", &[("QUOTA_DEDUPE_LAYERS", "true")]);
    let report = lambda.invoke_detailed(&json!({"repositories": ["users"]})).expect("scan");
    let users = repository(&report, "users");
    // four manifests, each with its own layer and config blob
    assert_eq!(users["deduplicatedBytes"], 4 * (LAYER + CONFIG));
    assert_eq!(report["repositories"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn zero_repositories() {
    let _serial = serial().await;
    enable_fake_clock();
    moto().reset();
    let lambda = Lambda::start("quota-scan", &[]);
    let report = lambda.invoke_detailed(&event("quota-scan-schedule.json")).expect("scan");
    assert_eq!(report["repositories"], json!([]));
    assert_eq!(report["registry"]["storageBytes"], 0);
    assert_eq!(report["registry"]["status"], "ok");
    let docs = checked_emf(&lambda);
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["RegistryStorageUtilization"], 0.0);
}

#[tokio::test]
async fn bad_input_and_bad_configuration() {
    let _serial = serial().await;
    registry().await;
    let lambda = Lambda::start("quota-scan", &[]);
    for (payload, expected) in [
        (json!(7), "malformed event: expected a JSON object"),
        (json!({"repos": ["users"]}), "malformed event: manual request: unknown field `repos`"),
        (json!({"repositories": ["no-such-repository"]}), "not found: repository"),
    ] {
        let error = lambda.invoke_detailed(&payload).expect_err("rejected");
        assert_eq!(error.error_type, "NonRetryable");
        assert!(error.error_message.starts_with(expected), "{payload} → {}", error.error_message);
    }
    autopilot_e2e::assert_rejected(&lambda, &event("deploy-on-push-push.json"), "unexpected event");
    let before = lambda.emf_documents().len();
    let dry = lambda.invoke_detailed(&json!({"dryRun": true})).expect("dry run");
    assert_eq!(dry["registry"]["storageBytes"], 5 * CONFIG);
    assert_eq!(lambda.emf_documents().len(), before, "a dry run publishes no metrics");
    // A manual request is a preview unless it says "dryRun": false.
    lambda.invoke_detailed(&json!({"repositories": ["users"]})).expect("preview");
    assert_eq!(lambda.emf_documents().len(), before, "a manual preview publishes no metrics");
    lambda.invoke_detailed(&json!({"repositories": ["users"], "dryRun": false})).expect("scan");
    let docs = checked_emf(&lambda);
    assert_eq!(docs.len(), before + 2, "the registry and users: {docs:?}");
    assert_eq!(docs[before]["ScanCompleted"], 1.0);
    for (var, value) in [("WARN_PERCENT", "0"), ("STORAGE_QUOTA_BYTES", "500MB")] {
        let mut broken = Lambda::start("quota-scan", &[(var, value)]);
        assert!(broken.wait_for_exit(std::time::Duration::from_secs(30)), "{var}={value} started");
        assert!(broken.log_text().contains(&format!("invalid configuration: {var}=")), "{}", broken.log_text());
    }
}

const HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

/// The tutorials' native lifecycle policy: expire untagged images a day after their push.
const NATIVE_UNTAGGED_1_DAY: &str = r#"{"rules": [{"rulePriority": 1, "description": "Expire untagged images older than 1 day",
  "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 1},
  "action": {"type": "expire"}}]}"#;

/// users with the native policy: two untagged images pushed three days ago
/// and `latest`; with `consumer`, a service scaled to zero whose revision
/// pins the first untagged one (it runs no task, and would start from it).
/// posts: no native policy. Returns the pinned digest.
async fn native_policy_registry(consumer: bool) -> String {
    enable_fake_clock();
    moto().reset();
    let world = World::new().await;
    world.repository("users").await;
    world.repository("posts").await;
    world.native_lifecycle_policy("users", NATIVE_UNTAGGED_1_DAY).await;
    moto().set_clock("-3d");
    let pinned = world.push_image("users", &[], "arm64", "report-job").await;
    world.push_image("users", &[], "arm64", "leftover").await;
    moto().set_clock("+0d");
    world.push_image("users", &["latest"], "arm64", "users-latest").await;
    world.push_image("posts", &["latest"], "arm64", "posts-latest").await;
    if consumer {
        world.cluster("microservices").await;
        let td = world.task_definition_running("reports", &format!("{HOST}/users@{}", pinned.digest)).await;
        world.service_scaled_to_zero("microservices", "reports", &td).await;
    }
    pinned.digest
}

fn emf_value(docs: &[Value], dimension: &str, value: &str, metric: &str) -> Option<f64> {
    docs.iter().find(|d| d[dimension] == value && d.get(metric).is_some()).and_then(|d| d[metric].as_f64())
}

/// Issue 14: the native policy would expire an untagged digest that a
/// scaled-to-zero service's revision pins. The audit names the image, the
/// service and the rule; the metric is 1 for the repository and in total.
#[tokio::test]
async fn the_audit_warns_before_a_native_policy_expires_an_image_a_service_pins() {
    let _serial = serial().await;
    let pinned = native_policy_registry(true).await;
    let lambda = Lambda::start("quota-scan", &[("PRUNE_DEFAULT_MODE", "on")]);
    let report = lambda.invoke_detailed(&event("quota-scan-schedule.json")).expect("scan");
    let audit = &repository(&report, "users")["audit"];
    assert_eq!(audit["nativePolicy"], "present", "{audit:#}");
    assert_eq!(audit["nativePolicyActsNow"], 2, "both untagged images are past the rule");
    assert_eq!(audit["inUseExpiries"], 1, "{audit:#}");
    let expiry = &audit["expiries"][0];
    assert_eq!(expiry["digest"], pinned.as_str());
    assert_eq!(
        (&expiry["rulePriority"], &expiry["action"], &expiry["due"]),
        (&json!(1), &json!("expire"), &json!("now"))
    );
    let used_by: Vec<&str> = expiry["usedBy"].as_array().expect("usedBy").iter().filter_map(Value::as_str).collect();
    assert!(
        used_by.contains(&"service microservices/reports in us-east-1 (digest)"),
        "the digest the service revision pinned (the emulator's DescribeServiceRevisions): {used_by:?}"
    );
    assert_eq!(report["audit"]["nativePolicyInUseExpiries"], 1);
    assert_eq!(report["audit"]["repositoriesWithNativePolicy"], 1);
    assert_eq!(repository(&report, "posts")["audit"]["nativePolicy"], "none");
    assert!(repository(&report, "posts")["audit"].get("inUseExpiries").is_none());

    let docs = checked_emf(&lambda);
    assert_eq!(emf_value(&docs, "Function", "quota-scan", "NativePolicyInUseExpiries"), Some(1.0), "{docs:?}");
    assert_eq!(emf_value(&docs, "Repository", "users", "NativePolicyInUseExpiries"), Some(1.0), "{docs:?}");
    assert_eq!(
        emf_value(&docs, "Repository", "posts", "NativePolicyInUseExpiries"),
        None,
        "no native policy, no metric"
    );
    let logs = lambda.log_text();
    let warning = logs
        .lines()
        .find(|l| l.contains("the native lifecycle policy will remove an image in use"))
        .unwrap_or_else(|| panic!("a WARN line per finding:\n{logs}"));
    assert!(
        warning.contains("WARN") && warning.contains(&pinned) && warning.contains("microservices/reports"),
        "{warning}"
    );

    // The other findings on the same registry: moto's repositories default to
    // MUTABLE tags and scan on push off; prune-images is switched on here.
    let kinds: Vec<&str> =
        audit["findings"].as_array().expect("findings").iter().filter_map(|f| f["kind"].as_str()).collect();
    assert_eq!(kinds, ["twoDeleters", "scanOnPushOff"], "{audit:#}");
    assert!(audit["findings"][0]["message"].as_str().unwrap_or_default().contains("PRUNE_DEFAULT_MODE=on"));
    assert_eq!(report["audit"]["findings"], json!({"scanOnPushOff": 2, "twoDeleters": 1}));
}

#[tokio::test]
async fn the_same_repository_without_the_consumer_reports_zero() {
    let _serial = serial().await;
    native_policy_registry(false).await;
    let lambda = Lambda::start("quota-scan", &[("PRUNE_DEFAULT_MODE", "off")]);
    let report = lambda.invoke_detailed(&json!({"repositories": ["users"], "dryRun": false})).expect("scan");
    let audit = &repository(&report, "users")["audit"];
    assert_eq!(audit["nativePolicyActsNow"], 2, "the policy still expires both untagged images: {audit:#}");
    assert_eq!(audit["inUseExpiries"], 0);
    assert!(audit.get("expiries").is_none(), "{audit:#}");
    let kinds: Vec<&str> =
        audit["findings"].as_array().expect("findings").iter().filter_map(|f| f["kind"].as_str()).collect();
    assert_eq!(kinds, ["scanOnPushOff"], "prune-images is off: one deleter");
    let docs = checked_emf(&lambda);
    assert_eq!(emf_value(&docs, "Function", "quota-scan", "NativePolicyInUseExpiries"), Some(0.0), "{docs:?}");
    assert_eq!(emf_value(&docs, "Repository", "users", "NativePolicyInUseExpiries"), Some(0.0));
    assert!(!lambda.log_text().contains("will remove an image in use"));
}

/// A deploy-on-push service that follows `latest` exactly, on a repository
/// whose tags are MUTABLE, and an IMMUTABLE repository with scan on push on
/// that the same kind of service follows: only the first is a finding.
#[tokio::test]
async fn a_mutable_tag_that_deploy_on_push_follows_exactly_is_a_finding() {
    let _serial = serial().await;
    enable_fake_clock();
    moto().reset();
    let world = World::new().await;
    world.repository("users").await;
    world
        .ecr
        .create_repository()
        .repository_name("posts")
        .image_tag_mutability(aws_sdk_ecr::types::ImageTagMutability::Immutable)
        .image_scanning_configuration(
            aws_sdk_ecr::types::ImageScanningConfiguration::builder().scan_on_push(true).build(),
        )
        .send()
        .await
        .expect("create_repository");
    world.push_image("users", &["latest"], "arm64", "users-latest").await;
    world.push_image("posts", &["latest"], "arm64", "posts-latest").await;
    world.cluster("microservices").await;
    for (service, track) in [("users", "latest"), ("posts", "latest")] {
        let td = world.task_definition_running(service, &format!("{HOST}/{service}:latest")).await;
        world
            .service_tagged("microservices", service, &td, &[("autopilot:deploy", "on"), ("autopilot:track", track)])
            .await;
    }
    let lambda = Lambda::start("quota-scan", &[]);
    let report = lambda.invoke_detailed(&event("quota-scan-schedule.json")).expect("scan");
    let users = &repository(&report, "users")["audit"];
    let mutable = users["findings"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["kind"] == "mutableTrackedTag"))
        .unwrap_or_else(|| panic!("{users:#}"));
    assert!(
        mutable["message"].as_str().unwrap_or_default().contains("latest by service microservices/users in us-east-1"),
        "{mutable}"
    );
    let posts = &repository(&report, "posts")["audit"];
    assert!(posts.get("findings").is_none(), "IMMUTABLE with scan on push, no native policy: {posts:#}");
}
