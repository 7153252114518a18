//! Benchmarks that report figures (no thresholds): `make bench` runs them.
//!
//! - `bench coldstart RUNS PROGRAM [ARGS…]`: time from spawning the function
//!   to its first Runtime API request (`GET …/invocation/next`), which covers
//!   process start, config validation, the aws-config load and client set-up.
//!   The "Runtime API" is a loopback listener that only records the request.
//! - `bench sweep CLUSTERS SERVICES_PER_CLUSTER`: a log-groups sweep over a
//!   generated world on moto; prints API calls against the design's bound,
//!   wall time and the function's peak RSS.
//! - `bench push CLUSTERS SERVICES_PER_CLUSTER`: deploy-on-push of one push to
//!   every opted-in service of a generated world (half the services opted in);
//!   prints API calls against the bound, wall time and peak RSS, for a dry run
//!   (discovery only) and for the real rollout.
//! - `bench planner IMAGES`: the prune planner alone over a generated
//!   repository (a third untagged and old, indexes with children, pinned
//!   digests); prints its time.
//! - `bench prune IMAGES`: prune-images over a repository of IMAGES old
//!   untagged images on moto (backdated with libfaketime); prints API calls
//!   against the bound, wall time and peak RSS.
//! - `bench quota REPOSITORIES IMAGES_EACH`: quota-scan over that many
//!   repositories; prints API calls against the bound, wall time and peak RSS.
//! - `bench registry REPOSITORIES IMAGES_EACH CONCURRENCY…`: prune-images over
//!   that many repositories (each with old untagged images and a `latest`), once
//!   per `SWEEP_CONCURRENCY` given; prints wall time and the API calls, split
//!   into the per-repository ECR calls and the reads of the "in use" sources.

use std::io::Read;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use autopilot_e2e::world::World;
use autopilot_e2e::{event, moto, Lambda};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("coldstart") if args.len() >= 3 => coldstart(&args[1], &args[2], &args[3..]),
        Some("sweep") if args.len() == 3 => sweep(&args[1], &args[2]),
        Some("push") if args.len() == 3 => push(&args[1], &args[2]),
        Some("planner") if args.len() == 2 => planner(&args[1]),
        Some("prune") if args.len() == 2 => prune(&args[1]),
        Some("quota") if args.len() == 3 => quota(&args[1], &args[2]),
        Some("registry") if args.len() >= 4 => registry(&args[1], &args[2], &args[3..]),
        _ => {
            eprintln!(
                "usage: bench coldstart RUNS PROGRAM [ARGS...] | bench sweep CLUSTERS SERVICES_PER_CLUSTER | \
                 bench push CLUSTERS SERVICES_PER_CLUSTER | bench planner IMAGES | bench prune IMAGES | bench quota REPOSITORIES IMAGES_EACH | \
                 bench registry REPOSITORIES IMAGES_EACH CONCURRENCY..."
            );
            std::process::exit(2);
        }
    }
}

fn number(text: &str) -> usize {
    text.parse().unwrap_or_else(|_| panic!("not a number: {text}"))
}

fn coldstart(runs: &str, program: &str, args: &[String]) {
    let runs = number(runs);
    let mut millis = Vec::with_capacity(runs);
    let mut peak_kib = 0;
    for _ in 0..runs {
        let listener = TcpListener::bind("127.0.0.1:0").expect("loopback listener");
        let port = listener.local_addr().expect("address").port();
        let started = Instant::now();
        let mut child = Command::new(program)
            .args(args)
            .env("AWS_LAMBDA_RUNTIME_API", format!("http://127.0.0.1:{port}"))
            .env("AWS_LAMBDA_FUNCTION_NAME", "bench")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "bench")
            .env("AWS_SECRET_ACCESS_KEY", "bench")
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        let (mut stream, _) = listener.accept().expect("the function connects");
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf).expect("request bytes");
        let elapsed = started.elapsed();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("GET "), "unexpected first request");
        millis.push(elapsed.as_secs_f64() * 1000.0);
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
        if let Some(kib) = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
        {
            peak_kib = peak_kib.max(kib);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    millis.sort_by(f64::total_cmp);
    let pick = |q: f64| millis[((millis.len() - 1) as f64 * q).round() as usize];
    println!(
        "cold start (exec → first Runtime API request) over {runs} runs: min {:.1} ms, median {:.1} ms, p90 {:.1} ms, max {:.1} ms; peak RSS at that point {} KiB",
        pick(0.0),
        pick(0.5),
        pick(0.9),
        pick(1.0),
        peak_kib
    );
}

