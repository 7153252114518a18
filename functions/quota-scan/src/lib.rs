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
//!
//! The report is bounded ([`autopilot::report`]): one log line per
//! repository, then a [`Summary`] of fixed size, which is also the
//! invocation's response. Every run that is not a preview publishes
//! `ScanCompleted`, so a scan that stopped running is an alarm, not silence.

pub mod config;

use std::collections::BTreeMap;

use futures::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{error, info, instrument, warn};

use autopilot::audit::NativePolicy;
use autopilot::audit::{self, AuditInput, RepositoryAudit};
use autopilot::aws::ApiCalls;
use autopilot::deadline::Deadline;
use autopilot::fanout::{self, Answer, BatchOf, BatchResponse, Cycle, Scale};
use autopilot::in_use::{InUse, InUseReader, SourceFailureReport};
use autopilot::invocation::{is_eventbridge, settle, Envelope};
use autopilot::ports::{Registry, Repository, RepositoryPolicies, WorkQueue};
use autopilot::prune::{RepoImage, TAG_PRUNE};
use autopilot::quota::{self, Status};
use autopilot::report::{bounded_line, first_few, DETAIL_LINE_MAX_BYTES};
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
    /// The work queue (`WORK_QUEUE_URL`), when there is one.
    pub queue: Option<Box<dyn WorkQueue>>,
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
#[derive(Clone, Debug, Default, Serialize)]
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

#[derive(Clone, Debug, Serialize)]
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
    /// A preview: no metrics were published.
    pub dry_run: bool,
    /// With a batch, `registry` holds that batch's share, and the registry's
    /// figures are the sum over the cycle's batches (`BatchStorageBytes`,
    /// README "Scale").
    #[serde(flatten)]
    pub scale: Scale,
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

/// The scan in a few kilobytes, whatever the number of repositories: the
/// invocation's response and its last log line. Each repository's usage is
/// a log line of its own (`repository report`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub function: &'static str,
    pub trigger: &'static str,
    pub dry_run: bool,
    #[serde(flatten)]
    pub scale: Scale,
    pub warn_percent: u32,
    pub images_per_repository_quota: u64,
    pub registry: RegistryUsage,
    pub repositories_scanned: usize,
    pub repositories_warn: usize,
    pub repositories_over: usize,
    pub repositories_skipped: usize,
    /// The largest repositories, by stored bytes.
    pub largest: Vec<Largest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_use_failure: Option<SourceFailureReport>,
    /// The registry audit's totals; per repository in the detail lines.
    pub audit: AuditTotals,
    pub api_calls: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Largest {
    pub repository: String,
    pub stored_bytes: u64,
    pub image_count: usize,
    pub status: Option<Status>,
}

impl Report {
    pub fn summary(&self) -> Summary {
        let with = |status: Status| self.repositories.iter().filter(|u| u.status == Some(status)).count();
        let (largest, _) = first_few(self.repositories.iter().filter(|u| u.skipped.is_none()).map(|u| Largest {
            repository: u.repository.clone(),
            stored_bytes: u.stored_bytes,
            image_count: u.image_count,
            status: u.status,
        }));
        Summary {
            function: self.function,
            trigger: self.trigger,
            dry_run: self.dry_run,
            scale: self.scale.clone(),
            warn_percent: self.warn_percent,
            images_per_repository_quota: self.images_per_repository_quota,
            registry: self.registry.clone(),
            repositories_scanned: self.repositories.len(),
            repositories_warn: with(Status::Warn),
            repositories_over: with(Status::Over),
            repositories_skipped: self.repositories.iter().filter(|u| u.skipped.is_some()).count(),
            largest,
            in_use_failure: self.in_use_failure.clone(),
            audit: self.audit.clone(),
            api_calls: self.api_calls.clone(),
        }
    }

