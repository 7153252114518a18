//! Benchmarks that report figures (no thresholds): `make bench` runs `bench world`.
//!
//! - `bench world`: the table of issue 11. One world on moto, built straight
//!   into its backends (`POST /autopilot-api/bench/world`): `BENCH_REPOSITORIES`
//!   repositories (default 50) of `BENCH_IMAGES_EACH` images (default 20), and
//!   `BENCH_SERVICES` services (default 40) in `BENCH_CLUSTERS` clusters
//!   (default 4), each service running one task. Per function: cold start
//!   (median of `BENCH_COLDSTART_RUNS`, default 20, of the binaries in
//!   `AUTOPILOT_FUNCTION_DIR`), peak RSS, the arm64 bootstrap raw and zipped
//!   (`BENCH_LAMBDA_DIR`, default target/lambda), API calls against the bound
//!   the adapters' page sizes give for that world, wall time, the function's
//!   CPU time and moto's (in all and per operation, from the emulator's
//!   stats endpoint); then the boto3 peer (`tests/bench/boto3_prune.py`) on
//!   a fresh copy of the same world, and the ratios. Prints one table and
//!   writes JSON to `BENCH_JSON` (default target/bench/results.json).
//! - `bench cycle`: prune-images over the same world (`BENCH_*`) as one
//!   scheduled cycle fanned out over a work queue on moto's SQS, with Lambda's
//!   event source mapping stood in for (`autopilot_e2e::queue`), one batch at
//!   a time; prints batches, deliveries, repositories and images covered, API
//!   calls, peak RSS and wall time per batch and in all. JSON to `BENCH_JSON`
//!   (default target/bench/cycle.json).
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