fn sweep(clusters: &str, per_cluster: &str) {
    let (clusters, per_cluster) = (number(clusters), number(per_cluster));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        moto().reset();
        let world = World::new().await;
        for c in 0..clusters {
            let cluster = format!("cluster-{c}");
            world.cluster(&cluster).await;
            for s in 0..per_cluster {
                let family = format!("svc-{c}-{s}");
                let app = format!("/ecs/{family}");
                let sidecar = format!("/ecs/{family}-envoy");
                let arn = world.task_definition(&family, &[(&family, &app), ("envoy", &sidecar)]).await;
                world.service(&cluster, &family, &arn).await;
            }
        }
        let services = clusters * per_cluster;
        let lambda = Lambda::start("log-groups", &[]);
        let started = Instant::now();
        let report = lambda.invoke(&event("log-groups-schedule.json")).expect("sweep");
        let wall = started.elapsed();
        let calls = &report["apiCalls"];
        let total: u64 = calls.as_object().map(|m| m.values().filter_map(|v| v.as_u64()).sum()).unwrap_or(0);
        let groups = services * 2;
        // ListClusters 1 page, ListServices 1 page per cluster (moto returns one
        // page), ceil(S/10) DescribeServices per cluster, one DescribeTaskDefinition
        // per revision, and per missing group DescribeLogGroups + Create + PutRetention.
        let bound = 1 + clusters + clusters * per_cluster.div_ceil(10) + services + groups * 3;
        println!(
            "sweep of {services} services in {clusters} clusters ({groups} groups created): {total} API calls (bound {bound}), {:.0} ms wall, function peak RSS {} KiB",
            wall.as_secs_f64() * 1000.0,
            lambda.peak_rss_kib().map_or("?".into(), |k| k.to_string())
        );
        println!("calls per operation: {calls}");
        std::thread::sleep(Duration::from_millis(10));
    });
}

fn push(clusters: &str, per_cluster: &str) {
    let (clusters, per_cluster) = (number(clusters), number(per_cluster));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        moto().reset();
        let world = World::new().await;
        world.repository("users").await;
        world.push_image("users", &["latest"], "arm64", "base").await;
        let mut opted_in = 0;
        for c in 0..clusters {
            let cluster = format!("cluster-{c}");
            world.cluster(&cluster).await;
            for s in 0..per_cluster {
                let family = format!("users-{c}-{s}");
                let group = format!("/ecs/{family}");
                world.task_definition_of(&family, "users", &[(&family, &group)]).await;
                let tags: &[(&str, &str)] = if s % 2 == 0 { &[("autopilot:deploy", "on")] } else { &[] };
                opted_in += usize::from(s % 2 == 0);
                world.service_tagged(&cluster, &family, &format!("{family}:1"), tags).await;
            }
        }
        let services = clusters * per_cluster;
        let pushed = world.push_image("users", &["latest"], "arm64", "new").await;
        let mut event = event("deploy-on-push-push.json");
        event["detail"]["image-digest"] = serde_json::json!(pushed.digest);
        // Discovery: ListClusters, ListServices per cluster, ceil(S/10) DescribeServices
        // per cluster, one DescribeTaskDefinition per opted-in revision; then
        // DescribeImages and BatchGetImage for the pushed digest.
        let discovery_bound = 1 + clusters + clusters * per_cluster.div_ceil(10) + opted_in + 2;
        for (label, env) in [("dry run", vec![("DRY_RUN", "true")]), ("rollout", vec![])] {
            let lambda = Lambda::start("deploy-on-push", &env);
            let started = Instant::now();
            let report = lambda.invoke(&event).expect("push handled");
            let wall = started.elapsed();
            let calls = &report["apiCalls"];
            let total: u64 = calls.as_object().map(|m| m.values().filter_map(|v| v.as_u64()).sum()).unwrap_or(0);
            // Per rollout: DescribeLogGroups (+ Create + PutRetention the first
            // time), the replay-safety DescribeTaskDefinition, Register, Update.
            let bound = if label == "dry run" { discovery_bound } else { discovery_bound + opted_in * 6 };
            println!(
                "push, {label}: {services} services in {clusters} clusters, {opted_in} opted in: {total} API calls (bound {bound}), {:.0} ms wall, function peak RSS {} KiB",
                wall.as_secs_f64() * 1000.0,
                lambda.peak_rss_kib().map_or("?".into(), |k| k.to_string())
            );
            println!("calls per operation: {calls}");
        }
    });
}

