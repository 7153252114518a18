//! `make demo` in CI: the demo binary runs end to end (its own moto, the real
//! function binaries) and its tables say what happened. Expected values come
//! from what the demo itself printed (the pushed digest), not from constants.

use std::process::{Command, Output};

use autopilot_e2e::tables::{short_digest, Table};
use serde_json::Value;

fn run_demo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_demo"))
        .args(args)
        .env("AUTOPILOT_VENV", autopilot_e2e::tools_bin().parent().expect("venv"))
        .output()
        .expect("the demo runs")
}

/// The table printed under `== <title…>`.
fn table_under(stdout: &str, title: &str) -> Table {
    let section = stdout
        .split("\n== ")
        .find(|s| s.starts_with(title))
        .unwrap_or_else(|| panic!("no section {title:?} in:\n{stdout}"));
    let body = section.split_once('\n').map(|(_, b)| b).unwrap_or_default();
    let table_text: String = body.lines().take_while(|l| !l.is_empty()).collect::<Vec<_>>().join("\n");
    Table::parse(&table_text).unwrap_or_else(|| panic!("no table under {title:?}:\n{section}"))
}

#[test]
fn the_demo_tells_the_story_in_tables_and_json_on_request() {
    // The two runs are independent (each starts its own moto): run them at once.
    let (tables, json) = std::thread::scope(|s| {
        let tables = s.spawn(|| run_demo(&[]));
        let json = s.spawn(|| run_demo(&["--json"]));
        (tables.join().expect("demo"), json.join().expect("demo --json"))
    });
    let stdout = String::from_utf8_lossy(&tables.stdout);
    let stderr = String::from_utf8_lossy(&tables.stderr);
    assert!(tables.status.success(), "demo failed:\n{stdout}\n{stderr}");
    // Long steps say what they are doing, on stderr.
    assert!(stderr.contains("starting the local AWS (moto server) …"), "{stderr}");
    assert!(stderr.contains("starting prune-images"), "{stderr}");

    // log-groups: the four tutorial groups created with the tutorials' 1 day,
    // and a second sweep that finds them compliant.
    let sweep = table_under(&stdout, "log-groups, scheduled sweep");
    for group in autopilot_e2e::world::tutorial_groups() {
        let rows = sweep.rows_where("group", group);
        assert_eq!(rows.len(), 1, "{group}: {sweep:?}");
        assert_eq!(sweep.cell(rows[0], "retention before → after"), "missing → 1 d");
        assert_eq!(sweep.cell(rows[0], "action"), "created");
    }
    let again = table_under(&stdout, "log-groups, a second sweep changes nothing");
    assert!(again.rows.iter().all(|r| again.cell(r, "action") == "already-compliant"), "{again:?}");
    assert_eq!(again.rows.len(), 4);

    // deploy-on-push: a rollout row with the digest the demo pushed.
    let pushed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("CI pushed a new users:latest, digest "))
        .expect("the demo prints the pushed digest");
    let rollouts = table_under(&stdout, "deploy-on-push, the ECR push event");
    let users = rollouts.rows_where("service", "microservices/users");
    assert_eq!(users.len(), 1, "{rollouts:?}");
    assert_eq!(rollouts.cell(users[0], "container"), "users");
    assert_eq!(rollouts.cell(users[0], "status"), "updated");
    assert_eq!(
        rollouts.cell(users[0], "from → to"),
        format!("users:latest → users@{}", short_digest(pushed)),
        "{rollouts:?}"
    );
    let preview = table_under(&stdout, "deploy-on-push, manual preview (dry run)");
    assert_eq!(preview.cell(preview.rows_where("service", "microservices/users")[0], "status"), "planned");
    let replay = table_under(&stdout, "deploy-on-push, the same event again");
    let row = replay.rows_where("service", "microservices/users")[0].clone();
    assert_eq!(replay.cell(&row, "status"), "skipped");
    assert!(replay.cell(&row, "reason").starts_with("already running"), "{replay:?}");

    // quota-scan: users holds the new image and three leftovers; the default
    // policy would reclaim two: the nightly job's image is in use.
    let quota = table_under(&stdout, "quota-scan: every repository against the 500 MB free tier");
    let users = quota.rows_where("repository", "users");
    assert_eq!(quota.cell(users[0], "images"), "4", "{quota:?}");
    assert_eq!(quota.cell(users[0], "status"), "ok");
    assert!(quota.cell(users[0], "reclaimable").starts_with("2 image(s)"), "{quota:?}");
    assert_eq!(quota.rows.last().map(|r| r[0].as_str()), Some("(registry)"));

    // quota-scan's audit: one finding, posts v1, which the posts service
    // still runs and the native "keep the newest image" rule expires.
    let audit = table_under(&stdout, "quota-scan audit: images in use that a native lifecycle policy will expire");
    assert_eq!(audit.rows.len(), 1, "{audit:?}");
    let row = &audit.rows[0];
    assert_eq!(audit.cell(row, "repository"), "posts");
    assert_eq!(audit.cell(row, "tags"), "v1");
    assert_eq!(audit.cell(row, "native rule"), "expire 1");
    assert_eq!(audit.cell(row, "due"), "now");
    assert!(audit.cell(row, "used by").contains("service microservices/posts in us-east-1"), "{audit:?}");
    assert!(stdout.contains("NativePolicyInUseExpiries = 1"), "{stdout}");

    // prune-images: the image users runs is kept because it is in use, and
    // so is the leftover the nightly Scheduler job runs; the other two
    // untagged leftovers are deleted by the untagged rule.
    let prune = table_under(&stdout, "prune-images, the daily run");
    let kept: Vec<_> = prune
        .rows_where("decision", "kept")
        .into_iter()
        .filter(|r| prune.cell(r, "reason").starts_with("in use by service microservices/users"))
        .collect();
    assert_eq!(kept.len(), 1, "{prune:?}");
    assert_eq!(prune.cell(kept[0], "digest"), short_digest(pushed));
    assert_eq!(prune.cell(kept[0], "repository"), "users");
    let job: Vec<_> = prune
        .rows_where("decision", "kept")
        .into_iter()
        .filter(|r| prune.cell(r, "reason").contains("in use by Scheduler schedule default/users-nightly-report"))
        .collect();
    assert_eq!(job.len(), 1, "the nightly job's image: {prune:?}");
    assert_eq!(prune.cell(job[0], "tags"), "<untagged>");
    assert!(stdout.contains(&format!("runs the third of them, users@{}", prune.cell(job[0], "digest"))), "{stdout}");
    let deleted = prune.rows_where("decision", "deleted");
    assert_eq!(deleted.len(), 2, "{prune:?}");
    assert!(deleted
        .iter()
        .all(|r| prune.cell(r, "tags") == "<untagged>" && prune.cell(r, "reason") == "expired by rule 1"));
    // ...after a first run that, as on a fresh install, deleted nothing.
    let dry = table_under(&stdout, "prune-images, the first daily run of a fresh install");
    assert_eq!(dry.rows_where("decision", "would delete").len(), 2, "{dry:?}");
    assert!(dry.rows_where("decision", "deleted").is_empty(), "{dry:?}");
    assert!(stdout.contains("the owner switches users on"), "the demo shows the switch");

    // --json keeps the reports.
    let json_out = String::from_utf8_lossy(&json.stdout);
    assert!(json.status.success(), "demo --json failed:\n{json_out}\n{}", String::from_utf8_lossy(&json.stderr));
    let push_report = json_out
        .split("\n== ")
        .find(|s| s.starts_with("deploy-on-push, the ECR push event"))
        .and_then(|s| s.split_once('\n'))
        .map(|(_, body)| body.split("\n\n").next().unwrap_or_default().to_string())
        .expect("the push report");
    let report: Value = serde_json::from_str(&push_report).expect("the report is JSON");
    assert_eq!(report["function"], "deploy-on-push");
    assert_eq!(report["services"][0]["status"], "updated");
}
