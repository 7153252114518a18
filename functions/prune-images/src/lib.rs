//! prune-images: deletes what a lifecycle-style policy expires, and never an
//! image that ECS uses or that a kept image index references.
//!
//! snapshot (what ECS uses, once; each repository's images and index
//! children) → plan ([`autopilot::prune::plan`]) → apply (indexes first, 100
//! digests a call) → report.

pub mod config;
pub mod event;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;
use tracing::{info, instrument, warn};

use autopilot::aws::ApiCalls;
use autopilot::lifecycle::Policy;
use autopilot::ports::{EcsRead, Registry, Repository};
use autopilot::prune::{InUse, Protected, TAG_PRUNE};
use autopilot::snapshot;
use autopilot::telemetry::{Metrics, Unit};
use autopilot::Error;

pub use config::{Config, Mode};
use event::Request;

pub struct Deps {
    pub config: Config,
    pub region: String,
    pub ecs: Box<dyn EcsRead>,
    pub ecr: Box<dyn Registry>,
    pub api_calls: ApiCalls,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    pub digest: String,
    pub code: String,
    pub message: String,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryReport {
    pub repository: String,
    /// `on`, `off` or `dry-run`, and where it came from.
    pub mode: String,
    /// Nothing was deleted here: `deleted` and `bytesReclaimed` are the plan.
    pub dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    pub images_seen: usize,
    /// Rule priority → images that rule expired (protected ones included).
    pub expired_by_rule: BTreeMap<u32, usize>,
    pub protected: Vec<Protected>,
    /// Deleted, or in a dry run, to be deleted.
    pub deleted: Vec<String>,
    /// ECR refused: still referenced by a manifest list.
    pub kept: Vec<String>,
    pub already_gone: Vec<String>,
    pub failed: Vec<Failure>,
    pub bytes_reclaimed: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brake: Option<String>,
    #[serde(skip)]
    retryable: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub function: &'static str,
    pub trigger: &'static str,
    pub dry_run: bool,
    /// `PRUNE_POLICY` or `request`.
    pub policy_source: &'static str,
    pub repositories: Vec<RepositoryReport>,
    pub images_deleted: usize,
    pub bytes_reclaimed: i64,
    pub images_protected: usize,
    pub api_calls: BTreeMap<String, u64>,
}

#[instrument(skip_all)]
pub async fn handle(deps: &Deps, payload: Value) -> Result<Report, Error> {
    let calls_before = deps.api_calls.snapshot();
    let request = Request::parse(payload)?;
    let dry_run = deps.config.dry_run || request.is_dry_run();
    let (policy, policy_source) = match &request.policy {
        Some(p) => (p, "request"),
        None => (&deps.config.policy, "PRUNE_POLICY"),
    };
    info!(trigger = request.trigger, dry_run, policy_source, "invoked");

    let repositories = deps.ecr.repositories(&request.repositories, true).await.map_err(|e| {
        if e.code_is("RepositoryNotFoundException") {
            Error::NotFound(format!("repository in {:?}: {}", request.repositories, e.message))
        } else {
            Error::Aws(e)
        }
    })?;
    // What ECS uses, read once for every repository: every cluster, not just
    // CLUSTERS, because an image in use anywhere must be kept.
    let uses = snapshot::images_in_use(&*deps.ecs, 4).await?;
    let now = snapshot::now();

    let mut reports = Vec::with_capacity(repositories.len());
    for repository in &repositories {
        reports.push(prune_repository(deps, repository, policy, &uses, now, dry_run).await?);
    }
    let report = Report {
        function: "prune-images",
        trigger: request.trigger,
        dry_run,
        policy_source,
        images_deleted: reports.iter().filter(|r| !r.dry_run).map(|r| r.deleted.len()).sum(),
        bytes_reclaimed: reports.iter().filter(|r| !r.dry_run).map(|r| r.bytes_reclaimed).sum(),
        images_protected: reports.iter().map(|r| r.protected.len()).sum(),
        repositories: reports,
        api_calls: deps.api_calls.since(&calls_before),
    };
    let mut metrics = Metrics::new(&deps.config.metrics_namespace).dimension("Function", report.function);
    metrics
        .put("ImagesDeleted", report.images_deleted as f64, Unit::Count)
        .put("BytesReclaimed", report.bytes_reclaimed as f64, Unit::Bytes)
        .put("ImagesProtected", report.images_protected as f64, Unit::Count)
        .put("ApiCalls", report.api_calls.values().sum::<u64>() as f64, Unit::Count)
        .property("dryRun", Value::Bool(dry_run));
    metrics.emit();
    finish(report)
}

async fn prune_repository(
    deps: &Deps,
    repository: &Repository,
    policy: &Policy,
    uses: &InUse,
    now: i64,
    dry_run: bool,
) -> Result<RepositoryReport, Error> {
    let mut report = RepositoryReport { repository: repository.name.clone(), ..RepositoryReport::default() };
    let mode = match repository.tags.get(TAG_PRUNE) {
        Some(value) => match Mode::parse(value) {
            Some(mode) => {
                report.mode = format!("{} ({TAG_PRUNE})", mode.as_str());
                mode
            }
            None => {
                report.mode = format!("invalid {TAG_PRUNE} value {value:?}");
                report.skipped = Some(format!("{TAG_PRUNE}={value:?} is not one of on, off, dry-run; not pruned"));
                return Ok(report);
            }
        },
        None => {
            report.mode = format!("{} (PRUNE_DEFAULT_MODE)", deps.config.default_mode.as_str());
            deps.config.default_mode
        }
    };
    if mode == Mode::Off {
        report.skipped = Some(format!("pruning is off for this repository ({})", report.mode));
        return Ok(report);
    }
    let snapshot = snapshot::plan_repository(
        &*deps.ecr,
        repository,
        &deps.region,
        policy,
        uses,
        now,
        deps.config.max_delete_percent,
    )
    .await?;
    let Some(snapshot::RepositorySnapshot { images, plan }) = snapshot else {
        report.skipped = Some("the repository was deleted during the run".into());
        return Ok(report);
    };
    report.images_seen = plan.images_seen;
    report.expired_by_rule = plan.expired_by_rule.clone();
    report.protected = plan.protected.clone();
    report.brake = plan.brake.clone();
    if plan.brake.is_some() {
        warn!(repository = %repository.name, brake = ?plan.brake, "safety brake");
        return Ok(report);
    }
    let size: BTreeMap<&str, i64> = images.iter().map(|i| (i.digest.as_str(), i.size_bytes.unwrap_or(0))).collect();
    if dry_run || mode == Mode::DryRun {
        report.dry_run = true;
        report.deleted = plan.delete_indexes.iter().chain(&plan.delete_images).cloned().collect();
        report.bytes_reclaimed = plan.bytes_to_reclaim;
        return Ok(report);
    }
    // Indexes first, parents before the indexes they reference, because ECR
    // refuses to delete a manifest an index still references. When an index
    // is not deleted, what it references is kept too.
    let mut blocked: BTreeSet<String> = BTreeSet::new();
    let mut pending: Vec<String> = plan.delete_indexes.clone();
    while !pending.is_empty() {
        let referenced: BTreeSet<&String> =
            pending.iter().flat_map(|i| plan.index_children.get(i).into_iter().flatten()).collect();
        let (ready, later): (Vec<String>, Vec<String>) = pending.iter().cloned().partition(|i| !referenced.contains(i));
        if ready.is_empty() {
            break; // a reference cycle cannot come from ECR; never loop on one
        }
        let deleted = apply_deletes(deps, &repository.name, &ready, &size, &mut report).await?;
        // What a surviving index references stays, and so on down.
        let mut stack: Vec<&String> = ready.iter().filter(|i| !deleted.contains(*i)).collect();
        while let Some(index) = stack.pop() {
            for child in plan.index_children.get(index).into_iter().flatten() {
                if blocked.insert(child.clone()) {
                    stack.push(child);
                }
            }
        }
        pending = later.into_iter().filter(|i| !blocked.contains(i)).collect();
    }
    let (images, kept): (Vec<String>, Vec<String>) =
        plan.delete_images.iter().cloned().partition(|d| !blocked.contains(d));
    report.kept.extend(kept);
    report.kept.extend(plan.delete_indexes.iter().filter(|i| blocked.contains(*i)).cloned());
    if !images.is_empty() {
        apply_deletes(deps, &repository.name, &images, &size, &mut report).await?;
    }
    info!(repository = %repository.name, deleted = report.deleted.len(), bytes = report.bytes_reclaimed, "pruned");
    Ok(report)
}

/// One BatchDeleteImage round (100 digests a call, in the adapter), recorded
/// in the report; returns what was deleted.
async fn apply_deletes(
    deps: &Deps,
    repository: &str,
    digests: &[String],
    size: &BTreeMap<&str, i64>,
    report: &mut RepositoryReport,
) -> Result<BTreeSet<String>, Error> {
    let outcome = deps.ecr.delete(repository, digests).await?;
    report.bytes_reclaimed += outcome.deleted.iter().map(|d| size.get(d.as_str()).copied().unwrap_or(0)).sum::<i64>();
    let deleted: BTreeSet<String> = outcome.deleted.iter().cloned().collect();
    report.deleted.extend(outcome.deleted);
    for (digest, code, message) in outcome.failures {
        match code.as_str() {
            "ImageReferencedByManifestList" => report.kept.push(digest),
            "ImageNotFound" => report.already_gone.push(digest),
            _ => {
                report.retryable |= code.contains("Throttl") || code == "ServiceUnavailable";
                report.failed.push(Failure { digest, code, message });
            }
        }
    }
    Ok(deleted)
}

/// Images that failed to delete fail the invocation after every repository is
/// done, with the full report logged first.
fn finish(report: Report) -> Result<Report, Error> {
    let failed: Vec<(&str, &Failure)> =
        report.repositories.iter().flat_map(|r| r.failed.iter().map(move |f| (r.repository.as_str(), f))).collect();
    let Some((repository, first)) = failed.first() else {
        info!(report = %serde_json::to_string(&report).unwrap_or_default(), "done");
        return Ok(report);
    };
    warn!(report = %serde_json::to_string(&report).unwrap_or_default(), "some images failed to delete");
    Err(Error::Partial {
        failed: failed.len(),
        total: report.repositories.iter().map(|r| r.deleted.len() + r.failed.len()).sum(),
        first: format!("{repository}@{}: {} {}", first.digest, first.code, first.message),
        retryable: report.repositories.iter().any(|r| r.retryable),
    })
}

/// Handler tests over the in-memory fakes: the order of deletion and what a
/// failed index deletion means for its children, which moto cannot show (it
/// deletes an index's child without complaint).
#[cfg(test)]
mod tests {
    use super::*;
    use autopilot::fakes::{FakeEcs, FakeRegistry};
    use autopilot::prune::RepoImage;
    use serde_json::json;

