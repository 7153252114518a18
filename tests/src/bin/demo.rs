//! `make demo`: the tutorials' world on the embedded local AWS (moto), and
//! log-groups doing the tutorials' manual log-group steps by itself.

use autopilot_e2e::world::{World, CLUSTER, SERVICES};
use autopilot_e2e::{enable_fake_clock, event, moto, Lambda};
use serde_json::{json, Value};

/// Prints a report without its per-group detail, which the summary lists repeat.
fn show(title: &str, report: &Value) {
    let mut summary = report.clone();
    if let Some(fields) = summary.as_object_mut() {
        fields.remove("groups");
    }
    println!("\n== {title}\n{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // moto runs under libfaketime so the housekeeping step can backdate pushes.
    enable_fake_clock();
    let moto = moto();
    println!("local AWS (moto server) at {}", moto.endpoint);

    let world = World::new().await;
    world.tutorial().await;
    println!(
        "cluster {CLUSTER:?} with services {SERVICES:?}; their task definitions log with awslogs to {:?}",
        autopilot_e2e::world::tutorial_groups()
    );
    println!("log groups that exist now: {:?}", world.log_group_names().await);

    // The tutorials use a 1-day retention.
    let lambda = Lambda::start("log-groups", &[("LOG_RETENTION_DAYS", "1")]);

    let plan = lambda.invoke(&json!({"dryRun": true, "clusters": [CLUSTER]}));
    show("log-groups, dry run (what it would do; nothing written)", &plan.unwrap_or_else(|e| json!(e.error_message)));

    let report = lambda.invoke(&event("log-groups-schedule.json"));
    show("log-groups, scheduled sweep", &report.unwrap_or_else(|e| json!(e.error_message)));

    println!("\n== log groups in the local AWS afterwards");
    for name in world.log_group_names().await {
        if let Some(group) = world.log_group(&name).await {
            let mut tags: Vec<_> = group.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            tags.sort();
            println!("{name:<22} retention {:>3} day(s)  tags: {}", group.retention_days.unwrap_or(0), tags.join(", "));
        }
    }

    let again = lambda.invoke(&event("log-groups-schedule.json")).unwrap_or_else(|e| json!(e.error_message));
    println!("\n== a second sweep changes nothing: alreadyCompliant = {}", again["alreadyCompliant"]);

    deploy_on_push(&world).await;
    housekeeping(&world).await;
}

/// quota-scan and prune-images on the registry the pushes left behind.
async fn housekeeping(world: &World) {
    println!("\n\n##### quota-scan and prune-images");
    moto().set_clock("-3d");
    for leftover in ["users-old-1", "users-old-2", "users-old-3"] {
        world.push_image("users", &[], "arm64", leftover).await;
    }
    moto().set_clock("+0d");
    println!("three untagged users images from three days ago (earlier pushes) are in the registry");

    let quota = Lambda::start("quota-scan", &[]);
    let scan = quota.invoke(&event("quota-scan-schedule.json")).unwrap_or_else(|e| json!(e.error_message));
    show("quota-scan: the registry against the 500 MB free tier", &scan["registry"]);

    let prune = Lambda::start("prune-images", &[]);
    let preview = prune.invoke(&json!({"dryRun": true, "repositories": ["users"]}));
    let preview = preview.unwrap_or_else(|e| json!(e.error_message));
    show("prune-images, dry run of the default policy on users", &preview["repositories"][0]);
    let run = prune.invoke(&event("prune-images-schedule.json")).unwrap_or_else(|e| json!(e.error_message));
    println!(
        "\nprune-images deleted {} image(s), {} bytes; protected {} (in use or part of a kept index)",
        run["imagesDeleted"], run["bytesReclaimed"], run["imagesProtected"]
    );
}

/// The CI job only pushes; deploy-on-push does the `ecs update-service`.
async fn deploy_on_push(world: &World) {
    println!("\n\n##### deploy-on-push");
    for repository in SERVICES {
        world.repository(repository).await;
        world.push_image_with_config(repository, &["latest"], "arm64", "linux", "v1").await;
    }
    // users and threads opt in; posts stays manual.
    for service in ["users", "threads"] {
        let arn = format!("arn:aws:ecs:us-east-1:123456789012:service/{CLUSTER}/{service}");
        let tag = aws_sdk_ecs::types::Tag::builder().key("autopilot:deploy").value("on").build();
        world.ecs.tag_resource().resource_arn(arn).tags(tag).send().await.expect("tag the service");
    }
    println!("services users and threads are tagged autopilot:deploy=on; posts is not");
    let before = world.service_task_definition(CLUSTER, "users").await;
    println!("users runs {before}");

    let lambda = Lambda::start("deploy-on-push", &[]);
    let pushed = world.push_image_with_config("users", &["latest"], "arm64", "linux", "v2").await;
    println!("CI pushed a new users:latest, digest {}", pushed.digest);
    let mut push = event("deploy-on-push-push.json");
    push["detail"]["image-digest"] = json!(pushed.digest);

    let preview = lambda.invoke(&json!({"repository": "users", "tag": "latest", "dryRun": true}));
    show("deploy-on-push, manual preview (dry run)", &preview.unwrap_or_else(|e| json!(e.error_message)));
    let report = lambda.invoke(&push);
    show("deploy-on-push, the ECR push event", &report.unwrap_or_else(|e| json!(e.error_message)));

    let after = world.service_task_definition(CLUSTER, "users").await;
    let (td, _) = world.describe_task_definition(&after).await;
    println!("\nusers now runs {after}");
    println!("with image {}", td.container_definitions()[0].image().unwrap_or_default());
    let replay = lambda.invoke(&push).unwrap_or_else(|e| json!(e.error_message));
    println!("the same event again: {}", replay["services"][0]["reason"]);
    rollout_outcome(&lambda).await;
}

/// ECS finishes the rollout (the local AWS plays ECS) and says so with an
/// `ECS Deployment State Change` event: deploy-on-push reports the outcome.
async fn rollout_outcome(lambda: &Lambda) {
    moto().set_latest_deployment_status("us-east-1", CLUSTER, "users", "SUCCESSFUL");
    let mut completed = event("deploy-on-push-deployment-completed.json");
    completed["resources"] = json!([format!("arn:aws:ecs:us-east-1:123456789012:service/{CLUSTER}/users")]);
    let report = lambda.invoke(&completed).unwrap_or_else(|e| json!(e.error_message));
    let r = &report["rollout"];
    println!(
        "\nECS reports the users deployment completed: rollout of {} ({}) {} (RolloutsSucceeded = 1)",
        r["digest"].as_str().unwrap_or("?"),
        r["taskDefinition"].as_str().unwrap_or("?"),
        r["outcome"].as_str().unwrap_or("?")
    );
}
