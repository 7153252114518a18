//! End to end: the real `prune-images` binary behind cargo-lambda's Runtime
//! API, against moto started under libfaketime so image pushes can be
//! backdated (moto has no clock API; TESTING.md).
//!
//! moto deletes an index's child when asked, where ECR refuses with
//! `ImageReferencedByManifestList`; `moto_would_delete_a_child_so_the_planner_must_not`
//! shows it, so the protection the other tests see comes from our planner.

use std::collections::BTreeSet;

use autopilot_e2e::world::{Pushed, World};
use autopilot_e2e::{enable_fake_clock, event, moto, serial, Lambda};
use serde_json::{json, Value};

const HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

struct Registry {
    world: World,
    old_untagged: Vec<Pushed>,
    pinned: Pushed,
    children: Vec<Pushed>,
    index: String,
    latest: Pushed,
    fresh: Pushed,
}

/// The tutorials' registry after a few pushes: old untagged leftovers, one
/// of which a service still runs pinned by digest; a multi-arch index tagged
/// `multi` whose untagged children are as old; `latest`; a fresh untagged image.
async fn registry() -> Registry {
    enable_fake_clock();
    moto().reset();
    let world = World::new().await;
    world.repository("users").await;
    moto().set_clock("-5d");
    let mut old_untagged = Vec::new();
    for seed in ["u1", "u2"] {
        old_untagged.push(world.push_image("users", &[], "arm64", seed).await);
    }
    let pinned = world.push_image("users", &[], "arm64", "u3-pinned").await;
    let children = vec![
        world.push_image("users", &[], "amd64", "multi-amd64").await,
        world.push_image("users", &[], "arm64", "multi-arm64").await,
    ];
    let index = world.push_index("users", "multi", &children).await;
    moto().set_clock("+0d");
    let latest = world.push_image("users", &["latest"], "arm64", "latest").await;
    let fresh = world.push_image("users", &[], "arm64", "fresh").await;
    world.cluster("microservices").await;
    let td = world.task_definition_running("users", &format!("{HOST}/users@{}", pinned.digest)).await;
    world.service("microservices", "users", &td).await;
    Registry { world, old_untagged, pinned, children, index, latest, fresh }
}

async fn digests(world: &World, repository: &str) -> BTreeSet<String> {
    let out = world.ecr.describe_images().repository_name(repository).send().await.expect("describe_images");
    out.image_details().iter().filter_map(|d| d.image_digest().map(String::from)).collect()
}

fn users(report: &Value) -> &Value {
    report["repositories"].as_array().and_then(|r| r.iter().find(|r| r["repository"] == "users")).expect("users report")
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
}

#[tokio::test]
async fn the_default_policy_deletes_exactly_the_old_untagged_images_not_in_use() {
    let _serial = serial().await;
    let r = registry().await;
    let before = digests(&r.world, "users").await;
    assert_eq!(before.len(), 8);
    let lambda = Lambda::start("prune-images", &[("PRUNE_DEFAULT_MODE", "on")]);
    let report = lambda.invoke_detailed(&event("prune-images-schedule.json")).expect("prune");
    let users = users(&report);

    let doomed: BTreeSet<String> = r.old_untagged.iter().map(|p| p.digest.clone()).collect();
    assert_eq!(strings(&users["deleted"]), doomed, "{report:#}");
    let mut expected = before.clone();
    expected.retain(|d| !doomed.contains(d));
    assert_eq!(digests(&r.world, "users").await, expected);
    // rule 1 expired all five old untagged images; three are protected
    assert_eq!(users["expiredByRule"], json!({"1": 5}));
    let reasons: Vec<(String, String)> = users["protected"]
        .as_array()
        .expect("protected")
        .iter()
        .map(|p| {
            (p["digest"].as_str().unwrap_or_default().to_string(), p["reason"].as_str().unwrap_or_default().to_string())
        })
        .collect();
    // named by the service's task definition, and by the digest its service
    // revision pinned (the emulator's DescribeServiceRevisions)
    assert!(
        reasons.iter().any(|(d, why)| d == &r.pinned.digest
            && why.contains("in use by service microservices/users (users:1) in us-east-1 (pinned by digest)")
            && why.contains("in use by service microservices/users in us-east-1 (digest)")),
        "{reasons:?}"
    );
    for child in &r.children {
        assert!(reasons.contains(&(child.digest.clone(), format!("part of kept index {}", r.index))), "{reasons:?}");
    }
    for kept in [&r.latest.digest, &r.fresh.digest, &r.index] {
        assert!(digests(&r.world, "users").await.contains(kept));
    }
    // moto reports imageSizeInBytes as the config blob size (1469 in our manifests)
    assert_eq!(users["bytesReclaimed"], 2 * 1469);
    let emf = lambda.emf_documents();
    for doc in &emf {
        autopilot_e2e::check_emf(doc).expect("valid EMF");
    }
    assert_eq!(emf.last().map(|d| d["ImagesDeleted"].clone()), Some(json!(2.0)));
    assert_eq!(emf.last().map(|d| d["ImagesProtected"].clone()), Some(json!(3.0)));

    // A second run finds nothing more to delete.
    let again = lambda.invoke_detailed(&event("prune-images-schedule.json")).expect("second run");
    assert!(strings(&self::users(&again)["deleted"]).is_empty());
}

