//! prune-images: deletes what a lifecycle-style policy expires, and never an
//! image in use ([`autopilot::in_use`]), part of a kept image index, or
//! attached to a kept image (its referrers).
//!
//! read what is in use, everywhere (one unreadable source: nothing is
//! deleted) → per repository, `SWEEP_CONCURRENCY` at once: snapshot and plan
//! ([`autopilot::prune::plan`]) → re-read what is in use, keep what became
//! used (`protectedLate`) → apply (referrers, then indexes, then the rest,
//! 100 digests a call) → report. A repository that fails is reported and the
//! run goes on; the invocation fails after the whole report is written.
//!
//! The report is bounded ([`autopilot::report`]): one log line per
//! repository with its detail, then a [`Summary`] of fixed size, which is
//! also the invocation's response.

pub mod config;
pub mod event;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use futures::stream::{self, StreamExt};
use serde::Serialize;
use serde_json::Value;
use tracing::{error, info, instrument, warn};

use autopilot::aws::ApiCalls;
use autopilot::deadline::Deadline;
use autopilot::fanout::{self, Answer, BatchResponse, Cycle, Scale};
use autopilot::in_use::fresh::Fresh;
use autopilot::in_use::{InUse, InUseReader, SourceFailureReport};
use autopilot::invocation::{settle, Envelope};
use autopilot::lifecycle::{Policy, StorageClass};
use autopilot::origin::Origin;
use autopilot::ports::{Registry, Repository, WorkQueue};
use autopilot::prune::{Protected, PrunePlan, TAG_PRUNE};
use autopilot::report::{bounded_line, first_few, DETAIL_LINE_MAX_BYTES};
use autopilot::snapshot;
use autopilot::telemetry::{Metrics, Unit};
use autopilot::Error;

pub use config::{Config, Mode};
use event::Request;

pub struct Deps {
    pub config: Config,
    pub region: String,
    /// Every source of "in use", in every region of `PROTECT_REGIONS`.
    pub in_use: Box<dyn InUseReader>,
    pub ecr: Box<dyn Registry>,
    /// The work queue (`WORK_QUEUE_URL`), when there is one.
    pub queue: Option<Box<dyn WorkQueue>>,
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
    /// Why this repository could not be read, planned or pruned. What was
    /// deleted before it failed is still listed in `deleted`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub images_seen: usize,
    /// Rule priority → images that rule expired (protected ones included).
    pub expired_by_rule: BTreeMap<u32, usize>,
    pub protected: Vec<Protected>,
    /// Planned for deletion, then found in use by the re-read right before
    /// deleting: kept.
    pub protected_late: Vec<Protected>,
    /// Deleted, or in a dry run, to be deleted.
    pub deleted: Vec<String>,
    /// Moved to the archive storage class by a `transition` rule, or in a
    /// dry run, to be moved.
    pub archived: Vec<String>,
    /// ECR refused: still referenced by a manifest list.
    pub kept: Vec<String>,
    pub already_gone: Vec<String>,
    pub failed: Vec<Failure>,
    pub bytes_reclaimed: i64,
    /// `imageSizeInBytes` of what was archived (or would be).
    pub bytes_archived: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brake: Option<String>,
    /// Not started: the invocation's deadline was near
    /// (`DEADLINE_MARGIN_SECS`). Handed on to the work queue when there is
    /// one.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deferred: bool,
    #[serde(skip)]
    retryable: bool,
}

/// What the "in use" read found, for the report.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InUseSummary {
    pub regions: Vec<String>,
    /// Source → references and digests it contributed.
    pub sources: BTreeMap<&'static str, usize>,
    /// Reads of the whole set: the first, and the fresh ones before deleting.
    pub reads: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub function: &'static str,
    pub trigger: &'static str,
    pub dry_run: bool,
    /// `PRUNE_POLICY` or `request`.
    pub policy_source: &'static str,
    #[serde(flatten)]
    pub scale: Scale,
    pub in_use: InUseSummary,
    /// The source that could not be read; nothing was deleted after it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_use_failure: Option<SourceFailureReport>,
    pub repositories: Vec<RepositoryReport>,
    pub repositories_failed: usize,
    pub images_deleted: usize,
    pub bytes_reclaimed: i64,
    pub images_archived: usize,
    pub images_protected: usize,
    pub images_protected_late: usize,
    pub api_calls: BTreeMap<String, u64>,
}

/// The run in a few hundred bytes, whatever the number of repositories: the
/// invocation's response and its last log line. Each repository's detail
/// is a log line of its own (`repository report`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub function: &'static str,
    pub trigger: &'static str,
    pub dry_run: bool,
    pub policy_source: &'static str,
    #[serde(flatten)]
    pub scale: Scale,
    pub in_use: InUseSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_use_failure: Option<SourceFailureReport>,
    pub repositories_seen: usize,
    /// Repositories planned only (the run's or their own dry run).
    pub repositories_dry_run: usize,
    pub repositories_skipped: usize,
    pub repositories_failed: usize,
    pub images_deleted: usize,
    pub bytes_reclaimed: i64,
    /// In dry-run repositories: what would have been deleted, and its bytes.
    pub images_planned: usize,
    pub bytes_planned: i64,
    pub images_archived: usize,
    pub images_protected: usize,
    pub images_protected_late: usize,
    /// The first repositories that failed, with their errors.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<RepositoryFailure>,
    #[serde(skip_serializing_if = "is_zero")]
    pub failures_omitted: usize,
    pub api_calls: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryFailure {
    pub repository: String,
    pub error: String,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Report {
    pub fn summary(&self) -> Summary {
        let planned = self.repositories.iter().filter(|r| r.dry_run);
        let (failures, failures_omitted) = first_few(self.repositories.iter().filter_map(|r| {
            let error = r.error.clone().or_else(|| {
                r.failed.first().map(|f| {
                    format!("{} image(s) failed; first {}: {} {}", r.failed.len(), f.digest, f.code, f.message)
                })
            })?;
            Some(RepositoryFailure { repository: r.repository.clone(), error: error.chars().take(1024).collect() })
        }));
        Summary {
            function: self.function,
            trigger: self.trigger,
            dry_run: self.dry_run,
            policy_source: self.policy_source,
            scale: self.scale.clone(),
            in_use: self.in_use.clone(),
            in_use_failure: self.in_use_failure.clone(),
            repositories_seen: self.repositories.len(),
            repositories_dry_run: planned.clone().count(),
            repositories_skipped: self.repositories.iter().filter(|r| r.skipped.is_some()).count(),
            repositories_failed: self.repositories_failed,
            images_deleted: self.images_deleted,
            bytes_reclaimed: self.bytes_reclaimed,
            images_planned: planned.clone().map(|r| r.deleted.len()).sum(),
            bytes_planned: planned.map(|r| r.bytes_reclaimed).sum(),
            images_archived: self.images_archived,
            images_protected: self.images_protected,
            images_protected_late: self.images_protected_late,
            failures,
            failures_omitted,
            api_calls: self.api_calls.clone(),
        }
    }

    /// One line per repository, each at most [`DETAIL_LINE_MAX_BYTES`].
    pub fn detail_lines(&self) -> impl Iterator<Item = (&str, String)> + '_ {
        self.repositories.iter().map(|r| (r.repository.as_str(), bounded_line(r, DETAIL_LINE_MAX_BYTES)))
    }

    /// The detail lines, then the summary line: the log of a finished run.
    fn log(&self, failed: bool) {
        for (repository, detail) in self.detail_lines() {
            info!(repository, detail = %detail, "repository report");
        }
        let summary = serde_json::to_string(&self.summary()).unwrap_or_default();
        if failed {
            error!(summary = %summary, repositories_failed = self.repositories_failed, "done, with failures");
        } else {
            info!(summary = %summary, "done");
        }
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
    settle("prune-images", &deps.config.metrics_namespace, envelope, result).map(|r| Answer::Run(Box::new(r)))
}

/// Work-queue messages ([`fanout::consume`]): each batch pruned like a
/// run of its own, failing when [`handle`] would.
pub async fn consume(deps: &Deps, payload: &Value, deadline: Deadline) -> Result<BatchResponse, Error> {
    let queue_arn = deps.config.fanout.queue_arn(&deps.region);
    let namespace = &deps.config.metrics_namespace;
    fanout::consume("prune-images", namespace, queue_arn.as_deref(), payload, deadline, |batch| async move {
        let request = Request::of_batch(batch)?;
        prune_request(deps, request, None, deadline).await.and_then(finish).map(|_| ())
    })
    .await
}

/// What every repository of one run shares.
struct Run<'a> {
    deps: &'a Deps,
    policy: &'a Policy,
    uses: &'a InUse,
    fresh: Fresh<'a>,
    /// Set by the first fresh read that fails: no repository deletes after it.
    halted: Mutex<Option<SourceFailureReport>>,
    now: i64,
    dry_run: bool,
    /// Checked before each repository starts, never in the middle of one.
    deadline: Deadline,
}

