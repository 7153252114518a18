//! quota-scan: every repository's image count and stored bytes against the
//! quotas (default: the 500 MB private-repository free tier), what the prune
//! policy would reclaim now, the registry audit (what each native ECR
//! lifecycle policy will expire that something uses, and risky settings),
//! EMF metrics and warnings.
//!
//! snapshot (repositories with their settings, their images and native
//! lifecycle policies, what is in use: the same set prune-images reads,
//! [`autopilot::in_use`]) → measure, plan and audit ([`autopilot::quota`],
//! [`autopilot::prune::plan`], [`autopilot::audit`]) → report and metrics.
//! It writes nothing to AWS.

pub mod config;

use std::collections::BTreeMap;

use futures::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{error, info, instrument, warn};

use autopilot::audit::NativePolicy;
use autopilot::audit::{self, AuditInput, RepositoryAudit};
use autopilot::aws::ApiCalls;
use autopilot::in_use::{InUse, InUseReader, SourceFailureReport};
use autopilot::ports::{Registry, Repository, RepositoryPolicies};
use autopilot::prune::{RepoImage, TAG_PRUNE};
use autopilot::quota::{self, Status};
use autopilot::snapshot;
use autopilot::telemetry::{Metrics, Unit};
use autopilot::Error;

pub use config::Config;

