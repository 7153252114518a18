//! Fanning a registry out over an SQS work queue (README, "Scale").
//!
//! A scheduled run of prune-images or quota-scan that finds more repositories
//! than one batch holds (`FANOUT_BATCH_SIZE`) does not work through them
//! itself: it splits their names into [`Batch`]es, sends one message per
//! batch to its work queue (`WORK_QUEUE_URL`), and returns. The queue's
//! event source mapping hands each message back to the same function, one
//! batch an invocation, and that invocation reads what is in use afresh,
//! handles its repositories and answers which messages failed
//! ([`BatchResponse`], `ReportBatchItemFailures`): a failed batch alone comes
//! back after the visibility timeout, the others are deleted, and one that
//! keeps failing ends in the dead-letter queue. A registry that fits in one
//! batch runs inline, with no queue round trip.
//!
//! Near its deadline ([`crate::deadline`]) a run stops starting repositories
//! and sends the ones it did not start as a batch of their own
//! (`deferred: true`), so the cycle still covers every repository.

use std::future::Future;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{error, info, warn};

use crate::deadline::Deadline;
use crate::invocation::Response;
use crate::ports::{Registry, Repository, WorkQueue};
use crate::telemetry::{Metrics, Unit};
use crate::Error;

/// `FANOUT_BATCH_SIZE` when unset: repositories per batch, and the most a
/// run handles inline.
pub const DEFAULT_BATCH_SIZE: usize = 200;
/// Repository names are up to 256 characters; 500 of them stay well inside
/// an SQS message (256 KiB).
pub const MAX_BATCH_SIZE: usize = 500;

/// One message on the work queue: some repositories of one cycle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Batch {
    /// The function that sent it and must handle it.
    pub function: String,
    /// The cycle: the scheduled event's id, or `manual-<epoch ms>`.
    pub cycle: String,
    /// 1-based, of `batches`.
    pub batch: usize,
    pub batches: usize,
    pub repositories: Vec<String>,
    /// The cycle's decision, carried so every batch acts the same way.
    pub dry_run: bool,
    /// A policy the cycle's request gave (prune-images); otherwise the
    /// function's configured one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Value>,
    /// Handed on by a run that reached its deadline margin.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deferred: bool,
}

/// Where a run's repositories came from, for its report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchOf {
    pub cycle: String,
    pub batch: usize,
    pub batches: usize,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deferred: bool,
}

impl Batch {
    pub fn of(&self) -> BatchOf {
        BatchOf { cycle: self.cycle.clone(), batch: self.batch, batches: self.batches, deferred: self.deferred }
    }

    pub fn body(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A message body, checked: ours, for `function`, and sane.
    pub fn parse(function: &str, body: &str) -> Result<Batch, Error> {
        let value = serde_json::from_str::<crate::payload::Payload>(body)
            .map_err(|e| Error::malformed(format!("work-queue message: {e}")))?;
        let batch: Batch = serde_json::from_value(value.into_value())
            .map_err(|e| Error::malformed(format!("work-queue message: {e}")))?;
        if batch.function != function {
            return Err(Error::malformed(format!(
                "work-queue message for {:?}, and this is {function}",
                batch.function
            )));
        }
        if batch.batch == 0 || batch.batch > batch.batches {
            return Err(Error::malformed(format!("work-queue message: batch {} of {}", batch.batch, batch.batches)));
        }
        if batch.repositories.is_empty() || batch.repositories.len() > MAX_BATCH_SIZE {
            return Err(Error::malformed(format!(
                "work-queue message: {} repositories (1 to {MAX_BATCH_SIZE})",
                batch.repositories.len()
            )));
        }
        if let Some(bad) = batch.repositories.iter().find(|r| !is_repository_name(r)) {
            return Err(Error::malformed(format!("work-queue message: {bad:?} is not a repository name")));
        }
        Ok(batch)
    }
}

/// A function's fan-out settings, read once at cold start
/// ([`crate::config::Vars::fanout`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `WORK_QUEUE_URL`: unset, every run is inline.
    pub work_queue_url: Option<String>,
    /// `FANOUT_BATCH_SIZE`: repositories per batch, and the most a run
    /// handles inline.
    pub batch_size: usize,
    /// `DEADLINE_MARGIN_SECS`.
    pub deadline_margin: std::time::Duration,
}

