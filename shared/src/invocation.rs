//! What an invocation answers, the same way in every function.
//!
//! Lambda's asynchronous invocations (EventBridge rules and schedules) are
//! retried twice on any error, whatever its `errorType`, and then sent to the
//! failure queue. A malformed or unexpected EventBridge event fails the same
//! way every time, so retrying it only repeats the work and the noise. Such
//! an event is therefore *rejected*: logged at ERROR, counted in the
//! `EventsRejected` metric (which an alarm watches), and answered
//! successfully, so Lambda does not retry it. Every other failure still
//! fails the invocation: a retryable one is worth the retries, and a denied
//! or missing resource should reach the failure queue.
//!
//! A manual invocation (anything without the EventBridge envelope) gets its
//! error back, whatever it is: the operator is there to read it.

use serde::Serialize;
use serde_json::Value;
use tracing::error;

use crate::telemetry::{Metrics, Unit};
use crate::Error;

/// The fields of the EventBridge envelope we name in logs and answers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail_type: Option<String>,
}

impl Envelope {
    /// The envelope of an EventBridge-delivered payload: an object with both
    /// `source` and `detail-type`, which EventBridge always sends. `None`
    /// for anything else, which is a manual invocation.
    pub fn of(payload: &Value) -> Option<Envelope> {
        if !is_eventbridge(payload) {
            return None;
        }
        let text = |key: &str| payload.get(key).and_then(Value::as_str).map(|s| s.chars().take(256).collect());
        Some(Envelope { event_id: text("id"), source: text("source"), detail_type: text("detail-type") })
    }
}

/// True when the payload carries the EventBridge envelope (`source` and
/// `detail-type`); every function routes on this, so the event path and the
/// manual path are told apart the same way everywhere.
pub fn is_eventbridge(payload: &Value) -> bool {
    payload.as_object().is_some_and(|o| o.contains_key("source") && o.contains_key("detail-type"))
}

/// The answer to an EventBridge event that was not acted on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejected {
    pub function: &'static str,
    /// Always `rejected`.
    pub trigger: &'static str,
    #[serde(flatten)]
    pub envelope: Envelope,
    /// The error a manual invocation of the same payload would get.
    pub rejected: String,
}

/// A function's report, or the rejection of an event it could not use.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Response<R> {
    Done(R),
    Rejected(Rejected),
}

impl<R> Response<R> {
    pub fn done(self) -> Option<R> {
        match self {
            Response::Done(r) => Some(r),
            Response::Rejected(_) => None,
        }
    }
}

/// Whether an error means the event itself is unusable: malformed, or well
/// formed but not one this function handles.
pub fn is_rejection(error: &Error) -> bool {
    matches!(error, Error::MalformedEvent(_) | Error::UnexpectedEvent(_))
}

/// Turns a handler's result into the invocation's answer: an unusable
/// EventBridge event becomes a logged, counted [`Rejected`] success; every
/// other result is passed on as it is.
pub fn settle<R>(
    function: &'static str,
    metrics_namespace: &str,
    envelope: Option<Envelope>,
    result: Result<R, Error>,
) -> Result<Response<R>, Error> {
    let error = match result {
        Ok(report) => return Ok(Response::Done(report)),
        Err(error) => error,
    };
    let Some(envelope) = envelope.filter(|_| is_rejection(&error)) else {
        return Err(error);
    };
    error!(
        event_id = envelope.event_id.as_deref().unwrap_or_default(),
        source = envelope.source.as_deref().unwrap_or_default(),
        detail_type = envelope.detail_type.as_deref().unwrap_or_default(),
        error = %error,
        "event rejected: not retried (EventsRejected)"
    );
    rejected_metrics(function, metrics_namespace, &envelope).emit();
    Ok(Response::Rejected(Rejected { function, trigger: "rejected", envelope, rejected: error.to_string() }))
}

fn rejected_metrics(function: &str, namespace: &str, envelope: &Envelope) -> Metrics {
    let mut m = Metrics::new(namespace).dimension("Function", function);
    m.put("EventsRejected", 1.0, Unit::Count);
    for (key, value) in [("source", &envelope.source), ("detailType", &envelope.detail_type)] {
        if let Some(value) = value {
            m.property(key, Value::String(value.clone()));
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn push_without_detail() -> Value {
        json!({"version": "0", "id": "e-1", "source": "aws.ecr", "detail-type": "ECR Image Action", "account": "123456789012"})
    }

    #[test]
    fn the_envelope_needs_source_and_detail_type() {
        assert!(is_eventbridge(&push_without_detail()));
        assert!(!is_eventbridge(&json!({"source": "aws.ecr"})));
        assert!(!is_eventbridge(&json!({"detail-type": "Scheduled Event"})));
        assert!(!is_eventbridge(&json!(["source", "detail-type"])));
        let envelope = Envelope::of(&push_without_detail()).expect("envelope");
        assert_eq!(envelope.event_id.as_deref(), Some("e-1"));
        assert_eq!(envelope.detail_type.as_deref(), Some("ECR Image Action"));
    }

    #[test]
    fn a_malformed_eventbridge_event_is_answered_and_a_manual_one_errors() {
        let malformed = || Err::<(), _>(Error::malformed("ECR Image Action detail: missing field `repository-name`"));
        let answer = settle("deploy-on-push", "N", Envelope::of(&push_without_detail()), malformed())
            .expect("answered successfully");
        let Response::Rejected(rejected) = answer else { panic!("expected a rejection") };
        assert_eq!(rejected.trigger, "rejected");
        assert!(rejected.rejected.starts_with("malformed event: ECR Image Action detail"), "{rejected:?}");
        let text = serde_json::to_value(&rejected).expect("json");
        assert_eq!(text["source"], "aws.ecr");
        assert_eq!(text["eventId"], "e-1");
        // the same error without the envelope is the invocation's error
        let manual = settle("deploy-on-push", "N", Envelope::of(&json!({"repository": "users"})), malformed());
        assert!(matches!(manual, Err(Error::MalformedEvent(_))));
        let unexpected = settle(
            "prune-images",
            "N",
            Envelope::of(&push_without_detail()),
            Err::<(), _>(Error::UnexpectedEvent("source \"aws.ecr\"".into())),
        );
        assert!(matches!(unexpected, Ok(Response::Rejected(_))));
    }

    #[test]
    fn other_failures_of_an_eventbridge_event_still_fail() {
        let throttled = crate::AwsError {
            operation: "DescribeImages",
            code: Some("ThrottlingException".into()),
            message: "Rate exceeded".into(),
            retryable: true,
            source: None,
        };
        let envelope = || Envelope::of(&push_without_detail());
        let retryable = settle("quota-scan", "N", envelope(), Err::<(), _>(throttled.into()));
        assert!(matches!(retryable, Err(ref e) if e.is_retryable()));
        let missing = settle("log-groups", "N", envelope(), Err::<(), _>(Error::NotFound("cluster x".into())));
        assert!(matches!(missing, Err(Error::NotFound(_))));
    }

    #[test]
    fn the_metric_is_one_events_rejected_count_per_function() {
        let envelope = Envelope::of(&push_without_detail()).expect("envelope");
        let docs = rejected_metrics("deploy-on-push", "ECRAutopilot", &envelope).documents(0);
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0]["EventsRejected"], 1.0);
        assert_eq!(docs[0]["Function"], "deploy-on-push");
        assert_eq!(docs[0]["detailType"], "ECR Image Action");
    }
}
