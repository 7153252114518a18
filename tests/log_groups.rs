//! End to end: the real `log-groups` binary behind cargo-lambda's Runtime API,
//! fed the `events/` files, calling moto; assertions read moto's state back.

use autopilot_e2e::world::{tutorial_groups, World, CLUSTER};
use autopilot_e2e::{check_emf, event, moto, serial, Lambda};
use serde_json::{json, Value};

async fn tutorial() -> World {
    moto().reset();
    let world = World::new().await;
    world.tutorial().await;
    world
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
}

#[tokio::test]
async fn schedule_sweep_creates_every_group_with_retention_and_tags() {
    let _serial = serial().await;
    // GIVEN the tutorial's cluster, whose task definitions name groups that do not exist
    let world = tutorial().await;
    assert!(world.log_group_names().await.is_empty());
    // WHEN the hourly sweep runs with the tutorials' 1-day retention
    let lambda = Lambda::start("log-groups", &[("LOG_RETENTION_DAYS", "1")]);
    let report = lambda.invoke(&event("log-groups-schedule.json")).expect("sweep succeeds");
    // THEN every group exists, expires after a day, and says who uses it
    assert_eq!(strings(&report["created"]), tutorial_groups());
    assert_eq!(world.log_group_names().await, tutorial_groups());
    for (group, service) in [("/ecs/users", "users"), ("/ecs/threads-envoy", "threads")] {
        let view = world.log_group(group).await.expect("group exists");
        assert_eq!(view.retention_days, Some(1), "{group}");
        assert_eq!(view.tags.get("autopilot:managed").map(String::as_str), Some("true"));
        assert_eq!(view.tags.get("autopilot:cluster").map(String::as_str), Some(CLUSTER));
        assert_eq!(view.tags.get("autopilot:service").map(String::as_str), Some(service));
    }
    // AND it cost exactly the calls the design bounds it by: one list per
    // cluster page, ceil(services/10) DescribeServices, one DescribeTaskDefinition
    // per distinct revision, and per group one read plus the writes it needs
    assert_eq!(
        report["apiCalls"],
        json!({"ListClusters": 1, "ListServices": 1, "DescribeServices": 1, "DescribeTaskDefinition": 3,
               "DescribeLogGroups": 4, "CreateLogGroup": 4, "PutRetentionPolicy": 4})
    );
    // AND the run published its counts as EMF
    let emf = lambda.emf_documents();
    assert_eq!(emf.len(), 1, "one EMF document: {emf:?}");
    check_emf(&emf[0]).expect("valid EMF");
    assert_eq!(emf[0]["LogGroupsCreated"], 4.0);
    assert_eq!(emf[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"], "ECRAutopilot");

    // WHEN it runs again THEN nothing changes: all four are compliant
    let again = lambda.invoke(&event("log-groups-schedule.json")).expect("second sweep");
    assert_eq!(strings(&again["alreadyCompliant"]), tutorial_groups());
    assert!(strings(&again["created"]).is_empty());
}

#[tokio::test]
async fn create_service_event_ensures_both_groups_of_a_two_container_task() {
    let _serial = serial().await;
    let world = tutorial().await;
    let lambda = Lambda::start("log-groups", &[]);
    // WHEN ECS reports CreateService for `threads` (app + Envoy sidecar)
    let report = lambda.invoke(&event("log-groups-create-service.json")).expect("handled");
    // THEN exactly its two groups exist, with the default 30 days
    assert_eq!(strings(&report["created"]), ["/ecs/threads", "/ecs/threads-envoy"]);
    assert_eq!(world.log_group_names().await, ["/ecs/threads", "/ecs/threads-envoy"]);
    let envoy = world.log_group("/ecs/threads-envoy").await.expect("sidecar group");
    assert_eq!(envoy.retention_days, Some(30));
    assert_eq!(envoy.tags.get("autopilot:service").map(String::as_str), Some("threads"));
    assert_eq!(strings(&report["taskDefinitions"]), ["arn:aws:ecs:us-east-1:123456789012:task-definition/threads:1"]);
}

#[tokio::test]
async fn existing_retention_is_kept_and_never_expiring_groups_get_one() {
    let _serial = serial().await;
    let world = tutorial().await;
    // GIVEN /ecs/users already keeps logs ten years, /ecs/posts never expires
    world.create_log_group("/ecs/users", Some(3653), &[("owner", "audit")]).await;
    world.create_log_group("/ecs/posts", None, &[]).await;
    let lambda = Lambda::start("log-groups", &[("LOG_RETENTION_DAYS", "7")]);
    // WHEN the users task definition is registered
    let report = lambda.invoke(&event("log-groups-register-task-definition.json")).expect("handled");
    // THEN its group is compliant and untouched: no shorter retention, no new tags
    assert_eq!(strings(&report["alreadyCompliant"]), ["/ecs/users"]);
    let users = world.log_group("/ecs/users").await.expect("users group");
    assert_eq!(users.retention_days, Some(3653));
    assert_eq!(users.tags.len(), 1, "{:?}", users.tags);
    // WHEN the sweep runs THEN the never-expiring group gets 7 days and our tags
    let report = lambda.invoke(&event("log-groups-schedule.json")).expect("sweep");
    assert_eq!(strings(&report["retentionSet"]), ["/ecs/posts"]);
    let posts = world.log_group("/ecs/posts").await.expect("posts group");
    assert_eq!(posts.retention_days, Some(7));
    assert_eq!(posts.tags.get("autopilot:managed").map(String::as_str), Some("true"));
    assert_eq!(world.log_group("/ecs/users").await.expect("users").retention_days, Some(3653));
}

#[tokio::test]
async fn group_tagged_manual_is_untouched() {
    let _serial = serial().await;
    let world = tutorial().await;
    world.create_log_group("/ecs/posts", None, &[("autopilot:retention", "manual")]).await;
    let before = world.log_group("/ecs/posts").await;
    let lambda = Lambda::start("log-groups", &[]);
    let report = lambda.invoke(&event("log-groups-schedule.json")).expect("sweep");
    assert_eq!(
        report["skipped"],
        json!([{"logGroup": "/ecs/posts", "reason": "log group is tagged autopilot:retention=manual"}])
    );
    assert_eq!(world.log_group("/ecs/posts").await, before, "manual group changed");
    assert_eq!(strings(&report["created"]), ["/ecs/threads", "/ecs/threads-envoy", "/ecs/users"]);
}

#[tokio::test]
async fn dry_run_reports_the_plan_and_writes_nothing() {
    let _serial = serial().await;
    let world = tutorial().await;
    world.create_log_group("/ecs/posts", None, &[]).await;
    // The payload's dryRun, and DRY_RUN=true with the schedule, both only report.
    let by_payload = Lambda::start("log-groups", &[]);
    let by_env = Lambda::start("log-groups", &[("DRY_RUN", "true")]);
    for (lambda, payload) in
        [(&by_payload, event("log-groups-manual-dry-run.json")), (&by_env, event("log-groups-schedule.json"))]
    {
        let report = lambda.invoke(&payload).expect("dry run");
        assert_eq!(report["dryRun"], true);
        assert_eq!(strings(&report["created"]), ["/ecs/threads", "/ecs/threads-envoy", "/ecs/users"]);
        assert_eq!(strings(&report["retentionSet"]), ["/ecs/posts"]);
        assert!(report["groups"].as_array().expect("groups").iter().all(|g| g["applied"] == false));
        assert_eq!(world.log_group_names().await, ["/ecs/posts"]);
        assert_eq!(world.log_group("/ecs/posts").await.expect("posts").retention_days, None);
        assert!(lambda.emf_documents().is_empty(), "a dry run publishes no metrics");
    }
}

#[tokio::test]
async fn malformed_and_unexpected_events_get_a_clear_error_and_no_writes() {
    let _serial = serial().await;
    let world = tutorial().await;
    let lambda = Lambda::start("log-groups", &[]);
    let mut wrong_source = event("log-groups-create-service.json");
    wrong_source["source"] = json!("aws.ecr");
    wrong_source["detail-type"] = json!("ECR Image Action");
    let mut wrong_call = event("log-groups-create-service.json");
    wrong_call["detail"]["eventName"] = json!("DeleteService");
    let mut truncated = event("log-groups-register-task-definition.json");
    truncated["detail"].as_object_mut().expect("detail").remove("eventName");
    // EventBridge events: answered, not retried, and counted.
    for (payload, expected) in [
        (truncated, "malformed event: CloudTrail detail: missing field `eventName`"),
        (wrong_source, "unexpected event: source \"aws.ecr\""),
        (wrong_call, "unexpected event: CloudTrail DeleteService"),
    ] {
        autopilot_e2e::assert_rejected(&lambda, &payload, expected);
    }
    // Manual requests: the error itself.
    let cases = [
        (json!("not an event"), "malformed event: expected a JSON object"),
        (json!({"dryRun": "yes"}), "malformed event: manual request"),
        (json!({"clusters": ["no-such-cluster"]}), "not found: cluster \"no-such-cluster\""),
        (json!({"taskDefinitions": ["ghost:9"]}), "not found: task definition \"ghost:9\""),
    ];
    for (payload, expected) in cases {
        let error = lambda.invoke(&payload).expect_err("must be rejected");
        assert_eq!(error.error_type, "NonRetryable", "{payload}");
        assert!(error.error_message.starts_with(expected), "{payload} → {}", error.error_message);
    }
    assert!(world.log_group_names().await.is_empty(), "a rejected event wrote");
}

#[tokio::test]
async fn invalid_retention_stops_the_cold_start_and_names_the_variable() {
    let _serial = serial().await;
    let world = tutorial().await;
    let mut lambda = Lambda::start("log-groups", &[("LOG_RETENTION_DAYS", "2")]);
    assert!(lambda.wait_for_exit(std::time::Duration::from_secs(30)), "function kept running");
    let log = lambda.log_text();
    assert!(log.contains("invalid configuration: LOG_RETENTION_DAYS=\\\"2\\\": allowed: 1, 3, 5, 7, 14, 30"), "{log}");
    assert!(world.log_group_names().await.is_empty());
}

#[tokio::test]
async fn kms_key_and_other_region_groups() {
    let _serial = serial().await;
    moto().reset();
    let world = World::new().await;
    world.cluster(CLUSTER).await;
    let arn = world.task_definition("reports", &[("reports", "/ecs/reports")]).await;
    world.service(CLUSTER, "reports", &arn).await;
    // A second task definition ships its logs to another region.
    let eu = world.task_definition_logging_to("eu-reports", &[("eu-reports", "/ecs/eu-reports")], "eu-west-1").await;
    let key = "arn:aws:kms:us-east-1:123456789012:key/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b";
    let lambda = Lambda::start("log-groups", &[("LOG_KMS_KEY_ARN", key)]);
    let report =
        lambda.invoke(&json!({"clusters": [CLUSTER], "taskDefinitions": [eu], "dryRun": false})).expect("manual run");
    assert_eq!(strings(&report["created"]), ["/ecs/reports"]);
    assert_eq!(
        report["skipped"],
        json!([{"logGroup": "/ecs/eu-reports", "reason": "log group is in another region (eu-west-1)"}])
    );
    let reports = world.log_group("/ecs/reports").await.expect("created");
    assert_eq!(reports.kms_key_id.as_deref(), Some(key));
    assert_eq!(world.log_group_names().await, ["/ecs/reports"]);
}

/// The deployable artefact itself: the arm64 release bootstrap, under
/// qemu-aarch64, against moto. `make test` builds it and sets
/// AUTOPILOT_ARM64_BOOTSTRAP_DIR; a bare `cargo test` says it skipped this.
#[tokio::test]
async fn arm64_release_bootstrap_does_the_sweep_under_qemu() {
    let Some(dir) = std::env::var_os("AUTOPILOT_ARM64_BOOTSTRAP_DIR") else {
        eprintln!("skipped: AUTOPILOT_ARM64_BOOTSTRAP_DIR is not set (make test sets it)");
        return;
    };
    let bootstrap = std::path::PathBuf::from(dir).join("log-groups/bootstrap");
    assert!(bootstrap.exists(), "{} is missing: run `make arm64`", bootstrap.display());
    let _serial = serial().await;
    let world = tutorial().await;
    let lambda = Lambda::start_arm64(&bootstrap, "log-groups", &[("LOG_RETENTION_DAYS", "1")]);
    let report = lambda.invoke(&event("log-groups-schedule.json")).expect("sweep under qemu");
    assert_eq!(strings(&report["created"]), tutorial_groups());
    assert_eq!(world.log_group("/ecs/users").await.expect("created").retention_days, Some(1));
}

#[tokio::test]
async fn an_unused_revision_never_changes_an_existing_aws_group_but_still_gets_its_missing_one() {
    let _serial = serial().await;
    let world = tutorial().await;
    // GIVEN an organisation trail's log group that keeps everything forever
    world.create_log_group("/aws/cloudtrail/org", None, &[]).await;
    // WHEN someone registers a revision no service uses that writes there and to a new group
    let td =
        world.task_definition("audit-tail", &[("tail", "/aws/cloudtrail/org"), ("shipper", "/ecs/audit-tail")]).await;
    let mut registered = event("log-groups-register-task-definition.json");
    registered["detail"]["requestParameters"]["family"] = json!("audit-tail");
    registered["detail"]["responseElements"]["taskDefinition"]["taskDefinitionArn"] = json!(td);
    registered["detail"]["responseElements"]["taskDefinition"]["family"] = json!("audit-tail");
    let lambda = Lambda::start("log-groups", &[("LOG_RETENTION_DAYS", "1")]);
    let report = lambda.invoke(&registered).expect("handled");
    // THEN the audit log still never expires and is reported as left alone
    assert_eq!(world.log_group("/aws/cloudtrail/org").await.expect("trail group").retention_days, None);
    let skipped = report["skipped"].as_array().expect("skipped");
    let trail = skipped.iter().find(|s| s["logGroup"] == "/aws/cloudtrail/org").expect("reported");
    assert!(trail["reason"].as_str().unwrap_or_default().contains("/aws/"), "{report:#}");
    // AND the missing group is created, as for any revision an event names
    assert_eq!(strings(&report["created"]), ["/ecs/audit-tail"]);
    assert_eq!(world.log_group("/ecs/audit-tail").await.expect("created").retention_days, Some(1));
    assert!(strings(&report["retentionSet"]).is_empty());
}

#[tokio::test]
async fn two_sweeps_at_once_both_succeed_and_make_each_group_once() {
    let _serial = serial().await;
    // GIVEN the tutorial's world and two warm copies of the function (Lambda
    // runs a schedule and a CloudTrail burst in separate environments)
    let world = tutorial().await;
    let first = Lambda::start("log-groups", &[("LOG_RETENTION_DAYS", "1")]);
    let second = Lambda::start("log-groups", &[("LOG_RETENTION_DAYS", "1")]);
    // WHEN both sweep at the same moment
    let sweep = event("log-groups-schedule.json");
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| first.invoke(&sweep));
        let b = s.spawn(|| second.invoke(&sweep));
        (a.join().expect("first sweep thread"), b.join().expect("second sweep thread"))
    });
    // THEN both succeed: a group the other made first is "already exists",
    // not a failure
    let (a, b) = (a.expect("first sweep"), b.expect("second sweep"));
    let failed = |r: &Value| r["failed"].as_array().map_or(usize::MAX, Vec::len);
    assert_eq!((failed(&a), failed(&b)), (0, 0), "{a:#}\n{b:#}");
    // Between them they made each group; neither made one the other made.
    let mut made = strings(&a["created"]);
    made.extend(strings(&b["created"]));
    made.sort();
    assert_eq!(made, tutorial_groups(), "{a:#}\n{b:#}");
    // AND every group exists once, with the retention and tags, whoever made it
    assert_eq!(world.log_group_names().await, tutorial_groups());
    for group in tutorial_groups() {
        let view = world.log_group(group).await.expect("group exists");
        assert_eq!(view.retention_days, Some(1), "{group}");
        assert_eq!(view.tags.get("autopilot:managed").map(String::as_str), Some("true"), "{group}");
    }
    // AND a third sweep finds nothing to do
    let again = first.invoke(&sweep).expect("third sweep");
    assert!(strings(&again["created"]).is_empty(), "{again:#}");
}
