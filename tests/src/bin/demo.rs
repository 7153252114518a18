//! `make demo`: the tutorials' world on the embedded local AWS (moto), and the
//! four functions doing the tutorials' manual steps by themselves.
//!
//! Prints each function's report as a compact table (`autopilot_e2e::tables`);
//! `--json` prints the reports themselves. Progress of the slow steps goes to
//! stderr, so stdout is only the story and its tables.

use std::time::Instant;

use autopilot_e2e::tables::{self, Inventory, Table};
use autopilot_e2e::world::{World, CLUSTER, SERVICES};
use autopilot_e2e::{enable_fake_clock, event, moto, FunctionError, Lambda, ACCOUNT, REGION};
use serde_json::{json, Value};

/// The tutorials' "keep the last N images" native rule, with N = 1.
const POSTS_NATIVE_POLICY: &str = r#"{"rules": [{"rulePriority": 1, "description": "Keep only the newest image",
  "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1}, "action": {"type": "expire"}}]}"#;

const USAGE: &str = "usage: demo [--json]\n  --json  print the functions' JSON reports instead of tables";

struct Demo {
    json: bool,
    started: Instant,
}

impl Demo {
    /// A slow step is starting: say so on stderr, with the time so far.
    fn progress(&self, what: &str) {
        eprintln!("[{:>5.1} s] {what} …", self.started.elapsed().as_secs_f64());
    }

    fn section(&self, title: &str) {
        println!("\n\n##### {title}");
    }

    /// A report as a table, or as JSON with `--json`.
    fn show(&self, title: &str, report: &Value, table: Table) {
        if self.json {
            println!("\n== {title}\n{}", serde_json::to_string_pretty(report).unwrap_or_default());
        } else {
            println!("\n== {title}\n{table}");
        }
    }

