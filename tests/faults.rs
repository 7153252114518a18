//! Faults and hostile input, end to end: the real function binaries against
//! moto, through the fault-injecting proxy (`tests/emulator/fault_proxy.py`).
//!
//! **Fault matrix.** For each function, a scenario (a world and one event) is
//! first run without faults through the proxy, which records the operations it
//! calls (`X-Amz-Target`, or `METHOD /path` for REST APIs) and the final state
//! ([`snapshot`]). The matrix follows whatever the functions call today: for
//! every observed operation and every fault (throttle as the protocol shapes
//! it, 500, 503, connection reset, latency), once on the operation's first
//! call and once on every call (so the SDK's retries, `AWS_MAX_ATTEMPTS=2`
//! here, are exhausted), plus a lost answer (`reset-after`: the call is done,
//! then the connection is reset) on the first call, moto is reset, the same world is rebuilt, a fresh
//! function process gets the same event, and then:
//! - it succeeds and the state equals the no-fault state, or
//! - it fails with `errorType` `Retryable`, and a second invocation of the same
//!   event (faults removed, same warm process, as Lambda's async retry would)
//!   succeeds and reaches the no-fault state.
//!
//! `make test` runs a reduced matrix that still faults every operation:
//! per operation, `503` on every call (the SDK's retries are exhausted, so
//! the run stops right there and every partial state is visited and must be
//! repaired by the retry) and, for operations that write, a lost answer; per
//! function, each first-call fault (throttle, 500, reset, latency) on every
//! operation at once. `FAULT_MATRIX=full` (`make faults`) runs the full
//! product, every operation times every fault (about 2 h on 2 cores).
//!
//! Anything else (a half-done state, a `NonRetryable` error for a transient
//! fault, a retry that cannot finish) fails the test, unless it is listed in
//! [`KNOWN_FAILURES`] (product bugs found here, to fix and then remove; a
//! listed case that passes fails the test too, so the list stays honest).
//!
//! **Hostile corpus.** Every file under `tests/hostile/common/` and
//! `tests/hostile/<function>/` is sent as the raw payload (`.json` and `.txt`
//! alike, so truncated JSON arrives as is) to the function, over the same
//! world; each must give an error or a skip (`"skipped"` in the report), and
//! the snapshot must be identical before and after. In a payload,
//! `@@REPEAT(c,n)@@` stands for the character `c` repeated `n` times (a 1 MiB
//! tag without a 1 MiB file). Files under `tests/hostile/deploy-on-push/track/`
//! are not payloads but `autopilot:track` tag values put on the opted-in
//! service before a normal push of a new `latest`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use autopilot_e2e::snapshot::{diff, snapshot, Snapshot};
use autopilot_e2e::world::World;
use autopilot_e2e::{enable_fake_clock, event, moto, serial, workspace_root, FaultProxy, Lambda};
use serde_json::{json, Value};

const HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
const NO_DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// Cases that fail today because of a product bug, as
/// `(function, operation, fault, variant)`; the report to the lead explains
/// each. Remove an entry once fixed: a listed case that passes fails the test.
const KNOWN_FAILURES: &[(&str, &str, &str, &str)] = &[];

/// Hostile cases that are accepted today because of a product gap, as
/// `(function, case path under tests/hostile)`; the report to the lead
/// explains each. Remove an entry once fixed: a listed case that passes fails.
const KNOWN_HOSTILE: &[(&str, &str)] = &[];

/// The faults of the matrix: kind, on which calls, latency for `latency`.
const FAULTS: &[(&str, Calls)] = &[
    ("throttle", Calls::First),
    ("500", Calls::First),
    ("503", Calls::First),
    ("reset", Calls::First),
    ("latency", Calls::First),
    ("reset-after", Calls::First),
    ("throttle", Calls::All),
    ("500", Calls::All),
    ("503", Calls::All),
    ("reset", Calls::All),
    ("latency", Calls::All),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Calls {
    First,
    All,
}

impl Calls {
    fn name(self) -> &'static str {
        match self {
            Calls::First => "first",
            Calls::All => "all",
        }
    }

    fn plan(self) -> Value {
        match self {
            Calls::First => json!([1]),
            Calls::All => json!("all"),
        }
    }
}