#[tokio::test]
async fn moto_would_delete_a_child_so_the_planner_must_not() {
    let _serial = serial().await;
    let r = registry().await;
    // moto accepts deleting a child of a tagged index (real ECR refuses)...
    r.world.repository("scratch").await;
    let child = r.world.push_image("scratch", &[], "arm64", "scratch-child").await;
    r.world.push_index("scratch", "v1", std::slice::from_ref(&child)).await;
    let out = r
        .world
        .ecr
        .batch_delete_image()
        .repository_name("scratch")
        .image_ids(aws_sdk_ecr::types::ImageIdentifier::builder().image_digest(&child.digest).build())
        .send()
        .await
        .expect("moto deletes it");
    assert!(out.failures().is_empty(), "moto refused: the emulator changed; revisit this test");
    assert!(!digests(&r.world, "scratch").await.contains(&child.digest));
    // ...so the children kept below are kept by our planner alone.
    let lambda = Lambda::start("prune-images", &[("PRUNE_DEFAULT_MODE", "on")]);
    lambda.invoke_detailed(&json!({"repositories": ["users"], "dryRun": false})).expect("prune users");
    let left = digests(&r.world, "users").await;
    for child in &r.children {
        assert!(left.contains(&child.digest), "child {} of the kept index was deleted", child.digest);
    }
}

#[tokio::test]
async fn dry_runs_and_opt_outs_delete_nothing() {
    let _serial = serial().await;
    let r = registry().await;
    let before = digests(&r.world, "users").await;
    let by_env = Lambda::start("prune-images", &[("DRY_RUN", "true")]);
    let report = by_env.invoke_detailed(&event("prune-images-schedule.json")).expect("dry run");
    assert_eq!(report["dryRun"], true);
    assert_eq!(strings(&users(&report)["deleted"]).len(), 2, "the plan is reported");
    let default_mode = Lambda::start("prune-images", &[("PRUNE_DEFAULT_MODE", "on")]);
    let preview = default_mode.invoke_detailed(&event("prune-images-manual-preview.json")).expect("preview");
    assert_eq!(preview["dryRun"], true, "a policy in the payload is a preview");
    assert_eq!(preview["policySource"], "request");
    // The repository opts out, then asks for dry runs only.
    let arn = "arn:aws:ecr:us-east-1:123456789012:repository/users";
    for (mode, expected) in [("off", "pruning is off"), ("dry-run", "")] {
        let tag = aws_sdk_ecr::types::Tag::builder().key("autopilot:prune").value(mode).build().expect("tag");
        r.world.ecr.tag_resource().resource_arn(arn).tags(tag).send().await.expect("tag the repository");
        let report = default_mode.invoke_detailed(&event("prune-images-schedule.json")).expect("run");
        let users = users(&report);
        assert!(users["skipped"].as_str().unwrap_or_default().starts_with(expected), "{users}");
        assert!(users["mode"].as_str().unwrap_or_default().starts_with(mode));
        if mode == "dry-run" {
            assert_eq!(users["dryRun"], true);
            assert_eq!(strings(&users["deleted"]).len(), 2, "the plan is reported");
            assert_eq!(report["imagesDeleted"], 0, "a dry-run repository counts no deletions");
        }
    }
    // A brake below the share the policy would delete (2 of 8) stops it all.
    let untag = r.world.ecr.untag_resource().resource_arn(arn).tag_keys("autopilot:prune").send().await;
    untag.expect("untag");
    let braked = Lambda::start("prune-images", &[("PRUNE_MAX_DELETE_PERCENT", "20"), ("PRUNE_DEFAULT_MODE", "on")]);
    let report = braked.invoke_detailed(&event("prune-images-schedule.json")).expect("braked run");
    assert!(users(&report)["brake"].as_str().unwrap_or_default().starts_with("safety brake: 2 of 8 images (25%)"));
    assert_eq!(digests(&r.world, "users").await, before, "something was deleted");
}