    /// One line per repository (largest first), each at most [`DETAIL_LINE_MAX_BYTES`].
    pub fn detail_lines(&self) -> impl Iterator<Item = (&str, String)> + '_ {
        self.repositories.iter().map(|u| (u.repository.as_str(), bounded_line(u, DETAIL_LINE_MAX_BYTES)))
    }
}

/// The invocation as Lambda sees it: work-queue messages ([`consume`]), or
/// [`handle`] answered with the [`Summary`]; an EventBridge event that is
/// not the schedule is rejected ([`autopilot::invocation`]) rather than
/// failed and retried.
pub async fn invoke(deps: &Deps, payload: Value, deadline: Deadline) -> Result<Answer<Summary>, Error> {
    if fanout::is_sqs_event(&payload) {
        return consume(deps, &payload, deadline).await.map(Answer::Batches);
    }
    let envelope = Envelope::of(&payload);
    let result = handle_until(deps, payload, deadline).await.map(|report| report.summary());
    settle("quota-scan", &deps.config.metrics_namespace, envelope, result).map(|r| Answer::Run(Box::new(r)))
}

/// Work-queue messages ([`fanout::consume`]): each batch scanned like a run
/// of its own.
pub async fn consume(deps: &Deps, payload: &Value, deadline: Deadline) -> Result<BatchResponse, Error> {
    let queue_arn = deps.config.fanout.queue_arn(&deps.region);
    let namespace = &deps.config.metrics_namespace;
    fanout::consume("quota-scan", namespace, queue_arn.as_deref(), payload, deadline, |batch| async move {
        let request = Request {
            trigger: "batch",
            dry_run: batch.dry_run,
            event_id: None,
            batch: Some(batch.of()),
            repositories: batch.repositories,
        };
        scan_request(deps, request, deadline).await.map(|_| ())
    })
    .await
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Manual {
    #[serde(default)]
    repositories: Option<Vec<String>>,
    #[serde(default)]
    dry_run: Option<bool>,
}

/// A run: the schedule's, a manual one, or a work-queue batch.
#[derive(Debug)]
struct Request {
    trigger: &'static str,
    repositories: Vec<String>,
    dry_run: bool,
    /// The scheduled event's id: the cycle's id.
    event_id: Option<String>,
    batch: Option<BatchOf>,
}

/// The schedule's event or a manual request; a manual request is a preview
/// (no metrics) unless it says `"dryRun": false`.
fn parse(payload: Value) -> Result<Request, Error> {
    let Value::Object(_) = &payload else {
        return Err(Error::malformed("expected a JSON object (the schedule's event or a manual request)"));
    };
    if is_eventbridge(&payload) {
        let source = payload.get("source").and_then(Value::as_str).unwrap_or_default();
        let detail_type = payload.get("detail-type").and_then(Value::as_str).unwrap_or_default();
        if (source, detail_type) != ("aws.events", "Scheduled Event") {
            return Err(Error::UnexpectedEvent(format!(
                "source {source:?} with detail-type {detail_type:?}; quota-scan runs on its schedule or a manual request"
            )));
        }
        let event_id = payload.get("id").and_then(Value::as_str).map(String::from);
        return Ok(Request { trigger: "schedule", repositories: Vec::new(), dry_run: false, event_id, batch: None });
    }
    let manual: Manual = serde_json::from_value(payload)
        .map_err(|e| Error::malformed(format!("manual request: {e} (fields: repositories, dryRun)")))?;
    let repositories = manual.repositories.unwrap_or_default();
    if repositories.iter().any(|r| r.trim().is_empty()) {
        return Err(Error::malformed("manual request: repositories holds an empty name"));
    }
    // The one rule for manual payloads: a preview unless `"dryRun": false`.
    let dry_run = manual.dry_run != Some(false);
    Ok(Request { trigger: "manual", repositories, dry_run, event_id: None, batch: None })
}

pub async fn handle(deps: &Deps, payload: Value) -> Result<Report, Error> {
    handle_until(deps, payload, Deadline::none()).await
}

#[instrument(skip_all)]
pub async fn handle_until(deps: &Deps, payload: Value, deadline: Deadline) -> Result<Report, Error> {
    scan_request(deps, parse(payload)?, deadline).await
}

async fn scan_request(deps: &Deps, request: Request, deadline: Deadline) -> Result<Report, Error> {
    let calls_before = deps.api_calls.snapshot();
    let Request { trigger, repositories: names, dry_run: requested_dry_run, event_id, batch } = request;
    let dry_run = deps.config.dry_run || requested_dry_run;
    let cycle = Cycle {
        function: "quota-scan",
        id: match &batch {
            Some(of) => of.cycle.clone(),
            None => fanout::cycle_id(event_id.as_deref(), snapshot::now() * 1000),
        },
        dry_run,
        policy: None,
    };
    let q = deps.config.quotas;
    // The whole registry, larger than a batch, with a queue to spread it
    // over: the batches scan, each reading what is in use itself.
    if let (Some(queue), true) = (&deps.queue, batch.is_none() && names.is_empty()) {
        let all = deps.ecr.repositories(&[], false).await?;
        if all.len() > deps.config.fanout.batch_size {
            let all: Vec<String> = all.into_iter().map(|r| r.name).collect();
            let fan_out = fanout::fan_out(&**queue, &cycle, &all, deps.config.fanout.batch_size).await?;
            let report = Report {
                function: "quota-scan",
                trigger,
                dry_run,
                scale: Scale { fan_out: Some(fan_out), ..Scale::default() },
                warn_percent: q.warn_percent,
                images_per_repository_quota: q.images_per_repository,
                registry: registry_usage(&[], &deps.config),
                repositories: Vec::new(),
                in_use_failure: None,
                audit: AuditTotals::default(),
                api_calls: deps.api_calls.since(&calls_before),
            };
            if !dry_run {
                let mut m = Metrics::new(&deps.config.metrics_namespace).dimension("Function", "quota-scan");
                m.put("BatchesQueued", report.scale.fan_out.as_ref().map_or(0, |f| f.batches) as f64, Unit::Count);
                m.emit();
            }
            info!(summary = %serde_json::to_string(&report.summary()).unwrap_or_default(), "done: fanned out");
            return Ok(report);
        }
    }
    let repositories = fanout::describe(&*deps.ecr, &names, false, batch.is_some()).await?;
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
    // Each repository checks the deadline before it starts: `None` is a
    // repository deferred, never one half scanned.
    let scanned: Vec<Option<RepositoryUsage>> = stream::iter(&repositories)
        .map(|r| async {
            if deadline.expiring() {
                return Ok(None);
            }
            scan(deps, r, uses.as_ref(), now).await.map(Some)
        })
        .buffered(deps.config.concurrency)
        .try_collect()
        .await?;
    let deferred_names: Vec<String> =
        repositories.iter().zip(&scanned).filter(|(_, usage)| usage.is_none()).map(|(r, _)| r.name.clone()).collect();
    let mut usages: Vec<RepositoryUsage> = scanned.into_iter().flatten().collect();
    usages.sort_by(|a, b| b.stored_bytes.cmp(&a.stored_bytes).then_with(|| a.repository.cmp(&b.repository)));
    for (i, u) in usages.iter_mut().enumerate() {
        u.rank = i + 1;
    }

    let registry = registry_usage(&usages, &deps.config);
    for u in usages.iter().filter(|u| matches!(u.status, Some(Status::Warn | Status::Over))) {
        warn!(repository = %u.repository, status = ?u.status, storage_percent = u.storage_percent,
              image_count_percent = u.image_count_percent, "repository at or over its threshold");
    }
    if registry.status != Status::Ok && batch.is_none() {
        warn!(status = ?registry.status, storage_bytes = registry.storage_bytes, storage_percent = registry.storage_percent,
              reclaimable_bytes = registry.reclaimable_bytes, "registry storage at or over its threshold");
    }
    let audit = audit_totals(&usages, uses.is_some());
    let (deferred, handed) =
        fanout::hand_off(deps.queue.as_deref(), &cycle, &deferred_names, deps.config.fanout.batch_size, deadline).await;
    let report = Report {
        function: "quota-scan",
        trigger,
        dry_run,
        scale: Scale { batch, fan_out: None, deferred },
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
    for (repository, detail) in report.detail_lines() {
        info!(repository, detail = %detail, "repository report");
    }
    info!(summary = %serde_json::to_string(&report.summary()).unwrap_or_default(), "done");
    handed?;
    Ok(report)
}

/// The registry's figures over `usages`.
fn registry_usage(usages: &[RepositoryUsage], config: &Config) -> RegistryUsage {
    let q = config.quotas;
    let storage_bytes: u64 = usages.iter().map(|u| u.stored_bytes).sum();
    let reclaimable_bytes: i64 = usages.iter().map(|u| u.reclaimable_bytes).sum();
    let after = storage_bytes.saturating_sub(reclaimable_bytes.max(0) as u64);
    RegistryUsage {
        storage_bytes,
        storage_quota_bytes: q.storage_bytes,
        storage_percent: quota::percent(storage_bytes, q.storage_bytes),
        status: Status::of(quota::percent(storage_bytes, q.storage_bytes), q.warn_percent),
        image_count: usages.iter().map(|u| u.image_count).sum(),
        reclaimable_images: usages.iter().map(|u| u.reclaimable_images).sum(),
        reclaimable_bytes,
        storage_bytes_after_prune: after,
        storage_percent_after_prune: quota::percent(after, q.storage_bytes),
    }
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
        c.safety(),
        // Referrers DescribeImages names count; asking ListImageReferrers
        // costs one call per image, and the figures do without it.
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
    if let Some(batch) = &report.scale.batch {
        // One batch's share: the registry is their sum over the cycle
        // (the storage alarm's metric math adds them up).
        registry
            .put("BatchStorageBytes", report.registry.storage_bytes as f64, Unit::Bytes)
            .put("BatchImageCount", report.registry.image_count as f64, Unit::Count)
            .put("BatchReclaimableBytes", report.registry.reclaimable_bytes as f64, Unit::Bytes)
            .property("cycle", Value::String(batch.cycle.clone()));
    } else {
        registry
            .put("RegistryStorageBytes", report.registry.storage_bytes as f64, Unit::Bytes)
            .put("RegistryStorageUtilization", report.registry.storage_percent, Unit::Percent)
            .put("RegistryImageCount", report.registry.image_count as f64, Unit::Count)
            .put("RegistryReclaimableBytes", report.registry.reclaimable_bytes as f64, Unit::Bytes);
    }
    registry
        .put("RepositoriesDeferred", report.scale.deferred.as_ref().map_or(0, |d| d.repositories) as f64, Unit::Count)
        .put("ApiCalls", report.api_calls.values().sum::<u64>() as f64, Unit::Count)
        // Every run: the alarm on its absence tells a scan that stopped
        // running from a registry with nothing to report.
        .put("ScanCompleted", 1.0, Unit::Count);
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

#[cfg(test)]
mod tests {
    use super::*;
    use autopilot::report::{LOG_EVENT_MAX_BYTES, RESPONSE_MAX_BYTES, SUMMARY_LIST_MAX};

    fn registry() -> RegistryUsage {
        RegistryUsage {
            storage_bytes: 0,
            storage_quota_bytes: 500_000_000,
            storage_percent: 0.0,
            status: Status::Ok,
            image_count: 0,
            reclaimable_images: 0,
            reclaimable_bytes: 0,
            storage_bytes_after_prune: 0,
            storage_percent_after_prune: 0.0,
        }
    }

    /// 10,000 repositories: one log line each, well under CloudWatch Logs'
    /// 256 KB, and a summary (the response) of a few kilobytes.
    #[test]
    fn a_report_of_ten_thousand_repositories_stays_inside_the_limits() {
        let repositories: Vec<RepositoryUsage> = (0..10_000)
            .map(|r| RepositoryUsage {
                repository: format!("team-{r:05}/service"),
                rank: r + 1,
                image_count: 100_000 - r,
                stored_bytes: 10_000_000_000 - r as u64,
                status: Some(if r < 30 { Status::Over } else { Status::Ok }),
                reclaim_brake: (r % 500 == 0).then(|| "safety brake: ".repeat(500)),
                ..RepositoryUsage::default()
            })
            .collect();
        let report = Report {
            function: "quota-scan",
            trigger: "schedule",
            dry_run: false,
            scale: Scale::default(),
            warn_percent: 80,
            images_per_repository_quota: 100_000,
            registry: registry(),
            repositories,
            in_use_failure: None,
            audit: AuditTotals::default(),
            api_calls: BTreeMap::from([("DescribeImages".to_string(), 10_000)]),
        };
        let mut lines = 0;
        for (name, line) in report.detail_lines() {
            let logged = serde_json::to_string(&line).expect("json").len() + 512;
            assert!(logged < LOG_EVENT_MAX_BYTES / 2, "{name}: {logged} bytes");
            let back: Value = serde_json::from_str(&line).expect("JSON");
            assert_eq!(back["repository"], name);
            lines += 1;
        }
        assert_eq!(lines, 10_000);
        let summary = serde_json::to_string(&report.summary()).expect("json");
        assert!(summary.len() < 16 * 1024 && summary.len() < RESPONSE_MAX_BYTES, "{} bytes", summary.len());
        let back: Value = serde_json::from_str(&summary).expect("json");
        assert_eq!(back["repositoriesScanned"], 10_000);
        assert_eq!(back["repositoriesOver"], 30);
        assert_eq!(back["largest"].as_array().map(Vec::len), Some(SUMMARY_LIST_MAX));
        assert_eq!(back["largest"][0]["repository"], "team-00000/service");
    }

    #[test]
    fn every_published_run_says_it_completed() {
        let report = Report {
            function: "quota-scan",
            trigger: "schedule",
            dry_run: false,
            scale: Scale::default(),
            warn_percent: 80,
            images_per_repository_quota: 100_000,
            registry: registry(),
            repositories: Vec::new(),
            in_use_failure: None,
            audit: AuditTotals::default(),
            api_calls: BTreeMap::new(),
        };
        let config = Config::from_lookup(autopilot::config::lookup_from(&[])).expect("defaults");
        let docs = metrics(&report, &config)[0].documents(0);
        assert_eq!(docs[0]["ScanCompleted"], 1.0);
        assert_eq!(docs[0]["Function"], "quota-scan");
    }

    #[test]
    fn manual_requests_are_previews_unless_they_say_otherwise() {
        let parsed = |v: Value| {
            let r = parse(v).expect("parses");
            (r.trigger, r.repositories, r.dry_run)
        };
        assert_eq!(parsed(serde_json::json!({})), ("manual", vec![], true));
        assert_eq!(parsed(serde_json::json!({"dryRun": false})), ("manual", vec![], false));
        let schedule = serde_json::json!({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}});
        assert_eq!(parsed(schedule), ("schedule", vec![], false));
    }

    use autopilot::fakes::{FakeQueue, FakeRegistries, FakeRegistry, ScriptedInUse};

    /// No repository has a native lifecycle policy.
    struct NoNativePolicies;

    #[async_trait::async_trait]
    impl RepositoryPolicies for NoNativePolicies {
        async fn lifecycle_policy(&self, _: &str) -> Result<Option<String>, autopilot::AwsError> {
            Ok(None)
        }
        async fn repository_tags(&self, _: &str) -> Result<autopilot::model::Tags, autopilot::AwsError> {
            Ok(Default::default())
        }
    }

    fn deps(n: u32, pairs: &[(&str, &str)], queue: Option<FakeQueue>) -> Deps {
        let registries = FakeRegistries(
            (0..n)
                .map(|i| {
                    let image = RepoImage {
                        digest: format!("sha256:{i:064x}"),
                        tags: vec!["latest".into()],
                        size_bytes: Some(1_000),
                        media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
                        ..RepoImage::default()
                    };
                    FakeRegistry::new(&format!("svc-{i}"), vec![image])
                })
                .collect(),
        );
        let mut all = vec![("WORK_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/quota-work")];
        all.extend_from_slice(pairs);
        Deps {
            config: Config::from_lookup(autopilot::config::lookup_from(&all)).expect("valid"),
            region: "us-east-1".into(),
            in_use: Box::new(ScriptedInUse::always(InUse::default())),
            ecr: Box::new(registries),
            policies: Box::new(NoNativePolicies),
            queue: queue.map(|q| Box::new(q) as Box<dyn WorkQueue>),
            api_calls: ApiCalls::default(),
        }
    }

    fn schedule() -> Value {
        serde_json::json!({"id": "evt-9", "source": "aws.events", "detail-type": "Scheduled Event", "detail": {}})
    }

    #[tokio::test]
    async fn a_large_registry_is_fanned_out_and_each_batch_publishes_its_share() {
        let (queue, sent) = FakeQueue::new();
        let d = deps(5, &[("FANOUT_BATCH_SIZE", "2")], Some(queue));
        let report = handle(&d, schedule()).await.expect("fanned out");
        assert_eq!(report.scale.fan_out.as_ref().map(|f| (f.batches, f.repositories)), Some((3, 5)));
        assert!(report.repositories.is_empty());
        let bodies = sent.lock().expect("sent").clone();
        let batch = autopilot::fanout::Batch::parse("quota-scan", &bodies[2]).expect("ours");
        assert_eq!(
            (batch.batch, batch.repositories.clone(), batch.cycle.as_str()),
            (3, vec!["svc-4".to_string()], "evt-9")
        );

        let event = serde_json::json!({"Records": [{"messageId": "m-1", "body": bodies[0], "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:quota-work", "awsRegion": "us-east-1"}]});
        let Answer::Batches(response) = invoke(&d, event, Deadline::none()).await.expect("answered") else {
            panic!("a batch response")
        };
        assert!(response.batch_item_failures.is_empty());
        let request = Request {
            trigger: "batch",
            repositories: vec!["svc-0".into(), "svc-1".into()],
            dry_run: false,
            event_id: None,
            batch: Some(batch.of()),
        };
        let share = scan_request(&d, request, Deadline::none()).await.expect("scanned");
        assert_eq!(share.registry.storage_bytes, 2_000, "this batch's share");
        let docs = metrics(&share, &d.config)[0].documents(0);
        assert_eq!(docs[0]["BatchStorageBytes"], 2_000.0);
        assert!(docs[0].get("RegistryStorageUtilization").is_none(), "a share is not the registry's utilization");
        assert_eq!(docs[0]["ScanCompleted"], 1.0);
    }

    #[tokio::test]
    async fn near_the_deadline_repositories_are_deferred_whole_and_handed_on() {
        let (queue, sent) = FakeQueue::new();
        let d = deps(3, &[], Some(queue));
        let deadline = Deadline::in_(std::time::Duration::ZERO, std::time::Duration::from_secs(1));
        let report = handle_until(&d, schedule(), deadline).await.expect("deferred");
        assert!(report.repositories.is_empty(), "nothing half scanned");
        assert_eq!(report.scale.deferred.as_ref().map(|x| (x.repositories, x.handed_off)), Some((3, true)));
        assert_eq!(report.registry.storage_bytes, 0);
        assert!(autopilot::fanout::Batch::parse("quota-scan", &sent.lock().expect("sent")[0]).expect("ours").deferred);
    }
}
