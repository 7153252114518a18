//! End to end, one case per source of "in use": the real `prune-images`
//! binary against the local AWS (moto under libfaketime, with the test
//! launcher's ECS service deployments and revisions, task digests and Lambda
//! `ResolvedImageUri`).
//!
//! Every case builds the same repository: two images pushed five days ago,
//! `kept` (tagged `latest` and `build-41` at first) and `control`
//! (`build-40`), then a fresh `latest`, which leaves `kept` with its build tag
//! only. The policy keeps the newest image and expires every other, so both
//! old images are expired. (A build tag keeps `kept` alive through the tag
//! move: moto deletes an image outright when its only tag moves, where ECR
//! leaves it untagged; TESTING.md.) One consumer, of the source under test
//! only, uses `kept`: it must survive with that consumer named, and `control`
//! (used by nothing) must be deleted, which shows the policy did act. Where a
//! second source would also see the consumer's image (a family's latest
//! revision does), the case registers a newer revision running `latest`, so
//! the source under test is the only one that keeps `kept`.

use std::collections::BTreeSet;

use autopilot_e2e::world::{Pushed, World};
use autopilot_e2e::{enable_fake_clock, event, moto, serial, Lambda, ACCOUNT, REGION};
use aws_sdk_ecs::types::{ContainerDefinition, DeploymentControllerType};
use serde_json::Value;

const REPOSITORY: &str = "jobs";
const OTHER_REGION: &str = "eu-west-1";
const POLICY: &str = r#"{"rules":[{"rulePriority":1,"description":"keep the newest image","selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#;

fn uri(digest: &str) -> String {
    format!("{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{REPOSITORY}@{digest}")
}

fn tag_uri(tag: &str) -> String {
    format!("{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{REPOSITORY}:{tag}")
}

struct Case {
    world: World,
    kept: Pushed,
    control: Pushed,
    latest: Pushed,
}

/// Pushes `kept` (tagged `latest` and `build-41`) and `control` five days
/// ago, runs `before_move` while `latest` still names `kept`, then pushes a
/// new `latest`.
async fn case<F, Fut>(before_move: F) -> Case
where
    F: FnOnce(World, Pushed) -> Fut,
    Fut: std::future::Future<Output = World>,
{
    enable_fake_clock();
    moto().reset();
    let world = World::new().await;
    world.repository(REPOSITORY).await;
    world.cluster("jobs").await;
    moto().set_clock("-5d");
    let kept = world.push_image(REPOSITORY, &["latest", "build-41"], "arm64", "kept").await;
    let control = world.push_image(REPOSITORY, &["build-40"], "arm64", "control").await;
    moto().set_clock("+0d");
    let world = before_move(world, kept.clone()).await;
    let latest = world.push_image(REPOSITORY, &["latest"], "arm64", "latest").await;
    Case { world, kept, control, latest }
}

async fn digests(world: &World) -> BTreeSet<String> {
    let out = world.ecr.describe_images().repository_name(REPOSITORY).send().await.expect("describe_images");
    out.image_details().iter().filter_map(|d| d.image_digest().map(String::from)).collect()
}

/// The detail line of [`REPOSITORY`] in a prune report.
fn repository_report(report: &Value) -> Value {
    report["repositories"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["repository"] == REPOSITORY))
        .cloned()
        .unwrap_or_else(|| panic!("no report for {REPOSITORY}: {report:#}"))
}