impl Settings {
    /// The work queue's ARN in `region`, which its records must come from.
    pub fn queue_arn(&self, region: &str) -> Option<String> {
        self.work_queue_url.as_deref().and_then(|url| queue_arn(url, region))
    }
}

/// Where a run stands in its cycle, for its report and summary (flattened
/// into them): the batch it handled, the fan-out it made, what it deferred.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Scale {
    /// The work-queue batch this run handled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchOf>,
    /// The cycle was sent to the work queue; this run handled nothing itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fan_out: Option<FanOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deferred: Option<Deferred>,
}

/// What an invocation of prune-images or quota-scan answers: a run's
/// summary (or the rejection of an unusable EventBridge event), or for
/// work-queue messages, the ones that failed.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Answer<R> {
    Run(Box<Response<R>>),
    Batches(BatchResponse),
}

impl<R> Answer<R> {
    pub fn summary(self) -> Option<R> {
        match self {
            Answer::Run(response) => response.done(),
            Answer::Batches(_) => None,
        }
    }
}

/// What every batch of a cycle shares.
#[derive(Clone, Debug, PartialEq)]
pub struct Cycle {
    pub function: &'static str,
    pub id: String,
    pub dry_run: bool,
    pub policy: Option<Value>,
}

impl Cycle {
    /// `names` in batches of `size`, in order, numbered from 1.
    pub fn split(&self, names: &[String], size: usize) -> Vec<Batch> {
        let chunks: Vec<&[String]> = names.chunks(size.max(1)).collect();
        let batches = chunks.len();
        chunks.into_iter().enumerate().map(|(i, chunk)| self.batch(i + 1, batches, chunk.to_vec(), false)).collect()
    }

    /// Repositories a run did not start before its deadline, as batches of
    /// their own.
    pub fn deferred(&self, names: &[String], size: usize) -> Vec<Batch> {
        let chunks: Vec<&[String]> = names.chunks(size.max(1)).collect();
        let batches = chunks.len();
        chunks.into_iter().enumerate().map(|(i, chunk)| self.batch(i + 1, batches, chunk.to_vec(), true)).collect()
    }

    fn batch(&self, batch: usize, batches: usize, repositories: Vec<String>, deferred: bool) -> Batch {
        Batch {
            function: self.function.to_string(),
            cycle: self.id.clone(),
            batch,
            batches,
            repositories,
            dry_run: self.dry_run,
            policy: self.policy.clone(),
            deferred,
        }
    }
}

/// The id of a cycle started by `event_id` (the schedule's event), or by
/// hand at `now_ms`.
pub fn cycle_id(event_id: Option<&str>, now_ms: i64) -> String {
    match event_id {
        Some(id) if !id.is_empty() => id.chars().take(128).collect(),
        _ => format!("manual-{now_ms}"),
    }
}

/// An ECR repository name: lowercase letters, digits, `.`, `_`, `-` and
/// `/` between components, 2 to 256 characters.
pub fn is_repository_name(name: &str) -> bool {
    (2..=256).contains(&name.len())
        && name.split('/').all(|part| {
            !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && part.as_bytes()[0].is_ascii_alphanumeric()
        })
}

/// One record of an SQS event, as the event source mapping delivers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub message_id: String,
    pub body: String,
    /// ApproximateReceiveCount: 1 on the first delivery.
    pub receive_count: u32,
    pub queue_arn: String,
}

/// True when the payload is an SQS event: `Records` whose entries come from
/// `aws:sqs`.
pub fn is_sqs_event(payload: &Value) -> bool {
    payload.get("Records").and_then(Value::as_array).is_some_and(|records| {
        !records.is_empty() && records.iter().all(|r| r.get("eventSource").and_then(Value::as_str) == Some("aws:sqs"))
    })
}

