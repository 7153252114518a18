//! End to end: the real `deploy-on-push` binary behind cargo-lambda's Runtime
//! API, fed push events shaped like the `events/` files, against moto.
//!
//! Images are pushed with a real config blob (`push_image_with_config`):
//! deploy-on-push reads it (GetDownloadUrlForLayer) for the platform guard.
//!
//! moto quirks this works around (TESTING.md): `update_service` stores the
//! task definition as given and adds no deployment, so we assert on the
//! service's `taskDefinition`; image digests are given to PutImage as the
//! sha256 of the manifest bytes (what real ECR computes) instead of moto's
//! layer-hash or random ones; a tag moved to another image deletes the old
//! image outright, so images that must survive get a second tag.

use autopilot_e2e::world::{image, World};
use autopilot_e2e::{check_emf, event, moto, serial, Lambda};
use serde_json::{json, Value};

const HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

/// users (on, tracks its tag `latest`, app + Envoy sidecar) and users-batch
/// (not opted in) in `microservices`; users-canary (on, `semver:^1`) in
/// `staging`. All run repository `users`, whose first image is `latest` and `1.0.0`.
async fn world() -> World {
    moto().reset();
    let world = World::new().await;
    world.repository("users").await;
    world.push_image_with_config("users", &["latest", "1.0.0"], "arm64", "linux", "first").await;
    world.cluster("microservices").await;
    world.cluster("staging").await;
    let plain = world.task_definition("users", &[("users", "/ecs/users"), ("envoy", "/ecs/users-envoy")]).await;
    let users = enrich(&world, &plain).await;
    world.service_tagged("microservices", "users", &users, &[("autopilot:deploy", "on")]).await;
    let batch = world.task_definition("users-batch", &[("users-batch", "/ecs/users-batch")]).await;
    world.service_tagged("microservices", "users-batch", &batch, &[("team", "data")]).await;
    let canary = world.task_definition("users-canary", &[("users-canary", "/ecs/users-canary")]).await;
    world
        .service_tagged(
            "staging",
            "users-canary",
            &canary,
            &[("autopilot:deploy", "on"), ("autopilot:track", "semver:^1")],
        )
        .await;
    // The canary runs the versioned tag, not latest.
    retag_container(&world, "users-canary", &image("users", "1.0.0")).await;
    world
}

/// A new revision of `td` with every kind of field a faithful copy must keep:
/// roles, volumes, secrets, ephemeral storage, proxy configuration,
/// placement constraints, PID/IPC modes, tags.
async fn enrich(world: &World, td: &str) -> String {
    use aws_sdk_ecs::types::{
        EfsVolumeConfiguration, EphemeralStorage, KeyValuePair, MountPoint, ProxyConfiguration, Secret, Tag,
        TaskDefinitionPlacementConstraint, TaskDefinitionPlacementConstraintType, Volume,
    };
    let (td, _) = world.describe_task_definition(td).await;
    let mut containers = td.container_definitions().to_vec();
    containers[0].secrets = Some(vec![Secret::builder()
        .name("DATABASE_URL")
        .value_from("arn:aws:secretsmanager:us-east-1:123456789012:secret:users/db-AbCdEf")
        .build()
        .expect("secret")]);
    containers[0].mount_points =
        Some(vec![MountPoint::builder().source_volume("data").container_path("/data").build()]);
    containers[0].environment = Some(vec![KeyValuePair::builder().name("PORT").value("3000").build()]);
    let out = world
        .ecs
        .register_task_definition()
        .family("users")
        .task_role_arn("arn:aws:iam::123456789012:role/users-task")
        .execution_role_arn("arn:aws:iam::123456789012:role/ecsTaskExecutionRole")
        .set_network_mode(td.network_mode.clone())
        .set_requires_compatibilities(td.requires_compatibilities.clone())
        .set_cpu(td.cpu.clone())
        .set_memory(td.memory.clone())
        .set_runtime_platform(td.runtime_platform.clone())
        .set_container_definitions(Some(containers))
        .volumes(
            Volume::builder()
                .name("data")
                .efs_volume_configuration(
                    EfsVolumeConfiguration::builder().file_system_id("fs-0123456789abcdef0").build().expect("efs"),
                )
                .build(),
        )
        .ephemeral_storage(EphemeralStorage::builder().size_in_gib(40).build())
        .proxy_configuration(
            ProxyConfiguration::builder()
                .container_name("envoy")
                .properties(KeyValuePair::builder().name("ProxyIngressPort").value("15000").build())
                .build()
                .expect("proxy"),
        )
        .placement_constraints(
            TaskDefinitionPlacementConstraint::builder()
                .r#type(TaskDefinitionPlacementConstraintType::MemberOf)
                .expression("attribute:ecs.availability-zone in [us-east-1a, us-east-1b]")
                .build(),
        )
        .tags(Tag::builder().key("team").value("identity").build())
        .send()
        .await
        .expect("register the rich revision");
    out.task_definition().and_then(|t| t.task_definition_arn()).expect("arn").to_string()
}

