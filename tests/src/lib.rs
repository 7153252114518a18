//! The end-to-end harness: the real function binaries, served by cargo-lambda's
//! local Lambda Runtime API, calling moto server as the local AWS.
//!
//! - [`moto`] starts one local AWS per test binary, on a free loopback port,
//!   and a watchdog stops it by pid when the test process exits. It is moto
//!   server plus the operations moto lacks (`tests/emulator/autopilot_moto.py`,
//!   whose docstring lists them and their test-only endpoints); the helpers on
//!   [`Moto`] drive those endpoints.
//! - [`Lambda`] starts `cargo lambda watch --only-lambda-apis` and one function
//!   binary behind it, both stopped (by process group) when dropped.
//! - [`world`] builds the tutorial-like ECS world the tests and the demo use.
//!
//! - [`FaultProxy`] (`tests/emulator/fault_proxy.py`) sits between a function
//!   and moto and injects throttles, 5xx, connection resets and latency per
//!   operation and call number; [`snapshot`] reads back what the functions
//!   write, to compare end states.
//!
//! Tests that share moto hold [`serial`] and call [`Moto::reset`] first.

pub mod queue;
pub mod snapshot;
pub mod tables;
pub mod world;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ecs::config::Credentials;
use serde_json::Value;

/// The region every test world lives in; the `events/` files name it.
pub const REGION: &str = "us-east-1";
/// moto's default account, which the `events/` files name.
pub const ACCOUNT: &str = "123456789012";

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The tool virtualenv made by `scripts/setup.sh`.
pub fn tools_bin() -> PathBuf {
    let venv = std::env::var_os("AUTOPILOT_VENV").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/ecr-autopilot/venv")
    });
    let bin = venv.join("bin");
    assert!(
        bin.join("python").exists() && bin.join("moto_server").exists() && bin.join("cargo-lambda").exists(),
        "tools missing in {}: run `make setup` (scripts/setup.sh) first",
        venv.display()
    );
    bin
}

/// A function binary built by `cargo build --workspace --all-targets` (`make build`,
/// before `cargo test`, so every test runs the same build).
/// `AUTOPILOT_FUNCTION_DIR` points elsewhere (the benchmark uses the native
/// release build).
pub fn function_binary(name: &str) -> PathBuf {
    let dir = std::env::var_os("AUTOPILOT_FUNCTION_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"));
        target.join("debug")
    });
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `make build` (cargo build --workspace --all-targets) first",
        path.display()
    );
    path
}

pub fn event(name: &str) -> Value {
    let path = workspace_root().join("events").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on 127.0.0.1:{port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `program` in its own process group under a watchdog that kills the
/// whole group when this test process exits, however it exits. Killing the
/// returned child (the watchdog) also kills the group.
fn spawn_guarded(program: &Path, args: &[&str], envs: &[(String, String)], log: &Path) -> Child {
    let script = r#"
        prog="$1"; shift
        setsid "$prog" "$@" & child=$!
        trap 'kill -TERM -- -$child 2>/dev/null; exit 0' EXIT TERM INT
        while kill -0 "$WATCH_PID" 2>/dev/null && kill -0 "$child" 2>/dev/null; do sleep 0.2; done
    "#;
    let log_file = std::fs::File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let err_file = log_file.try_clone().expect("log file handle");
    Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg("guard")
        .arg(program)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .env("WATCH_PID", std::process::id().to_string())
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(err_file)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()))
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
}

fn logs_dir() -> PathBuf {
    let dir = workspace_root().join("target").join("e2e-logs");
    std::fs::create_dir_all(&dir).expect("target/e2e-logs");
    dir
}

/// A moto server on loopback.
pub struct Moto {
    pub endpoint: String,
    /// The libfaketime timestamp file moto's clock reads, when faked.
    clock: Option<PathBuf>,
    _guard: Mutex<Child>,
}