use std::collections::BTreeMap;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use autopilot_e2e::queue::EventSourceMapping;
use autopilot_e2e::world::World;
use autopilot_e2e::{event, function_binary, moto, peak_rss_kib, tools_bin, workspace_root, Lambda, REGION};
use serde_json::{json, Value};

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
        Some("world") if args.len() == 1 => world(),
        Some("cycle") if args.len() == 1 => cycle(),
        _ => {
            eprintln!(
                "usage: bench world | bench coldstart RUNS PROGRAM [ARGS...] | bench sweep CLUSTERS SERVICES_PER_CLUSTER | \
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
    let c = measure_coldstart(runs, Path::new(program), args, Listener::RuntimeApi, &[]);
    println!(
        "cold start (exec → first Runtime API request) over {runs} runs: min {:.1} ms, median {:.1} ms, p90 {:.1} ms, max {:.1} ms; peak RSS at that point {} KiB",
        c.min_ms, c.median_ms, c.p90_ms, c.max_ms, c.peak_kib
    );
}

/// What the measured process is told to call first.
#[derive(Clone, Copy, PartialEq)]
enum Listener {
    /// A Lambda function: its first request is `GET …/invocation/next`.
    RuntimeApi,
    /// A boto3 script: its first request is its first AWS call.
    AwsEndpoint,
}

struct ColdStart {
    min_ms: f64,
    median_ms: f64,
    p90_ms: f64,
    max_ms: f64,
    peak_kib: u64,
}

/// What Lambda's `provided.al2023` runtime sets in every function's
/// environment besides the AWS variables (AWS Lambda Developer Guide,
/// "Defined runtime environment variables"), which `measure_coldstart` adds.
const LAMBDA_ENVIRONMENT: [(&str, &str); 5] = [
    ("PATH", "/usr/local/bin:/usr/bin/:/bin:/opt/bin"),
    ("LANG", "en_US.UTF-8"),
    ("TZ", ":UTC"),
    ("LAMBDA_TASK_ROOT", "/var/task"),
    ("LAMBDA_RUNTIME_DIR", "/var/runtime"),
];

/// Time from spawning `program` to its first request on a loopback listener
/// that only records it, `runs` times, in Lambda's environment plus `env`;
/// and the process's peak RSS then.
fn measure_coldstart(
    runs: usize,
    program: &Path,
    args: &[String],
    listener_kind: Listener,
    env: &[(&str, &str)],
) -> ColdStart {
    let mut millis = Vec::with_capacity(runs);
    let mut peak_kib = 0;
    for _ in 0..runs.max(1) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("loopback listener");
        let port = listener.local_addr().expect("address").port();
        let endpoint = match listener_kind {
            Listener::RuntimeApi => "http://127.0.0.1:9".to_string(),
            Listener::AwsEndpoint => format!("http://127.0.0.1:{port}"),
        };
        let started = Instant::now();
        let mut child = Command::new(program)
            .args(args)
            // Lambda's environment, not this shell's: a developer's shell may
            // set SSL_CERT_FILE and SSL_CERT_DIR (this machine's does), which
            // the functions honour and Lambda does not set.
            .env_clear()
            .envs(LAMBDA_ENVIRONMENT)
            .env("AWS_LAMBDA_RUNTIME_API", format!("http://127.0.0.1:{port}"))
            .env("AWS_LAMBDA_FUNCTION_NAME", "bench")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "bench")
            .env("AWS_SECRET_ACCESS_KEY", "bench")
            .env("AWS_ENDPOINT_URL", endpoint)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
        let (mut stream, _) = listener.accept().expect("the process connects");
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf).expect("request bytes");
        let elapsed = started.elapsed();
        let first = String::from_utf8_lossy(&buf[..n]);
        let expected = if listener_kind == Listener::RuntimeApi { "GET " } else { "POST " };
        assert!(first.starts_with(expected), "unexpected first request: {first}");
        millis.push(elapsed.as_secs_f64() * 1000.0);
        if let Some(kib) = peak_rss_kib(&child.id().to_string()) {
            peak_kib = peak_kib.max(kib);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    millis.sort_by(f64::total_cmp);
    let pick = |q: f64| millis[((millis.len() - 1) as f64 * q).round() as usize];
    ColdStart { min_ms: pick(0.0), median_ms: pick(0.5), p90_ms: pick(0.9), max_ms: pick(1.0), peak_kib }
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

/// The benchmark world's shape (see `autopilot_moto.py`'s `_bench_world`):
/// repository `r` holds `images_each` images, the newest two tagged, the rest
/// untagged and old; service `s` runs in cluster `s mod clusters` and uses
/// repository `s mod repositories`, by `latest` when `s` is even, pinned to
/// the repository's oldest image when odd; one task per service.
struct Shape {
    repositories: usize,
    images_each: usize,
    services: usize,
    clusters: usize,
    seed: usize,
}

fn env_number(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

impl Shape {
    fn from_env() -> Shape {
        let shape = Shape {
            repositories: env_number("BENCH_REPOSITORIES", 50),
            images_each: env_number("BENCH_IMAGES_EACH", 20),
            services: env_number("BENCH_SERVICES", 40),
            clusters: env_number("BENCH_CLUSTERS", 4),
            seed: env_number("BENCH_SEED", 1),
        };
        assert!(
            shape.services == 0 || (shape.clusters > 0 && shape.repositories > 0),
            "BENCH_SERVICES needs BENCH_CLUSTERS and BENCH_REPOSITORIES above 0"
        );
        shape
    }

    fn body(&self) -> Value {
        json!({"repositories": self.repositories, "imagesEach": self.images_each, "services": self.services,
               "clusters": self.clusters, "seed": self.seed})
    }

    fn services_in(&self, cluster: usize) -> usize {
        (0..self.services).filter(|s| s % self.clusters == cluster).count()
    }

    /// Images of repository `r` the default policy expires and nothing
    /// protects: the untagged old ones, less the oldest if a service pins it.
    fn deletions(&self, r: usize) -> usize {
        let untagged = self.images_each.saturating_sub(2);
        let pinned = untagged > 0 && (0..self.services).any(|s| s % 2 == 1 && s % self.repositories == r);
        // The default policy's second rule (keep the newest 30) expires tagged
        // images only past 30 kept ones; the world has two tagged per repository.
        untagged - usize::from(pinned)
    }

    /// Services that track `repo-00000:latest`, which deploy-on-push rolls out.
    fn rollouts(&self) -> usize {
        (0..self.services).filter(|s| s % 2 == 0 && s % self.repositories == 0).count()
    }

    /// ListClusters, ListServices and DescribeServices over every cluster:
    /// pages of 100, DescribeServices 10 a call (`shared/src/aws/ecs.rs`).
    fn service_discovery(&self, bound: &mut BTreeMap<&'static str, usize>) {
        *bound.entry("ListClusters").or_default() += self.clusters.div_ceil(100).max(1);
        for c in 0..self.clusters {
            let n = self.services_in(c);
            *bound.entry("ListServices").or_default() += n.div_ceil(100).max(1);
            *bound.entry("DescribeServices").or_default() += n.div_ceil(10);
        }
    }
}

impl Shape {
    /// `reads` reads of what is in use, each: services (and the deployment
    /// ECS pinned for each: one ListServiceDeployments page, its deployments
    /// and revisions described 20 a call), running and pending tasks (two
    /// ListTasks per cluster, DescribeTasks 100 a call), the latest revision
    /// of every family (families 100 a page), and one page each of EventBridge
    /// buses and rules, Scheduler schedules and Lambda functions. Service
    /// revisions are immutable and cached by the adapter, but each read lists
    /// and describes new deployments, which name them.
    fn in_use_reads(&self, b: &mut BTreeMap<&'static str, usize>, reads: usize) {
        let (s, c) = (self.services, self.clusters);
        for _ in 0..reads {
            self.service_discovery(b);
        }
        let mut add = |op: &'static str, n: usize| *b.entry(op).or_default() += n * reads;
        add("ListServiceDeployments", s);
        add("DescribeServiceDeployments", s.div_ceil(20));
        add("DescribeServiceRevisions", s.div_ceil(20));
        add("ListTasks", 2 * c);
        add("DescribeTasks", (0..c).map(|x| self.services_in(x).div_ceil(100)).sum());
        add("ListTaskDefinitionFamilies", s.div_ceil(100).max(1));
        add("DescribeTaskDefinition", s);
        add("ListEventBuses", 1);
        add("ListRules", 1);
        add("ListSchedules", 1);
        add("ListFunctions", 1);
    }

    /// The reads of what is in use the design requires of one prune-images
    /// run over the whole world (DESIGN.md: "The set is read again right
    /// before deleting"): the plan's, and one fresh read per chunk of
    /// [`REREAD_CHUNK`] repositories that deletes anything.
    fn prune_in_use_reads(&self) -> usize {
        let repositories: Vec<usize> = (0..self.repositories).collect();
        1 + repositories.chunks(REREAD_CHUNK).filter(|chunk| chunk.iter().any(|&r| self.deletions(r) > 0)).count()
    }
}

/// prune-images' `REREAD_CHUNK` (`functions/prune-images/src/lib.rs`): the
/// repositories planned before each fresh read. The bench checks the run's
/// own count (`inUse.reads`) against [`Shape::prune_in_use_reads`].
const REREAD_CHUNK: usize = 200;

/// The fewest calls each function can make over the world, from the page and
/// batch sizes its adapters use (`shared/src/aws/`), per operation.
fn bounds(shape: &Shape, function: &str) -> BTreeMap<&'static str, usize> {
    let mut b: BTreeMap<&'static str, usize> = BTreeMap::new();
    let (r, i, s) = (shape.repositories, shape.images_each, shape.services);
    let repository_reads = |b: &mut BTreeMap<&'static str, usize>| {
        // DescribeRepositories pages of 1000; DescribeImages pages of 1000 per repository.
        b.insert("DescribeRepositories", r.div_ceil(1000).max(1));
        b.insert("DescribeImages", r * i.div_ceil(1000).max(1));
    };
    match function {
        "quota-scan" => {
            // Per repository its own lifecycle policy, which the estimate of
            // what a prune would reclaim follows; that estimate needs one read
            // of what is in use.
            repository_reads(&mut b);
            b.insert("GetLifecyclePolicy", r);
            shape.in_use_reads(&mut b, 1);
        }
        "prune-images" => {
            repository_reads(&mut b);
            // The `autopilot:prune` override is a repository tag, which
            // DescribeRepositories does not return: one read per repository.
            b.insert("ListTagsForResource", r);
            b.insert("BatchDeleteImage", (0..r).map(|x| shape.deletions(x).div_ceil(100)).sum());
            // A repository that deletes lists its images again after the
            // fresh read, right before deleting (tags may have moved since).
            let deleting = (0..r).filter(|&x| shape.deletions(x) > 0).count();
            *b.entry("DescribeImages").or_default() += deleting * i.div_ceil(1000).max(1);
            // No ListImageReferrers: DescribeImages names each referrer's
            // subject, and every row of this world is a container image (an
            // OCI image config), so none could hide one.
            shape.in_use_reads(&mut b, shape.prune_in_use_reads());
        }
        "log-groups" => {
            // Every service's revision described once; each of its log groups
            // (one per service, none exists yet) looked up, created with its
            // tags, and given a retention.
            shape.service_discovery(&mut b);
            b.insert("DescribeTaskDefinition", s);
            b.insert("DescribeLogGroups", s);
            b.insert("CreateLogGroup", s);
            b.insert("PutRetentionPolicy", s);
        }
        "deploy-on-push" => {
            // Discovery: every opted-in service (all are) and its revision; the
            // pushed image read once (DescribeImages, BatchGetImage, its config
            // blob). Per rollout: the log group checked (log-groups made it),
            // the revision re-read, registered, and the service updated.
            shape.service_discovery(&mut b);
            let m = shape.rollouts();
            b.insert("DescribeTaskDefinition", s + m);
            b.insert("DescribeImages", 1);
            b.insert("BatchGetImage", 1);
            b.insert("GetDownloadUrlForLayer", 1);
            b.insert("DescribeLogGroups", m);
            b.insert("RegisterTaskDefinition", m);
            b.insert("UpdateService", m);
        }
        _ => unreachable!("no bound for {function}"),
    }
    b.retain(|_, n| *n > 0);
    b
}