/// Builds the function's world on a reset moto and returns its event and the
/// environment the function runs with (besides moto's).
async fn scenario(function: &str) -> (Value, Vec<(&'static str, &'static str)>) {
    moto().set_clock("+0d");
    moto().reset();
    let world = World::new().await;
    match function {
        "log-groups" => {
            world.tutorial().await;
            // One group exists with the wrong retention and no tags: the sweep
            // must fix it (PutRetentionPolicy, TagResource on an existing group).
            world.create_log_group("/ecs/users", Some(7), &[]).await;
            (event("log-groups-schedule.json"), vec![("LOG_RETENTION_DAYS", "1")])
        }
        "deploy-on-push" => {
            let pushed = deploy_world(&world).await;
            (push_event(&pushed, "latest"), vec![])
        }
        "prune-images" => {
            prune_world(&world).await;
            // A new install is a dry run: the scenario must delete.
            (event("prune-images-schedule.json"), vec![("PRUNE_DEFAULT_MODE", "on")])
        }
        "quota-scan" => {
            prune_world(&world).await;
            (event("quota-scan-schedule.json"), vec![])
        }
        other => panic!("no scenario for {other}"),
    }
}

/// `users` (opted in, tracks `latest`, app + Envoy sidecar) and `users-batch`
/// (not opted in) in `microservices`, both on repository `users`, whose
/// `latest` has just moved to a new image. Returns that image's digest.
async fn deploy_world(world: &World) -> String {
    world.repository("users").await;
    world.push_image_with_config("users", &["latest", "1.0.0"], "arm64", "linux", "first").await;
    world.cluster("microservices").await;
    let users =
        world.task_definition_of("users", "users", &[("users", "/ecs/users"), ("envoy", "/ecs/users-envoy")]).await;
    world.service_tagged("microservices", "users", &users, &[("autopilot:deploy", "on")]).await;
    let batch = world.task_definition_of("users-batch", "users", &[("users-batch", "/ecs/users-batch")]).await;
    world.service_tagged("microservices", "users-batch", &batch, &[("team", "data")]).await;
    world.push_image_with_config("users", &["latest"], "arm64", "linux", "second").await.digest
}

fn push_event(digest: &str, tag: &str) -> Value {
    let mut e = event("deploy-on-push-push.json");
    e["detail"]["image-digest"] = json!(digest);
    e["detail"]["image-tag"] = json!(tag);
    e
}

/// Old untagged leftovers (one pinned by a service), an old multi-arch index
/// with its children, `latest`, a fresh untagged image; a second repository.
async fn prune_world(world: &World) {
    world.repository("users").await;
    world.repository("posts").await;
    moto().set_clock("-5d");
    for seed in ["u1", "u2"] {
        world.push_image("users", &[], "arm64", seed).await;
    }
    let pinned = world.push_image("users", &[], "arm64", "u3-pinned").await;
    let children = vec![
        world.push_image("users", &[], "amd64", "multi-amd64").await,
        world.push_image("users", &[], "arm64", "multi-arm64").await,
    ];
    world.push_index("users", "multi", &children).await;
    world.push_image("posts", &[], "arm64", "p1").await;
    moto().set_clock("+0d");
    world.push_image("users", &["latest"], "arm64", "latest").await;
    world.push_image("users", &[], "arm64", "fresh").await;
    world.push_image("posts", &["latest"], "arm64", "p-latest").await;
    world.cluster("microservices").await;
    let td = world.task_definition_running("users", &format!("{HOST}/users@{}", pinned.digest)).await;
    world.service("microservices", "users", &td).await;
}