    const INDEX: &str = "application/vnd.oci.image.index.v1+json";

    fn d(n: u32) -> String {
        format!("sha256:{n:064x}")
    }

    fn row(n: u32, index: bool, tags: &[&str]) -> RepoImage {
        RepoImage {
            digest: d(n),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            pushed_at: 0, // the epoch: older than any day
            last_pulled_at: None,
            archived: false,
            size_bytes: Some(100),
            media_type: Some(if index { INDEX } else { "application/vnd.oci.image.manifest.v1+json" }.into()),
        }
    }

    fn deps(registry: FakeRegistry) -> Deps {
        Deps {
            config: Config::from_lookup(autopilot::config::lookup_from(&[("PRUNE_MAX_DELETE_PERCENT", "100")]))
                .expect("valid"),
            region: "us-east-1".into(),
            ecs: Box::new(FakeEcs::default()),
            ecr: Box::new(registry),
            api_calls: ApiCalls::default(),
        }
    }

    /// An untagged index (10) referencing an untagged index (11) referencing a
    /// platform manifest (12), all expired; `latest` (1) is kept.
    fn nested(failing: &[(u32, &str)]) -> FakeRegistry {
        FakeRegistry {
            repository: "users".into(),
            images: std::sync::Mutex::new(vec![
                row(1, false, &["latest"]),
                row(10, true, &[]),
                row(11, true, &[]),
                row(12, false, &[]),
            ]),
            children: [(d(10), vec![d(11)]), (d(11), vec![d(12)])].into(),
            failing: failing.iter().map(|(n, code)| (d(*n), code.to_string())).collect(),
            delete_calls: Default::default(),
        }
    }

    #[tokio::test]
    async fn parents_are_deleted_before_what_they_reference() {
        let d_ = deps(nested(&[]));
        let report = handle(&d_, json!({})).await.expect("pruned");
        assert_eq!(report.images_deleted, 3);
        // the outer index, then the inner index, then the manifest
        let registry_calls = report.repositories[0].deleted.clone();
        assert_eq!(registry_calls, [d(10), d(11), d(12)]);
    }

    #[tokio::test]
    async fn when_an_index_cannot_be_deleted_what_it_references_is_kept() {
        let failing = deps(nested(&[(10, "KmsError")]));
        let error = handle(&failing, json!({})).await.expect_err("a failed delete fails the run");
        assert!(error.to_string().contains("KmsError"), "{error}");
        // ECR refusing the outer index keeps it, and everything below it
        let report =
            handle(&deps(nested(&[(10, "ImageReferencedByManifestList")])), json!({})).await.expect("kept, not failed");
        let users = &report.repositories[0];
        assert!(users.deleted.is_empty(), "{:?}", users.deleted);
        assert_eq!(users.kept, [d(10), d(12), d(11)]);
    }
}