#[tokio::test]
async fn malformed_policies_and_payloads_are_rejected_and_nothing_is_deleted() {
    let _serial = serial().await;
    let r = registry().await;
    let before = digests(&r.world, "users").await;
    let lambda = Lambda::start("prune-images", &[]);
    for (payload, expected) in [
        (json!("prune"), "malformed event: expected a JSON object"),
        (json!({"repositories": "users"}), "malformed event: manual request: invalid type"),
        (
            json!({"dryRun": false, "policy": {"rules": [
                {"rulePriority": 1, "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1}, "action": {"type": "expire"}},
                {"rulePriority": 2, "selection": {"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1}, "action": {"type": "expire"}}]}}),
            "malformed event: manual request: rule with rulePriority 1: a tagStatus \"any\" rule must have the highest rulePriority",
        ),
        (json!({"policy": "{\"rules\": ["}), "malformed event: manual request: policy is not valid JSON"),
        (json!({"repositories": ["no-such-repository"]}), "not found: repository"),
    ] {
        let error = lambda.invoke_detailed(&payload).expect_err("rejected");
        assert_eq!(error.error_type, "NonRetryable");
        assert!(error.error_message.starts_with(expected), "{payload} → {}", error.error_message);
    }
    // An EventBridge event other than the schedule is rejected, not retried.
    autopilot_e2e::assert_rejected(&lambda, &event("deploy-on-push-push.json"), "unexpected event");
    // An invalid PRUNE_POLICY stops the cold start, naming the rule.
    let bad = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"tagged","tagPrefixList":["v"],"tagPatternList":["v*"],"countType":"imageCountMoreThan","countNumber":3},"action":{"type":"expire"}}]}"#;
    let mut broken = Lambda::start("prune-images", &[("PRUNE_POLICY", bad)]);
    assert!(broken.wait_for_exit(std::time::Duration::from_secs(30)), "started with a bad policy");
    let log = broken.log_text();
    assert!(
        log.contains("PRUNE_POLICY")
            && log.contains("rule 1 (rulePriority 1): give tagPrefixList or tagPatternList, not both"),
        "{log}"
    );
    assert_eq!(digests(&r.world, "users").await, before);
}

/// A new install (PRUNE_DEFAULT_MODE unset, as the template's default
/// `dry-run`) deletes nothing and reports the plan; tagging the repository
/// `autopilot:prune=on` switches it on.
#[tokio::test]
async fn a_fresh_install_reports_the_plan_and_deletes_nothing_until_switched_on() {
    let _serial = serial().await;
    let r = registry().await;
    let before = digests(&r.world, "users").await;
    let lambda = Lambda::start("prune-images", &[]);
    let report = lambda.invoke_detailed(&event("prune-images-schedule.json")).expect("first run");
    let doomed: BTreeSet<String> = r.old_untagged.iter().map(|p| p.digest.clone()).collect();
    let users = users(&report);
    assert_eq!(users["mode"], "dry-run (PRUNE_DEFAULT_MODE)", "{users}");
    assert_eq!(users["dryRun"], true);
    assert_eq!(strings(&users["deleted"]), doomed, "the plan names what would go");
    assert_eq!((report["imagesDeleted"].as_u64(), report["imagesPlanned"].as_u64()), (Some(0), Some(2)), "{report:#}");
    assert_eq!(report["repositoriesDryRun"], 1);
    assert_eq!(digests(&r.world, "users").await, before, "a fresh install deleted something");
    assert_eq!(lambda.emf_documents().last().map(|d| d["ImagesDeleted"].clone()), Some(json!(0.0)));

    // The owner read the report and switches this repository on.
    let arn = "arn:aws:ecr:us-east-1:123456789012:repository/users";
    let on = aws_sdk_ecr::types::Tag::builder().key("autopilot:prune").value("on").build().expect("tag");
    r.world.ecr.tag_resource().resource_arn(arn).tags(on).send().await.expect("tag the repository");
    let report = lambda.invoke_detailed(&event("prune-images-schedule.json")).expect("second run");
    let users = self::users(&report);
    assert_eq!(users["mode"], "on (autopilot:prune)");
    assert_eq!(strings(&users["deleted"]), doomed);
    assert_eq!(report["imagesDeleted"], 2);
    let mut expected = before.clone();
    expected.retain(|d| !doomed.contains(d));
    assert_eq!(digests(&r.world, "users").await, expected);
}

/// A multi-arch push uploads its untagged children first and the index
/// seconds later. A count rule on untagged images that runs in between must
/// not delete a child: the age floor (PRUNE_MIN_AGE_HOURS, default 1) keeps it.
#[tokio::test]
async fn an_untagged_child_younger_than_the_age_floor_survives_a_count_rule() {
    let _serial = serial().await;
    enable_fake_clock();
    moto().reset();
    let world = World::new().await;
    world.repository("users").await;
    moto().set_clock("-5d");
    let old = [
        world.push_image("users", &[], "arm64", "floor-old-1").await,
        world.push_image("users", &[], "arm64", "floor-old-2").await,
    ];
    moto().set_clock("+0d");
    world.push_image("users", &["latest"], "arm64", "floor-latest").await;
    // the children of a push in flight: its index has not arrived yet
    let children = [
        world.push_image("users", &[], "amd64", "floor-child-amd64").await,
        world.push_image("users", &[], "arm64", "floor-child-arm64").await,
    ];
    let policy = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#;
    let env = [("PRUNE_POLICY", policy), ("PRUNE_DEFAULT_MODE", "on"), ("PRUNE_MAX_DELETE_PERCENT", "100")];

    // Without the floor, the rule would take one of the children.
    let mut bare_env = env.to_vec();
    bare_env.push(("PRUNE_MIN_AGE_HOURS", "0"));
    let bare = Lambda::start("prune-images", &bare_env);
    let preview = bare.invoke_detailed(&json!({"dryRun": true})).expect("preview without a floor");
    let would: BTreeSet<String> = strings(&users(&preview)["deleted"]);
    assert_eq!(children.iter().filter(|c| would.contains(&c.digest)).count(), 1, "{preview:#}");

    // With the default floor, the run deletes the old ones and keeps both children.
    let lambda = Lambda::start("prune-images", &env);
    let report = lambda.invoke_detailed(&event("prune-images-schedule.json")).expect("prune");
    let users = users(&report);
    let old_digests: BTreeSet<String> = old.iter().map(|p| p.digest.clone()).collect();
    assert_eq!(strings(&users["deleted"]), old_digests, "{report:#}");
    let floor: Vec<&Value> = users["protected"]
        .as_array()
        .expect("protected")
        .iter()
        .filter(|p| p["reason"] == "younger than the age floor (1 h)")
        .collect();
    assert_eq!(floor.len(), 1, "{users:#}");
    assert!(children.iter().any(|c| floor[0]["digest"] == c.digest.as_str()));
    assert_eq!(floor[0]["expiredByRule"], 1, "the rule did select it");
    let left = digests(&world, "users").await;
    for child in &children {
        assert!(left.contains(&child.digest), "child {} of a push in flight was deleted", child.digest);
    }
}

/// Signatures (OCI referrers) follow their subject: the kept `latest` keeps
/// its old untagged signature, an expired image takes its own along. moto,
/// through our launcher, names each referrer's subject in DescribeImages as
/// ECR does (`subjectManifestDigest`), so no ListImageReferrers is asked.
/// Then a Helm chart, an artifact without a subject, could be a referrer
/// DescribeImages says nothing of: the next run asks ListImageReferrers and
/// keeps what it keeps.
#[tokio::test]
async fn signatures_follow_their_subject_without_a_referrers_call_per_image() {
    const SIGNATURE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
    let _serial = serial().await;
    let r = registry().await;
    moto().set_clock("-5d");
    let latest_signature = r.world.push_referrer("users", &r.latest, SIGNATURE, "sig-latest").await;
    let doomed_signature = r.world.push_referrer("users", &r.old_untagged[0], SIGNATURE, "sig-u1").await;
    moto().set_clock("+0d");
    let lambda = Lambda::start("prune-images", &[("PRUNE_DEFAULT_MODE", "on")]);
    let report = lambda.invoke_detailed(&event("prune-images-schedule.json")).expect("prune");
    let users = users(&report);

    let deleted = strings(&users["deleted"]);
    assert!(deleted.contains(&doomed_signature), "{report:#}");
    assert!(deleted.contains(&r.old_untagged[0].digest), "{report:#}");
    assert!(!deleted.contains(&latest_signature), "{report:#}");
    let now = digests(&r.world, "users").await;
    assert!(now.contains(&latest_signature) && !now.contains(&doomed_signature));
    let kept =
        users["protected"].as_array().expect("protected").iter().find(|p| p["digest"] == latest_signature.as_str());
    assert!(kept.is_some_and(|p| p["reason"].as_str().is_some_and(|why| why.contains("referrer"))), "{report:#}");
    assert_eq!(report["apiCalls"].get("ListImageReferrers"), None, "{report:#}");

    // A Helm chart says nothing of a subject: the plan asks for referrers.
    moto().set_clock("-5d");
    let chart = r.world.push_artifact("users", "application/vnd.cncf.helm.config.v1+json", "chart").await;
    moto().set_clock("+0d");
    let again = lambda.invoke_detailed(&event("prune-images-schedule.json")).expect("second run");
    let asked = again["apiCalls"]["ListImageReferrers"].as_u64().unwrap_or_default();
    assert!(asked >= 1, "{again:#}");
    assert!(strings(&self::users(&again)["deleted"]).contains(&chart), "{again:#}");
    assert!(digests(&r.world, "users").await.contains(&latest_signature), "the signature of latest stays");
}

/// cosign's default signatures are tagged images (`sha256-<hex>.sig`) that
/// nothing but their tag links to what they sign. A rule on tagged images
/// must not expire the signature of an image it keeps; the signature of an
/// image the run deletes goes with it.
#[tokio::test]
async fn a_cosign_signature_tag_follows_the_image_it_signs() {
    let _serial = serial().await;
    let r = registry().await;
    let tag_of = |digest: &str| format!("{}.sig", digest.replace(':', "-"));
    moto().set_clock("-5d");
    let latest_sig = r.world.push_image("users", &[&tag_of(&r.latest.digest)], "arm64", "cosign-latest").await;
    let doomed_sig = r.world.push_image("users", &[&tag_of(&r.old_untagged[0].digest)], "arm64", "cosign-u1").await;
    moto().set_clock("+0d");
    // Untagged images older than a day, and only the newest tagged image.
    let policy = r#"{"rules": [
        {"rulePriority": 1, "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 1}, "action": {"type": "expire"}},
        {"rulePriority": 2, "selection": {"tagStatus": "tagged", "tagPatternList": ["*"], "countType": "imageCountMoreThan", "countNumber": 1}, "action": {"type": "expire"}}
    ]}"#;
    let env = [("PRUNE_POLICY", policy), ("PRUNE_DEFAULT_MODE", "on"), ("PRUNE_MAX_DELETE_PERCENT", "100")];
    let lambda = Lambda::start("prune-images", &env);
    let report = lambda.invoke_detailed(&event("prune-images-schedule.json")).expect("prune");
    let users = users(&report);

    let deleted = strings(&users["deleted"]);
    assert!(deleted.contains(&r.old_untagged[0].digest), "{report:#}");
    assert!(deleted.contains(&doomed_sig.digest), "the signature goes with its image: {report:#}");
    assert!(!deleted.contains(&latest_sig.digest), "the count rule selected it, but it signs latest: {report:#}");
    let kept =
        users["protected"].as_array().expect("protected").iter().find(|p| p["digest"] == latest_sig.digest.as_str());
    assert!(kept.is_some_and(|p| p["reason"].as_str().is_some_and(|why| why.contains("referrer"))), "{report:#}");
    let now = digests(&r.world, "users").await;
    assert!(now.contains(&latest_sig.digest) && now.contains(&r.latest.digest) && !now.contains(&doomed_sig.digest));
}