struct Outcome {
    result: Result<Value, autopilot_e2e::FunctionError>,
    calls: BTreeMap<String, u64>,
    injected: BTreeMap<String, u64>,
    lambda: Lambda,
}

fn start(function: &str, proxy: &FaultProxy, env: &[(&'static str, &'static str)]) -> Lambda {
    let mut env = env.to_vec();
    env.push(("AWS_ENDPOINT_URL", Box::leak(proxy.endpoint.clone().into_boxed_str())));
    Lambda::start(function, &env)
}

async fn run(function: &str, proxy: &FaultProxy, plan: Value) -> (Outcome, Value) {
    let (event, env) = scenario(function).await;
    proxy.plan(plan);
    let lambda = start(function, proxy, &env);
    let result = lambda.invoke(&event);
    let (calls, injected) = proxy.calls();
    (Outcome { result, calls, injected, lambda }, event)
}

async fn fault_matrix(function: &str) {
    enable_fake_clock();
    let _serial = serial().await;
    let began = Instant::now();
    let proxy = FaultProxy::start();

    // The no-fault run: which operations, and which end state.
    let (event, _) = scenario(function).await;
    let initial = snapshot(&World::new().await).await;
    drop(event);
    let (baseline, _) = run(function, &proxy, json!([])).await;
    let report = baseline.result.unwrap_or_else(|e| panic!("{function} without faults: {e:?}"));
    let expected = snapshot(&World::new().await).await;
    if function != "quota-scan" {
        assert_ne!(initial, expected, "{function}'s scenario must change something: {report:#}");
    }
    // FAULT_MATRIX_ONLY=<text> limits the matrix to operations containing it
    // (to chase one case); FAULT_MATRIX_KINDS=a,b to those fault kinds.
    let only = std::env::var("FAULT_MATRIX_ONLY").unwrap_or_default();
    let kinds: Vec<String> =
        std::env::var("FAULT_MATRIX_KINDS").map(|k| k.split(',').map(String::from).collect()).unwrap_or_default();
    let operations: Vec<String> = baseline.calls.keys().filter(|o| o.contains(&only)).cloned().collect();
    assert!(!operations.is_empty(), "{function} called nothing through the proxy");
    drop(baseline.lambda);

    let full = std::env::var("FAULT_MATRIX").is_ok_and(|v| v == "full");
    let wanted = |kind: &str| kinds.is_empty() || kinds.iter().any(|w| w == kind);
    let mut plans: Vec<(String, &str, Calls)> = Vec::new();
    if full {
        for operation in &operations {
            for (kind, calls) in FAULTS.iter().filter(|(k, _)| wanted(k)) {
                plans.push((operation.clone(), kind, *calls));
            }
        }
    } else {
        // The matrix `make test` runs (see the module comment): per operation,
        // a fault that outlasts the SDK's retries (the run stops there, so
        // every partial state is visited) and, for writes, a lost answer; per
        // function, every first-call fault on all operations at once.
        for operation in &operations {
            if wanted("503") {
                plans.push((operation.clone(), "503", Calls::All));
            }
            if writes(operation) && wanted("reset-after") {
                plans.push((operation.clone(), "reset-after", Calls::First));
            }
        }
        for kind in ["throttle", "500", "reset", "latency"].into_iter().filter(|k| wanted(k)) {
            plans.push((EVERY_OPERATION.to_string(), kind, Calls::First));
        }
    }
    let mut failures = BTreeSet::new();
    let mut cases = 0;
    for (operation, kind, calls) in &plans {
        cases += 1;
        let case = (function, operation.as_str(), *kind, calls.name());
        let latency = if *calls == Calls::First { 1000 } else { 200 };
        let targets: Vec<&String> =
            if operation == EVERY_OPERATION { operations.iter().collect() } else { vec![operation] };
        let plan: Vec<Value> = targets
            .iter()
            .map(|o| json!({"operation": o, "calls": calls.plan(), "kind": kind, "latencyMs": latency}))
            .collect();
        let started = Instant::now();
        let (outcome, event) = run(function, &proxy, Value::Array(plan)).await;
        let problem = check_case(&proxy, &expected, outcome, &event, &targets).await;
        eprintln!(
            "fault case {case:?}: {} in {:.1} s",
            if problem.is_some() { "FAILED" } else { "ok" },
            started.elapsed().as_secs_f64()
        );
        if let Some(problem) = problem {
            eprintln!("FAULT CASE FAILED {case:?}: {problem}");
            failures.insert((function.to_string(), operation.clone(), kind.to_string(), calls.name().to_string()));
        }
    }
    let elapsed = began.elapsed();
    let summary = format!(
        "fault matrix {function}: {} operations x {} faults = {cases} cases in {:.0} s; operations: {operations:?}\n",
        operations.len(),
        cases / operations.len().max(1),
        elapsed.as_secs_f64()
    );
    eprint!("{summary}");
    let log = workspace_root().join("target/e2e-logs").join(format!("fault-matrix-{function}.txt"));
    let _ = std::fs::write(log, &summary);

    let known: BTreeSet<(String, String, String, String)> = KNOWN_FAILURES
        .iter()
        .filter(|k| k.0 == function)
        .map(|(f, o, k, c)| (f.to_string(), o.to_string(), k.to_string(), c.to_string()))
        .collect();
    let unexpected: Vec<_> = failures.difference(&known).collect();
    let ran = |k: &(String, String, String, String)| {
        plans.iter().any(|(o, kind, c)| (o, *kind, c.name()) == (&k.1, k.2.as_str(), k.3.as_str()))
    };
    let fixed: Vec<_> = known.iter().filter(|k| ran(k) && !failures.contains(*k)).collect();
    assert!(unexpected.is_empty(), "fault cases failed (see FAULT CASE FAILED lines above): {unexpected:#?}");
    assert!(fixed.is_empty(), "known failures that now pass; remove them from KNOWN_FAILURES: {fixed:#?}");
}