static FAKE_CLOCK: AtomicBool = AtomicBool::new(false);
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// Starts this binary's moto under libfaketime, so tests can backdate image
/// pushes with [`Moto::set_clock`]. Call before the first [`moto`].
pub fn enable_fake_clock() {
    FAKE_CLOCK.store(true, Ordering::SeqCst);
}

/// The moto server of this test binary, started on first use.
pub fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(Moto::start)
}

/// Serialises the tests of one binary around the shared moto server. An
/// async lock, so holding it across `.await` blocks no executor thread, and a
/// test that panics does not poison it for the others.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

impl Moto {
    pub fn start() -> Moto {
        let port = free_port();
        let log = logs_dir().join(format!("moto-{}.log", std::process::id()));
        let port_text = port.to_string();
        let mut envs = Vec::new();
        let clock = FAKE_CLOCK.load(Ordering::SeqCst).then(|| {
            assert!(Path::new(LIBFAKETIME).exists(), "{LIBFAKETIME} is missing: run `make setup` (Debian faketime)");
            let file = logs_dir().join(format!("moto-clock-{}", std::process::id()));
            std::fs::write(&file, "+0d\n").expect("clock file");
            envs.extend([
                ("LD_PRELOAD".to_string(), LIBFAKETIME.to_string()),
                ("FAKETIME_TIMESTAMP_FILE".into(), file.display().to_string()),
                ("FAKETIME_NO_CACHE".into(), "1".into()),
                ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
            ]);
            file
        });
        let launcher = workspace_root().join("tests/emulator/autopilot_moto.py");
        let launcher = launcher.to_str().expect("utf-8 path");
        let child =
            spawn_guarded(&tools_bin().join("python"), &[launcher, "-H", "127.0.0.1", "-p", &port_text], &envs, &log);
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while ureq::get(format!("{endpoint}/moto-api/")).call().is_err() {
            assert!(Instant::now() < deadline, "moto did not start; see {}", log.display());
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto { endpoint, clock, _guard: Mutex::new(child) }
    }

    /// Shifts moto's clock, e.g. `-5d` (five days ago) or `+0d` (now).
    pub fn set_clock(&self, offset: &str) {
        let file = self.clock.as_ref().expect("call enable_fake_clock() before moto()");
        std::fs::write(file, format!("{offset}\n")).expect("clock file");
    }

    /// Clears all state.
    pub fn reset(&self) {
        ureq::post(format!("{}/moto-api/reset", self.endpoint)).send_empty().expect("moto reset");
    }

    /// Registers a blob (an image config, a layer) in `repository` of
    /// [`REGION`], so `GetDownloadUrlForLayer` finds it and its URL serves
    /// `bytes`. Returns its digest (the sha256 of `bytes`).
    pub fn put_blob(&self, repository: &str, bytes: &[u8]) -> String {
        self.put_blob_with(REGION, repository, None, bytes, None)
    }

    /// [`Moto::put_blob`] in full: any region, a `digest` that need not match
    /// the bytes, and a `fail_status` (e.g. 503) that the download URL answers
    /// instead of the bytes.
    pub fn put_blob_with(
        &self,
        region: &str,
        repository: &str,
        digest: Option<&str>,
        bytes: &[u8],
        fail_status: Option<u16>,
    ) -> String {
        let mut request = ureq::put(format!("{}/autopilot-api/ecr/blobs", self.endpoint))
            .query("repository", repository)
            .query("region", region);
        if let Some(digest) = digest {
            request = request.query("digest", digest);
        }
        if let Some(status) = fail_status {
            request = request.query("status", status.to_string());
        }
        let mut response = request.send(bytes).unwrap_or_else(|e| panic!("put_blob {repository}: {e}"));
        let body: Value = response.body_mut().read_json().expect("put_blob response");
        body["digest"].as_str().expect("digest").to_string()
    }

    /// Sets a service deployment's status (`SUCCESSFUL`, `IN_PROGRESS`,
    /// `ROLLBACK_SUCCESSFUL`, `ROLLBACK_FAILED`, `STOPPED`, ...), as a rollout
    /// ending would; returns the deployment as DescribeServiceDeployments
    /// shows it (times in epoch seconds).
    pub fn set_deployment_status(&self, service_deployment_arn: &str, status: &str, reason: Option<&str>) -> Value {
        self.autopilot_post(
            "ecs/service-deployments/status",
            &serde_json::json!({"serviceDeploymentArn": service_deployment_arn, "status": status, "statusReason": reason}),
        )
    }

    /// [`Moto::set_deployment_status`] on the newest deployment of `service`.
    pub fn set_latest_deployment_status(&self, region: &str, cluster: &str, service: &str, status: &str) -> Value {
        self.autopilot_post(
            "ecs/service-deployments/status",
            &serde_json::json!({"region": region, "cluster": cluster, "service": service, "status": status}),
        )
    }

    /// The status every later service deployment starts in: `SUCCESSFUL` (the
    /// default, restored by [`Moto::reset`]), or e.g. `IN_PROGRESS` to end the
    /// rollout later with [`Moto::set_deployment_status`].
    pub fn set_new_deployment_status(&self, status: &str) {
        self.autopilot_post("ecs/new-deployment-status", &serde_json::json!({"status": status}));
    }

    /// Sets an image's `imageStatus` (`ACTIVE`, `ARCHIVED`, `ACTIVATING`), e.g.
    /// to finish an activation that `UpdateImageStorageClass` started.
    pub fn set_image_status(&self, region: &str, repository: &str, digest: &str, status: &str) {
        self.autopilot_post(
            "ecr/image-status",
            &serde_json::json!({"region": region, "repositoryName": repository, "imageDigest": digest, "imageStatus": status}),
        );
    }

    /// Creates an IAM role that `service` may assume (moto's Lambda refuses a
    /// function whose role does not exist) and returns its ARN. IAM is a
    /// query API; moto routes by the credential scope and ignores signatures.
    pub fn create_role(&self, name: &str, service: &str) -> String {
        let trust = serde_json::json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]})
        .to_string();
        let config = ureq::Agent::config_builder().http_status_as_error(false).build();
        let mut response = ureq::Agent::new_with_config(config)
            .post(format!("{}/", self.endpoint))
            .header(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0",
            )
            .send_form([
                ("Action", "CreateRole"),
                ("Version", "2010-05-08"),
                ("RoleName", name),
                ("AssumeRolePolicyDocument", trust.as_str()),
            ])
            .unwrap_or_else(|e| panic!("CreateRole {name}: {e}"));
        let status = response.status();
        let body = response.body_mut().read_to_string().unwrap_or_default();
        assert!(status.is_success(), "CreateRole {name}: {status} {body}");
        format!("arn:aws:iam::{ACCOUNT}:role/{name}")
    }

    fn autopilot_post(&self, path: &str, body: &Value) -> Value {
        let config = ureq::Agent::config_builder().http_status_as_error(false).build();
        let mut response = ureq::Agent::new_with_config(config)
            .post(format!("{}/autopilot-api/{path}", self.endpoint))
            .send_json(body)
            .unwrap_or_else(|e| panic!("/autopilot-api/{path}: {e}"));
        let status = response.status();
        let value: Value = response.body_mut().read_json().unwrap_or(Value::Null);
        assert!(status.is_success(), "/autopilot-api/{path} {body}: {status} {value}");
        value
    }

    /// The environment a function needs to call this moto.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_REGION", REGION),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            // Keep a test's failure fast: moto does not throttle.
            ("AWS_MAX_ATTEMPTS", "2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    pub async fn sdk_config(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .http_client(autopilot::aws::https_client())
            .endpoint_url(&self.endpoint)
            .region(Region::new(REGION))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "e2e"))
            .load()
            .await
    }
}

