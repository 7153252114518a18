//! `make demo`: the tutorials' world on the embedded local AWS (moto), and
//! log-groups doing the tutorials' manual log-group steps by itself.

use autopilot_e2e::world::{World, CLUSTER, SERVICES};
use autopilot_e2e::{event, moto, Lambda};
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
}