/// Registers a new revision of `family` whose first container runs `image`,
/// and points the family's service at it.
async fn retag_container(world: &World, family: &str, new_image: &str) {
    let (td, _) = world.describe_task_definition(family).await;
    let mut containers = td.container_definitions().to_vec();
    containers[0].image = Some(new_image.to_string());
    let out = world
        .ecs
        .register_task_definition()
        .family(family)
        .set_network_mode(td.network_mode.clone())
        .set_requires_compatibilities(td.requires_compatibilities.clone())
        .set_cpu(td.cpu.clone())
        .set_memory(td.memory.clone())
        .set_runtime_platform(td.runtime_platform.clone())
        .set_container_definitions(Some(containers))
        .send()
        .await
        .expect("register");
    let arn = out.task_definition().and_then(|t| t.task_definition_arn()).expect("arn").to_string();
    let cluster = if family == "users-canary" { "staging" } else { "microservices" };
    world.ecs.update_service().cluster(cluster).service(family).task_definition(arn).send().await.expect("update");
}

fn push_event(digest: &str, tag: &str, id: &str) -> Value {
    let mut e = event("deploy-on-push-push.json");
    e["id"] = json!(id);
    e["detail"]["image-digest"] = json!(digest);
    e["detail"]["image-tag"] = json!(tag);
    e
}

fn service<'a>(report: &'a Value, name: &str) -> Option<&'a Value> {
    report["services"].as_array()?.iter().find(|s| s["service"] == name)
}

fn status(report: &Value, name: &str) -> String {
    service(report, name).map(|s| s["status"].as_str().unwrap_or_default().to_string()).unwrap_or("absent".into())
}

fn reason(report: &Value, name: &str) -> String {
    service(report, name).and_then(|s| s["reason"].as_str()).unwrap_or_default().to_string()
}

/// The fields RegisterTaskDefinition takes, without what a new revision
/// changes by design: ARN, revision, registration stamps, status.
fn comparable(td: &aws_sdk_ecs::types::TaskDefinition) -> aws_sdk_ecs::types::TaskDefinition {
    let mut td = td.clone();
    td.task_definition_arn = None;
    td.revision = 0;
    td.registered_at = None;
    td.registered_by = None;
    td.status = None;
    td
}