/// The operation name of a case that faults every operation at once.
const EVERY_OPERATION: &str = "*";

/// Whether an operation (`X-Amz-Target`, or `METHOD /path`) changes state:
/// those are the ones whose lost answer a retry must not apply twice.
fn writes(operation: &str) -> bool {
    let name = operation.rsplit('.').next().unwrap_or(operation);
    let rest = ["GET ", "HEAD "];
    if operation.contains(' ') {
        return !rest.iter().any(|m| operation.starts_with(m));
    }
    ["Register", "Deregister", "Update", "Create", "Put", "Delete", "BatchDelete", "Tag", "Untag", "Publish", "Start"]
        .iter()
        .any(|verb| name.starts_with(verb))
}

/// `None` when the case meets the contract, else what went wrong.
async fn check_case(
    proxy: &FaultProxy,
    expected: &Snapshot,
    outcome: Outcome,
    event: &Value,
    operations: &[&String],
) -> Option<String> {
    // One injection shows the case did what it says: with every operation
    // faulted, the run may stop at the first.
    if operations.iter().all(|o| outcome.injected.get(o.as_str()).copied().unwrap_or(0) == 0) {
        return Some(format!("the fault was never injected; calls: {:?}", outcome.calls));
    }
    match outcome.result {
        Ok(_) => {
            let now = snapshot(&World::new().await).await;
            (now != *expected).then(|| format!("succeeded but the end state differs:\n{}", diff(expected, &now)))
        }
        Err(error) if error.error_type != "Retryable" => Some(format!("failed {error:?}: not Retryable")),
        Err(first) => {
            proxy.clear();
            match outcome.lambda.invoke(event) {
                Err(e) => Some(format!("failed {first:?}, and the retry failed too: {e:?}")),
                Ok(_) => {
                    let now = snapshot(&World::new().await).await;
                    (now != *expected)
                        .then(|| format!("failed {first:?}; the retry's end state differs:\n{}", diff(expected, &now)))
                }
            }
        }
    }
}

