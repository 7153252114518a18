//! End to end: deploy-on-push's guards and its rollout follow-up, the real
//! binary against the local AWS (moto plus `tests/emulator/autopilot_moto.py`,
//! which adds service deployments/revisions with the digests ECS pinned,
//! GetDownloadUrlForLayer serving the config blobs pushed here, and ECS's
//! refusal to update CODE_DEPLOY/EXTERNAL services).
//!
//! Every deployable image is pushed with a real config blob
//! ([`World::push_image_with_config`]): deploy-on-push reads it to learn the
//! image's platform.

use autopilot_e2e::world::{Pushed, World};
use autopilot_e2e::{event, moto, serial, Lambda, ACCOUNT, REGION};
use aws_sdk_ecs::types::{
    ContainerDefinition, CpuArchitecture, DeploymentControllerType, OsFamily, RuntimePlatform, Tag,
};
use serde_json::{json, Value};

const HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
const CLUSTER: &str = "microservices";

fn service_arn(cluster: &str, name: &str) -> String {
    format!("arn:aws:ecs:{REGION}:{ACCOUNT}:service/{cluster}/{name}")
}

async fn fresh() -> World {
    moto().reset();
    let world = World::new().await;
    world.repository("users").await;
    world.cluster(CLUSTER).await;
    world
}

async fn push(world: &World, tags: &[&str], architecture: &str, seed: &str) -> Pushed {
    world.push_image_with_config("users", tags, architecture, "linux", seed).await
}

/// Registers `family` (Fargate, linux/arm64) with one container per
/// `(name, image)`, and returns its ARN.
async fn task_definition(world: &World, family: &str, containers: &[(&str, &str)]) -> String {
    let definitions =
        containers.iter().map(|(name, image)| ContainerDefinition::builder().name(*name).image(*image).build());
    let out = world
        .ecs
        .register_task_definition()
        .family(family)
        .network_mode(aws_sdk_ecs::types::NetworkMode::Awsvpc)
        .requires_compatibilities(aws_sdk_ecs::types::Compatibility::Fargate)
        .cpu("256")
        .memory("512")
        .runtime_platform(
            RuntimePlatform::builder()
                .cpu_architecture(CpuArchitecture::Arm64)
                .operating_system_family(OsFamily::Linux)
                .build(),
        )
        .set_container_definitions(Some(definitions.collect()))
        .send()
        .await
        .expect("register_task_definition");
    out.task_definition().and_then(|t| t.task_definition_arn()).expect("arn").to_string()
}

/// A service in [`CLUSTER`] running `containers`, opted in, with `tags` added.
async fn service(world: &World, name: &str, containers: &[(&str, &str)], tags: &[(&str, &str)]) -> String {
    let td = task_definition(world, name, containers).await;
    let mut all = vec![("autopilot:deploy", "on")];
    all.extend_from_slice(tags);
    world.service_tagged(CLUSTER, name, &td, &all).await;
    td
}

fn push_event(digest: &str, tag: &str, id: &str) -> Value {
    let mut e = event("deploy-on-push-push.json");
    e["id"] = json!(id);
    e["detail"]["image-digest"] = json!(digest);
    e["detail"]["image-tag"] = json!(tag);
    e
}

fn report_of<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["service"] == name))
        .unwrap_or_else(|| panic!("{name} is not in the report: {report:#}"))
}

fn reason(report: &Value, name: &str) -> String {
    report_of(report, name)["reason"].as_str().unwrap_or_default().to_string()
}