#[tokio::test]
async fn a_push_rolls_out_only_to_services_that_track_it_and_changes_only_the_image() {
    let _serial = serial().await;
    let world = world().await;
    let before_users = world.service_task_definition("microservices", "users").await;
    let before_canary = world.service_task_definition("staging", "users-canary").await;
    let before_batch = world.service_task_definition("microservices", "users-batch").await;
    let lambda = Lambda::start("deploy-on-push", &[]);

    // WHEN a new `latest` is pushed
    let b = world.push_image_with_config("users", &["latest"], "arm64", "linux", "second").await;
    let report = lambda.invoke(&push_event(&b.digest, "latest", "evt-latest")).expect("handled");

    // THEN users (tracking latest) moves to the digest; the canary (semver:^1)
    // skips it; users-batch, not opted in, is not even considered
    assert_eq!(status(&report, "users"), "updated", "{report:#}");
    assert_eq!(status(&report, "users-canary"), "skipped");
    assert!(reason(&report, "users-canary").starts_with("tag \"latest\" is not tracked"));
    assert_eq!(status(&report, "users-batch"), "absent");
    let now = world.service_task_definition("microservices", "users").await;
    assert_ne!(now, before_users);
    assert_eq!(service(&report, "users").expect("users")["newTaskDefinition"], json!(now));
    assert_eq!(world.service_task_definition("staging", "users-canary").await, before_canary);
    assert_eq!(world.service_task_definition("microservices", "users-batch").await, before_batch);

    // AND the new revision is the old one with only the app image pinned
    let (old, _) = world.describe_task_definition(&before_users).await;
    let (new, tags) = world.describe_task_definition(&now).await;
    let pinned = format!("{HOST}/users@{}", b.digest);
    assert_eq!(new.container_definitions()[0].image(), Some(pinned.as_str()));
    assert_eq!(new.container_definitions()[1], old.container_definitions()[1], "the sidecar changed");
    let mut expected = comparable(&old);
    expected.container_definitions.as_mut().expect("containers")[0].image = Some(pinned.clone());
    assert_eq!(comparable(&new), expected, "a field other than the image changed");
    let tag = |k: &str| tags.iter().find(|t| t.key() == Some(k)).and_then(|t| t.value()).map(String::from);
    assert_eq!(tag("team").as_deref(), Some("identity"), "the revision's own tags are kept");
    assert!(new.volumes().len() == 1 && new.ephemeral_storage().is_some() && new.proxy_configuration().is_some());
    assert_eq!(tag("autopilot:source-digest"), Some(b.digest.clone()));
    assert_eq!(tag("autopilot:source-tag").as_deref(), Some("latest"));
    assert_eq!(tag("autopilot:source-event").as_deref(), Some("evt-latest"));
    // AND its log groups were made first
    assert_eq!(world.log_group_names().await, ["/ecs/users", "/ecs/users-envoy"]);

    // WHEN 1.1.0 is pushed THEN the canary follows it and users, pinned now,
    // still follows `latest` (from its revision's source tag)
    let c = world.push_image_with_config("users", &["1.1.0"], "arm64", "linux", "third").await;
    let report = lambda.invoke(&push_event(&c.digest, "1.1.0", "evt-110")).expect("handled");
    assert_eq!(status(&report, "users-canary"), "updated", "{report:#}");
    assert!(reason(&report, "users").starts_with("tag \"1.1.0\" is not tracked (users: latest)"), "{report:#}");
    let canary = world.service_task_definition("staging", "users-canary").await;
    let (canary_td, _) = world.describe_task_definition(&canary).await;
    assert_eq!(canary_td.container_definitions()[0].image(), Some(format!("{HOST}/users@{}", c.digest).as_str()));
    let emf = lambda.emf_documents();
    assert!(emf.iter().any(|d| d["ServicesUpdated"] == 1.0));
    for doc in &emf {
        check_emf(doc).expect("valid EMF");
    }
}

#[tokio::test]
async fn the_same_event_three_times_makes_exactly_one_revision() {
    let _serial = serial().await;
    let world = world().await;
    let lambda = Lambda::start("deploy-on-push", &[]);
    let b = world.push_image_with_config("users", &["latest"], "arm64", "linux", "again").await;
    let event = push_event(&b.digest, "latest", "evt-dup");
    let first = lambda.invoke(&event).expect("first");
    assert_eq!(status(&first, "users"), "updated");
    for _ in 0..2 {
        let replay = lambda.invoke(&event).expect("replay");
        assert_eq!(status(&replay, "users"), "skipped");
        assert!(reason(&replay, "users").starts_with("already running"), "{replay:#}");
    }
    assert_eq!(world.revisions("users").await.len(), 3, "the two set-up revisions and one new one");
}