/// A report's `apiCalls`, keyed by the bare operation name.
fn calls_of(report: &Value) -> BTreeMap<String, u64> {
    let mut calls = BTreeMap::new();
    for (op, n) in report["apiCalls"].as_object().into_iter().flatten() {
        let bare = op.rsplit([':', '.']).next().unwrap_or(op).to_string();
        *calls.entry(bare).or_default() += n.as_u64().unwrap_or(0);
    }
    calls
}

fn bench_stats() -> Value {
    let mut response = ureq::get(format!("{}/autopilot-api/bench/stats", moto().endpoint)).call().expect("bench stats");
    response.body_mut().read_json().expect("stats json")
}

fn build_world(shape: &Shape) -> f64 {
    moto().reset();
    let started = Instant::now();
    let config = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(3600))).build();
    ureq::Agent::new_with_config(config)
        .post(format!("{}/autopilot-api/bench/world", moto().endpoint))
        .send_json(shape.body())
        .unwrap_or_else(|e| panic!("building the bench world: {e}"));
    started.elapsed().as_secs_f64()
}

/// The arm64 bootstrap's size, and its deployment zip's (deflated, as `sam
/// deploy` uploads it), or None when it is not built.
fn bootstrap_sizes(function: &str) -> (Option<u64>, Option<u64>) {
    let dir = std::env::var_os("BENCH_LAMBDA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/lambda"));
    let path = dir.join(function).join("bootstrap");
    let Ok(meta) = std::fs::metadata(&path) else { return (None, None) };
    let script = "import io, sys, zipfile\nbuf = io.BytesIO()\nwith zipfile.ZipFile(buf, 'w', zipfile.ZIP_DEFLATED) as z:\n    z.write(sys.argv[1], 'bootstrap')\nprint(len(buf.getvalue()))";
    let zipped = Command::new(tools_bin().join("python"))
        .args(["-c", script])
        .arg(&path)
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok());
    (Some(meta.len()), zipped)
}