/// The fault-injecting proxy in front of [`moto`]: point a function's
/// `AWS_ENDPOINT_URL` at [`FaultProxy::endpoint`], then plan faults per
/// operation (`X-Amz-Target`, or `METHOD /path` for REST APIs) and call number.
/// Its docstring lists the fault kinds and how each is shaped.
pub struct FaultProxy {
    pub endpoint: String,
    guard: Child,
}

impl FaultProxy {
    pub fn start() -> FaultProxy {
        let port = free_port();
        let log = logs_dir().join(format!("fault-proxy-{}-{port}.log", std::process::id()));
        let script = workspace_root().join("tests/emulator/fault_proxy.py");
        let script = script.to_str().expect("utf-8 path");
        let port_text = port.to_string();
        let guard = spawn_guarded(
            &tools_bin().join("python"),
            &[script, "--port", &port_text, "--upstream", &moto().endpoint],
            &[],
            &log,
        );
        wait_for_port(port, "the fault proxy");
        FaultProxy { endpoint: format!("http://127.0.0.1:{port}"), guard }
    }

    /// Replaces the plan (a JSON array of `{"operation", "calls": [n..] | "all",
    /// "kind", "latencyMs"?}`) and clears the counters.
    pub fn plan(&self, faults: Value) {
        ureq::post(format!("{}/fault-proxy/plan", self.endpoint))
            .send_json(serde_json::json!({ "faults": faults }))
            .expect("fault proxy plan");
    }