#[tokio::test]
async fn an_older_push_delivered_after_a_newer_one_is_skipped() {
    let _serial = serial().await;
    let world = world().await;
    // users follows every tag, so the older image's own tag is tracked too.
    let arn = "arn:aws:ecs:us-east-1:123456789012:service/microservices/users";
    let track = aws_sdk_ecs::types::Tag::builder().key("autopilot:track").value("glob:*").build();
    world.ecs.tag_resource().resource_arn(arn).tags(track).send().await.expect("tag");
    let lambda = Lambda::start("deploy-on-push", &[]);
    let older = world.push_image_with_config("users", &["latest", "build-41"], "arm64", "linux", "older").await;
    // moto stamps imagePushedAt in whole seconds
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let newer = world.push_image_with_config("users", &["latest", "build-42"], "arm64", "linux", "newer").await;
    let report = lambda.invoke(&push_event(&newer.digest, "build-42", "evt-42")).expect("newer");
    assert_eq!(status(&report, "users"), "updated");
    let deployed = world.service_task_definition("microservices", "users").await;

    // The older push's events arrive late: by its own tag, and by `latest`,
    // which has moved on since.
    let late = lambda.invoke(&push_event(&older.digest, "build-41", "evt-41")).expect("late");
    assert!(reason(&late, "users").starts_with("older push"), "{late:#}");
    let stale = lambda.invoke(&push_event(&older.digest, "latest", "evt-41-latest")).expect("stale");
    assert!(reason(&stale, "users").starts_with("stale event"), "{stale:#}");
    assert_eq!(world.service_task_definition("microservices", "users").await, deployed, "rolled back");
}

#[tokio::test]
async fn an_amd64_only_index_is_refused_for_an_arm64_service() {
    let _serial = serial().await;
    let world = world().await;
    let lambda = Lambda::start("deploy-on-push", &[]);
    let before = world.service_task_definition("microservices", "users").await;
    let amd64 = world.push_image_with_config("users", &[], "amd64", "linux", "x86-only").await;
    let index = world.push_index("users", "latest", std::slice::from_ref(&amd64)).await;
    let mut event = push_event(&index, "latest", "evt-amd64");
    event["detail"]["manifest-media-type"] = json!("application/vnd.oci.image.index.v1+json");
    let report = lambda.invoke(&event).expect("handled");
    assert!(reason(&report, "users").starts_with("platform mismatch"), "{report:#}");
    assert_eq!(world.service_task_definition("microservices", "users").await, before);

    // A multi-arch index with an arm64 manifest deploys, pinned to the index.
    let arm64 = world.push_image_with_config("users", &[], "arm64", "linux", "arm-too").await;
    let multi = world.push_index("users", "latest", &[amd64, arm64]).await;
    let mut event = push_event(&multi, "latest", "evt-multi");
    event["detail"]["manifest-media-type"] = json!("application/vnd.oci.image.index.v1+json");
    let report = lambda.invoke(&event).expect("handled");
    assert_eq!(status(&report, "users"), "updated", "{report:#}");
    let (td, _) = world.describe_task_definition(&world.service_task_definition("microservices", "users").await).await;
    assert_eq!(td.container_definitions()[0].image(), Some(format!("{HOST}/users@{multi}").as_str()));
}

#[tokio::test]
async fn dry_run_reports_the_exact_change_and_writes_nothing() {
    let _serial = serial().await;
    let world = world().await;
    let b = world.push_image_with_config("users", &["latest"], "arm64", "linux", "dry").await;
    let before = world.service_task_definition("microservices", "users").await;
    let lambda = Lambda::start("deploy-on-push", &[("DRY_RUN", "true")]);
    let report = lambda.invoke(&push_event(&b.digest, "latest", "evt-dry")).expect("dry run");
    assert_eq!(report["dryRun"], true);
    assert_eq!(status(&report, "users"), "planned");
    assert_eq!(
        service(&report, "users").expect("users")["changes"],
        json!([{"container": "users", "from": image("users", "latest"), "to": format!("{HOST}/users@{}", b.digest)}])
    );
    // The manual preview: what would a push of users:latest do?
    let preview = lambda.invoke(&event("deploy-on-push-manual-preview.json")).expect("preview");
    assert_eq!(status(&preview, "users"), "planned");
    assert_eq!(world.service_task_definition("microservices", "users").await, before);
    assert_eq!(world.revisions("users").await.len(), 2);
    assert!(world.log_group_names().await.is_empty());
}