fn planner(images: &str) {
    use autopilot::in_use::{Source, User};
    use autopilot::lifecycle::{Policy, DEFAULT_POLICY};
    use autopilot::prune::{in_use, plan, InUse, RepoImage, RepositoryId, Safety};
    use std::collections::BTreeMap;
    let n = number(images);
    let now = 1_800_000_000i64;
    let digest = |i: usize| format!("sha256:{i:064x}");
    let rows: Vec<RepoImage> = (0..n)
        .map(|i| RepoImage {
            digest: digest(i),
            tags: if i % 3 == 0 { vec![] } else { vec![format!("build-{i}")] },
            pushed_at: now - (i as i64 % 90) * 86_400,
            last_pulled_at: None,
            size_bytes: Some(30_000_000),
            media_type: Some(
                if i % 50 == 0 {
                    "application/vnd.oci.image.index.v1+json"
                } else {
                    "application/vnd.oci.image.manifest.v1+json"
                }
                .into(),
            ),
            ..RepoImage::default()
        })
        .collect();
    let children: BTreeMap<String, Vec<String>> =
        (0..n).step_by(50).map(|i| (digest(i), vec![digest((i + 1) % n), digest((i + 2) % n)])).collect();
    let mut uses = InUse::default();
    for i in 0..200 {
        let service = User::new(Source::ServiceDeployment, format!("prod/s{i}"), "us-east-1");
        uses.add_reference(
            format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/users@{}", digest(i * 7 % n)),
            service,
        );
        uses.add_digest(digest(i * 11 % n), User::new(Source::Task, format!("prod/t{i}"), "us-east-1"));
    }
    let repository = RepositoryId { name: "users".into(), account: "123456789012".into(), region: "us-east-1".into() };
    let policy = Policy::parse(DEFAULT_POLICY).expect("default policy");
    let started = Instant::now();
    let used = in_use(&repository, &rows, &uses);
    let p = plan(
        &policy,
        &rows,
        &used,
        &children,
        &BTreeMap::new(),
        now,
        Safety { max_delete_percent: 100, min_age_seconds: 3600 },
    );
    let elapsed = started.elapsed();
    println!(
        "prune planner over {n} images: {:.1} ms ({} to delete, {} protected)",
        elapsed.as_secs_f64() * 1000.0,
        p.deletions(),
        p.protected.len()
    );
}

fn prune(images: &str) {
    let n = number(images);
    autopilot_e2e::enable_fake_clock();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        moto().reset();
        let world = World::new().await;
        world.repository("users").await;
        moto().set_clock("-5d");
        let started = Instant::now();
        for i in 0..n {
            world.push_image("users", &[], "arm64", &format!("old-{i}")).await;
        }
        moto().set_clock("+0d");
        world.push_image("users", &["latest"], "arm64", "latest").await;
        eprintln!("[bench] pushed {n} images in {:.0} s", started.elapsed().as_secs_f64());
        let lambda =
            Lambda::start("prune-images", &[("PRUNE_MAX_DELETE_PERCENT", "100"), ("PRUNE_DEFAULT_MODE", "on")]);
        let started = Instant::now();
        let report = lambda.invoke(&serde_json::json!({"repositories": ["users"], "dryRun": false})).expect("prune");
        let wall = started.elapsed();
        let calls = &report["apiCalls"];
        let total: u64 = calls.as_object().map(|m| m.values().filter_map(|v| v.as_u64()).sum()).unwrap_or(0);
        let deleted = report["imagesDeleted"].as_u64().unwrap_or(0) as usize;
        // DescribeRepositories + ListTagsForResource, ceil(N/1000) DescribeImages,
        // ceil(D/100) BatchDeleteImage, and the protection reads (ListClusters here).
        let bound = 2 + (n + 1).div_ceil(1000) + deleted.div_ceil(100) + 1;
        println!(
            "prune of {} images ({deleted} deleted): {total} API calls (bound {bound}; moto answers DescribeImages in one page), {:.0} ms wall, function peak RSS {} KiB",
            n + 1,
            wall.as_secs_f64() * 1000.0,
            lambda.peak_rss_kib().map_or("?".into(), |k| k.to_string())
        );
        println!("calls per operation: {calls}");
    });
}