    /// No faults, counters cleared.
    pub fn clear(&self) {
        self.plan(Value::Array(Vec::new()));
    }

    /// Calls per operation since the last plan, and how many of them got a fault.
    pub fn calls(&self) -> (std::collections::BTreeMap<String, u64>, std::collections::BTreeMap<String, u64>) {
        let mut response = ureq::get(format!("{}/fault-proxy/calls", self.endpoint)).call().expect("fault proxy calls");
        let body: Value = response.body_mut().read_json().expect("calls json");
        let map = |v: &Value| {
            v.as_object()
                .map(|o| o.iter().map(|(k, n)| (k.clone(), n.as_u64().unwrap_or_default())).collect())
                .unwrap_or_default()
        };
        (map(&body["calls"]), map(&body["injected"]))
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        stop(&mut self.guard);
    }
}

/// How long an invocation may take: 120 s, or `AUTOPILOT_INVOKE_TIMEOUT_SECS`
/// (the benchmarks' large worlds take longer on moto).
fn invoke_timeout() -> Duration {
    let secs = std::env::var("AUTOPILOT_INVOKE_TIMEOUT_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(120);
    Duration::from_secs(secs)
}

/// An error the function returned, as the Runtime API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionError {
    pub error_type: String,
    pub error_message: String,
}

/// One function binary behind its own local Lambda Runtime API.
pub struct Lambda {
    port: u16,
    watch: Child,
    function: Child,
    log: PathBuf,
    /// The Runtime API proxy that gives the function a wall-clock deadline.
    deadline: Option<Child>,
}

impl Lambda {
    /// Starts `cargo lambda watch --only-lambda-apis` and the named function
    /// binary with moto's environment plus `env`.
    pub fn start(function: &str, env: &[(&str, &str)]) -> Lambda {
        Self::start_binary(&function_binary(function), function, env)
    }

    pub fn start_binary(binary: &Path, function: &str, env: &[(&str, &str)]) -> Lambda {
        Self::start_command(binary, &[], function, env, None)
    }

    /// Like [`Lambda::start`], with every invocation's deadline `timeout`
    /// after it is handed to the function, as Lambda sets it from the
    /// function's timeout (cargo-lambda sends none: the fault proxy's
    /// `--deadline-ms` mode stands in front of its Runtime API).
    pub fn start_with_timeout(function: &str, env: &[(&str, &str)], timeout: Duration) -> Lambda {
        Self::start_command(&function_binary(function), &[], function, env, Some(timeout))
    }