/// The invocation: [`prune`], then an error if any repository or image
/// failed, after the whole report is logged.
pub async fn handle(deps: &Deps, payload: Value) -> Result<Report, Error> {
    handle_until(deps, payload, Deadline::none()).await
}

#[instrument(skip_all)]
pub async fn handle_until(deps: &Deps, payload: Value, deadline: Deadline) -> Result<Report, Error> {
    finish(prune(deps, payload, deadline).await?)
}

/// Every repository pruned and reported. `Err` only when nothing could be
/// done: a bad request, the repositories unlisted, or an in-use source
/// unreadable (then nothing is deleted anywhere).
pub async fn prune(deps: &Deps, payload: Value, deadline: Deadline) -> Result<Report, Error> {
    let origin = Origin::of(&payload);
    let request = Request::parse(payload)?;
    if let Some(origin) = &origin {
        origin.check_region(&deps.region)?;
    }
    prune_request(deps, request, origin, deadline).await
}

async fn prune_request(
    deps: &Deps,
    request: Request,
    origin: Option<Origin>,
    deadline: Deadline,
) -> Result<Report, Error> {
    let calls_before = deps.api_calls.snapshot();
    let dry_run = deps.config.dry_run || request.is_dry_run();
    let (policy, policy_source) = match &request.policy {
        Some(p) => (p, "request"),
        None => (&deps.config.policy, "PRUNE_POLICY"),
    };
    info!(trigger = request.trigger, dry_run, policy_source, millis_left = deadline.millis_left(), "invoked");
    let cycle = Cycle {
        function: "prune-images",
        id: match &request.batch {
            Some(of) => of.cycle.clone(),
            None => fanout::cycle_id(request.event_id.as_deref(), snapshot::now() * 1000),
        },
        dry_run,
        policy: request.policy_doc.clone(),
    };
    let mut report = Report {
        function: "prune-images",
        trigger: request.trigger,
        dry_run,
        policy_source,
        scale: Scale { batch: request.batch.clone(), ..Scale::default() },
        in_use: InUseSummary {
            regions: autopilot::in_use::protect_regions(&deps.config.protect_regions, &deps.region),
            ..InUseSummary::default()
        },
        in_use_failure: None,
        repositories: Vec::new(),
        repositories_failed: 0,
        images_deleted: 0,
        bytes_reclaimed: 0,
        images_archived: 0,
        images_protected: 0,
        images_protected_late: 0,
        api_calls: BTreeMap::new(),
    };
    // The whole registry, larger than a batch, with a queue to spread it
    // over: the batches do the work, each reading what is in use itself.
    if let (Some(queue), true) = (&deps.queue, request.batch.is_none() && request.repositories.is_empty()) {
        let names = deps.ecr.repositories(&[], false).await?;
        if let (Some(origin), Some(first)) = (&origin, names.first()) {
            origin.check_account(&first.registry_id, &format!("this registry (repository {})", first.name))?;
        }
        if names.len() > deps.config.fanout.batch_size {
            let names: Vec<String> = names.into_iter().map(|r| r.name).collect();
            report.scale.fan_out =
                Some(fanout::fan_out(&**queue, &cycle, &names, deps.config.fanout.batch_size).await?);
            report.api_calls = deps.api_calls.since(&calls_before);
            emit(&report, &deps.config);
            return Ok(report);
        }
    }
    let repositories = fanout::describe(&*deps.ecr, &request.repositories, true, request.batch.is_some()).await?;
    info!(repositories = repositories.len(), millis_left = deadline.millis_left(), "listed");
    // A scheduled event from another account prunes nothing here.
    if let (Some(origin), Some(first)) = (&origin, repositories.first()) {
        origin.check_account(&first.registry_id, &format!("this registry (repository {})", first.name))?;
    }
    // Every source, every protected region, before anything is planned: an
    // image in use anywhere must be kept, so a source we cannot read means
    // we cannot know what is safe to delete.
    let uses = match deps.in_use.read().await {
        Ok(uses) => uses,
        Err(failure) => {
            error!(
                source = failure.source.key(),
                region = %failure.region,
                api = failure.error.operation,
                permission = %failure.permission,
                error = %failure.error,
                "an in-use source could not be read: nothing is deleted in this run"
            );
            report.in_use.reads = 1;
            report.in_use_failure = Some((&failure).into());
            report.api_calls = deps.api_calls.since(&calls_before);
            emit(&report, &deps.config);
            error!(summary = %serde_json::to_string(&report.summary()).unwrap_or_default(), "done: nothing deleted");
            return Err(failure.into());
        }
    };
    report.in_use.sources = uses.count_by_source();
    info!(millis_left = deadline.millis_left(), "in-use set read");
    let run = Run {
        deps,
        policy,
        uses: &uses,
        fresh: Fresh::new(&*deps.in_use),
        halted: Mutex::new(None),
        now: snapshot::now(),
        dry_run,
        deadline,
    };
    // In the order listed, a chunk at a time: every repository of the chunk
    // planned (SWEEP_CONCURRENCY at a time), then one fresh read of what is
    // in use, made after all those plans, then each repository deletes what
    // the fresh read still allows.
    let concurrency = deps.config.concurrency.max(1);
    for chunk in repositories.chunks(REREAD_CHUNK) {
        let planned: Vec<(RepositoryReport, Option<Planned>)> = stream::iter(chunk)
            .map(|repository| plan_repository(&run, repository))
            .buffered(concurrency)
            .collect()
            .await;
        let done: Vec<RepositoryReport> = stream::iter(chunk.iter().zip(planned))
            .map(|(repository, (report, planned))| apply_repository(&run, repository, report, planned))
            .buffered(concurrency)
            .collect()
            .await;
        report.repositories.extend(done);
        // A fresh read that failed stops every deletion still to come.
        if run.halted.lock().map(|h| h.is_some()).unwrap_or(true) {
            break;
        }
    }
    let pruned = report.repositories.len();
    for repository in &repositories[pruned..] {
        report.repositories.push(RepositoryReport {
            repository: repository.name.clone(),
            error: Some("not pruned: a fresh read of what is in use failed earlier in this run".into()),
            retryable: true,
            ..RepositoryReport::default()
        });
    }
    report.in_use.reads = 1 + run.fresh.reads();
    report.in_use_failure = run.halted.lock().ok().and_then(|h| h.clone());
    let executed = report.repositories.iter().filter(|r| !r.dry_run);
    report.images_deleted = executed.clone().map(|r| r.deleted.len()).sum();
    report.images_archived = executed.clone().map(|r| r.archived.len()).sum();
    report.bytes_reclaimed = executed.map(|r| r.bytes_reclaimed).sum();
    report.images_protected = report.repositories.iter().map(|r| r.protected.len()).sum();
    report.images_protected_late = report.repositories.iter().map(|r| r.protected_late.len()).sum();
    report.repositories_failed = report.repositories.iter().filter(|r| r.error.is_some()).count();
    let handed = hand_off(deps, &cycle, &mut report, deadline).await;
    report.api_calls = deps.api_calls.since(&calls_before);
    emit(&report, &deps.config);
    handed?;
    Ok(report)
}

/// The repositories this run did not start ([`fanout::hand_off`]).
async fn hand_off(deps: &Deps, cycle: &Cycle, report: &mut Report, deadline: Deadline) -> Result<(), Error> {
    let names: Vec<String> = report.repositories.iter().filter(|r| r.deferred).map(|r| r.repository.clone()).collect();
    let (deferred, sent) =
        fanout::hand_off(deps.queue.as_deref(), cycle, &names, deps.config.fanout.batch_size, deadline).await;
    report.scale.deferred = deferred;
    sent
}

fn emit(report: &Report, config: &Config) {
    let mut metrics = Metrics::new(&config.metrics_namespace).dimension("Function", report.function);
    metrics
        .put("ImagesDeleted", report.images_deleted as f64, Unit::Count)
        .put("BytesReclaimed", report.bytes_reclaimed as f64, Unit::Bytes)
        .put("ImagesProtected", report.images_protected as f64, Unit::Count)
        .put("ImagesArchived", report.images_archived as f64, Unit::Count)
        .put("RepositoriesFailed", report.repositories_failed as f64, Unit::Count)
        .put("InUseUnreadable", if report.in_use_failure.is_some() { 1.0 } else { 0.0 }, Unit::Count)
        .put("ApiCalls", report.api_calls.values().sum::<u64>() as f64, Unit::Count)
        .put("RepositoriesDeferred", report.scale.deferred.as_ref().map_or(0, |d| d.repositories) as f64, Unit::Count)
        .property("dryRun", Value::Bool(report.dry_run));
    if let Some(fan_out) = &report.scale.fan_out {
        metrics.put("BatchesQueued", fan_out.batches as f64, Unit::Count);
        metrics.property("cycle", Value::String(fan_out.cycle.clone()));
    }
    if let Some(batch) = &report.scale.batch {
        metrics.property("cycle", Value::String(batch.cycle.clone()));
    }
    metrics.emit();
}