pub struct Deps {
    pub config: Config,
    pub region: String,
    /// Every source of "in use", in every region of `PROTECT_REGIONS`.
    pub in_use: Box<dyn InUseReader>,
    pub ecr: Box<dyn Registry>,
    /// Native lifecycle policies and repository tags, for the audit.
    pub policies: Box<dyn RepositoryPolicies>,
    pub api_calls: ApiCalls,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryUsage {
    pub repository: String,
    /// 1 = largest.
    pub rank: usize,
    /// Every image row not archived: tagged, untagged, index rows, artifacts.
    pub image_count: usize,
    /// Rows in ECR's archive storage class, counted apart.
    pub archived_image_count: usize,
    pub index_rows: usize,
    /// Sum of `imageSizeInBytes` over image rows, index rows skipped.
    pub stored_bytes: u64,
    /// Each layer counted once (with `QUOTA_DEDUPE_LAYERS=true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deduplicated_bytes: Option<u64>,
    /// Share of the registry storage quota.
    pub storage_percent: f64,
    /// Share of the images-per-repository quota.
    pub image_count_percent: f64,
    pub status: Option<Status>,
    /// What the prune policy would delete now, protections included.
    pub reclaimable_images: usize,
    pub reclaimable_bytes: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reclaim_brake: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// The registry audit of this repository ([`autopilot::audit`]).
    pub audit: RepositoryAudit,
}

/// The audit over every repository.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditTotals {
    pub repositories_with_native_policy: usize,
    /// Images in use that native lifecycle policies expire or archive now
    /// or within 24 h (`NativePolicyInUseExpiries`); `None` when the "in
    /// use" set could not be read.
    pub native_policy_in_use_expiries: Option<usize>,
    /// Other findings, by kind.
    pub findings: BTreeMap<String, usize>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryUsage {
    pub storage_bytes: u64,
    pub storage_quota_bytes: u64,
    pub storage_percent: f64,
    pub status: Status,
    pub image_count: usize,
    pub reclaimable_images: usize,
    pub reclaimable_bytes: i64,
    /// Bytes after the prune policy ran, and their share of the quota.
    pub storage_bytes_after_prune: u64,
    pub storage_percent_after_prune: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub function: &'static str,
    pub trigger: &'static str,
    pub warn_percent: u32,
    pub images_per_repository_quota: u64,
    pub registry: RegistryUsage,
    /// Largest first.
    pub repositories: Vec<RepositoryUsage>,
    /// An in-use source that could not be read: the reclaimable figures are
    /// then left at zero rather than counting images something may use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_use_failure: Option<SourceFailureReport>,
    pub audit: AuditTotals,
    pub api_calls: BTreeMap<String, u64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Manual {
    #[serde(default)]
    repositories: Option<Vec<String>>,
    #[serde(default)]
    dry_run: Option<bool>,
}

/// `(trigger, repositories, dry run)` from the schedule's event or a manual request.
fn parse(payload: Value) -> Result<(&'static str, Vec<String>, bool), Error> {
    let Value::Object(object) = &payload else {
        return Err(Error::malformed("expected a JSON object (the schedule's event or a manual request)"));
    };
    if object.contains_key("detail-type") || object.contains_key("source") {
        let source = object.get("source").and_then(Value::as_str).unwrap_or_default();
        let detail_type = object.get("detail-type").and_then(Value::as_str).unwrap_or_default();
        if (source, detail_type) != ("aws.events", "Scheduled Event") {
            return Err(Error::UnexpectedEvent(format!(
                "source {source:?} with detail-type {detail_type:?}; quota-scan runs on its schedule or a manual request"
            )));
        }
        return Ok(("schedule", Vec::new(), false));
    }
    let manual: Manual = serde_json::from_value(payload)
        .map_err(|e| Error::malformed(format!("manual request: {e} (fields: repositories, dryRun)")))?;
    let repositories = manual.repositories.unwrap_or_default();
    if repositories.iter().any(|r| r.trim().is_empty()) {
        return Err(Error::malformed("manual request: repositories holds an empty name"));
    }
    Ok(("manual", repositories, manual.dry_run.unwrap_or(false)))
}

#[instrument(skip_all)]
pub async fn handle(deps: &Deps, payload: Value) -> Result<Report, Error> {
    let calls_before = deps.api_calls.snapshot();
    let (trigger, names, requested_dry_run) = parse(payload)?;
    let dry_run = deps.config.dry_run || requested_dry_run;
    let repositories = deps.ecr.repositories(&names, false).await.map_err(|e| {
        if e.code_is("RepositoryNotFoundException") {
            Error::NotFound(format!("repository in {names:?}: {}", e.message))
        } else {
            Error::Aws(e)
        }
    })?;
    let (uses, in_use_failure) = match deps.in_use.read().await {
        Ok(uses) => (Some(uses), None),
        Err(failure) => {
            error!(
                source = failure.source.key(),
                region = %failure.region,
                api = failure.error.operation,
                permission = %failure.permission,
                error = %failure.error,
                "an in-use source could not be read: reclaimable figures are not computed"
            );
            (None, Some(SourceFailureReport::from(&failure)))
        }
    };
    let now = snapshot::now();
    let mut usages: Vec<RepositoryUsage> = stream::iter(&repositories)
        .map(|r| scan(deps, r, uses.as_ref(), now))
        .buffer_unordered(deps.config.concurrency)
        .try_collect()
        .await?;
    usages.sort_by(|a, b| b.stored_bytes.cmp(&a.stored_bytes).then_with(|| a.repository.cmp(&b.repository)));
    for (i, u) in usages.iter_mut().enumerate() {
        u.rank = i + 1;
    }

    let q = deps.config.quotas;
    let storage_bytes: u64 = usages.iter().map(|u| u.stored_bytes).sum();
    let reclaimable_bytes: i64 = usages.iter().map(|u| u.reclaimable_bytes).sum();
    let after = storage_bytes.saturating_sub(reclaimable_bytes.max(0) as u64);
    let registry = RegistryUsage {
        storage_bytes,
        storage_quota_bytes: q.storage_bytes,
        storage_percent: quota::percent(storage_bytes, q.storage_bytes),
        status: Status::of(quota::percent(storage_bytes, q.storage_bytes), q.warn_percent),
        image_count: usages.iter().map(|u| u.image_count).sum(),
        reclaimable_images: usages.iter().map(|u| u.reclaimable_images).sum(),
        reclaimable_bytes,
        storage_bytes_after_prune: after,
        storage_percent_after_prune: quota::percent(after, q.storage_bytes),
    };
    for u in usages.iter().filter(|u| matches!(u.status, Some(Status::Warn | Status::Over))) {
        warn!(repository = %u.repository, status = ?u.status, storage_percent = u.storage_percent,
              image_count_percent = u.image_count_percent, "repository at or over its threshold");
    }
    if registry.status != Status::Ok {
        warn!(status = ?registry.status, storage_bytes, storage_percent = registry.storage_percent,
              reclaimable_bytes, "registry storage at or over its threshold");
    }
    let audit = audit_totals(&usages, uses.is_some());
    let report = Report {
        function: "quota-scan",
        trigger,
        warn_percent: q.warn_percent,
        images_per_repository_quota: q.images_per_repository,
        registry,
        repositories: usages,
        in_use_failure,
        audit,
        api_calls: deps.api_calls.since(&calls_before),
    };
    if !dry_run {
        for metrics in metrics(&report, &deps.config) {
            metrics.emit();
        }
    }
    info!(report = %serde_json::to_string(&report).unwrap_or_default(), "done");
    Ok(report)
}

/// One repository's usage. Without an in-use set (a source was unreadable)
/// everything counts as in use, so nothing is reclaimable.
async fn scan(deps: &Deps, repository: &Repository, uses: Option<&InUse>, now: i64) -> Result<RepositoryUsage, Error> {
    let c = &deps.config;
    let mut usage = RepositoryUsage { repository: repository.name.clone(), ..RepositoryUsage::default() };
    let empty = InUse::default();
    let planned = snapshot::plan_repository(
        &*deps.ecr,
        repository,
        &deps.region,
        &c.policy,
        uses.unwrap_or(&empty),
        now,
        c.max_delete_percent,
        // Referrers cost one call per image; the figures leave them out.
        false,
    )
    .await?;
    let Some(snapshot::RepositorySnapshot { images, plan, .. }) = planned else {
        usage.skipped = Some("the repository was deleted during the scan".into());
        warn!(repository = %repository.name, "repository disappeared mid-scan");
        return Ok(usage);
    };
    let (count, bytes, indexes) = quota::measure(&images);
    usage.image_count = count;
    usage.archived_image_count = quota::archived(&images);
    usage.index_rows = indexes;
    usage.stored_bytes = bytes;
    if c.dedupe_layers {
        let manifests: Vec<String> =
            images.iter().filter(|i| !i.is_index() && !i.is_archived()).map(|i| i.digest.clone()).collect();
        let layers = deps.ecr.manifest_layers(&repository.name, &manifests).await?;
        usage.deduplicated_bytes = Some(quota::deduplicated(layers.iter().map(|(d, s)| (d.as_str(), *s))));
    }
    usage.storage_percent = quota::percent(bytes, c.quotas.storage_bytes);
    usage.image_count_percent = quota::percent(count as u64, c.quotas.images_per_repository);
    usage.status = Some(Status::of(usage.storage_percent.max(usage.image_count_percent), c.quotas.warn_percent));
    if uses.is_some() {
        usage.reclaimable_images = plan.deletions();
        usage.reclaimable_bytes = plan.bytes_to_reclaim;
        usage.reclaim_brake = plan.brake;
    }
    usage.audit = audit_repository(deps, repository, &images, uses, now).await;
    Ok(usage)
}

/// The audit of one repository: GetLifecyclePolicy (no policy is cheap:
/// one call), its tags only when it has a policy, then the pure audit. A
/// read that fails is reported in the audit, never fatal to the scan.
async fn audit_repository(
    deps: &Deps,
    repository: &Repository,
    images: &[RepoImage],
    uses: Option<&InUse>,
    now: i64,
) -> RepositoryAudit {
    let name = &repository.name;
    let native = match deps.policies.lifecycle_policy(name).await {
        Ok(native) => native,
        Err(e) => {
            error!(repository = %name, error = %e, permission = "ecr:GetLifecyclePolicy",
                   "the native lifecycle policy could not be read: not audited");
            return RepositoryAudit { error: Some(format!("GetLifecyclePolicy: {e}")), ..RepositoryAudit::default() };
        }
    };
    let mut tags_error = None;
    let prune_tag = match &native {
        None => None,
        Some(_) if !repository.tags.is_empty() => repository.tags.get(TAG_PRUNE).cloned(),
        Some(_) => match deps.policies.repository_tags(&repository.arn).await {
            Ok(tags) => tags.get(TAG_PRUNE).cloned(),
            Err(e) => {
                warn!(repository = %name, error = %e, "repository tags could not be read: two deleters not checked");
                tags_error = Some(format!("ListTagsForResource: {e}"));
                None
            }
        },
    };
    let id = snapshot::repository_id(repository, &deps.region);
    let mut result = audit::audit(&AuditInput {
        repository: &id,
        tag_mutability: repository.tag_mutability.as_deref(),
        scan_on_push: repository.scan_on_push,
        native_policy: native.as_deref(),
        pruned_by: if tags_error.is_some() {
            None
        } else {
            audit::prune_deletes(prune_tag.as_deref(), &deps.config.prune_default_mode)
        },
        images,
        uses,
        now,
    });
    result.error = tags_error;
    for e in &result.expiries {
        warn!(repository = %name, digest = %e.digest, tags = ?e.tags, rule_priority = e.rule_priority,
              action = e.action.as_str(), due = ?e.due, used_by = %e.used_by.join("; "),
              "the native lifecycle policy will remove an image in use");
    }
    for f in &result.findings {
        warn!(repository = %name, finding = ?f.kind, "{}", f.message);
    }
    result
}

fn audit_totals(usages: &[RepositoryUsage], in_use_known: bool) -> AuditTotals {
    let mut totals = AuditTotals::default();
    for u in usages {
        if u.audit.native_policy != NativePolicy::None {
            totals.repositories_with_native_policy += 1;
        }
        for f in &u.audit.findings {
            let kind = serde_json::to_value(f.kind).ok().and_then(|v| v.as_str().map(String::from));
            *totals.findings.entry(kind.unwrap_or_default()).or_default() += 1;
        }
    }
    totals.native_policy_in_use_expiries =
        in_use_known.then(|| usages.iter().filter_map(|u| u.audit.in_use_expiries).sum());
    totals
}

/// One document for the registry (dimension `Function`) and one per
/// repository (dimension `Repository`) for the largest `METRICS_TOP_REPOSITORIES`.
pub fn metrics(report: &Report, config: &Config) -> Vec<Metrics> {
    let mut registry = Metrics::new(&config.metrics_namespace).dimension("Function", report.function);
    registry
        .put("RegistryStorageBytes", report.registry.storage_bytes as f64, Unit::Bytes)
        .put("RegistryStorageUtilization", report.registry.storage_percent, Unit::Percent)
        .put("RegistryImageCount", report.registry.image_count as f64, Unit::Count)
        .put("RegistryReclaimableBytes", report.registry.reclaimable_bytes as f64, Unit::Bytes)
        .put("ApiCalls", report.api_calls.values().sum::<u64>() as f64, Unit::Count);
    if let Some(total) = report.audit.native_policy_in_use_expiries {
        registry.put("NativePolicyInUseExpiries", total as f64, Unit::Count);
    }
    let mut all = vec![registry];
    for u in report.repositories.iter().filter(|u| u.skipped.is_none()).take(config.top_repositories) {
        let mut m = Metrics::new(&config.metrics_namespace).dimension("Repository", &u.repository);
        m.put("RepositoryStorageBytes", u.stored_bytes as f64, Unit::Bytes)
            .put("RepositoryImageCount", u.image_count as f64, Unit::Count)
            .put("RepositoryArchivedImageCount", u.archived_image_count as f64, Unit::Count);
        all.push(m);
    }
    all.extend(audit_metrics(report, config));
    all
}

/// `NativePolicyInUseExpiries` per repository with a readable native
/// policy (dimension `Repository`); the total goes in the registry document.
/// Neither is published when the "in use" set could not be read: a 0 would
/// say "all clear" without knowing.
pub fn audit_metrics(report: &Report, config: &Config) -> Vec<Metrics> {
    if report.audit.native_policy_in_use_expiries.is_none() {
        return Vec::new();
    }
    let mut all = Vec::new();
    for u in &report.repositories {
        if let Some(n) = u.audit.in_use_expiries {
            let mut m = Metrics::new(&config.metrics_namespace).dimension("Repository", &u.repository);
            m.put("NativePolicyInUseExpiries", n as f64, Unit::Count);
            all.push(m);
        }
    }
    all
}