/// Runs the scheduled prune and checks the outcome every case shares: only
/// `control` deleted; `kept` protected with a reason containing `user`.
async fn prune_and_check(case: &Case, env: &[(&str, &str)], user: &str) -> Value {
    let mut env = env.to_vec();
    env.extend([("PRUNE_POLICY", POLICY), ("PRUNE_DEFAULT_MODE", "on")]);
    let lambda = Lambda::start("prune-images", &env);
    let report = lambda.invoke_detailed(&event("prune-images-schedule.json")).expect("prune");
    let jobs = repository_report(&report);
    let deleted: BTreeSet<&str> = jobs["deleted"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    assert_eq!(deleted, BTreeSet::from([case.control.digest.as_str()]), "{jobs:#}");
    let why: Vec<&str> = jobs["protected"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["digest"] == case.kept.digest.as_str())
        .filter_map(|p| p["reason"].as_str())
        .collect();
    assert!(why.iter().any(|w| w.contains(user)), "kept is not protected by {user:?}: {why:?}\n{jobs:#}");
    let left = digests(&case.world).await;
    assert!(left.contains(&case.kept.digest), "the image in use was deleted");
    assert!(left.contains(&case.latest.digest));
    assert!(!left.contains(&case.control.digest), "the unused control image survived");
    jobs
}

/// Registers `family` twice: revision 1 runs `first`, revision 2 (the latest)
/// runs `latest`. Returns revision 1's ARN.
async fn two_revisions(ecs: &aws_sdk_ecs::Client, family: &str, first: &str) -> String {
    let mut arns = Vec::new();
    for image in [first.to_string(), tag_uri("latest")] {
        let out = ecs
            .register_task_definition()
            .family(family)
            .container_definitions(ContainerDefinition::builder().name(family).image(image).memory(512).build())
            .send()
            .await
            .expect("register_task_definition");
        arns.push(out.task_definition().and_then(|t| t.task_definition_arn()).expect("arn").to_string());
    }
    arns.swap_remove(0)
}

#[tokio::test]
async fn a_scaled_to_zero_service_keeps_the_digest_its_revision_pinned_after_its_tag_moved() {
    let _serial = serial().await;
    let case = case(|world, _| async move {
        let td = world.task_definition_running("api", &tag_uri("latest")).await;
        world.service("jobs", "api", &td).await;
        world.ecs.update_service().cluster("jobs").service("api").desired_count(0).send().await.expect("scale to 0");
        world
    })
    .await;
    // The task definition names `latest`, which now resolves to the new image:
    // only the service revision's pinned digest keeps the old one.
    prune_and_check(&case, &[], "in use by service jobs/api").await;
}

#[tokio::test]
async fn an_eventbridge_rule_target_keeps_its_task_definition_images() {
    let _serial = serial().await;
    let case = case(|world, _| async move { world }).await;
    let nightly = two_revisions(&case.world.ecs, "nightly", &uri(&case.kept.digest)).await;
    let events = aws_sdk_eventbridge::Client::new(&moto().sdk_config().await);
    events.put_rule().name("nightly").schedule_expression("cron(0 3 * * ? *)").send().await.expect("put_rule");
    let target = aws_sdk_eventbridge::types::Target::builder()
        .id("job")
        .arn(format!("arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/jobs"))
        .role_arn(format!("arn:aws:iam::{ACCOUNT}:role/events-ecs"))
        .ecs_parameters(
            aws_sdk_eventbridge::types::EcsParameters::builder()
                .task_definition_arn(&nightly)
                .task_count(1)
                .build()
                .expect("ecs parameters"),
        )
        .build()
        .expect("target");
    events.put_targets().rule("nightly").targets(target).send().await.expect("put_targets");
    prune_and_check(&case, &[], "in use by EventBridge rule").await;
}

#[tokio::test]
async fn a_scheduler_schedule_keeps_its_task_definition_images() {
    let _serial = serial().await;
    let case = case(|world, _| async move { world }).await;
    let nightly = two_revisions(&case.world.ecs, "nightly", &uri(&case.kept.digest)).await;
    let scheduler = aws_sdk_scheduler::Client::new(&moto().sdk_config().await);
    use aws_sdk_scheduler::types::{EcsParameters, FlexibleTimeWindow, FlexibleTimeWindowMode, Target};
    scheduler
        .create_schedule()
        .name("nightly")
        .schedule_expression("cron(0 3 * * ? *)")
        .flexible_time_window(FlexibleTimeWindow::builder().mode(FlexibleTimeWindowMode::Off).build().expect("window"))
        .target(
            Target::builder()
                .arn(format!("arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/jobs"))
                .role_arn(format!("arn:aws:iam::{ACCOUNT}:role/scheduler-ecs"))
                .ecs_parameters(
                    EcsParameters::builder().task_definition_arn(&nightly).task_count(1).build().expect("ecs"),
                )
                .build()
                .expect("target"),
        )
        .send()
        .await
        .expect("create_schedule");
    prune_and_check(&case, &[], "in use by Scheduler schedule").await;
}

#[tokio::test]
async fn a_family_with_nothing_running_keeps_its_latest_revision_images() {
    let _serial = serial().await;
    let case = case(|world, _| async move { world }).await;
    // A RunTask or Step Functions job: registered, never a service, nothing running.
    case.world.task_definition_running("report", &uri(&case.kept.digest)).await;
    prune_and_check(&case, &[], "in use by task definition family report").await;
}

#[tokio::test]
async fn a_lambda_image_function_keeps_the_digest_it_resolved() {
    let _serial = serial().await;
    // Created while `latest` named `kept`: Lambda resolved the tag then.
    let case = case(|world, _| async move {
        let role = moto().create_role("autopilot-lambda", "lambda.amazonaws.com");
        let lambda = aws_sdk_lambda::Client::new(&moto().sdk_config().await);
        lambda
            .create_function()
            .function_name("thumbnailer")
            .role(role)
            .package_type(aws_sdk_lambda::types::PackageType::Image)
            .code(aws_sdk_lambda::types::FunctionCode::builder().image_uri(tag_uri("latest")).build())
            .send()
            .await
            .expect("create_function");
        world
    })
    .await;
    prune_and_check(&case, &[], "in use by Lambda function thumbnailer").await;
}

#[tokio::test]
async fn a_service_in_a_second_region_keeps_what_it_runs() {
    let _serial = serial().await;
    let case = case(|world, _| async move { world }).await;
    let sdk = moto().sdk_config().await.into_builder().region(aws_config::Region::new(OTHER_REGION)).build();
    let ecs = aws_sdk_ecs::Client::new(&sdk);
    ecs.create_cluster().cluster_name("dr").send().await.expect("create_cluster");
    let td = two_revisions(&ecs, "api-dr", &uri(&case.kept.digest)).await;
    ecs.create_service()
        .cluster("dr")
        .service_name("api-dr")
        .task_definition(td)
        .desired_count(1)
        .send()
        .await
        .expect("service");
    // Without the second region in PROTECT_REGIONS the image would be deleted;
    // the README says to list every region that pulls from this registry.
    prune_and_check(&case, &[("PROTECT_REGIONS", &format!("{REGION},{OTHER_REGION}"))], "in eu-west-1").await;
}

#[tokio::test]
async fn an_external_service_keeps_its_task_sets_images() {
    let _serial = serial().await;
    let case = case(|world, _| async move { world }).await;
    let td = two_revisions(&case.world.ecs, "blue-green", &uri(&case.kept.digest)).await;
    case.world.service_with_controller("jobs", "blue-green", None, DeploymentControllerType::External).await;
    case.world
        .ecs
        .create_task_set()
        .cluster("jobs")
        .service("blue-green")
        .task_definition(&td)
        .external_id("blue")
        .send()
        .await
        .expect("create_task_set");
    prune_and_check(&case, &[], "in use by task set of service").await;
}

#[tokio::test]
async fn with_no_consumer_both_old_images_are_deleted() {
    let _serial = serial().await;
    let case = case(|world, _| async move { world }).await;
    let lambda = Lambda::start("prune-images", &[("PRUNE_POLICY", POLICY), ("PRUNE_DEFAULT_MODE", "on")]);
    let report = lambda.invoke(&event("prune-images-schedule.json")).expect("prune");
    let left = digests(&case.world).await;
    assert_eq!(left, BTreeSet::from([case.latest.digest.clone()]), "{report:#}");
}

/// Issue 12's race, made deterministic: an operator rolls the service back to
/// a revision pinned to `kept` while prune-images is between its first read
/// of the "in use" set (which did not see it) and its deletions. The fault
/// proxy holds prune's DescribeImages for 4 s; the rollback happens once that
/// call has arrived, so the only thing that can keep `kept` is the fresh
/// re-read right before deleting (`protectedLate`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_during_a_prune_is_seen_by_the_re_read_before_delete() {
    let _serial = serial().await;
    let case = case(|world, _| async move { world }).await;
    // `api` runs the new image (its latest revision, 2); revision 1 pins `kept`.
    let ecs = &case.world.ecs;
    let mut revisions = Vec::new();
    for image in [uri(&case.kept.digest), uri(&case.latest.digest)] {
        revisions.push(case.world.task_definition_running("api", &image).await);
    }
    case.world.service("jobs", "api", &revisions[1]).await;

    let proxy = autopilot_e2e::FaultProxy::start();
    const DESCRIBE_IMAGES: &str = "AmazonEC2ContainerRegistry_V20150921.DescribeImages";
    proxy.plan(serde_json::json!([{"operation": DESCRIBE_IMAGES, "calls": [1], "kind": "latency", "latencyMs": 4000}]));
    let endpoint = proxy.endpoint.clone();
    let env = [
        ("PRUNE_POLICY", POLICY),
        ("PRUNE_DEFAULT_MODE", "on"),
        ("PRUNE_MAX_DELETE_PERCENT", "100"),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
    ];
    let lambda = Lambda::start("prune-images", &env);
    let prune = tokio::task::spawn_blocking(move || {
        let report = lambda.invoke_detailed(&event("prune-images-schedule.json"));
        (report, lambda)
    });
    // The first in-use read is over once prune asks for the images.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while proxy.calls().0.get(DESCRIBE_IMAGES).copied().unwrap_or(0) == 0 {
        assert!(std::time::Instant::now() < deadline, "prune never listed the images");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    ecs.update_service()
        .cluster("jobs")
        .service("api")
        .task_definition(&revisions[0])
        .send()
        .await
        .expect("roll api back to revision 1");
    let (report, _lambda) = prune.await.expect("prune task");
    let report = report.expect("prune");
    let jobs = repository_report(&report);
    let late: Vec<&str> =
        jobs["protectedLate"].as_array().into_iter().flatten().filter_map(|p| p["digest"].as_str()).collect();
    assert_eq!(late, [case.kept.digest.as_str()], "{jobs:#}");
    let left = digests(&case.world).await;
    assert!(left.contains(&case.kept.digest), "the image the rollback runs was deleted");
    assert!(!left.contains(&case.control.digest), "the unused control image survived");
}