/// Repositories planned before each fresh read of what is in use: the
/// fresh-before-delete read is shared by a chunk of this many. The same as
/// the default `FANOUT_BATCH_SIZE`, so a batch reads what is in use twice
/// (to plan, and right before deleting).
///
/// Measured (`make bench`, 5,000 repositories inline, 40 services): at 50 a
/// chunk the reads of what is in use were 10,800 of 25,911 calls, every
/// ECS list and describe call of the account 101 times over; ECS's
/// throttling buckets are the account's, shared with its deploys. The
/// window a chunk leaves between its fresh read and its last deletion is
/// the time to delete in 200 repositories, seconds, and rollback targets
/// are protected by the deployment history in every read anyway.
pub const REREAD_CHUNK: usize = 200;

/// A repository planned, waiting for the fresh read: its snapshot, and the
/// ticket that read must come after.
struct Planned {
    snapshot: snapshot::RepositorySnapshot,
    ticket: u64,
}

fn record_failure(repository: &Repository, report: &mut RepositoryReport, e: &Error) {
    error!(repository = %repository.name, error = %e, deleted = report.deleted.len(), "repository failed");
    report.retryable |= e.is_retryable();
    report.error = Some(e.to_string());
}

/// One repository planned, never an `Err`: a failure is recorded in its
/// report. Near the deadline the repository is deferred, not started.
async fn plan_repository(run: &Run<'_>, repository: &Repository) -> (RepositoryReport, Option<Planned>) {
    let mut report = RepositoryReport { repository: repository.name.clone(), ..RepositoryReport::default() };
    if run.deadline.expiring() {
        report.deferred = true;
        return (report, None);
    }
    match plan_into(run, repository, &mut report).await {
        Ok(planned) => (report, planned),
        Err(e) => {
            record_failure(repository, &mut report, &e);
            (report, None)
        }
    }
}

/// What to delete, when there is anything and the run acts here.
async fn plan_into(
    run: &Run<'_>,
    repository: &Repository,
    report: &mut RepositoryReport,
) -> Result<Option<Planned>, Error> {
    let deps = run.deps;
    let mode = match repository.tags.get(TAG_PRUNE) {
        Some(value) => match Mode::parse(value) {
            Some(mode) => {
                report.mode = format!("{} ({TAG_PRUNE})", mode.as_str());
                mode
            }
            None => {
                report.mode = format!("invalid {TAG_PRUNE} value {value:?}");
                report.skipped = Some(format!("{TAG_PRUNE}={value:?} is not one of on, off, dry-run; not pruned"));
                return Ok(None);
            }
        },
        None => {
            report.mode = format!("{} (PRUNE_DEFAULT_MODE)", deps.config.default_mode.as_str());
            deps.config.default_mode
        }
    };
    if mode == Mode::Off {
        report.skipped = Some(format!("pruning is off for this repository ({})", report.mode));
        return Ok(None);
    }
    let safety = deps.config.safety();
    let snapshot =
        snapshot::plan_repository(&*deps.ecr, repository, &deps.region, run.policy, run.uses, run.now, safety, true)
            .await?;
    let Some(snapshot) = snapshot else {
        report.skipped = Some("the repository was deleted during the run".into());
        return Ok(None);
    };
    let ticket = run.fresh.ticket();
    let planned = &snapshot.plan;
    report.images_seen = planned.images_seen;
    report.expired_by_rule = planned.expired_by_rule.clone();
    report.protected = planned.protected.clone();
    report.brake = planned.brake.clone();
    if planned.brake.is_some() {
        warn!(repository = %repository.name, brake = ?planned.brake, "safety brake");
        return Ok(None);
    }
    if run.dry_run || mode == Mode::DryRun {
        report.dry_run = true;
        report.deleted = planned.to_delete().cloned().collect();
        report.bytes_reclaimed = planned.bytes_to_reclaim;
        report.archived = planned.transition_images.clone();
        report.bytes_archived = planned.bytes_to_archive;
        return Ok(None);
    }
    if planned.deletions() == 0 && planned.transition_images.is_empty() {
        return Ok(None);
    }
    Ok(Some(Planned { snapshot, ticket }))
}

/// A planned repository's deletions, never an `Err`.
async fn apply_repository(
    run: &Run<'_>,
    repository: &Repository,
    mut report: RepositoryReport,
    planned: Option<Planned>,
) -> RepositoryReport {
    if let Some(planned) = planned {
        if let Err(e) = apply_into(run, repository, planned, &mut report).await {
            record_failure(repository, &mut report, &e);
        }
    }
    report
}