#[tokio::test]
async fn malformed_and_ignored_events_make_no_writes() {
    let _serial = serial().await;
    let world = world().await;
    let lambda = Lambda::start("deploy-on-push", &[]);
    let mut bad_digest = event("deploy-on-push-push.json");
    bad_digest["detail"]["image-digest"] = json!("latest");
    let mut no_detail = event("deploy-on-push-push.json");
    no_detail.as_object_mut().expect("object").remove("detail");
    let mut bad_tag = event("deploy-on-push-push.json");
    bad_tag["detail"]["image-tag"] = json!("-bad tag");
    // EventBridge events it cannot use are answered (not retried), logged
    // at ERROR and counted in EventsRejected...
    for (payload, expected) in [
        (bad_digest, "malformed event: image-digest"),
        (no_detail, "malformed event: EventBridge envelope"),
        (bad_tag, "malformed event: repository \"users\" or tag \"-bad tag\""),
        (event("log-groups-schedule.json"), "unexpected event"),
    ] {
        autopilot_e2e::assert_rejected(&lambda, &payload, expected);
    }
    // ...while a manual invocation gets its error, the same bad tag included.
    for (payload, expected) in [
        (json!([]), "malformed event"),
        (json!({"repository": "users", "tag": "-bad tag"}), "malformed event: manual request"),
        (json!({"repository": "users", "tag": "no-such-tag"}), "not found: image users:no-such-tag"),
    ] {
        let error = lambda.invoke(&payload).expect_err("rejected");
        assert_eq!(error.error_type, "NonRetryable");
        assert!(error.error_message.starts_with(expected), "{payload} → {}", error.error_message);
    }
    let rejected: usize = lambda.emf_documents().iter().filter(|d| d.get("EventsRejected").is_some()).count();
    assert_eq!(rejected, 4, "errors of manual invocations are not EventsRejected");
    for (file, expected) in [
        ("deploy-on-push-push-failed.json", "the push did not succeed"),
        ("deploy-on-push-delete.json", "action-type DELETE"),
        ("deploy-on-push-multiarch-child-1.json", "untagged push"),
        ("deploy-on-push-multiarch-child-2.json", "untagged push"),
    ] {
        let report = lambda.invoke(&event(file)).expect(file);
        assert!(report["skipped"].as_str().unwrap_or_default().starts_with(expected), "{file}: {report}");
        assert_eq!(report["apiCalls"], json!({}), "{file} made AWS calls");
    }
    // A push to a repository nobody runs is skipped after discovery.
    let mut elsewhere = event("deploy-on-push-push.json");
    elsewhere["detail"]["repository-name"] = json!("posts");
    let report = lambda.invoke(&elsewhere).expect("handled");
    assert_eq!(report["skipped"], "no opted-in service runs repository posts");
    assert_eq!(world.revisions("users").await.len(), 2);
    assert!(world.service_task_definition("microservices", "users").await.ends_with("users:2"));
}

/// The deployable artefact: the arm64 release bootstrap under qemu-aarch64
/// rolls a push out. `make test` builds it and sets AUTOPILOT_ARM64_BOOTSTRAP_DIR.
#[tokio::test]
async fn arm64_release_bootstrap_rolls_a_push_out_under_qemu() {
    let Some(dir) = std::env::var_os("AUTOPILOT_ARM64_BOOTSTRAP_DIR") else {
        eprintln!("skipped: AUTOPILOT_ARM64_BOOTSTRAP_DIR is not set (make test sets it)");
        return;
    };
    let bootstrap = std::path::PathBuf::from(dir).join("deploy-on-push/bootstrap");
    assert!(bootstrap.exists(), "{} is missing: run `make arm64`", bootstrap.display());
    let _serial = serial().await;
    let world = world().await;
    let lambda = Lambda::start_arm64(&bootstrap, "deploy-on-push", &[]);
    let b = world.push_image_with_config("users", &["latest"], "arm64", "linux", "qemu").await;
    let report = lambda.invoke(&push_event(&b.digest, "latest", "evt-qemu")).expect("push under qemu");
    assert_eq!(status(&report, "users"), "updated", "{report:#}");
}