#[tokio::test]
async fn fault_matrix_log_groups() {
    fault_matrix("log-groups").await;
}

#[tokio::test]
async fn fault_matrix_deploy_on_push() {
    fault_matrix("deploy-on-push").await;
}

#[tokio::test]
async fn fault_matrix_prune_images() {
    fault_matrix("prune-images").await;
}

#[tokio::test]
async fn fault_matrix_quota_scan() {
    fault_matrix("quota-scan").await;
}

// ---------------------------------------------------------------- hostile corpus

fn corpus(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// The payload bytes of a case, with `@@REPEAT(c,n)@@` expanded and
/// `@@DIGEST@@` replaced by `digest`.
fn payload(path: &Path, digest: &str) -> Vec<u8> {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let text = String::from_utf8_lossy(&text).replace("@@DIGEST@@", digest).into_bytes();
    let mut out = Vec::with_capacity(text.len());
    let mut rest: &[u8] = &text;
    while let Some(at) = find(rest, b"@@REPEAT(") {
        out.extend_from_slice(&rest[..at]);
        let after = &rest[at + 9..];
        let end = find(after, b")@@").unwrap_or_else(|| panic!("{}: unclosed @@REPEAT(", path.display()));
        let args = std::str::from_utf8(&after[..end]).expect("utf-8 REPEAT arguments");
        let (c, n) = args.split_once(',').expect("REPEAT(c,n)");
        let n: usize = n.trim().parse().expect("REPEAT count");
        out.extend_from_slice(c.repeat(n).as_bytes());
        rest = &after[end + 3..];
    }
    out.extend_from_slice(rest);
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// An error, or a report that says it skipped the event.
fn refused(result: &Result<Value, autopilot_e2e::FunctionError>) -> Result<(), String> {
    match result {
        Err(_) => Ok(()),
        Ok(report) => {
            // deploy-on-push and prune-images say `skipped`; log-groups says
            // why a CloudTrail event needs nothing in its `note`.
            // (an EventBridge event rejected: answered, counted in EventsRejected)
            let said =
                ["skipped", "note", "rejected"].iter().any(|k| report[*k].as_str().is_some_and(|s| !s.is_empty()));
            if said {
                Ok(())
            } else {
                Err(format!("accepted: {}", truncate(&report.to_string())))
            }
        }
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(600).collect()
}

async fn hostile_corpus(function: &str) {
    enable_fake_clock();
    let _serial = serial().await;
    let root = workspace_root().join("tests/hostile");
    let mut cases = corpus(&root.join("common"));
    cases.extend(corpus(&root.join(function)));
    assert!(!cases.is_empty(), "no hostile cases for {function}");
    let (event, env) = scenario(function).await;
    // A push case names the image the scenario just pushed (deploy-on-push),
    // so only the hostile part can stop it; elsewhere a well-formed digest.
    let digest = event["detail"]["image-digest"].as_str().unwrap_or(NO_DIGEST).to_string();
    let world = World::new().await;
    let before = snapshot(&world).await;
    let lambda = Lambda::start(function, &env);
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.strip_prefix(&root).unwrap_or(case).display().to_string();
        let result = lambda.invoke_raw(&payload(case, &digest));
        let after = snapshot(&world).await;
        let mut problems = Vec::new();
        if let Err(problem) = refused(&result) {
            problems.push(problem);
        }
        if after != before {
            problems.push(format!("changed moto's state:\n{}", diff(&before, &after)));
            // Carry on from a clean world so one failure does not taint the rest.
            scenario(function).await;
        }
        let known = KNOWN_HOSTILE.contains(&(function, name.as_str()));
        match (problems.is_empty(), known) {
            (true, true) => failures.push(format!("{name}: passes now; remove it from KNOWN_HOSTILE")),
            (false, false) => failures.push(format!("{name}: {}", problems.join("; "))),
            (false, true) => eprintln!("known hostile failure {name}: {}", truncate(&problems.join("; "))),
            (true, false) => {}
        }
        eprintln!(
            "hostile {function} {name}: {}",
            match &result {
                Ok(r) => format!("skipped: {}", truncate(&r["skipped"].to_string())),
                Err(e) => format!("{}: {}", e.error_type, truncate(&e.error_message)),
            }
        );
    }
    if function == "deploy-on-push" {
        failures.extend(hostile_track_values(&root.join("deploy-on-push/track")).await);
    }
    assert!(
        failures.is_empty(),
        "{} of {} hostile case(s) failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Each file is an `autopilot:track` value put on the opted-in service; a push
/// of a new `latest` must then change nothing.
async fn hostile_track_values(dir: &Path) -> Vec<String> {
    let mut failures = Vec::new();
    for case in corpus(dir) {
        let name = format!("deploy-on-push/track/{}", case.file_name().unwrap_or_default().to_string_lossy());
        let value = String::from_utf8(payload(&case, NO_DIGEST)).expect("utf-8 track value");
        let (event, env) = scenario("deploy-on-push").await;
        let world = World::new().await;
        let service = world
            .ecs
            .describe_services()
            .cluster("microservices")
            .services("users")
            .send()
            .await
            .expect("describe users");
        let arn = service.services()[0].service_arn().expect("service arn").to_string();
        world
            .ecs
            .tag_resource()
            .resource_arn(arn)
            .tags(aws_sdk_ecs::types::Tag::builder().key("autopilot:track").value(value.trim_end_matches('\n')).build())
            .send()
            .await
            .expect("tag users");
        let before = snapshot(&world).await;
        let lambda = Lambda::start("deploy-on-push", &env);
        let result = lambda.invoke(&event);
        let after = snapshot(&world).await;
        eprintln!("hostile deploy-on-push {name}: {:?}", result.as_ref().map(|r| truncate(&r.to_string())));
        if before != after {
            failures.push(format!("{name}: changed moto's state:\n{}", diff(&before, &after)));
        }
        if let Err(e) = &result {
            if e.error_type == "Retryable" {
                failures.push(format!("{name}: a bad tag value is not a transient error: {e:?}"));
            }
        }
    }
    failures
}

#[tokio::test]
async fn hostile_corpus_log_groups() {
    hostile_corpus("log-groups").await;
}

#[tokio::test]
async fn hostile_corpus_deploy_on_push() {
    hostile_corpus("deploy-on-push").await;
}

#[tokio::test]
async fn hostile_corpus_prune_images() {
    hostile_corpus("prune-images").await;
}

#[tokio::test]
async fn hostile_corpus_quota_scan() {
    hostile_corpus("quota-scan").await;
}

/// The corpus has the cases issue 12 asks for, so a deleted file is noticed.
#[test]
fn the_corpus_covers_the_issue_list() {
    let root = workspace_root().join("tests/hostile");
    let names: BTreeSet<String> =
        ["common", "deploy-on-push", "deploy-on-push/track", "prune-images", "log-groups", "quota-scan"]
            .iter()
            .flat_map(|d| corpus(&root.join(d)))
            .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .collect();
    for wanted in [
        "truncated-json",
        "wrong-types",
        "missing-detail",
        "huge-tag",
        "unknown-detail-type",
        "other-account",
        "other-region",
        "invalid-repository-name",
        "digest-not-sha256",
        "tag-control-characters",
        "huge-regex",
        "catastrophic-regex",
        "invalid-policy",
        "oversized-policy",
        "duplicate-keys",
    ] {
        assert!(names.iter().any(|n| n.contains(wanted)), "no hostile case named *{wanted}*: {names:?}");
    }
}