    /// The function's report; an error ends the demo (and fails its test).
    fn report(&self, what: &str, result: Result<Value, FunctionError>) -> Value {
        result.unwrap_or_else(|e| {
            eprintln!("{what} failed: {}: {}", e.error_type, e.error_message);
            std::process::exit(1);
        })
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut json = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--json" => json = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            other => {
                eprintln!("unknown argument {other:?}\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
    let demo = Demo { json, started: Instant::now() };

    // moto runs under libfaketime so the housekeeping step can backdate pushes.
    enable_fake_clock();
    demo.progress("starting the local AWS (moto server)");
    let moto = moto();
    println!("local AWS (moto server) at {}", moto.endpoint);

    demo.progress("building the tutorial's cluster, services and task definitions");
    let world = World::new().await;
    world.tutorial().await;
    println!(
        "cluster {CLUSTER:?} with services {SERVICES:?}; their task definitions log with awslogs to {:?}",
        autopilot_e2e::world::tutorial_groups()
    );
    println!("log groups that exist now: {:?}", world.log_group_names().await);

    log_groups(&demo, &world).await;
    deploy_on_push(&demo, &world).await;
    housekeeping(&demo, &world).await;
    demo.progress("done");
}

/// log-groups creates the groups the task definitions name, with the
/// tutorials' 1-day retention.
async fn log_groups(demo: &Demo, world: &World) {
    demo.section("log-groups");
    demo.progress("starting log-groups behind a local Lambda Runtime API");
    let lambda = Lambda::start("log-groups", &[("LOG_RETENTION_DAYS", "1")]);

    let plan = demo.report("log-groups dry run", lambda.invoke(&json!({"dryRun": true, "clusters": [CLUSTER]})));
    demo.show("log-groups, dry run (what it would do; nothing written)", &plan, tables::log_groups(&plan));

    let report = demo.report("log-groups sweep", lambda.invoke(&event("log-groups-schedule.json")));
    demo.show("log-groups, scheduled sweep", &report, tables::log_groups(&report));

    let mut now = Table::new(&["group", "retention", "tags"]);
    for name in world.log_group_names().await {
        if let Some(group) = world.log_group(&name).await {
            let mut tags: Vec<_> = group.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            tags.sort();
            let retention = group.retention_days.map_or("never expire".into(), |d| format!("{d} d"));
            now.push([name, retention, tags.join(", ")]);
        }
    }
    println!("\n== log groups in the local AWS afterwards\n{now}");

    let again = demo.report("log-groups second sweep", lambda.invoke(&event("log-groups-schedule.json")));
    demo.show("log-groups, a second sweep changes nothing", &again, tables::log_groups(&again));
}

/// The CI job only pushes; deploy-on-push does the `ecs update-service`.
async fn deploy_on_push(demo: &Demo, world: &World) {
    demo.section("deploy-on-push");
    // posts' CI also tags each build with its version.
    for repository in SERVICES {
        world.repository(repository).await;
        let tags: &[&str] = if repository == "posts" { &["latest", "v1"] } else { &["latest"] };
        world.push_image_with_config(repository, tags, "arm64", "linux", "v1").await;
    }
    // posts is deployed by hand, as in the tutorial: a forced deployment,
    // after which ECS runs the digest `latest` pointed at then.
    world
        .ecs
        .update_service()
        .cluster(CLUSTER)
        .service("posts")
        .force_new_deployment(true)
        .send()
        .await
        .expect("deploy");
    // users and threads opt in; posts stays manual.
    for service in ["users", "threads"] {
        let arn = format!("arn:aws:ecs:us-east-1:123456789012:service/{CLUSTER}/{service}");
        let tag = aws_sdk_ecs::types::Tag::builder().key("autopilot:deploy").value("on").build();
        world.ecs.tag_resource().resource_arn(arn).tags(tag).send().await.expect("tag the service");
    }
    println!("services users and threads are tagged autopilot:deploy=on; posts is not");
    let before = world.service_task_definition(CLUSTER, "users").await;
    println!("users runs {before}");

    demo.progress("starting deploy-on-push behind a local Lambda Runtime API");
    let lambda = Lambda::start("deploy-on-push", &[]);
    let pushed = world.push_image_with_config("users", &["latest"], "arm64", "linux", "v2").await;
    println!("CI pushed a new users:latest, digest {}", pushed.digest);
    let mut push = event("deploy-on-push-push.json");
    push["detail"]["image-digest"] = json!(pushed.digest);

    let preview = lambda.invoke(&json!({"repository": "users", "tag": "latest", "dryRun": true}));
    let preview = demo.report("deploy-on-push preview", preview);
    demo.show("deploy-on-push, manual preview (dry run)", &preview, tables::rollouts(&preview));
    let report = demo.report("deploy-on-push", lambda.invoke(&push));
    demo.show("deploy-on-push, the ECR push event", &report, tables::rollouts(&report));

    let after = world.service_task_definition(CLUSTER, "users").await;
    let (td, _) = world.describe_task_definition(&after).await;
    println!("\nusers now runs {after}");
    println!("with image {}", td.container_definitions()[0].image().unwrap_or_default());
    let replay = demo.report("deploy-on-push replay", lambda.invoke(&push));
    demo.show("deploy-on-push, the same event again", &replay, tables::rollouts(&replay));
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

/// quota-scan and prune-images on the registry the pushes left behind.
async fn housekeeping(demo: &Demo, world: &World) {
    demo.section("quota-scan and prune-images");
    moto().set_clock("-3d");
    let mut leftovers = Vec::new();
    for leftover in ["users-old-1", "users-old-2", "users-old-3"] {
        leftovers.push(world.push_image("users", &[], "arm64", leftover).await);
    }
    moto().set_clock("+0d");
    println!("three untagged users images from three days ago (earlier pushes) are in the registry");
    let job = &leftovers[2].digest;
    nightly_job(world, job).await;
    println!(
        "a nightly report job (EventBridge Scheduler schedule users-nightly-report, nothing running between runs) \
         runs the third of them, users@{}",
        tables::short_digest(job)
    );
    // The tutorial's native lifecycle policy on posts, and a new posts build
    // that nobody has deployed yet: the posts service still runs v1.
    world.native_lifecycle_policy("posts", POSTS_NATIVE_POLICY).await;
    world.push_image_with_config("posts", &["latest", "v2"], "arm64", "linux", "v2").await;
    println!("posts has a native ECR lifecycle policy (keep the newest image) and a new build v2, not deployed yet");

    demo.progress("starting quota-scan");
    let quota = Lambda::start("quota-scan", &[]);
    let scan = demo.report("quota-scan", quota.invoke_detailed(&event("quota-scan-schedule.json")));
    demo.show("quota-scan: every repository against the 500 MB free tier", &scan, tables::quota(&scan));
    demo.show(
        "quota-scan audit: images in use that a native lifecycle policy will expire",
        &scan["audit"],
        tables::audit(&scan),
    );
    println!(
        "NativePolicyInUseExpiries = {} (the alarm fires above 0); other audit findings: {}",
        scan["audit"]["nativePolicyInUseExpiries"], scan["audit"]["findings"]
    );

    // A fresh install: PRUNE_DEFAULT_MODE is dry-run (the template's default),
    // so the first daily run only reports what it would delete.
    demo.progress("starting prune-images");
    let prune = Lambda::start("prune-images", &[]);
    let mut before = Inventory::new();
    for repository in SERVICES {
        before.insert(repository.to_string(), world.image_tags(repository).await);
    }
    let first = demo.report("prune-images first run", prune.invoke_detailed(&event("prune-images-schedule.json")));
    demo.show(
        "prune-images, the first daily run of a fresh install (PRUNE_DEFAULT_MODE=dry-run)",
        &first,
        tables::prune(&first, &before),
    );
    println!(
        "nothing deleted; the report says what would go ({} image(s), {} bytes)",
        first["imagesPlanned"], first["bytesPlanned"]
    );
    // The owner read it and switches users on, with one tag.
    let arn = format!("arn:aws:ecr:{}:{}:repository/users", autopilot_e2e::REGION, autopilot_e2e::ACCOUNT);
    let on = aws_sdk_ecr::types::Tag::builder().key("autopilot:prune").value("on").build().expect("tag");
    world.ecr.tag_resource().resource_arn(&arn).tags(on).send().await.expect("tag users");
    println!(
        "\nthe owner switches users on: aws ecr tag-resource --resource-arn {arn} --tags Key=autopilot:prune,Value=on"
    );
    let run = demo.report("prune-images", prune.invoke_detailed(&event("prune-images-schedule.json")));
    demo.show("prune-images, the daily run", &run, tables::prune(&run, &before));
    println!(
        "prune-images deleted {} image(s), {} bytes; protected {} (in use, by a service or the nightly job, or part of a kept index)",
        run["imagesDeleted"], run["bytesReclaimed"], run["imagesProtected"]
    );
}

/// A scheduled job, as teams run reports and migrations: an EventBridge
/// Scheduler schedule whose ECS target runs a task definition pinned to
/// `digest`. No task runs between runs, so only the schedule says the image is
/// needed.
async fn nightly_job(world: &World, digest: &str) {
    use aws_sdk_scheduler::types::{EcsParameters, FlexibleTimeWindow, FlexibleTimeWindowMode, Target};
    let image = format!("{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/users@{digest}");
    let td = world.task_definition_running("users-nightly-report", &image).await;
    let scheduler = aws_sdk_scheduler::Client::new(&moto().sdk_config().await);
    let target = Target::builder()
        .arn(format!("arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{CLUSTER}"))
        .role_arn(format!("arn:aws:iam::{ACCOUNT}:role/scheduler-run-task"))
        .ecs_parameters(EcsParameters::builder().task_definition_arn(td).task_count(1).build().expect("ecs target"))
        .build()
        .expect("target");
    let window = FlexibleTimeWindow::builder().mode(FlexibleTimeWindowMode::Off).build().expect("window");
    scheduler
        .create_schedule()
        .name("users-nightly-report")
        .schedule_expression("cron(0 3 * * ? *)")
        .flexible_time_window(window)
        .target(target)
        .send()
        .await
        .expect("create_schedule");
}