/// The records of an SQS event, each from `queue_arn` (the function's own
/// work queue); anything else is refused whole.
pub fn records(payload: &Value, queue_arn: Option<&str>) -> Result<Vec<Record>, Error> {
    let Some(queue_arn) = queue_arn else {
        return Err(Error::UnexpectedEvent("an SQS event, and no work queue is configured (WORK_QUEUE_URL)".into()));
    };
    let list =
        payload.get("Records").and_then(Value::as_array).ok_or_else(|| Error::malformed("SQS event: no Records"))?;
    list.iter()
        .map(|r| {
            let text = |key: &str| r.get(key).and_then(Value::as_str).map(str::to_string);
            let message_id = text("messageId").ok_or_else(|| Error::malformed("SQS record without messageId"))?;
            let source = text("eventSourceARN").unwrap_or_default();
            if without_partition(&source) != without_partition(queue_arn) {
                return Err(Error::UnexpectedEvent(format!(
                    "SQS record {message_id} from {source:?}; this function consumes only {queue_arn}"
                )));
            }
            let receive_count = r
                .pointer("/attributes/ApproximateReceiveCount")
                .and_then(Value::as_str)
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            Ok(Record { message_id, body: text("body").unwrap_or_default(), receive_count, queue_arn: source })
        })
        .collect()
}

/// An ARN after its partition (`aws`, `aws-cn`, `aws-us-gov`, …), which a
/// queue URL does not tell.
fn without_partition(arn: &str) -> Option<&str> {
    let rest = arn.strip_prefix("arn:")?;
    rest.split_once(':').map(|(_, after)| after)
}

/// The queue's ARN from its URL (`https://sqs.<region>.amazonaws.com/<account>/<name>`).
pub fn queue_arn(queue_url: &str, region: &str) -> Option<String> {
    let path = queue_url.split("://").nth(1)?.split_once('/')?.1;
    let (account, name) = path.trim_end_matches('/').split_once('/')?;
    let ok =
        account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty() && !name.contains('/');
    ok.then(|| format!("arn:aws:sqs:{region}:{account}:{name}"))
}

/// A cycle too large for one run, sent to the work queue in batches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FanOut {
    pub cycle: String,
    pub repositories: usize,
    pub batches: usize,
    pub batch_size: usize,
}

/// Sends `names` to `queue` as the batches of `cycle`.
pub async fn fan_out(queue: &dyn WorkQueue, cycle: &Cycle, names: &[String], size: usize) -> Result<FanOut, Error> {
    let batches = cycle.split(names, size);
    let bodies: Vec<String> = batches.iter().map(Batch::body).collect();
    queue.send(&bodies).await?;
    info!(cycle = %cycle.id, repositories = names.len(), batches = batches.len(), "fanned out");
    Ok(FanOut { cycle: cycle.id.clone(), repositories: names.len(), batches: batches.len(), batch_size: size })
}

/// What a run did not start before its deadline.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Deferred {
    pub repositories: usize,
    /// Sent to the work queue as batches of their own (`deferred: true`);
    /// without a queue they wait for the next run.
    pub handed_off: bool,
    /// The first few, by name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub first: Vec<String>,
    /// Milliseconds left when the run stopped starting repositories.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub millis_left: Option<u64>,
}

/// The repositories a run did not start (`names`), sent on as batches of
/// their own when there is a queue. `None` when there are none; the send's
/// error is returned beside the record, so the report is written either way.
pub async fn hand_off(
    queue: Option<&dyn WorkQueue>,
    cycle: &Cycle,
    names: &[String],
    size: usize,
    deadline: Deadline,
) -> (Option<Deferred>, Result<(), Error>) {
    if names.is_empty() {
        return (None, Ok(()));
    }
    let sent = match queue {
        Some(queue) => {
            let bodies: Vec<String> = cycle.deferred(names, size).iter().map(Batch::body).collect();
            queue.send(&bodies).await.map(|()| true).map_err(Error::from)
        }
        None => Ok(false),
    };
    let deferred = Deferred {
        repositories: names.len(),
        handed_off: matches!(sent, Ok(true)),
        first: names.iter().take(10).cloned().collect(),
        millis_left: deadline.millis_left(),
    };
    warn!(deferred = names.len(), handed_off = deferred.handed_off, "deadline near: repositories deferred");
    (Some(deferred), sent.map(|_| ()))
}