/// One function invoked over the world.
struct Run {
    report: Value,
    wall: f64,
    rss: Option<u64>,
    /// The function process's CPU time, start-up included.
    cpu: Option<f64>,
    /// What moto spent serving the run.
    emulator: Emulator,
}

fn run_function(function: &str, env: &[(&str, &str)], payload: &Value) -> Run {
    let lambda = Lambda::start(function, env);
    let before = Emulator::now();
    let started = Instant::now();
    let report = lambda.invoke(payload).unwrap_or_else(|e| panic!("{function}: {e:?}"));
    let wall = started.elapsed().as_secs_f64();
    let emulator = Emulator::now().since(&before);
    Run { report, wall, rss: lambda.peak_rss_kib(), cpu: lambda.cpu_seconds(), emulator }
}

/// moto's CPU time (`/autopilot-api/bench/stats`): its process's, every
/// thread, and per AWS operation that of the threads serving it. On one
/// interpreter lock moto serves one request at a time, so a run whose wall
/// time is close to its `cpu` was waiting on the emulator, not on itself.
#[derive(Default)]
struct Emulator {
    cpu: f64,
    /// Operation → (requests, CPU seconds).
    operations: BTreeMap<String, (u64, f64)>,
}

impl Emulator {
    fn now() -> Emulator {
        let stats = bench_stats();
        let operations = stats["cpuByOperation"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(op, v)| (op.clone(), (v["requests"].as_u64().unwrap_or(0), v["cpuSeconds"].as_f64().unwrap_or(0.0))))
            .collect();
        Emulator { cpu: stats["cpuSeconds"].as_f64().unwrap_or(0.0), operations }
    }

    fn since(&self, before: &Emulator) -> Emulator {
        let operations = self
            .operations
            .iter()
            .filter_map(|(op, &(n, cpu))| {
                let (n0, cpu0) = before.operations.get(op).copied().unwrap_or_default();
                (n > n0).then(|| (op.clone(), (n - n0, cpu - cpu0)))
            })
            .collect();
        Emulator { cpu: self.cpu - before.cpu, operations }
    }

    fn json(&self) -> Value {
        let operations: BTreeMap<&str, Value> = self
            .operations
            .iter()
            .map(|(op, (n, cpu))| (op.as_str(), json!({"requests": n, "cpuSeconds": cpu})))
            .collect();
        json!({"cpuSeconds": self.cpu, "operations": operations})
    }
}

/// The calls every prune of the bench world makes whatever it protects: the
/// registry listed, each repository's images listed, the expired ones deleted.
const PRUNE_FLOOR: [&str; 3] = ["DescribeRepositories", "DescribeImages", "BatchDeleteImage"];

const FUNCTIONS: [&str; 4] = ["deploy-on-push", "log-groups", "prune-images", "quota-scan"];