fn quota(repositories: &str, each: &str) {
    let (repositories, each) = (number(repositories), number(each));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        moto().reset();
        let world = World::new().await;
        let started = Instant::now();
        for r in 0..repositories {
            let name = format!("repo-{r:04}");
            world.repository(&name).await;
            for i in 0..each {
                let tags: &[&str] = if i + 1 == each { &["latest"] } else { &[] };
                world.push_image(&name, tags, "arm64", &format!("{r}-{i}")).await;
            }
        }
        eprintln!("[bench] pushed {} images in {:.0} s", repositories * each, started.elapsed().as_secs_f64());
        let lambda = Lambda::start("quota-scan", &[]);
        let started = Instant::now();
        let report = lambda.invoke(&event("quota-scan-schedule.json")).expect("scan");
        let wall = started.elapsed();
        let calls = &report["apiCalls"];
        let total: u64 = calls.as_object().map(|m| m.values().filter_map(|v| v.as_u64()).sum()).unwrap_or(0);
        // DescribeRepositories pages + one DescribeImages page per repository
        // (IMAGES_EACH <= 1000) + ListClusters for the protection reads.
        let bound = repositories.div_ceil(1000) + repositories * each.div_ceil(1000) + 1;
        println!(
            "quota-scan of {repositories} repositories x {each} images: {total} API calls (bound {bound}; moto answers DescribeRepositories in one page), {:.0} ms wall, function peak RSS {} KiB, registry {} bytes",
            wall.as_secs_f64() * 1000.0,
            lambda.peak_rss_kib().map_or("?".into(), |k| k.to_string()),
            report["registry"]["storageBytes"]
        );
        println!("calls per operation: {calls}");
    });
}

/// The operations that read the sources of "in use" (every region of
/// `PROTECT_REGIONS`), as the report's `apiCalls` names them.
const IN_USE_READS: &[&str] = &[
    "ListClusters",
    "ListServices",
    "DescribeServices",
    "ListServiceDeployments",
    "DescribeServiceDeployments",
    "DescribeServiceRevisions",
    "DescribeTaskSets",
    "ListTasks",
    "DescribeTasks",
    "ListTaskDefinitionFamilies",
    "ListTaskDefinitions",
    "DescribeTaskDefinition",
    "ListEventBuses",
    "ListRules",
    "ListTargetsByRule",
    "ListSchedules",
    "GetSchedule",
    "ListFunctions",
    "GetFunction",
];

fn registry(repositories: &str, each: &str, concurrencies: &[String]) {
    let (repositories, each) = (number(repositories), number(each));
    autopilot_e2e::enable_fake_clock();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        for concurrency in concurrencies {
            // The registry is rebuilt for every run: each run deletes.
            moto().reset();
            let world = World::new().await;
            let started = Instant::now();
            for r in 0..repositories {
                let name = format!("repo-{r:04}");
                world.repository(&name).await;
                moto().set_clock("-5d");
                for i in 0..each.saturating_sub(1) {
                    world.push_image(&name, &[], "arm64", &format!("{r}-{i}")).await;
                }
                moto().set_clock("+0d");
                world.push_image(&name, &["latest"], "arm64", &format!("{r}-latest")).await;
            }
            eprintln!("[bench] pushed {} images in {:.0} s", repositories * each, started.elapsed().as_secs_f64());
            let env = [
                ("SWEEP_CONCURRENCY", concurrency.as_str()),
                ("PRUNE_DEFAULT_MODE", "on"),
                ("PRUNE_MAX_DELETE_PERCENT", "100"),
            ];
            let lambda = Lambda::start("prune-images", &env);
            let started = Instant::now();
            let report = lambda.invoke(&event("prune-images-schedule.json")).expect("prune");
            let wall = started.elapsed();
            let calls = report["apiCalls"].as_object().cloned().unwrap_or_default();
            let count = |pick: &dyn Fn(&str) -> bool| -> u64 {
                calls.iter().filter(|(op, _)| pick(op)).filter_map(|(_, v)| v.as_u64()).sum()
            };
            let in_use = count(&|op| IN_USE_READS.iter().any(|r| op.ends_with(r)));
            let total = count(&|_| true);
            println!(
                "prune of {repositories} repositories x {each} images, SWEEP_CONCURRENCY={concurrency}: {:.1} s wall, \
                 {} deleted, {total} API calls ({in_use} reading the in-use sources), function peak RSS {} KiB",
                wall.as_secs_f64(),
                report["imagesDeleted"],
                lambda.peak_rss_kib().map_or("?".into(), |k| k.to_string())
            );
            println!("calls per operation: {}", serde_json::Value::Object(calls));
        }
    });
}