/// Work-queue messages, one batch each, in order, each handed to `run`. A
/// message that fails, or that was not started because the deadline was
/// near, is answered as a batch item failure: SQS hands it back after the
/// visibility timeout, and after `maxReceiveCount` deliveries moves it to
/// the dead-letter queue. A message that is not a batch of ours fails the
/// same way (it ends in the dead-letter queue, kept for a look) and is
/// counted in `EventsRejected`. An event that is not from `queue_arn` is
/// refused whole.
pub async fn consume<F, Fut>(
    function: &'static str,
    metrics_namespace: &str,
    queue_arn: Option<&str>,
    payload: &Value,
    deadline: Deadline,
    run: F,
) -> Result<BatchResponse, Error>
where
    F: Fn(Batch) -> Fut,
    Fut: Future<Output = Result<(), Error>>,
{
    let mut response = BatchResponse::default();
    for record in records(payload, queue_arn)? {
        let failed = ItemFailure { item_identifier: record.message_id.clone() };
        let batch = match Batch::parse(function, &record.body) {
            Ok(batch) => batch,
            Err(e) => {
                error!(message_id = %record.message_id, receive_count = record.receive_count, error = %e,
                       "work-queue message rejected: it goes to the dead-letter queue after its retries");
                Metrics::new(metrics_namespace)
                    .dimension("Function", function)
                    .put("EventsRejected", 1.0, Unit::Count)
                    .emit();
                response.batch_item_failures.push(failed);
                continue;
            }
        };
        if deadline.expiring() {
            warn!(message_id = %record.message_id, "deadline near: batch not started, it comes back");
            response.batch_item_failures.push(failed);
            continue;
        }
        let of = batch.of();
        info!(message_id = %record.message_id, receive_count = record.receive_count, batch = ?of, "batch");
        if let Err(e) = run(batch).await {
            error!(message_id = %record.message_id, batch = ?of, error = %e, "batch failed: it comes back on its own");
            response.batch_item_failures.push(failed);
        }
    }
    Ok(response)
}