fn world() {
    let shape = Shape::from_env();
    let runs = env_number("BENCH_COLDSTART_RUNS", 20);
    let mut rows: BTreeMap<&str, Value> = BTreeMap::new();
    // The system's CA bundle and its certificate directory, where Debian
    // keeps them: what the HTTPS client read with neither SSL_CERT_FILE nor
    // SSL_CERT_DIR set, before the functions chose the bundle alone
    // (`autopilot::aws::ca_bundle_only`).
    let with_dir = Some(("/etc/ssl/certs/ca-certificates.crt", "/etc/ssl/certs"))
        .filter(|(file, dir)| Path::new(file).is_file() && Path::new(dir).is_dir());

    for function in FUNCTIONS {
        eprintln!("[bench] {function}: cold start, {runs} runs");
        let c = measure_coldstart(runs, &function_binary(function), &[], Listener::RuntimeApi, &[]);
        // The same with every file of the certificate directory read too, for
        // what choosing the bundle saves (README, "Benchmarks").
        let dir = with_dir.map(|(file, dir)| {
            let env = [("SSL_CERT_FILE", file), ("SSL_CERT_DIR", dir)];
            measure_coldstart(runs, &function_binary(function), &[], Listener::RuntimeApi, &env).median_ms
        });
        let (bootstrap, zip) = bootstrap_sizes(function);
        rows.insert(
            function,
            json!({"coldStartMs": {"median": c.median_ms, "min": c.min_ms, "p90": c.p90_ms, "max": c.max_ms, "runs": runs,
                                   "medianWithCertDir": dir},
                   "coldStartPeakRssKiB": c.peak_kib, "bootstrapBytes": bootstrap, "zipBytes": zip}),
        );
    }

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let images = shape.repositories * shape.images_each;
    eprintln!(
        "[bench] world: {} repositories x {} images, {} services in {} clusters",
        shape.repositories, shape.images_each, shape.services, shape.clusters
    );
    let built = build_world(&shape);
    eprintln!("[bench] world built in {built:.1} s");
    let mut record = |function: &'static str, run: &Run| {
        let calls = calls_of(&run.report);
        let bound = bounds(&shape, function);
        let row = rows.get_mut(function).expect("row");
        row["wallSeconds"] = json!(run.wall);
        row["peakRssKiB"] = json!(run.rss);
        row["cpuSeconds"] = json!(run.cpu);
        row["emulator"] = run.emulator.json();
        row["apiCalls"] = json!(calls);
        row["apiCallsTotal"] = json!(calls.values().sum::<u64>());
        row["apiCallBound"] = json!(bound);
        row["apiCallBoundTotal"] = json!(bound.values().sum::<usize>());
    };
    // Read-only first, then what writes: log groups, deletions, a rollout.
    eprintln!("[bench] quota-scan");
    let run = run_function("quota-scan", &[], &event("quota-scan-schedule.json"));
    record("quota-scan", &run);
    eprintln!("[bench] log-groups");
    let run = run_function("log-groups", &[], &event("log-groups-schedule.json"));
    record("log-groups", &run);
    eprintln!("[bench] prune-images");
    let prune_env = [("PRUNE_DEFAULT_MODE", "on"), ("PRUNE_MAX_DELETE_PERCENT", "100")];
    let run = run_function("prune-images", &prune_env, &event("prune-images-schedule.json"));
    record("prune-images", &run);
    let ours_left = bench_stats()["images"].as_u64().unwrap_or(0);
    let ours_deleted = run.report["imagesDeleted"].as_u64().unwrap_or(0);
    let ours_in_use_reads = run.report["inUse"]["reads"].as_u64().unwrap_or(0);
    eprintln!("[bench] deploy-on-push");
    let pushed = runtime.block_on(async {
        World::new().await.push_image_with_config("repo-00000", &["latest"], "arm64", "linux", "bench-push").await
    });
    let mut push = event("deploy-on-push-push.json");
    push["detail"]["repository-name"] = json!("repo-00000");
    push["detail"]["image-digest"] = json!(pushed.digest);
    let run = run_function("deploy-on-push", &[], &push);
    record("deploy-on-push", &run);
    let rolled_out = run.report["services"]
        .as_array()
        .map_or(0, |services| services.iter().filter(|s| s["status"] == "updated").count());

    eprintln!("[bench] boto3 peer: cold start, {runs} runs");
    let python = tools_bin().join("python");
    let script = workspace_root().join("tests/bench/boto3_prune.py").display().to_string();
    let peer_cold = measure_coldstart(runs, &python, std::slice::from_ref(&script), Listener::AwsEndpoint, &[]);
    let rebuilt = build_world(&shape);
    eprintln!("[bench] boto3 peer: world rebuilt in {rebuilt:.1} s; prune");
    let emulator_before = Emulator::now();
    let started = Instant::now();
    let output = Command::new(&python)
        .arg(&script)
        .envs(moto().env())
        .env("AWS_DEFAULT_REGION", REGION)
        .stderr(Stdio::inherit())
        .output()
        .expect("running the boto3 peer");
    let peer_process = started.elapsed().as_secs_f64();
    let peer_emulator = Emulator::now().since(&emulator_before);
    assert!(output.status.success(), "the boto3 peer failed: {}", output.status);
    let peer: Value =
        serde_json::from_slice(String::from_utf8_lossy(&output.stdout).lines().last().unwrap_or_default().as_bytes())
            .expect("the boto3 peer's JSON");
    let peer_left = bench_stats()["images"].as_u64().unwrap_or(0);
    let peer_calls = calls_of(&peer);
    let peer_row = json!({
        "coldStartMs": {"median": peer_cold.median_ms, "min": peer_cold.min_ms, "p90": peer_cold.p90_ms, "max": peer_cold.max_ms, "runs": runs},
        "coldStartPeakRssKiB": peer_cold.peak_kib,
        "wallSeconds": peer["wallSeconds"], "processSeconds": peer_process,
        "peakRssKiB": peer["peakRssKiB"], "cpuSeconds": peer["cpuSeconds"], "emulator": peer_emulator.json(), "apiCalls": peer_calls, "apiCallsTotal": peer_calls.values().sum::<u64>(),
        "imagesDeleted": peer["imagesDeleted"], "imagesLeft": peer_left,
    });
    let prune = &rows["prune-images"];
    let ratio = |ours: &Value, theirs: &Value| match (ours.as_f64(), theirs.as_f64()) {
        (Some(a), Some(b)) if b > 0.0 => json!(a / b),
        _ => Value::Null,
    };
    let ratios = json!({
        "coldStart": ratio(&prune["coldStartMs"]["median"], &peer_row["coldStartMs"]["median"]),
        "wall": ratio(&prune["wallSeconds"], &peer_row["wallSeconds"]),
        "cpu": ratio(&prune["cpuSeconds"], &peer_row["cpuSeconds"]),
        "emulatorCpu": ratio(&prune["emulator"]["cpuSeconds"], &peer_row["emulator"]["cpuSeconds"]),
        "peakRss": ratio(&prune["peakRssKiB"], &peer_row["peakRssKiB"]),
        "apiCalls": ratio(&prune["apiCallsTotal"], &peer_row["apiCallsTotal"]),
    });
    let results = json!({
        "generatedAtEpochSeconds": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        "machine": {"cores": std::thread::available_parallelism().map_or(0, |n| n.get()), "arch": std::env::consts::ARCH},
        "functionBinaries": function_binary("prune-images").parent().map(|p| p.display().to_string()),
        "world": {"repositories": shape.repositories, "imagesEach": shape.images_each, "images": images,
                  "services": shape.services, "clusters": shape.clusters, "seed": shape.seed, "buildSeconds": built},
        "functions": rows,
        "prune": {"imagesDeleted": ours_deleted, "imagesLeft": ours_left,
                  "inUseReads": ours_in_use_reads, "inUseReadsInBound": shape.prune_in_use_reads(),
                  "expectedDeletions": (0..shape.repositories).map(|r| shape.deletions(r)).sum::<usize>()},
        "deployOnPush": {"rollouts": rolled_out, "expectedRollouts": shape.rollouts()},
        "boto3Peer": peer_row,
        "oursOverBoto3": ratios,
        "targets": {"bootstrapBytes": 5_000_000, "zipBytes": 2_500_000, "coldStartMs": 10, "coldStartTimesFasterThanPeer": 25,
                    "peakRssMiBAt100000Images": 40, "apiCallsOverBound": 1.10, "pruneTimesFasterThanPeer": 5},
    });
    let path = write_results(&results, "results.json");
    print_table(&results);
    println!("JSON: {}", path.display());
}