/// `(Reason, PushesSkipped)` of every skip document the function published,
/// in order, each checked against the EMF specification and its dimensions.
fn skips(lambda: &Lambda) -> Vec<(String, f64)> {
    lambda
        .emf_documents()
        .into_iter()
        .filter(|d| d.get("PushesSkipped").is_some())
        .map(|d| {
            autopilot_e2e::check_emf(&d).unwrap_or_else(|p| panic!("invalid EMF ({p}): {d}"));
            assert_eq!(d["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([["Function", "Reason"]]), "{d}");
            assert_eq!(d["Function"], "deploy-on-push");
            (d["Reason"].as_str().unwrap_or_default().to_string(), d["PushesSkipped"].as_f64().unwrap_or_default())
        })
        .collect()
}

/// A WARN line naming the service for a `platform` or `older` skip.
fn warned_about(lambda: &Lambda, service: &str, class: &str) -> bool {
    lambda.log_records().iter().any(|r| {
        let fields = if r.get("fields").is_some() { &r["fields"] } else { r };
        r["level"] == "WARN" && fields["service"] == service && fields["reason_class"] == class
    })
}

#[tokio::test]
async fn a_code_deploy_service_is_skipped_naming_its_controller_and_nothing_is_registered() {
    let _serial = serial().await;
    let world = fresh().await;
    push(&world, &["latest"], "arm64", "first").await;
    let td = task_definition(&world, "users-bluegreen", &[("users", &format!("{HOST}/users:latest"))]).await;
    world.service_with_controller(CLUSTER, "users-bluegreen", Some(&td), DeploymentControllerType::CodeDeploy).await;
    let tag = Tag::builder().key("autopilot:deploy").value("on").build();
    world.ecs.tag_resource().resource_arn(service_arn(CLUSTER, "users-bluegreen")).tags(tag).send().await.expect("tag");
    let lambda = Lambda::start("deploy-on-push", &[]);
    let b = push(&world, &["latest"], "arm64", "second").await;
    let report = lambda.invoke(&push_event(&b.digest, "latest", "evt-cd")).expect("handled");
    assert_eq!(report_of(&report, "users-bluegreen")["status"], "skipped", "{report:#}");
    assert!(reason(&report, "users-bluegreen").starts_with("deployment controller CODE_DEPLOY"), "{report:#}");
    assert_eq!(world.revisions("users-bluegreen").await.len(), 1, "no orphan revision");
    assert!(report["apiCalls"].get("RegisterTaskDefinition").is_none());
    assert_eq!(report_of(&report, "users-bluegreen")["reasonClass"], "controller");
    assert_eq!(skips(&lambda), [("controller".to_string(), 1.0)]);
}

#[tokio::test]
async fn a_signature_pushed_under_glob_star_is_skipped_naming_its_type() {
    let _serial = serial().await;
    let world = fresh().await;
    let image = push(&world, &["latest"], "arm64", "signed").await;
    service(&world, "users", &[("users", &format!("{HOST}/users:latest"))], &[("autopilot:track", "glob:*")]).await;
    let before = world.service_task_definition(CLUSTER, "users").await;
    let signature =
        world.push_referrer("users", &image, "application/vnd.dev.cosign.artifact.sig.v1+json", "sig").await;
    let cosign_tag = format!("{}.sig", image.digest.replace(':', "-"));
    let lambda = Lambda::start("deploy-on-push", &[]);

    // The event says what it is: skipped before any AWS call.
    let mut said = push_event(&signature, &cosign_tag, "evt-sig-1");
    said["detail"]["artifact-media-type"] = json!("application/vnd.dev.cosign.artifact.sig.v1+json");
    let report = lambda.invoke(&said).expect("handled");
    assert!(report["skipped"]
        .as_str()
        .unwrap_or_default()
        .starts_with("not a container image: the push is a signature"));
    assert_eq!(report["apiCalls"], json!({}));
    // The event does not say: the manifest does.
    let report = lambda.invoke(&push_event(&signature, &cosign_tag, "evt-sig-2")).expect("handled");
    let skipped = report["skipped"].as_str().unwrap_or_default();
    assert!(skipped.starts_with("not a container image: the push is a signature"), "{report:#}");
    // An unknown artifact type is skipped too.
    let mut unknown = push_event(&image.digest, "latest", "evt-sig-3");
    unknown["detail"]["artifact-media-type"] = json!("application/x-something-else");
    let report = lambda.invoke(&unknown).expect("handled");
    assert!(report["skipped"].as_str().unwrap_or_default().contains("application/x-something-else"));
    assert_eq!(report["reasonClass"], "artifact");
    assert_eq!(world.service_task_definition(CLUSTER, "users").await, before);
    assert_eq!(skips(&lambda), vec![("artifact".to_string(), 1.0); 3], "one per skipped push");
}

#[tokio::test]
async fn a_late_release_4_event_never_rolls_back_a_service_running_release_5_by_tag() {
    let _serial = serial().await;
    let world = fresh().await;
    let release_4 = push(&world, &["release-4"], "arm64", "r4").await;
    // moto stamps imagePushedAt in whole seconds
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let release_5 = push(&world, &["release-5"], "arm64", "r5").await;
    for (name, track) in [("users-glob", "glob:release-*"), ("users-regex", "regex:release-[0-9]+")] {
        // The container names the tag; ECS pinned release-5's digest when the service started.
        service(&world, name, &[("users", &format!("{HOST}/users:release-5"))], &[("autopilot:track", track)]).await;
    }
    let lambda = Lambda::start("deploy-on-push", &[]);
    let late = lambda.invoke(&push_event(&release_4.digest, "release-4", "evt-r4")).expect("handled");
    for name in ["users-glob", "users-regex"] {
        assert_eq!(report_of(&late, name)["status"], "skipped", "{late:#}");
        let why = reason(&late, name);
        assert_eq!(why, format!("older push: users runs {} (release-5), pushed after this image", release_5.digest));
        assert_eq!(world.revisions(name).await.len(), 1, "{name} was rolled back");
    }
    // regex: tracking follows a newer matching tag, and ignores one it does not match.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let release_6 = push(&world, &["release-6", "main-6"], "arm64", "r6").await;
    let newer = lambda.invoke(&push_event(&release_6.digest, "release-6", "evt-r6")).expect("handled");
    assert_eq!(report_of(&newer, "users-regex")["status"], "updated", "{newer:#}");
    let other = push(&world, &["main-7"], "arm64", "m7").await;
    let main = lambda.invoke(&push_event(&other.digest, "main-7", "evt-m7")).expect("handled");
    assert!(reason(&main, "users-regex").starts_with("tag \"main-7\" is not tracked"), "{main:#}");
    // Both late skips were counted as `older` and said at WARN, naming each
    // service; main-7 as `not-tracked` by both services.
    assert_eq!(skips(&lambda), [("older".to_string(), 2.0), ("not-tracked".to_string(), 2.0)]);
    for name in ["users-glob", "users-regex"] {
        assert!(warned_about(&lambda, name, "older"), "no WARN naming {name}: {}", lambda.log_text());
    }
}

#[tokio::test]
async fn semver_with_a_digest_pin_on_1_4_0_refuses_1_0_1() {
    let _serial = serial().await;
    let world = fresh().await;
    let v140 = push(&world, &["1.4.0"], "arm64", "v140").await;
    service(
        &world,
        "users",
        &[("users", &format!("{HOST}/users@{}", v140.digest))],
        &[("autopilot:track", "semver:^1")],
    )
    .await;
    let lambda = Lambda::start("deploy-on-push", &[]);
    // A hotfix of an older line, pushed later.
    let v101 = push(&world, &["1.0.1"], "arm64", "v101").await;
    let report = lambda.invoke(&push_event(&v101.digest, "1.0.1", "evt-101")).expect("handled");
    assert_eq!(
        reason(&report, "users"),
        format!("older version: users runs 1.4.0 ({}), the push is 1.0.1", v140.digest),
        "{report:#}"
    );
    assert_eq!(world.revisions("users").await.len(), 1);
    let v150 = push(&world, &["1.5.0"], "arm64", "v150").await;
    let report = lambda.invoke(&push_event(&v150.digest, "1.5.0", "evt-150")).expect("handled");
    assert_eq!(report_of(&report, "users")["status"], "updated", "{report:#}");
}

#[tokio::test]
async fn an_amd64_image_is_refused_for_an_arm64_service_from_its_config_blob() {
    let _serial = serial().await;
    let world = fresh().await;
    push(&world, &["latest"], "arm64", "first").await;
    service(&world, "users", &[("users", &format!("{HOST}/users:latest"))], &[]).await;
    let lambda = Lambda::start("deploy-on-push", &[]);
    let laptop = push(&world, &["latest"], "amd64", "laptop").await;
    let report = lambda.invoke(&push_event(&laptop.digest, "latest", "evt-amd64")).expect("handled");
    assert_eq!(
        reason(&report, "users"),
        "platform mismatch: the service runs linux/arm64 (its runtimePlatform), the image offers linux/amd64",
        "{report:#}"
    );
    assert_eq!(report["apiCalls"]["GetDownloadUrlForLayer"], 1);
    assert_eq!(skips(&lambda), [("platform".to_string(), 1.0)]);
    assert!(warned_about(&lambda, "users", "platform"), "no WARN naming users: {}", lambda.log_text());
    let arm = push(&world, &["latest"], "arm64", "graviton").await;
    let report = lambda.invoke(&push_event(&arm.digest, "latest", "evt-arm64")).expect("handled");
    assert_eq!(report_of(&report, "users")["status"], "updated", "{report:#}");
}

#[tokio::test]
async fn clusters_given_as_an_arn_and_a_name_with_spaces() {
    let _serial = serial().await;
    let world = fresh().await;
    world.cluster("staging").await;
    world.cluster("other").await;
    push(&world, &["latest"], "arm64", "first").await;
    service(&world, "users", &[("users", &format!("{HOST}/users:latest"))], &[]).await;
    for cluster in ["staging", "other"] {
        let td =
            task_definition(&world, &format!("users-{cluster}"), &[("users", &format!("{HOST}/users:latest"))]).await;
        world.service_tagged(cluster, &format!("users-{cluster}"), &td, &[("autopilot:deploy", "on")]).await;
    }
    let clusters = format!(" arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{CLUSTER} ,  staging ");
    let lambda = Lambda::start("deploy-on-push", &[("CLUSTERS", clusters.as_str())]);
    let b = push(&world, &["latest"], "arm64", "second").await;
    let report = lambda.invoke(&push_event(&b.digest, "latest", "evt-clusters")).expect("handled");
    assert_eq!(report_of(&report, "users")["status"], "updated", "{report:#}");
    assert_eq!(report_of(&report, "users-staging")["status"], "updated", "{report:#}");
    let names: Vec<&str> =
        report["services"].as_array().expect("services").iter().filter_map(|s| s["service"].as_str()).collect();
    assert!(!names.contains(&"users-other"), "a cluster outside CLUSTERS was considered: {names:?}");
}

#[tokio::test]
async fn autopilot_containers_limits_the_rollout_to_the_named_containers() {
    let _serial = serial().await;
    let world = fresh().await;
    push(&world, &["latest"], "arm64", "first").await;
    let image = format!("{HOST}/users:latest");
    service(&world, "users", &[("api", &image), ("worker", &image)], &[("autopilot:containers", "worker")]).await;
    let lambda = Lambda::start("deploy-on-push", &[]);
    let b = push(&world, &["latest"], "arm64", "second").await;
    let report = lambda.invoke(&push_event(&b.digest, "latest", "evt-containers")).expect("handled");
    assert_eq!(
        report_of(&report, "users")["changes"],
        json!([{"container": "worker", "from": image, "to": format!("{HOST}/users@{}", b.digest)}])
    );
    let (td, _) = world.describe_task_definition(&world.service_task_definition(CLUSTER, "users").await).await;
    let images: Vec<&str> = td.container_definitions().iter().filter_map(|c| c.image()).collect();
    assert_eq!(images, [image.clone(), format!("{HOST}/users@{}", b.digest)]);
}

/// After a deploy, ECS reports how the rollout ended: a rollback arrives as
/// SERVICE_DEPLOYMENT_FAILED, counted and published to the alarm topic; a
/// success as SERVICE_DEPLOYMENT_COMPLETED. The emulator's test hook plays ECS.
#[tokio::test]
async fn the_rollout_outcome_arrives_after_a_deploy() {
    let _serial = serial().await;
    let world = fresh().await;
    push(&world, &["latest"], "arm64", "first").await;
    service(&world, "users", &[("users", &format!("{HOST}/users:latest"))], &[]).await;
    let sns = aws_sdk_sns::Client::new(&moto().sdk_config().await);
    let topic = sns.create_topic().name("alarms").send().await.expect("topic").topic_arn.expect("arn");
    let lambda = Lambda::start("deploy-on-push", &[("ALARM_TOPIC_ARN", topic.as_str())]);

    moto().set_new_deployment_status("IN_PROGRESS");
    let b = push(&world, &["latest"], "arm64", "bad-build").await;
    let deployed = lambda.invoke(&push_event(&b.digest, "latest", "evt-bad")).expect("deployed");
    assert_eq!(report_of(&deployed, "users")["status"], "updated");
    let ours = report_of(&deployed, "users")["newTaskDefinition"].as_str().expect("revision").to_string();

    // ECS's circuit breaker rolls it back.
    moto().set_latest_deployment_status(REGION, CLUSTER, "users", "ROLLBACK_SUCCESSFUL");
    let mut failed = event("deploy-on-push-deployment-failed.json");
    failed["resources"] = json!([service_arn(CLUSTER, "users")]);
    let report = lambda.invoke(&failed).expect("handled");
    let rollout = &report["rollout"];
    assert_eq!(rollout["outcome"], "rolled-back", "{report:#}");
    assert_eq!(rollout["digest"], json!(b.digest));
    assert_eq!(rollout["taskDefinition"], json!(ours));
    assert_eq!(rollout["notified"], true);
    assert_eq!(report["apiCalls"]["Publish"], 1);
    assert!(lambda.emf_documents().iter().any(|d| d["RolloutsRolledBack"] == 1.0 && d["RolloutsFailed"] == 0.0));

    // The next push rolls out and completes.
    let c = push(&world, &["latest"], "arm64", "good-build").await;
    lambda.invoke(&push_event(&c.digest, "latest", "evt-good")).expect("deployed");
    moto().set_latest_deployment_status(REGION, CLUSTER, "users", "SUCCESSFUL");
    let mut completed = event("deploy-on-push-deployment-completed.json");
    completed["resources"] = json!([service_arn(CLUSTER, "users")]);
    let report = lambda.invoke(&completed).expect("handled");
    assert_eq!(report["rollout"]["outcome"], "succeeded", "{report:#}");
    assert_eq!(report["rollout"]["digest"], json!(c.digest));
    assert_eq!(report["rollout"]["notified"], false);
    assert!(lambda.emf_documents().iter().any(|d| d["RolloutsSucceeded"] == 1.0));
}