/// The named repositories (every one when `names` is empty), with their tags
/// when `with_tags`. A repository a batch names (`in_batch`) that has been
/// deleted since the cycle began is left out, not an error: the cycle's
/// other repositories still need handling. Named by hand, a missing one is
/// `NotFound`.
pub async fn describe(
    registry: &dyn Registry,
    names: &[String],
    with_tags: bool,
    in_batch: bool,
) -> Result<Vec<Repository>, Error> {
    let not_found = |e: &crate::AwsError| e.code_is("RepositoryNotFoundException");
    match registry.repositories(names, with_tags).await {
        Ok(found) => Ok(found),
        Err(e) if not_found(&e) && in_batch => {
            let mut found = Vec::with_capacity(names.len());
            for name in names {
                match registry.repositories(std::slice::from_ref(name), with_tags).await {
                    Ok(one) => found.extend(one),
                    Err(e) if not_found(&e) => info!(repository = %name, "deleted since the cycle began"),
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(found)
        }
        Err(e) if not_found(&e) => Err(Error::NotFound(format!("repository in {names:?}: {}", e.message))),
        Err(e) => Err(e.into()),
    }
}

/// The answer to an SQS event: the messages that failed and must come back.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BatchResponse {
    #[serde(rename = "batchItemFailures")]
    pub batch_item_failures: Vec<ItemFailure>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ItemFailure {
    #[serde(rename = "itemIdentifier")]
    pub item_identifier: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cycle() -> Cycle {
        Cycle { function: "prune-images", id: "e-1".into(), dry_run: false, policy: None }
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("team/svc-{i:05}")).collect()
    }

    #[test]
    fn every_repository_is_in_exactly_one_batch() {
        for (n, size) in [(1, 200), (200, 200), (201, 200), (10_000, 200), (7, 3)] {
            let all = names(n);
            let batches = cycle().split(&all, size);
            assert_eq!(batches.len(), n.div_ceil(size));
            assert!(batches.iter().all(|b| b.batches == batches.len() && b.repositories.len() <= size));
            let again: Vec<String> = batches.iter().flat_map(|b| b.repositories.clone()).collect();
            assert_eq!(again, all, "{n} in batches of {size}");
            assert_eq!(batches.iter().map(|b| b.batch).collect::<Vec<_>>(), (1..=batches.len()).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_batch_survives_the_queue() {
        let batch = Cycle { policy: Some(json!({"rules": []})), ..cycle() }.split(&names(3), 2).remove(1);
        assert_eq!(Batch::parse("prune-images", &batch.body()).expect("ours"), batch);
        assert!(!batch.body().contains("deferred"), "only deferred batches say so");
        let deferred = cycle().deferred(&names(3), 200).remove(0);
        assert!(Batch::parse("prune-images", &deferred.body()).expect("ours").deferred);
    }

    #[test]
    fn a_message_that_is_not_ours_is_refused() {
        let good = cycle().split(&names(2), 200).remove(0);
        let mut other = good.clone();
        other.function = "quota-scan".into();
        for (body, expected) in [
            ("not json".to_string(), "work-queue message"),
            (other.body(), "for \"quota-scan\""),
            (json!({"function": "prune-images", "cycle": "c", "batch": 0, "batches": 1, "repositories": ["a1"], "dryRun": false}).to_string(), "batch 0 of 1"),
            (json!({"function": "prune-images", "cycle": "c", "batch": 1, "batches": 1, "repositories": [], "dryRun": false}).to_string(), "0 repositories"),
            (json!({"function": "prune-images", "cycle": "c", "batch": 1, "batches": 1, "repositories": ["Bad Name"], "dryRun": false}).to_string(), "not a repository name"),
            (json!({"function": "prune-images", "cycle": "c", "batch": 1, "batches": 1, "repositories": ["ok"]}).to_string(), "missing field `dryRun`"),
            (json!({"function": "prune-images", "cycle": "c", "batch": 1, "batches": 1, "repositories": ["ok"], "dryRun": false, "extra": 1}).to_string(), "unknown field"),
            (r#"{"function":"prune-images","function":"prune-images"}"#.to_string(), "duplicate key"),
        ] {
            let error = Batch::parse("prune-images", &body).expect_err(&body).to_string();
            assert!(error.contains(expected), "{body} → {error}");
        }
    }

    #[test]
    fn repository_names() {
        for good in ["users", "team/users", "a.b_c-d/e2"] {
            assert!(is_repository_name(good), "{good}");
        }
        for bad in ["", "a", "Users", "team//users", "/users", "users/", "-users", "us ers", "users\n"] {
            assert!(!is_repository_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn records_come_from_our_queue_only() {
        let arn = "arn:aws:sqs:us-east-1:123456789012:prune-work";
        let event = |source: &str| {
            json!({"Records": [{"messageId": "m-1", "receiptHandle": "r", "body": "{}", "eventSource": "aws:sqs",
                    "eventSourceARN": source, "awsRegion": "us-east-1", "attributes": {"ApproximateReceiveCount": "2"}}]})
        };
        assert!(is_sqs_event(&event(arn)));
        assert!(!is_sqs_event(&json!({"Records": []})));
        assert!(!is_sqs_event(&json!({"source": "aws.events", "detail-type": "Scheduled Event"})));
        let got = records(&event(arn), Some(arn)).expect("ours");
        assert_eq!((got[0].message_id.as_str(), got[0].receive_count), ("m-1", 2));
        let china = "arn:aws-cn:sqs:us-east-1:123456789012:prune-work";
        assert_eq!(records(&event(china), Some(arn)).expect("ours, in another partition").len(), 1);
        let other = records(&event("arn:aws:sqs:us-east-1:123456789012:other"), Some(arn)).expect_err("not ours");
        assert!(records(&event("not an arn"), Some(arn)).is_err());
        assert!(other.to_string().contains("consumes only"), "{other}");
        assert!(records(&event(arn), None).expect_err("no queue").to_string().contains("WORK_QUEUE_URL"));
    }

    #[test]
    fn queue_arn_from_url() {
        assert_eq!(
            queue_arn("https://sqs.us-east-1.amazonaws.com/123456789012/prune-work", "us-east-1").as_deref(),
            Some("arn:aws:sqs:us-east-1:123456789012:prune-work")
        );
        assert_eq!(
            queue_arn("http://127.0.0.1:5000/123456789012/q", "eu-west-1").as_deref(),
            Some("arn:aws:sqs:eu-west-1:123456789012:q")
        );
        assert_eq!(queue_arn("not a url", "us-east-1"), None);
        assert_eq!(queue_arn("https://sqs.us-east-1.amazonaws.com/prune-work", "us-east-1"), None);
    }

    #[test]
    fn the_batch_response_is_what_lambda_reads() {
        let response = BatchResponse { batch_item_failures: vec![ItemFailure { item_identifier: "m-1".into() }] };
        assert_eq!(
            serde_json::to_value(&response).expect("json"),
            json!({"batchItemFailures": [{"itemIdentifier": "m-1"}]})
        );
    }
}