    /// The arm64 release `bootstrap` of `function` (from `cargo lambda build
    /// --release --arm64`) under qemu user emulation, as Lambda would run it.
    pub fn start_arm64(bootstrap: &Path, function: &str, env: &[(&str, &str)]) -> Lambda {
        let bootstrap = bootstrap.to_str().expect("utf-8 path");
        let qemu = Path::new("/usr/bin/qemu-aarch64-static");
        Self::start_command(qemu, &["-L", "/usr/aarch64-linux-gnu", bootstrap], function, env, None)
    }

    fn start_command(
        program: &Path,
        args: &[&str],
        function: &str,
        env: &[(&str, &str)],
        timeout: Option<Duration>,
    ) -> Lambda {
        let port = free_port();
        let tag = format!("{function}-{}-{port}", std::process::id());
        let port_text = port.to_string();
        let watch = spawn_guarded(
            &tools_bin().join("cargo-lambda"),
            &["lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1", "-P", &port_text],
            &[("PATH".into(), path_with_tools())],
            &logs_dir().join(format!("{tag}-runtime.log")),
        );
        wait_for_port(port, "cargo lambda watch");
        let (runtime_port, deadline) = match timeout {
            None => (port, None),
            Some(timeout) => {
                let proxy_port = free_port();
                let script = workspace_root().join("tests/emulator/fault_proxy.py");
                let child = spawn_guarded(
                    &tools_bin().join("python"),
                    &[
                        script.to_str().expect("utf-8 path"),
                        "--port",
                        &proxy_port.to_string(),
                        "--upstream",
                        &format!("http://127.0.0.1:{port}"),
                        "--deadline-ms",
                        &timeout.as_millis().to_string(),
                    ],
                    &[],
                    &logs_dir().join(format!("{tag}-deadline.log")),
                );
                wait_for_port(proxy_port, "the Runtime API deadline proxy");
                (proxy_port, Some(child))
            }
        };
        let mut envs = moto().env();
        envs.extend([
            ("AWS_LAMBDA_RUNTIME_API".to_string(), format!("http://127.0.0.1:{runtime_port}/.rt")),
            ("AWS_LAMBDA_FUNCTION_NAME".into(), function.into()),
            ("AWS_LAMBDA_FUNCTION_VERSION".into(), "1".into()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(), "256".into()),
            ("AWS_LAMBDA_LOG_FORMAT".into(), "JSON".into()),
        ]);
        envs.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let log = logs_dir().join(format!("{tag}-function.log"));
        let function = spawn_guarded(program, args, &envs, &log);
        Lambda { port, watch, function, log, deadline }
    }

    /// Invokes the function with `payload` and waits for its response.
    pub fn invoke(&self, payload: &Value) -> Result<Value, FunctionError> {
        self.invoke_raw(&serde_json::to_vec(payload).expect("payload serialises"))
    }