/// Writes `results` to `BENCH_JSON`, by default `target/bench/<default_name>`.
fn write_results(results: &Value, default_name: &str) -> PathBuf {
    let path = std::env::var_os("BENCH_JSON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/bench").join(default_name));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("results directory");
    }
    std::fs::write(&path, serde_json::to_string_pretty(&results).expect("json")).expect("writing the results");
    path
}

fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (k, ch) in digits.chars().enumerate() {
        if k > 0 && (digits.len() - k) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn print_table(results: &Value) {
    let w = &results["world"];
    println!(
        "ecr-autopilot bench: {} repositories x {} images ({} images), {} services in {} clusters, on moto; {} cores; binaries in {}",
        w["repositories"],
        w["imagesEach"],
        grouped(w["images"].as_u64().unwrap_or(0)),
        w["services"],
        w["clusters"],
        results["machine"]["cores"],
        results["functionBinaries"].as_str().unwrap_or("?")
    );
    let num = |v: &Value| v.as_u64().map_or("-".to_string(), grouped);
    let mib = |v: &Value| v.as_f64().map_or("-".to_string(), |k| format!("{:.1}", k / 1024.0));
    println!(
        "{:<20} {:>11} {:>9} {:>11} {:>11} {:>10} {:>10} {:>7} {:>9} {:>8} {:>9}",
        "", "cold start", "peak RSS", "bootstrap", "zip", "API calls", "bound", "/bound", "wall", "CPU", "moto CPU"
    );
    println!(
        "{:<20} {:>11} {:>9} {:>11} {:>11} {:>10} {:>10} {:>7} {:>9} {:>8} {:>9}",
        "function", "median ms", "MiB", "bytes", "bytes", "", "", "", "s", "s", "s"
    );
    let row = |name: &str, r: &Value| {
        let over = match (r["apiCallsTotal"].as_f64(), r["apiCallBoundTotal"].as_f64()) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "-".into(),
        };
        println!(
            "{:<20} {:>11} {:>9} {:>11} {:>11} {:>10} {:>10} {:>7} {:>9} {:>8} {:>9}",
            name,
            r["coldStartMs"]["median"].as_f64().map_or("-".into(), |m| format!("{m:.1}")),
            mib(&r["peakRssKiB"]),
            num(&r["bootstrapBytes"]),
            num(&r["zipBytes"]),
            num(&r["apiCallsTotal"]),
            num(&r["apiCallBoundTotal"]),
            over,
            r["wallSeconds"].as_f64().map_or("-".into(), |s| format!("{s:.2}")),
            r["cpuSeconds"].as_f64().map_or("-".into(), |s| format!("{s:.2}")),
            r["emulator"]["cpuSeconds"].as_f64().map_or("-".into(), |s| format!("{s:.2}"))
        );
    };
    for (name, r) in results["functions"].as_object().into_iter().flatten() {
        row(name, r);
    }
    row("boto3 peer (prune)", &results["boto3Peer"]);
    let q = &results["oursOverBoto3"];
    let x = |v: &Value| v.as_f64().map_or("-".into(), |r| format!("{r:.3}x"));
    println!(
        "{:<20} {:>11} {:>9} {:>11} {:>11} {:>10} {:>10} {:>7} {:>9} {:>8} {:>9}",
        "prune / boto3 peer",
        x(&q["coldStart"]),
        x(&q["peakRss"]),
        "",
        "",
        x(&q["apiCalls"]),
        "",
        "",
        x(&q["wall"]),
        x(&q["cpu"]),
        x(&q["emulatorCpu"])
    );
    println!(
        "targets: bootstrap <= 5,000,000; zip <= 2,500,000; cold start <= 10 ms and >= 25x faster than the peer; \
         peak RSS <= 40 MiB at 100,000 images; API calls <= 1.10 x bound; prune >= 5x faster than the peer"
    );
    let with_dir: Vec<String> = results["functions"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(name, r)| r["coldStartMs"]["medianWithCertDir"].as_f64().map(|m| format!("{name} {m:.1} ms")))
        .collect();
    if !with_dir.is_empty() {
        println!(
            "cold start reading the certificate directory too (SSL_CERT_DIR=/etc/ssl/certs), median: {}",
            with_dir.join(", ")
        );
    }
    let (ours, peer) = (&results["functions"]["prune-images"], &results["boto3Peer"]);
    if let (Some(wall), Some(busy), Some(peer_wall), Some(peer_busy)) = (
        ours["wallSeconds"].as_f64(),
        ours["emulator"]["cpuSeconds"].as_f64(),
        peer["wallSeconds"].as_f64(),
        peer["emulator"]["cpuSeconds"].as_f64(),
    ) {
        let floor_ops = PRUNE_FLOOR.map(|op| &peer["emulator"]["operations"][op]);
        let floor_calls: u64 = floor_ops.iter().filter_map(|o| o["requests"].as_u64()).sum();
        let floor: f64 = floor_ops.iter().filter_map(|o| o["cpuSeconds"].as_f64()).sum();
        println!(
            "emulator: moto was busy {busy:.2} s of prune-images' {wall:.2} s and {peer_busy:.2} s of the peer's {peer_wall:.2} s; \
             the {floor_calls} calls any prune of this world makes ({}) took it {floor:.2} s in the peer's run, \
             against {:.2} s for 5x the peer's speed",
            PRUNE_FLOOR.join(", "),
            peer_wall / 5.0
        );
    }
    let p = &results["prune"];
    println!(
        "check: prune deleted {} (world's policy expects {}), left {} images, read what is in use {} times (the bound counts {}: the plan's read and the fresh one before deleting); the boto3 peer deleted {}, left {}; deploy-on-push rolled out {} of {}",
        p["imagesDeleted"],
        p["expectedDeletions"],
        p["imagesLeft"],
        p["inUseReads"],
        p["inUseReadsInBound"],
        results["boto3Peer"]["imagesDeleted"],
        results["boto3Peer"]["imagesLeft"],
        results["deployOnPush"]["rollouts"],
        results["deployOnPush"]["expectedRollouts"]
    );
    for (name, r) in results["functions"].as_object().into_iter().flatten() {
        let calls = r["apiCalls"].as_object().cloned().unwrap_or_default();
        let bound = r["apiCallBound"].as_object().cloned().unwrap_or_default();
        let mut off: Vec<String> = Vec::new();
        for (op, n) in &calls {
            let n = n.as_u64().unwrap_or(0);
            match bound.get(op).and_then(Value::as_u64) {
                Some(b) if n == b => {}
                Some(b) => off.push(format!("{op} {n}/{b}")),
                None => off.push(format!("{op} {n}/-")),
            }
        }
        for (op, b) in &bound {
            if !calls.contains_key(op) {
                off.push(format!("{op} 0/{b}"));
            }
        }
        if !off.is_empty() {
            println!("calls/bound off by operation, {name}: {}", off.join(", "));
        }
    }
}