async fn apply_into(
    run: &Run<'_>,
    repository: &Repository,
    planned: Planned,
    report: &mut RepositoryReport,
) -> Result<(), Error> {
    let deps = run.deps;
    let Planned { snapshot, ticket } = planned;
    let size: BTreeMap<&str, i64> =
        snapshot.images.iter().map(|i| (i.digest.as_str(), i.size_bytes.unwrap_or(0))).collect();
    // Fresh before delete: what is in use now, read after this plan (and
    // every plan of its chunk) was made.
    let reading = run.fresh.after(ticket).await;
    let latest = match &*reading {
        Ok(latest) => latest,
        Err(failure) => {
            if let Ok(mut halted) = run.halted.lock() {
                halted.get_or_insert_with(|| failure.into());
            }
            return Err(Error::InUseUnreadable {
                source_key: failure.source.key(),
                region: failure.region.clone(),
                permission: failure.permission.clone(),
                retryable: failure.error.retryable,
                message: failure.to_string(),
            });
        }
    };
    let id = snapshot::repository_id(repository, &deps.region);
    // The rows as they are now, listed after the fresh read (a planned
    // repository always deletes or archives something): the first listing's
    // tags may be minutes old by now (a chunk plans 200 repositories first),
    // and a tag moved onto an expired image since, with a user of that tag,
    // keeps it.
    let images = match deps.ecr.images(&repository.name).await {
        Ok(images) => images,
        Err(e) if e.code_is("RepositoryNotFoundException") => {
            report.skipped = Some("the repository was deleted during the run".into());
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let again = snapshot.replan_listed(&images, &id, run.policy, latest, run.now, deps.config.safety());
    let plan = still_to_delete(&snapshot.plan, &again, report);
    if !report.protected_late.is_empty() {
        warn!(repository = %repository.name, kept = report.protected_late.len(), "in use since the plan: kept");
    }
    apply(deps, &repository.name, &plan, &size, report).await?;
    archive(deps, &repository.name, &plan.transition_images, &size, report).await?;
    info!(repository = %repository.name, deleted = report.deleted.len(), archived = report.archived.len(),
          bytes = report.bytes_reclaimed, "pruned");
    Ok(())
}

/// The first plan's deletions and transitions that the fresh plan still
/// makes; the rest go to `protectedLate`, with the reason the fresh plan keeps
/// them. Nothing the first plan kept is touched, even if the fresh read no
/// longer sees its user.
fn still_to_delete(first: &PrunePlan, fresh: &PrunePlan, report: &mut RepositoryReport) -> PrunePlan {
    let still: BTreeSet<&String> = fresh.to_delete().chain(&fresh.transition_images).collect();
    for digest in first.to_delete().chain(&first.transition_images).filter(|d| !still.contains(d)) {
        let why = fresh.protected.iter().find(|p| &p.digest == digest).cloned().unwrap_or_else(|| Protected {
            digest: digest.clone(),
            tags: Vec::new(),
            reason: "no longer planned after the fresh re-read".into(),
            expired_by_rule: None,
            transitioned_by_rule: None,
        });
        report.protected_late.push(why);
    }
    let only = |list: &[String]| list.iter().filter(|d| still.contains(d)).cloned().collect::<Vec<_>>();
    PrunePlan {
        delete_referrers: only(&first.delete_referrers),
        delete_indexes: only(&first.delete_indexes),
        delete_images: only(&first.delete_images),
        transition_images: only(&first.transition_images),
        index_children: first.index_children.clone(),
        ..PrunePlan::default()
    }
}

/// UpdateImageStorageClass to archive, one image a call (the API has no
/// batch form), with the same protections as deletion: only what the fresh
/// plan still archives. A per-image refusal is a per-image failure; a denied
/// call fails the repository.
async fn archive(
    deps: &Deps,
    repository: &str,
    digests: &[String],
    size: &BTreeMap<&str, i64>,
    report: &mut RepositoryReport,
) -> Result<(), Error> {
    for digest in digests {
        match deps.ecr.update_storage_class(repository, digest, StorageClass::Archive).await {
            Ok(_) => {
                report.archived.push(digest.clone());
                report.bytes_archived += size.get(digest.as_str()).copied().unwrap_or(0);
            }
            Err(e) if e.code_is("ImageNotFoundException") => report.already_gone.push(digest.clone()),
            Err(e) if e.code_is("AccessDeniedException") || e.code_is("AccessDenied") => return Err(e.into()),
            Err(e) => {
                report.retryable |= e.retryable;
                report.failed.push(Failure {
                    digest: digest.clone(),
                    code: e.code.clone().unwrap_or_else(|| "UpdateImageStorageClass".into()),
                    message: e.message.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Referrers and indexes first, each before what it references (a referrer
/// its subject, an index its children), because ECR refuses to delete a
/// manifest an index still references, and a referrer left without its
/// subject can never be listed again. When a parent is not deleted, what it
/// references is kept too.
async fn apply(
    deps: &Deps,
    repository: &str,
    plan: &PrunePlan,
    size: &BTreeMap<&str, i64>,
    report: &mut RepositoryReport,
) -> Result<(), Error> {
    let parents: Vec<String> = plan.delete_referrers.iter().chain(&plan.delete_indexes).cloned().collect();
    let mut blocked: BTreeSet<String> = BTreeSet::new();
    let mut pending = parents.clone();
    while !pending.is_empty() {
        let referenced: BTreeSet<&String> =
            pending.iter().flat_map(|i| plan.index_children.get(i).into_iter().flatten()).collect();
        let (ready, later): (Vec<String>, Vec<String>) = pending.iter().cloned().partition(|i| !referenced.contains(i));
        if ready.is_empty() {
            break; // a reference cycle cannot come from ECR; never loop on one
        }
        let deleted = apply_deletes(deps, repository, &ready, size, report).await?;
        // What a surviving parent references stays, and so on down.
        let mut stack: Vec<&String> = ready.iter().filter(|i| !deleted.contains(*i)).collect();
        while let Some(parent) = stack.pop() {
            for child in plan.index_children.get(parent).into_iter().flatten() {
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
    report.kept.extend(parents.iter().filter(|i| blocked.contains(*i)).cloned());
    if !images.is_empty() {
        apply_deletes(deps, repository, &images, size, report).await?;
    }
    Ok(())
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

/// Repositories that failed, and images that failed to delete, fail the
/// invocation after every repository is done, with the full report (every
/// repository's line, then the summary) logged first.
fn finish(report: Report) -> Result<Report, Error> {
    let mut failures: Vec<String> = report
        .repositories
        .iter()
        .filter_map(|r| r.error.as_ref().map(|e| format!("repository {}: {e}", r.repository)))
        .collect();
    failures.extend(report.repositories.iter().flat_map(|r| {
        r.failed.iter().map(move |f| format!("{}@{}: {} {}", r.repository, f.digest, f.code, f.message))
    }));
    report.log(!failures.is_empty());
    let Some(first) = failures.first().cloned() else {
        return Ok(report);
    };
    Err(Error::Partial {
        failed: failures.len(),
        total: report.repositories.len()
            + report.repositories.iter().map(|r| r.deleted.len() + r.failed.len()).sum::<usize>(),
        first,
        retryable: report.repositories.iter().any(|r| r.retryable),
    })
}

/// Handler tests over the in-memory fakes: the order of deletion, what a
/// failed parent deletion means for what it references (moto deletes an
/// index's child without complaint), fail-closed, fresh-before-delete and
/// failure isolation.
#[cfg(test)]
mod tests {
    use super::*;
    use autopilot::fakes::{FakeQueue, FakeRegistries, FakeRegistry, ScriptedInUse};
    use autopilot::fanout::{Batch, ItemFailure};
    use autopilot::in_use::{Source, SourceFailure, User};
    use autopilot::invocation::Response;
    use autopilot::prune::RepoImage;
    use autopilot::AwsError;
    use serde_json::json;

    const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    const HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

    fn d(n: u32) -> String {
        format!("sha256:{n:064x}")
    }

    fn row(n: u32, index: bool, tags: &[&str]) -> RepoImage {
        RepoImage {
            digest: d(n),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            pushed_at: 0, // the epoch: older than any day
            last_pulled_at: None,
            size_bytes: Some(100),
            media_type: Some(if index { INDEX } else { "application/vnd.oci.image.manifest.v1+json" }.into()),
            ..RepoImage::default()
        }
    }

    fn deps_with(registry: impl Registry + 'static, in_use: ScriptedInUse) -> Deps {
        Deps {
            config: Config::from_lookup(autopilot::config::lookup_from(&[
                ("PRUNE_MAX_DELETE_PERCENT", "100"),
                ("PRUNE_DEFAULT_MODE", "on"),
            ]))
            .expect("valid"),
            region: "us-east-1".into(),
            in_use: Box::new(in_use),
            ecr: Box::new(registry),
            queue: None,
            api_calls: ApiCalls::default(),
        }
    }

    fn deps(registry: FakeRegistry) -> Deps {
        deps_with(registry, ScriptedInUse::always(InUse::default()))
    }

    fn lambda_uses(repository: &str, digest: &str) -> InUse {
        let mut set = InUse::default();
        set.add_reference(
            format!("{HOST}/{repository}@{digest}"),
            User::new(Source::LambdaFunction, "resize:$LATEST", "us-east-1"),
        );
        set
    }

    /// An untagged index (10) referencing an untagged index (11) referencing a
    /// platform manifest (12), all expired; `latest` (1) is kept.
    fn nested(failing: &[(u32, &str)]) -> FakeRegistry {
        FakeRegistry {
            children: [(d(10), vec![d(11)]), (d(11), vec![d(12)])].into(),
            failing: failing.iter().map(|(n, code)| (d(*n), code.to_string())).collect(),
            ..FakeRegistry::new(
                "users",
                vec![row(1, false, &["latest"]), row(10, true, &[]), row(11, true, &[]), row(12, false, &[])],
            )
        }
    }

    #[tokio::test]
    async fn parents_are_deleted_before_what_they_reference() {
        let d_ = deps(nested(&[]));
        let report = handle(&d_, json!({"dryRun": false})).await.expect("pruned");
        assert_eq!(report.images_deleted, 3);
        // the outer index, then the inner index, then the manifest
        let registry_calls = report.repositories[0].deleted.clone();
        assert_eq!(registry_calls, [d(10), d(11), d(12)]);
    }

    #[tokio::test]
    async fn when_an_index_cannot_be_deleted_what_it_references_is_kept() {
        let failing = deps(nested(&[(10, "KmsError")]));
        let error = handle(&failing, json!({"dryRun": false})).await.expect_err("a failed delete fails the run");
        assert!(error.to_string().contains("KmsError"), "{error}");
        // ECR refusing the outer index keeps it, and everything below it
        let report = handle(&deps(nested(&[(10, "ImageReferencedByManifestList")])), json!({"dryRun": false}))
            .await
            .expect("kept, not failed");
        let users = &report.repositories[0];
        assert!(users.deleted.is_empty(), "{:?}", users.deleted);
        assert_eq!(users.kept, [d(10), d(12), d(11)]);
    }

    #[tokio::test]
    async fn referrers_of_a_deleted_image_go_first_and_those_of_a_kept_image_stay() {
        // GIVEN an old untagged image (2) with a signature (3) whose own
        // signature is (4), and a kept tagged image (1) with an SBOM (5)
        let registry = FakeRegistry {
            referrers: [(d(2), vec![d(3)]), (d(3), vec![d(4)]), (d(1), vec![d(5)])].into(),
            ..FakeRegistry::new(
                "users",
                vec![
                    row(1, false, &["latest"]),
                    row(2, false, &[]),
                    row(3, false, &[]),
                    row(4, false, &[]),
                    row(5, false, &[]),
                ],
            )
        };
        let d_ = deps(registry);
        let report = handle(&d_, json!({"dryRun": false})).await.expect("pruned");
        let users = &report.repositories[0];
        // THEN the chain of referrers goes, leaves first, then the image
        assert_eq!(users.deleted, [d(4), d(3), d(2)]);
        assert!(users.protected.iter().any(|p| p.digest == d(5) && p.reason.starts_with("referrer of kept image")));
    }

    #[tokio::test]
    async fn an_unreadable_source_deletes_nothing_and_is_named() {
        let denied = SourceFailure::new(
            Source::SchedulerSchedule,
            "eu-west-1",
            "scheduler",
            AwsError {
                operation: "ListSchedules",
                code: Some("AccessDeniedException".into()),
                message: "not authorized".into(),
                retryable: false,
                source: None,
            },
        );
        let registry = nested(&[]);
        let d_ = deps_with(registry, ScriptedInUse::new(vec![Err(denied)]));
        let error = handle(&d_, json!({"dryRun": false})).await.expect_err("fails closed");
        let text = error.to_string();
        assert!(text.contains("schedulerSchedules") && text.contains("scheduler:ListSchedules"), "{text}");
        assert!(text.contains("eu-west-1"), "{text}");
    }

    #[tokio::test]
    async fn a_consumer_that_appears_after_the_plan_keeps_its_image() {
        // GIVEN two expired untagged images, nothing in use when planning,
        // and a Lambda function pinning image 3 by the time of deleting
        let registry =
            FakeRegistry::new("users", vec![row(1, false, &["latest"]), row(2, false, &[]), row(3, false, &[])]);
        let reader = ScriptedInUse::new(vec![Ok(InUse::default()), Ok(lambda_uses("users", &d(3)))]);
        let d_ = deps_with(registry, reader);
        let report = handle(&d_, json!({"dryRun": false})).await.expect("pruned");
        let users = &report.repositories[0];
        assert_eq!(users.deleted, [d(2)]);
        assert_eq!(users.protected_late.len(), 1);
        assert_eq!(users.protected_late[0].digest, d(3));
        assert!(
            users.protected_late[0].reason.contains("Lambda function resize:$LATEST"),
            "{:?}",
            users.protected_late
        );
        assert_eq!(report.in_use.reads, 2);
    }

    /// A rollback by re-tagging: between the plan and the deletion, `latest`
    /// moves from image 1 onto the expired, untagged image 3, and a Lambda
    /// function runs `users:latest`. The deletion follows the rows listed
    /// after the fresh read, not the plan's: 3 stays, 2 goes, and 1, kept by
    /// the plan, is not touched though it lost its tag.
    #[tokio::test]
    async fn an_expired_image_re_tagged_since_the_plan_for_a_user_of_that_tag_is_kept() {
        let mut registry =
            FakeRegistry::new("users", vec![row(1, false, &["latest"]), row(2, false, &[]), row(3, false, &[])]);
        registry.relisted = Some(vec![row(1, false, &[]), row(2, false, &[]), row(3, false, &["latest"])]);
        let mut by_tag = InUse::default();
        by_tag.add_reference(
            format!("{HOST}/users:latest"),
            User::new(Source::LambdaFunction, "resize:$LATEST", "us-east-1"),
        );
        let d_ = deps_with(registry, ScriptedInUse::always(by_tag));
        let report = handle(&d_, json!({"dryRun": false})).await.expect("pruned");
        let users = &report.repositories[0];
        assert_eq!(users.deleted, [d(2)]);
        assert_eq!(users.protected_late.iter().map(|p| p.digest.clone()).collect::<Vec<_>>(), [d(3)]);
        assert!(users.protected_late[0].reason.contains("resize:$LATEST"), "{:?}", users.protected_late);
    }

    /// Deleted by someone else between the plan and the second listing:
    /// nothing to delete, reported as skipped, not as a failure.
    #[tokio::test]
    async fn a_repository_deleted_before_its_second_listing_is_skipped() {
        let mut registry = FakeRegistry::new("users", vec![row(1, false, &["latest"]), row(2, false, &[])]);
        registry.gone_after_listing = true;
        let d_ = deps(registry);
        let report = handle(&d_, json!({"dryRun": false})).await.expect("a run, not an error");
        let users = &report.repositories[0];
        assert!(users.deleted.is_empty() && users.error.is_none(), "{users:?}");
        assert_eq!(users.skipped.as_deref(), Some("the repository was deleted during the run"));
        assert_eq!(report.repositories_failed, 0);
    }

    #[tokio::test]
    async fn transition_rules_archive_with_the_same_protections_and_fresh_recheck() {
        // GIVEN a policy that archives every image older than 30 days, three
        // old tagged images, one in use from the start and one whose user
        // appears between the plan and the archiving
        let policy = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"sinceImagePushed","countUnit":"days","countNumber":30},"action":{"type":"transition","targetStorageClass":"archive"}}]}"#;
        let registry =
            FakeRegistry::new("users", vec![row(1, false, &["a"]), row(2, false, &["b"]), row(3, false, &["c"])]);
        let first = lambda_uses("users", &d(1));
        let mut later = first.clone();
        later.extend(lambda_uses("users", &d(2)));
        let mut d_ = deps_with(registry, ScriptedInUse::new(vec![Ok(first), Ok(later)]));
        d_.config = Config::from_lookup(autopilot::config::lookup_from(&[
            ("PRUNE_MAX_DELETE_PERCENT", "100"),
            ("PRUNE_DEFAULT_MODE", "on"),
            ("PRUNE_POLICY", policy),
        ]))
        .expect("valid");
        let report = handle(&d_, json!({"dryRun": false})).await.expect("archived");
        let users = &report.repositories[0];
        // THEN only the unused one is archived; the late one is protectedLate
        assert_eq!(users.archived, [d(3)]);
        assert_eq!(users.protected_late.iter().map(|p| p.digest.clone()).collect::<Vec<_>>(), [d(2)]);
        assert!(users.protected.iter().any(|p| p.digest == d(1)));
        assert!(users.deleted.is_empty());
        assert_eq!(report.images_archived, 1);
    }

    #[tokio::test]
    async fn a_fresh_install_plans_and_deletes_nothing() {
        // GIVEN the configuration a new install has (no PRUNE_DEFAULT_MODE)
        let registry = FakeRegistry::new("users", vec![row(1, false, &["latest"]), row(2, false, &[])]);
        let mut d_ = deps(registry);
        d_.config =
            Config::from_lookup(autopilot::config::lookup_from(&[("PRUNE_MAX_DELETE_PERCENT", "100")])).expect("valid");
        // WHEN the schedule runs
        let schedule = json!({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}});
        let report = handle(&d_, schedule).await.expect("planned");
        // THEN the plan is reported and nothing is deleted
        let users = &report.repositories[0];
        assert_eq!((users.dry_run, users.mode.as_str()), (true, "dry-run (PRUNE_DEFAULT_MODE)"));
        assert_eq!(users.deleted, [d(2)], "the plan");
        assert_eq!(report.images_deleted, 0);
        let summary = report.summary();
        assert_eq!((summary.images_planned, summary.repositories_dry_run), (1, 1));
        // AND a manual payload without "dryRun": false is a preview too
        d_.config.default_mode = Mode::On;
        let preview = handle(&d_, json!({"repositories": ["users"]})).await.expect("preview");
        assert!(preview.dry_run && preview.repositories[0].dry_run);
    }

    #[tokio::test]
    async fn an_eventbridge_event_that_is_not_the_schedule_is_rejected_not_failed() {
        let d_ = deps(FakeRegistry::new("users", vec![row(1, false, &["latest"]), row(2, false, &[])]));
        let push = json!({"id": "e-1", "source": "aws.ecr", "detail-type": "ECR Image Action", "detail": {}});
        let answer = invoke(&d_, push, Deadline::none()).await.expect("answered");
        let Answer::Run(run) = answer else { panic!("expected a run's answer") };
        let Response::Rejected(rejected) = *run else { panic!("expected a rejection") };
        assert!(rejected.rejected.starts_with("unexpected event"), "{rejected:?}");
        // the same mistake made by hand is an error
        let manual = invoke(&d_, json!({"repository": "users"}), Deadline::none()).await.expect_err("a manual error");
        assert!(manual.to_string().starts_with("malformed event: manual request"), "{manual}");
    }

    fn registries(n: u32) -> FakeRegistries {
        FakeRegistries(
            (0..n)
                .map(|i| FakeRegistry::new(&format!("svc-{i}"), vec![row(1, false, &["latest"]), row(2, false, &[])]))
                .collect(),
        )
    }

    fn with_queue(mut d_: Deps, pairs: &[(&str, &str)], queue: FakeQueue) -> Deps {
        let mut all = vec![
            ("PRUNE_MAX_DELETE_PERCENT", "100"),
            ("PRUNE_DEFAULT_MODE", "on"),
            ("WORK_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/prune-work"),
        ];
        all.extend_from_slice(pairs);
        d_.config = Config::from_lookup(autopilot::config::lookup_from(&all)).expect("valid");
        d_.queue = Some(Box::new(queue));
        d_
    }

    fn sent_batches(sent: &std::sync::Mutex<Vec<String>>) -> Vec<Batch> {
        sent.lock().expect("sent").iter().map(|b| Batch::parse("prune-images", b).expect("ours")).collect()
    }

    fn schedule() -> Value {
        json!({"id": "evt-7", "source": "aws.events", "detail-type": "Scheduled Event", "account": "123456789012",
               "region": "us-east-1", "detail": {}})
    }

    #[tokio::test]
    async fn a_registry_larger_than_a_batch_is_fanned_out_and_nothing_is_pruned_inline() {
        let (queue, sent) = FakeQueue::new();
        let d_ = with_queue(
            deps_with(registries(5), ScriptedInUse::always(InUse::default())),
            &[("FANOUT_BATCH_SIZE", "2")],
            queue,
        );
        let report = handle(&d_, schedule()).await.expect("fanned out");
        let fan_out = report.scale.fan_out.clone().expect("fan-out");
        assert_eq!((fan_out.cycle.as_str(), fan_out.repositories, fan_out.batches), ("evt-7", 5, 3));
        assert!(report.repositories.is_empty() && report.images_deleted == 0, "the batches do the work");
        let batches = sent_batches(&sent);
        let names: Vec<String> = batches.iter().flat_map(|b| b.repositories.clone()).collect();
        assert_eq!(names, (0..5).map(|i| format!("svc-{i}")).collect::<Vec<_>>());
        assert!(batches.iter().all(|b| b.cycle == "evt-7" && !b.dry_run && b.batches == 3 && !b.deferred));
    }

    #[tokio::test]
    async fn a_registry_that_fits_in_a_batch_runs_inline_without_the_queue() {
        let (queue, sent) = FakeQueue::new();
        let d_ = with_queue(
            deps_with(registries(2), ScriptedInUse::always(InUse::default())),
            &[("FANOUT_BATCH_SIZE", "2")],
            queue,
        );
        let report = handle(&d_, schedule()).await.expect("pruned");
        assert!(report.scale.fan_out.is_none());
        assert_eq!(report.images_deleted, 2);
        assert!(sent.lock().expect("sent").is_empty());
    }

    #[tokio::test]
    async fn a_manual_preview_of_a_large_registry_fans_out_as_a_preview_with_its_policy() {
        let (queue, sent) = FakeQueue::new();
        let d_ = with_queue(
            deps_with(registries(3), ScriptedInUse::always(InUse::default())),
            &[("FANOUT_BATCH_SIZE", "1")],
            queue,
        );
        let policy = json!({"rules": [{"rulePriority": 1, "selection": {"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 5}, "action": {"type": "expire"}}]});
        handle(&d_, json!({"policy": policy.clone()})).await.expect("fanned out");
        let batches = sent_batches(&sent);
        assert_eq!(batches.len(), 3);
        assert!(batches
            .iter()
            .all(|b| b.dry_run && b.policy.as_ref() == Some(&policy) && b.cycle.starts_with("manual-")));
    }

    #[tokio::test]
    async fn near_the_deadline_nothing_starts_and_the_rest_is_handed_to_the_queue() {
        let (queue, sent) = FakeQueue::new();
        let d_ = with_queue(deps_with(registries(3), ScriptedInUse::always(InUse::default())), &[], queue);
        let deadline = Deadline::in_(std::time::Duration::from_secs(5), std::time::Duration::from_secs(60));
        let report = handle_until(&d_, schedule(), deadline).await.expect("deferred, not failed");
        assert_eq!(report.images_deleted, 0, "no repository was started");
        let deferred = report.scale.deferred.clone().expect("deferred");
        assert_eq!((deferred.repositories, deferred.handed_off), (3, true));
        assert!(report.repositories.iter().all(|r| r.deferred && r.deleted.is_empty()));
        let batches = sent_batches(&sent);
        assert_eq!(batches.len(), 1);
        assert!(batches[0].deferred && batches[0].repositories.len() == 3 && batches[0].cycle == "evt-7");
        assert_eq!(report.summary().scale.deferred.map(|d| d.repositories), Some(3));
    }

    #[tokio::test]
    async fn without_a_queue_deferred_repositories_are_reported_for_the_next_run() {
        let d_ = deps_with(registries(2), ScriptedInUse::always(InUse::default()));
        let deadline = Deadline::in_(std::time::Duration::ZERO, std::time::Duration::from_secs(1));
        let report = handle_until(&d_, json!({"dryRun": false}), deadline).await.expect("deferred");
        let deferred = report.scale.deferred.expect("deferred");
        assert_eq!((deferred.repositories, deferred.handed_off), (2, false));
        assert_eq!(deferred.millis_left, Some(0));
    }

    #[tokio::test]
    async fn a_failed_hand_off_fails_the_run_after_its_report() {
        let queue = FakeQueue { fail: true, ..FakeQueue::default() };
        let d_ = with_queue(deps_with(registries(1), ScriptedInUse::always(InUse::default())), &[], queue);
        let deadline = Deadline::in_(std::time::Duration::ZERO, std::time::Duration::from_secs(1));
        let error = handle_until(&d_, schedule(), deadline).await.expect_err("the queue refused");
        assert!(error.to_string().contains("queue unavailable"), "{error}");
    }

    #[tokio::test]
    async fn a_failed_fresh_read_stops_the_chunks_still_to_come() {
        let failure = SourceFailure::new(
            Source::ServiceDeployment,
            "us-east-1",
            "ecs",
            AwsError::unexpected("ListServiceDeployments", "down"),
        );
        // the first read works, the fresh read of the first chunk fails, any later one would work
        let script = ScriptedInUse::new(vec![Ok(InUse::default()), Err(failure), Ok(InUse::default())]);
        let d_ = deps_with(registries(REREAD_CHUNK as u32 + 3), script);
        let report = prune(&d_, json!({"dryRun": false}), Deadline::none()).await.expect("reported");
        assert_eq!(report.images_deleted, 0, "nothing deleted after the failed read");
        assert_eq!(report.repositories.len(), REREAD_CHUNK + 3);
        assert!(report.repositories.iter().all(|r| r.error.is_some()), "every repository says why");
        assert!(report.repositories[REREAD_CHUNK].error.as_deref().is_some_and(|e| e.contains("failed earlier")));
        assert!(report.in_use_failure.is_some());
    }

    #[tokio::test]
    async fn the_fresh_read_before_delete_is_one_per_chunk_of_repositories() {
        let d_ = deps_with(registries(REREAD_CHUNK as u32 + 3), ScriptedInUse::always(InUse::default()));
        let report = handle(&d_, json!({"dryRun": false})).await.expect("pruned");
        assert_eq!(report.images_deleted, REREAD_CHUNK + 3);
        // the first read, then one fresh read for each of the two chunks
        assert_eq!(report.in_use.reads, 3, "{:?}", report.in_use);
    }

    fn sqs_event(bodies: &[&str]) -> Value {
        let records: Vec<Value> = bodies
            .iter()
            .enumerate()
            .map(|(i, body)| {
                json!({"messageId": format!("m-{i}"), "receiptHandle": "r", "body": body, "eventSource": "aws:sqs",
                       "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:prune-work", "awsRegion": "us-east-1",
                       "attributes": {"ApproximateReceiveCount": "1"}})
            })
            .collect();
        json!({"Records": records})
    }

    fn batch_body(repositories: &[&str]) -> String {
        Cycle { function: "prune-images", id: "evt-7".into(), dry_run: false, policy: None }
            .split(&repositories.iter().map(|r| r.to_string()).collect::<Vec<_>>(), 200)
            .remove(0)
            .body()
    }

    #[tokio::test]
    async fn each_batch_is_pruned_and_only_a_bad_one_comes_back() {
        let (queue, sent) = FakeQueue::new();
        let registry = registries(3);
        let d_ = with_queue(deps_with(registry, ScriptedInUse::always(InUse::default())), &[], queue);
        let good = batch_body(&["svc-0", "svc-2"]);
        let answer = invoke(&d_, sqs_event(&[&good, "{\"not\": \"ours\"}"]), Deadline::none()).await.expect("answered");
        let Answer::Batches(response) = answer else { panic!("a batch response") };
        assert_eq!(response.batch_item_failures, vec![ItemFailure { item_identifier: "m-1".into() }]);
        assert!(sent.lock().expect("sent").is_empty());
    }

    #[tokio::test]
    async fn a_batch_naming_a_repository_deleted_since_prunes_the_others() {
        let (queue, _sent) = FakeQueue::new();
        let d_ = with_queue(deps_with(registries(2), ScriptedInUse::always(InUse::default())), &[], queue);
        let answer = invoke(&d_, sqs_event(&[&batch_body(&["svc-0", "gone", "svc-1"])]), Deadline::none())
            .await
            .expect("answered");
        let Answer::Batches(response) = answer else { panic!("a batch response") };
        assert!(response.batch_item_failures.is_empty(), "{response:?}");
    }

    #[tokio::test]
    async fn a_batch_whose_prune_fails_comes_back_on_its_own() {
        let (queue, _sent) = FakeQueue::new();
        let d_ = with_queue(
            deps_with(
                registries(2),
                ScriptedInUse::new(vec![Err(SourceFailure::new(
                    Source::ServiceDeployment,
                    "us-east-1",
                    "ecs",
                    AwsError::unexpected("ListClusters", "down"),
                ))]),
            ),
            &[],
            queue,
        );
        let answer = invoke(&d_, sqs_event(&[&batch_body(&["svc-0"]), &batch_body(&["svc-1"])]), Deadline::none())
            .await
            .expect("answered");
        let Answer::Batches(response) = answer else { panic!("a batch response") };
        assert_eq!(response.batch_item_failures.len(), 2, "in-use unreadable: nothing deleted, both come back");
    }

    #[tokio::test]
    async fn an_sqs_event_from_another_queue_is_refused_whole() {
        let (queue, _sent) = FakeQueue::new();
        let d_ = with_queue(deps_with(registries(1), ScriptedInUse::always(InUse::default())), &[], queue);
        let mut event = sqs_event(&[&batch_body(&["svc-0"])]);
        event["Records"][0]["eventSourceARN"] = json!("arn:aws:sqs:us-east-1:123456789012:someone-else");
        let error = invoke(&d_, event, Deadline::none()).await.expect_err("not our queue");
        assert!(error.to_string().contains("consumes only"), "{error}");
        let without = deps_with(registries(1), ScriptedInUse::always(InUse::default()));
        let error =
            invoke(&without, sqs_event(&[&batch_body(&["svc-0"])]), Deadline::none()).await.expect_err("no queue");
        assert!(error.to_string().contains("WORK_QUEUE_URL"), "{error}");
    }

    /// 10,000 repositories, some with thousands of images and long reasons:
    /// every detail line stays well under CloudWatch Logs' 256 KB event
    /// limit, and the response (the summary) far under Lambda's 6 MB.
    #[test]
    fn a_report_of_ten_thousand_repositories_stays_inside_the_limits() {
        use autopilot::report::{LOG_EVENT_MAX_BYTES, RESPONSE_MAX_BYTES};
        let digest = |r: usize, i: usize| format!("sha256:{:032x}{i:032x}", r);
        let repositories: Vec<RepositoryReport> = (0..10_000)
            .map(|r| {
                let images = if r % 1000 == 0 { 5_000 } else { 3 };
                // a few reasons naming thousands of users
                let reason = |i: usize| {
                    if r % 2000 == 0 && i < 5 {
                        "in use by service prod/s; ".repeat(2000)
                    } else {
                        "part of kept index sha256:…".to_string()
                    }
                };
                RepositoryReport {
                    repository: format!("team-{r:05}/service"),
                    mode: "on (PRUNE_DEFAULT_MODE)".into(),
                    images_seen: images * 3,
                    expired_by_rule: BTreeMap::from([(1, images)]),
                    protected: (0..images)
                        .map(|i| Protected {
                            digest: digest(r, i),
                            tags: vec![format!("build-{i}")],
                            reason: reason(i),
                            expired_by_rule: Some(1),
                            transitioned_by_rule: None,
                        })
                        .collect(),
                    deleted: (0..images).map(|i| digest(r, i + images)).collect(),
                    failed: (0..images / 10)
                        .map(|i| Failure {
                            digest: digest(r, i),
                            code: "InternalFailure".into(),
                            message: "x".repeat(300),
                        })
                        .collect(),
                    error: (r % 300 == 7).then(|| "DescribeImages failed: AccessDeniedException".to_string()),
                    bytes_reclaimed: 1_000_000,
                    ..RepositoryReport::default()
                }
            })
            .collect();
        let report = Report {
            function: "prune-images",
            trigger: "schedule",
            dry_run: false,
            policy_source: "PRUNE_POLICY",
            scale: Scale::default(),
            in_use: InUseSummary::default(),
            in_use_failure: None,
            repositories_failed: repositories.iter().filter(|r| r.error.is_some()).count(),
            images_deleted: repositories.iter().map(|r| r.deleted.len()).sum(),
            bytes_reclaimed: 10_000 * 1_000_000,
            images_archived: 0,
            images_protected: repositories.iter().map(|r| r.protected.len()).sum(),
            images_protected_late: 0,
            api_calls: BTreeMap::from([("DescribeImages".to_string(), 10_000)]),
            repositories,
        };
        let mut lines = 0;
        for (name, line) in report.detail_lines() {
            // as it is logged: a JSON string inside the log record
            let logged = serde_json::to_string(&line).expect("json").len() + 512;
            assert!(logged < LOG_EVENT_MAX_BYTES / 2, "{name}: {logged} bytes");
            let back: Value = serde_json::from_str(&line).expect("each line is JSON");
            assert_eq!(back["repository"], name);
            if name.starts_with("team-01000/") {
                // a big repository: its lists are cut and say how much
                let kept = back["deleted"].as_array().map_or(0, Vec::len);
                assert!(kept > 0 && kept < 5_000, "{kept}");
                assert_eq!(back["truncated"]["deleted"], 5_000 - kept);
            }
            lines += 1;
        }
        assert_eq!(lines, 10_000, "one line per repository");
        let summary = serde_json::to_string(&report.summary()).expect("json");
        assert!(summary.len() < 16 * 1024, "the summary is {} bytes", summary.len());
        assert!(summary.len() < RESPONSE_MAX_BYTES && summary.len() < LOG_EVENT_MAX_BYTES);
        let back: Value = serde_json::from_str(&summary).expect("json");
        assert_eq!(back["repositoriesSeen"], 10_000);
        // 34 repositories failed, 10 more had images fail: the first 20 are named
        assert_eq!(back["repositoriesFailed"], 34);
        assert_eq!(back["failures"].as_array().map(Vec::len), Some(autopilot::report::SUMMARY_LIST_MAX));
        assert_eq!(back["failuresOmitted"], 34 + 10 - autopilot::report::SUMMARY_LIST_MAX);
    }

    #[tokio::test]
    async fn a_broken_repository_is_reported_and_the_next_ones_are_pruned() {
        // GIVEN a first repository whose index cannot be read, a second one
        // healthy, and a third that refuses deletion (outside the pattern)
        let broken = FakeRegistry {
            broken_index: Some(d(10)),
            ..FakeRegistry::new("broken", vec![row(1, false, &["latest"]), row(10, true, &[]), row(2, false, &[])])
        };
        let healthy = FakeRegistry::new("healthy", vec![row(1, false, &["latest"]), row(2, false, &[])]);
        let outside = FakeRegistry {
            delete_denied: true,
            ..FakeRegistry::new("outside", vec![row(1, false, &["latest"]), row(2, false, &[])])
        };
        let d_ = deps_with(FakeRegistries(vec![broken, healthy, outside]), ScriptedInUse::always(InUse::default()));
        let report = prune(&d_, json!({"dryRun": false}), Deadline::none()).await.expect("the run goes on");
        let by_name = |n: &str| report.repositories.iter().find(|r| r.repository == n).expect("reported");
        assert!(by_name("broken").error.as_deref().unwrap_or("").contains("invalid image index"));
        assert!(by_name("broken").deleted.is_empty());
        assert_eq!(by_name("healthy").deleted, [d(2)]);
        assert!(by_name("outside").error.as_deref().unwrap_or("").contains("AccessDenied"));
        assert_eq!(report.repositories_failed, 2);
        // AND the invocation fails, naming the first failed repository
        let d_ = deps_with(
            FakeRegistries(vec![FakeRegistry {
                broken_index: Some(d(10)),
                ..FakeRegistry::new("broken", vec![row(10, true, &[])])
            }]),
            ScriptedInUse::always(InUse::default()),
        );
        let error = handle(&d_, json!({"dryRun": false})).await.expect_err("fails after the report");
        assert!(error.to_string().contains("repository broken"), "{error}");
    }
}

/// The whole handler over the real adapters and SDK clients, answered by
/// `aws-smithy-mocks`: what the emulator cannot stage — a source denied, and
/// a consumer appearing between the plan and the deletion.
#[cfg(test)]
mod mocked {
    use super::*;
    use autopilot::aws::ecr::EcrAdapter;
    use autopilot::aws::ecs::EcsAdapter;
    use autopilot::aws::events::EventBridgeAdapter;
    use autopilot::aws::lambda::LambdaAdapter;
    use autopilot::aws::scheduler::SchedulerAdapter;
    use autopilot::in_use::readers::{RegionSources, Sources};
    use aws_sdk_ecr::operation::batch_delete_image::BatchDeleteImageOutput;
    use aws_sdk_ecr::operation::describe_images::DescribeImagesOutput;
    use aws_sdk_ecr::operation::describe_repositories::DescribeRepositoriesOutput;
    use aws_sdk_ecr::operation::list_image_referrers::ListImageReferrersOutput;
    use aws_sdk_ecr::operation::list_tags_for_resource::ListTagsForResourceOutput;
    use aws_sdk_ecs::operation::list_clusters::ListClustersOutput;
    use aws_sdk_ecs::operation::list_task_definition_families::ListTaskDefinitionFamiliesOutput;
    use aws_sdk_eventbridge::operation::list_event_buses::ListEventBusesOutput;
    use aws_sdk_lambda::operation::get_function::GetFunctionOutput;
    use aws_sdk_lambda::operation::list_functions::ListFunctionsOutput;
    use aws_sdk_scheduler::operation::list_schedules::ListSchedulesOutput;
    use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
    use serde_json::json;

    const HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

    fn d(n: u32) -> String {
        format!("sha256:{n:064x}")
    }

    /// `users`: `latest` (1), and two untagged images (2, 3) from 1970.
    fn ecr_rules() -> Vec<Rule> {
        let image = |n: u32, tag: Option<&str>, pushed: i64| {
            let b = aws_sdk_ecr::types::ImageDetail::builder()
                .image_digest(d(n))
                .image_pushed_at(aws_sdk_ecr::primitives::DateTime::from_secs(pushed))
                .image_size_in_bytes(100)
                .image_manifest_media_type("application/vnd.oci.image.manifest.v1+json");
            match tag {
                Some(t) => b.image_tags(t).build(),
                None => b.build(),
            }
        };
        let now = snapshot::now();
        vec![
            mock!(aws_sdk_ecr::Client::describe_repositories).then_output(|| {
                DescribeRepositoriesOutput::builder()
                    .repositories(
                        aws_sdk_ecr::types::Repository::builder()
                            .repository_name("users")
                            .repository_arn("arn:aws:ecr:us-east-1:123456789012:repository/users")
                            .registry_id("123456789012")
                            .build(),
                    )
                    .build()
            }),
            mock!(aws_sdk_ecr::Client::list_tags_for_resource)
                .then_output(|| ListTagsForResourceOutput::builder().build()),
            mock!(aws_sdk_ecr::Client::describe_images).then_output(move || {
                DescribeImagesOutput::builder()
                    .image_details(image(1, Some("latest"), now))
                    .image_details(image(2, None, 0))
                    .image_details(image(3, None, 0))
                    .build()
            }),
            mock!(aws_sdk_ecr::Client::list_image_referrers)
                .then_output(|| ListImageReferrersOutput::builder().build()),
            mock!(aws_sdk_ecr::Client::batch_delete_image).then_output(|| BatchDeleteImageOutput::builder().build()),
        ]
    }

    fn empty_ecs() -> Vec<Rule> {
        vec![
            mock!(aws_sdk_ecs::Client::list_clusters).then_output(|| ListClustersOutput::builder().build()),
            mock!(aws_sdk_ecs::Client::list_task_definition_families)
                .then_output(|| ListTaskDefinitionFamiliesOutput::builder().build()),
        ]
    }

    fn no_buses() -> Rule {
        mock!(aws_sdk_eventbridge::Client::list_event_buses).then_output(|| ListEventBusesOutput::builder().build())
    }

    fn no_schedules() -> Rule {
        mock!(aws_sdk_scheduler::Client::list_schedules)
            .then_output(|| ListSchedulesOutput::builder().set_schedules(Some(vec![])).build().expect("valid"))
    }

    fn deps(ecr: &[Rule], ecs: &[Rule], events: &Rule, schedules: &Rule, lambda: &[Rule]) -> Deps {
        let ecr: Vec<&Rule> = ecr.iter().collect();
        let ecs: Vec<&Rule> = ecs.iter().collect();
        let lambda: Vec<&Rule> = lambda.iter().collect();
        let region = RegionSources {
            region: "us-east-1".into(),
            ecs: Box::new(EcsAdapter::from_client(mock_client!(aws_sdk_ecs, RuleMode::MatchAny, &ecs))),
            rules: Box::new(EventBridgeAdapter::from_client(mock_client!(
                aws_sdk_eventbridge,
                RuleMode::MatchAny,
                [events]
            ))),
            schedules: Box::new(SchedulerAdapter::from_client(mock_client!(
                aws_sdk_scheduler,
                RuleMode::MatchAny,
                [schedules]
            ))),
            functions: Box::new(LambdaAdapter::from_client(mock_client!(aws_sdk_lambda, RuleMode::MatchAny, &lambda))),
        };
        Deps {
            config: Config::from_lookup(autopilot::config::lookup_from(&[
                ("PRUNE_MAX_DELETE_PERCENT", "100"),
                ("PRUNE_DEFAULT_MODE", "on"),
            ]))
            .expect("valid"),
            region: "us-east-1".into(),
            in_use: Box::new(Sources { regions: vec![region], concurrency: 2 }),
            ecr: Box::new(EcrAdapter::from_client(mock_client!(aws_sdk_ecr, RuleMode::MatchAny, &ecr))),
            queue: None,
            api_calls: ApiCalls::default(),
        }
    }

    #[tokio::test]
    async fn a_denied_source_means_zero_deletes_and_names_the_source() {
        let ecr = ecr_rules();
        let denied = mock!(aws_sdk_scheduler::Client::list_schedules)
            .sequence()
            .http_status(
                403,
                Some(r#"{"__type":"AccessDeniedException","Message":"User is not authorized to perform: scheduler:ListSchedules"}"#.into()),
            )
            .build();
        let lambda =
            [mock!(aws_sdk_lambda::Client::list_functions).then_output(|| ListFunctionsOutput::builder().build())];
        let d_ = deps(&ecr, &empty_ecs(), &no_buses(), &denied, &lambda);
        let error = handle(&d_, json!({"dryRun": false})).await.expect_err("fails closed");
        let text = error.to_string();
        assert!(text.contains("schedulerSchedules"), "{text}");
        assert!(text.contains("needs scheduler:ListSchedules"), "{text}");
        assert!(text.contains("AccessDeniedException"), "{text}");
        assert_eq!(ecr[4].num_calls(), 0, "BatchDeleteImage must not be called");
        assert_eq!(ecr[2].num_calls(), 0, "nothing is even planned");
        assert_eq!(denied.num_calls(), 1, "AccessDenied is not retried");
    }

    #[tokio::test]
    async fn a_lambda_function_that_appears_between_plan_and_delete_keeps_its_image() {
        let ecr = ecr_rules();
        // the first read sees no function; the fresh one sees `resize`, pinned to image 3
        let listed = mock!(aws_sdk_lambda::Client::list_functions)
            .sequence()
            .output(|| ListFunctionsOutput::builder().build())
            .output(|| {
                ListFunctionsOutput::builder()
                    .functions(
                        aws_sdk_lambda::types::FunctionConfiguration::builder()
                            .function_name("resize")
                            .version("$LATEST")
                            .package_type(aws_sdk_lambda::types::PackageType::Image)
                            .build(),
                    )
                    .build()
            })
            .build();
        let got = mock!(aws_sdk_lambda::Client::get_function).then_output(|| {
            GetFunctionOutput::builder()
                .code(
                    aws_sdk_lambda::types::FunctionCodeLocation::builder()
                        .image_uri(format!("{HOST}/users:resize"))
                        .resolved_image_uri(format!("{HOST}/users@{}", d(3)))
                        .build(),
                )
                .build()
        });
        let d_ = deps(&ecr, &empty_ecs(), &no_buses(), &no_schedules(), &[listed, got]);
        let report = handle(&d_, json!({"dryRun": false})).await.expect("pruned");
        let users = &report.repositories[0];
        assert_eq!(users.deleted, [d(2)]);
        assert_eq!(users.protected_late.len(), 1, "{:?}", users.protected_late);
        assert_eq!(users.protected_late[0].digest, d(3));
        assert!(users.protected_late[0].reason.contains("Lambda function resize:$LATEST in us-east-1"));
        assert_eq!(ecr[4].num_calls(), 1);
        assert_eq!(report.in_use.reads, 2);
    }
}