/// The image the `users` container of `users`'s current revision runs.
async fn users_image(world: &World) -> String {
    let current = world.service_task_definition("microservices", "users").await;
    let (td, _) = world.describe_task_definition(&current).await;
    let users = td.container_definitions().iter().find(|c| c.name() == Some("users")).expect("users container");
    users.image().unwrap_or_default().to_string()
}

/// Without reserved concurrency (the template's default) two invocations can
/// run at once. Two pushes of `latest`, their events handled at the same time
/// by two instances, in both orders of delivery: the older event names a tag
/// that has moved on, so it is skipped as stale whatever the timing, and the
/// service ends on the newer image with one new revision.
#[tokio::test]
async fn two_pushes_handled_concurrently_end_on_the_newer_image() {
    let _serial = serial().await;
    for reverse in [false, true] {
        let world = world().await;
        let first_instance = Lambda::start("deploy-on-push", &[]);
        let second_instance = Lambda::start("deploy-on-push", &[]);
        let older = world
            .push_image_with_config("users", &["latest", "build-1"], "arm64", "linux", &format!("older-{reverse}"))
            .await;
        // moto stamps imagePushedAt in whole seconds
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let newer = world
            .push_image_with_config("users", &["latest", "build-2"], "arm64", "linux", &format!("newer-{reverse}"))
            .await;
        let older_event = push_event(&older.digest, "latest", "evt-older");
        let newer_event = push_event(&newer.digest, "latest", "evt-newer");
        let (first, second) = if reverse { (&newer_event, &older_event) } else { (&older_event, &newer_event) };
        let (r1, r2) = std::thread::scope(|s| {
            let one = s.spawn(|| first_instance.invoke(first));
            let two = s.spawn(|| second_instance.invoke(second));
            (one.join().expect("first invocation"), two.join().expect("second invocation"))
        });
        let (r1, r2) = (r1.expect("handled"), r2.expect("handled"));
        let (older_report, newer_report) = if reverse { (r2, r1) } else { (r1, r2) };
        assert_eq!(older_report["digest"], older.digest.as_str());
        assert!(reason(&older_report, "users").starts_with("stale event"), "reverse={reverse}: {older_report:#}");
        assert_eq!(status(&newer_report, "users"), "updated", "reverse={reverse}: {newer_report:#}");
        assert!(users_image(&world).await.ends_with(&format!("users@{}", newer.digest)), "reverse={reverse}");
        assert_eq!(world.revisions("users").await.len(), 3, "reverse={reverse}: one new revision");
    }
}

/// The same push delivered twice at once (EventBridge delivers at least
/// once): both copies end with the service on the pushed digest, and no copy
/// fails. Both may register a revision before either sees the other's (the
/// reuse check runs before registering), which is harmless: the service runs
/// one of two identical revisions.
#[tokio::test]
async fn one_push_delivered_twice_at_once_converges() {
    let _serial = serial().await;
    let world = world().await;
    let one = Lambda::start("deploy-on-push", &[]);
    let two = Lambda::start("deploy-on-push", &[]);
    let pushed = world.push_image_with_config("users", &["latest"], "arm64", "linux", "twice").await;
    let event = push_event(&pushed.digest, "latest", "evt-twice");
    let (r1, r2) = std::thread::scope(|s| {
        let a = s.spawn(|| one.invoke(&event));
        let b = s.spawn(|| two.invoke(&event));
        (a.join().expect("first copy"), b.join().expect("second copy"))
    });
    for report in [r1.expect("first copy handled"), r2.expect("second copy handled")] {
        let status = status(&report, "users");
        let ok =
            status == "updated" || (status == "skipped" && reason(&report, "users").starts_with("already running"));
        assert!(ok, "{report:#}");
    }
    assert!(users_image(&world).await.ends_with(&format!("users@{}", pushed.digest)));
    let new_revisions = world.revisions("users").await.len() - 2;
    assert!((1..=2).contains(&new_revisions), "{new_revisions} new revisions");
}