/// One cycle of prune-images over the world through its work queue.
fn cycle() {
    let shape = Shape::from_env();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    eprintln!(
        "[bench] cycle: {} repositories x {} images, {} services in {} clusters",
        shape.repositories, shape.images_each, shape.services, shape.clusters
    );
    let built = build_world(&shape);
    let images_before = bench_stats()["images"].as_u64().unwrap_or(0);
    let mapping = runtime.block_on(EventSourceMapping::create("prune-work", 3));
    let env =
        [("PRUNE_DEFAULT_MODE", "on"), ("PRUNE_MAX_DELETE_PERCENT", "100"), ("WORK_QUEUE_URL", mapping.url.as_str())];
    let lambda = Lambda::start("prune-images", &env);
    let started = Instant::now();
    let answer = lambda.invoke(&event("prune-images-schedule.json")).unwrap_or_else(|e| panic!("the schedule: {e:?}"));
    let scheduled = started.elapsed().as_secs_f64();
    let batches = answer["fanOut"]["batches"].as_u64().unwrap_or_else(|| panic!("no fan-out: {answer}")) as usize;
    eprintln!("[bench] cycle: {batches} batches queued in {scheduled:.1} s");
    // Lambda's poller, one message at a time.
    let progress = |n: usize| {
        if n > 0 && n % 10 == 0 {
            eprintln!("[bench] cycle: {n} deliveries");
        }
    };
    let deliveries = runtime.block_on(mapping.drain(&lambda, 3 * batches + 10, progress));
    let walls: Vec<f64> = deliveries.iter().map(|d| d.seconds).collect();
    let failed = deliveries.iter().filter(|d| d.failed).count();
    let wall = started.elapsed().as_secs_f64();
    let dead_letters = runtime.block_on(mapping.dead_letters());
    let images_after = bench_stats()["images"].as_u64().unwrap_or(0);
    let expected: usize = (0..shape.repositories).map(|r| shape.deletions(r)).sum();
    let emf = lambda.emf_documents();
    let sum = |metric: &str| emf.iter().filter_map(|d| d[metric].as_f64()).sum::<f64>();
    let batch_runs = emf.iter().filter(|d| d["batch"].is_object() || d["cycle"].is_string()).count();
    let mut sorted = walls.clone();
    sorted.sort_by(f64::total_cmp);
    let pick = |q: f64| sorted.get(((sorted.len().max(1) - 1) as f64 * q).round() as usize).copied().unwrap_or(0.0);
    let results = json!({
        "world": {"repositories": shape.repositories, "imagesEach": shape.images_each,
                  "services": shape.services, "clusters": shape.clusters, "buildSeconds": built},
        "batchesQueued": batches,
        "deliveries": walls.len(),
        "deliveriesFailed": failed,
        "deadLetters": dead_letters,
        "batchRunsInMetrics": batch_runs,
        "imagesBefore": images_before,
        "imagesDeleted": images_before.saturating_sub(images_after),
        "imagesDeletedExpected": expected,
        "imagesLeft": images_after,
        "apiCalls": sum("ApiCalls"),
        "peakRssKiB": lambda.peak_rss_kib(),
        "cpuSeconds": lambda.cpu_seconds(),
        "scheduleSeconds": scheduled,
        "batchSeconds": {"min": pick(0.0), "median": pick(0.5), "p90": pick(0.9), "max": pick(1.0)},
        "wallSeconds": wall,
    });
    let path = write_results(&results, "cycle.json");
    println!(
        "cycle over {} repositories x {} images ({} services): {batches} batches queued in {scheduled:.1} s; {} deliveries ({failed} failed), {dead_letters} dead letters; \
         deleted {} of {expected} expected, {} images left; {} API calls; peak RSS {} KiB; CPU {} s; batch wall min {:.1} / median {:.1} / max {:.1} s; cycle {wall:.0} s",
        shape.repositories,
        shape.images_each,
        shape.services,
        walls.len(),
        results["imagesDeleted"],
        images_after,
        results["apiCalls"],
        results["peakRssKiB"],
        results["cpuSeconds"],
        pick(0.0),
        pick(0.5),
        pick(1.0),
    );
    println!("JSON: {}", path.display());
}