    /// Invokes the function with `payload` as given, valid JSON or not.
    pub fn invoke_raw(&self, payload: &[u8]) -> Result<Value, FunctionError> {
        let url = format!("http://127.0.0.1:{}/2015-03-31/functions/_/invocations", self.port);
        let config =
            ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(invoke_timeout())).build();
        let agent = ureq::Agent::new_with_config(config);
        let mut response = agent
            .post(&url)
            .header("Content-Type", "application/json")
            .send(payload)
            .unwrap_or_else(|e| panic!("invoke failed: {e}; function log: {}", self.log_text()));
        let failed = response.headers().contains_key("x-amz-function-error") || !response.status().is_success();
        let body: Value = response.body_mut().read_json().unwrap_or(Value::Null);
        if failed {
            return Err(FunctionError {
                error_type: body["errorType"].as_str().unwrap_or_default().to_string(),
                error_message: body["errorMessage"].as_str().unwrap_or_default().to_string(),
            });
        }
        Ok(body)
    }

    /// [`Lambda::invoke`] for prune-images and quota-scan, whose response is
    /// a summary: the per-repository detail lines this invocation logged
    /// (`repository report`) are put back under `repositories`, in the order
    /// they were logged, so a test reads the whole report.
    pub fn invoke_detailed(&self, payload: &Value) -> Result<Value, FunctionError> {
        let before = self.log_text().len();
        let mut summary = self.invoke(payload)?;
        let text = self.log_text();
        let details: Vec<Value> = text.get(before..).unwrap_or_default().lines().filter_map(detail_line).collect();
        summary["repositories"] = Value::Array(details);
        Ok(summary)
    }

    /// Every log line of the function, parsed (the JSON ones).
    pub fn log_records(&self) -> Vec<Value> {
        self.log_text().lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).collect()
    }

    /// Everything the function wrote to stdout and stderr so far.
    pub fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// The Embedded Metric Format documents among the function's log lines.
    pub fn emf_documents(&self) -> Vec<Value> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("_aws").is_some())
            .collect()
    }

    /// Waits for the function process to exit (a cold-start failure).
    pub fn wait_for_exit(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if !self.log_text().is_empty() && !self.function_alive() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        !self.function_alive()
    }

    /// The function process's peak resident set (VmHWM), in KiB, while it runs.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        peak_rss_kib(&self.function_pid()?)
    }

    /// The CPU time (user + system) the function process has used so far, in
    /// seconds (`/proc/<pid>/stat`, in clock ticks of 1/100 s).
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.function_pid()?)).ok()?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
        let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some(ticks as f64 / 100.0)
    }

    /// The function process: the guard's only child.
    fn function_pid(&self) -> Option<String> {
        let guard = self.function.id();
        let children = std::fs::read_to_string(format!("/proc/{guard}/task/{guard}/children")).ok()?;
        children.split_whitespace().next().map(String::from)
    }

    fn function_alive(&mut self) -> bool {
        matches!(self.function.try_wait(), Ok(None))
    }
}

impl Drop for Lambda {
    fn drop(&mut self) {
        stop(&mut self.function);
        if let Some(deadline) = &mut self.deadline {
            stop(deadline);
        }
        stop(&mut self.watch);
    }
}

/// Sends an EventBridge event the function cannot use (malformed, or not one
/// it handles): the invocation must succeed, so Lambda does not retry it,
/// answer `trigger: rejected` with the error a manual invocation would get,
/// log it at ERROR, and publish one `EventsRejected` (valid EMF).
pub fn assert_rejected(lambda: &Lambda, payload: &Value, expected: &str) {
    let rejected_docs =
        || -> Vec<Value> { lambda.emf_documents().into_iter().filter(|d| d.get("EventsRejected").is_some()).collect() };
    let before = rejected_docs().len();
    let answer = lambda.invoke(payload).unwrap_or_else(|e| panic!("{payload}: failed instead of rejected: {e:?}"));
    assert_eq!(answer["trigger"], "rejected", "{payload} → {answer}");
    let message = answer["rejected"].as_str().unwrap_or_default();
    assert!(message.starts_with(expected), "{payload} → {message}");
    let docs = rejected_docs();
    assert_eq!(docs.len(), before + 1, "one EventsRejected document per rejected event");
    let doc = &docs[docs.len() - 1];
    check_emf(doc).unwrap_or_else(|problem| panic!("invalid EMF ({problem}): {doc}"));
    assert_eq!(doc["EventsRejected"], 1.0);
    let logged = lambda.log_records().into_iter().any(|r| {
        let fields = if r.get("fields").is_some() { &r["fields"] } else { &r };
        r["level"] == "ERROR"
            && fields["message"].as_str().is_some_and(|m| m.starts_with("event rejected"))
            && fields["error"].as_str() == Some(message)
    });
    assert!(logged, "no ERROR line for the rejected event: {}", lambda.log_text());
}

/// The detail of one `repository report` log line (tracing's JSON record,
/// with or without its `fields` object).
fn detail_line(line: &str) -> Option<Value> {
    let record: Value = serde_json::from_str(line).ok()?;
    let fields = if record.get("fields").is_some() { &record["fields"] } else { &record };
    if fields["message"] != "repository report" {
        return None;
    }
    serde_json::from_str(fields["detail"].as_str()?).ok()
}

/// PATH with the tool virtualenv first, so cargo-lambda finds its zig.
pub fn path_with_tools() -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    format!("{}:{path}", tools_bin().display())
}

/// CloudWatch's Embedded Metric Format rules, checked on one log line: the
/// `_aws` envelope with a millisecond `Timestamp`, directives with a
/// `Namespace`, at most 30 keys per dimension set (each a string member of
/// the document), at most 100 metrics per directive (each a number member),
/// and units from CloudWatch's list.
pub fn check_emf(doc: &Value) -> Result<(), String> {
    const UNITS: &[&str] = &[
        "Seconds",
        "Microseconds",
        "Milliseconds",
        "Bytes",
        "Kilobytes",
        "Megabytes",
        "Gigabytes",
        "Terabytes",
        "Bits",
        "Kilobits",
        "Megabits",
        "Gigabits",
        "Terabits",
        "Percent",
        "Count",
        "Bytes/Second",
        "Kilobytes/Second",
        "Megabytes/Second",
        "Gigabytes/Second",
        "Terabytes/Second",
        "Bits/Second",
        "Kilobits/Second",
        "Megabits/Second",
        "Gigabits/Second",
        "Terabits/Second",
        "Count/Second",
        "None",
    ];
    let aws = doc.get("_aws").and_then(Value::as_object).ok_or("no _aws object")?;
    aws.get("Timestamp").and_then(Value::as_u64).ok_or("_aws.Timestamp is not a whole number of milliseconds")?;
    let directives = aws.get("CloudWatchMetrics").and_then(Value::as_array).ok_or("no CloudWatchMetrics array")?;
    if directives.is_empty() {
        return Err("CloudWatchMetrics is empty".into());
    }
    for directive in directives {
        let namespace = directive.get("Namespace").and_then(Value::as_str).ok_or("directive without Namespace")?;
        if namespace.is_empty() || namespace.len() > 255 {
            return Err(format!("namespace {namespace:?} is not 1 to 255 characters"));
        }
        for set in directive.get("Dimensions").and_then(Value::as_array).ok_or("directive without Dimensions")? {
            let keys = set.as_array().ok_or("a dimension set is not an array")?;
            if keys.len() > 30 {
                return Err(format!("a dimension set has {} keys; at most 30", keys.len()));
            }
            for key in keys {
                let key = key.as_str().ok_or("a dimension key is not a string")?;
                if !doc.get(key).is_some_and(Value::is_string) {
                    return Err(format!("dimension {key} has no string value in the document"));
                }
            }
        }
        let metrics = directive.get("Metrics").and_then(Value::as_array).ok_or("directive without Metrics")?;
        if metrics.len() > 100 {
            return Err(format!("{} metrics in one directive; at most 100", metrics.len()));
        }
        for metric in metrics {
            let name = metric.get("Name").and_then(Value::as_str).ok_or("a metric without Name")?;
            if !doc
                .get(name)
                .is_some_and(|v| v.is_number() || v.as_array().is_some_and(|a| a.iter().all(Value::is_number)))
            {
                return Err(format!("metric {name} has no numeric value in the document"));
            }
            if let Some(unit) = metric.get("Unit") {
                let unit = unit.as_str().ok_or("a Unit is not a string")?;
                if !UNITS.contains(&unit) {
                    return Err(format!("metric {name} has unit {unit:?}, which CloudWatch does not know"));
                }
            }
        }
    }
    Ok(())
}

/// A live process's peak resident set (VmHWM of `/proc/<pid>/status`), in KiB.
pub fn peak_rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
