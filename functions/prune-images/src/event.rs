//! What invoked us: the daily schedule, or an operator's manual request
//! `{"dryRun": true, "repositories": ["users"], "policy": {...}}`. A manual
//! request is a preview unless it says `"dryRun": false`; the schedule acts.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use serde::Deserialize;
use serde_json::Value;

use autopilot::fanout::{Batch, BatchOf};
use autopilot::invocation::is_eventbridge;
use autopilot::lifecycle::Policy;
use autopilot::Error;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// `schedule`, `manual` or `batch` (a work-queue message).
    pub trigger: &'static str,
    pub dry_run: Option<bool>,
    pub repositories: Vec<String>,
    /// A policy to preview instead of `PRUNE_POLICY`.
    pub policy: Option<Policy>,
    /// The policy as given, carried to every batch of a fanned-out cycle.
    pub policy_doc: Option<Value>,
    /// The scheduled event's id: the cycle's id.
    pub event_id: Option<String>,
    /// The batch this run handles, for a work-queue message.
    pub batch: Option<BatchOf>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Manual {
    #[serde(default)]
    dry_run: Option<bool>,
    #[serde(default)]
    repositories: Option<Vec<String>>,
    #[serde(default)]
    policy: Option<Value>,
}

impl Request {
    pub fn parse(payload: Value) -> Result<Request, Error> {
        let Value::Object(_) = &payload else {
            return Err(Error::malformed("expected a JSON object (the schedule's event or a manual request)"));
        };
        if is_eventbridge(&payload) {
            let event: EventBridgeEvent<Value> =
                serde_json::from_value(payload).map_err(|e| Error::malformed(format!("EventBridge envelope: {e}")))?;
            if (event.source.as_str(), event.detail_type.as_str()) != ("aws.events", "Scheduled Event") {
                return Err(Error::UnexpectedEvent(format!(
                    "source {:?} with detail-type {:?}; prune-images runs on its schedule or a manual request",
                    event.source, event.detail_type
                )));
            }
            return Ok(Request { trigger: "schedule", event_id: event.id, ..Request::default() });
        }
        let manual: Manual = serde_json::from_value(payload)
            .map_err(|e| Error::malformed(format!("manual request: {e} (fields: dryRun, repositories, policy)")))?;
        let repositories = manual.repositories.unwrap_or_default();
        if repositories.iter().any(|r| r.trim().is_empty()) {
            return Err(Error::malformed("manual request: repositories holds an empty name"));
        }
        let policy = match &manual.policy {
            Some(doc) => Some(Policy::from_value(doc).map_err(|e| Error::malformed(format!("manual request: {e}")))?),
            None => None,
        };
        Ok(Request {
            trigger: "manual",
            dry_run: manual.dry_run,
            repositories,
            policy,
            policy_doc: manual.policy,
            ..Request::default()
        })
    }

    /// A work-queue message's batch, already checked by [`Batch::parse`].
    pub fn of_batch(batch: Batch) -> Result<Request, Error> {
        let policy = match &batch.policy {
            Some(doc) => {
                Some(Policy::from_value(doc).map_err(|e| Error::malformed(format!("work-queue message: {e}")))?)
            }
            None => None,
        };
        Ok(Request {
            trigger: "batch",
            dry_run: Some(batch.dry_run),
            policy,
            event_id: None,
            batch: Some(batch.of()),
            policy_doc: batch.policy,
            repositories: batch.repositories,
        })
    }

    /// The one rule for manual payloads: a preview unless it says
    /// `"dryRun": false` (with or without a policy). A batch carries its
    /// cycle's decision, always explicit. The schedule acts.
    pub fn is_dry_run(&self) -> bool {
        self.trigger != "schedule" && self.dry_run != Some(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schedule_and_manual() {
        let schedule = json!({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}});
        assert_eq!(Request::parse(schedule).expect("ok").trigger, "schedule");
        assert!(
            !Request::parse(
                json!({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}, "dryRun": true})
            )
            .expect("ok")
            .is_dry_run(),
            "the schedule acts"
        );
        let manual = Request::parse(json!({"repositories": ["users"]})).expect("ok");
        assert_eq!(manual.repositories, ["users"]);
        assert!(manual.is_dry_run(), "a manual payload is a preview");
        assert!(Request::parse(json!({})).expect("ok").is_dry_run(), "even an empty one");
        assert!(!Request::parse(json!({"dryRun": false})).expect("ok").is_dry_run());
        assert!(Request::parse(json!({"dryRun": true})).expect("ok").is_dry_run());
        let preview = Request::parse(json!({"policy": autopilot::lifecycle::DEFAULT_POLICY})).expect("ok");
        assert!(preview.is_dry_run(), "a policy given as a string is a preview");
    }

    #[test]
    fn bad_requests_name_the_problem() {
        for (payload, expected) in [
            (json!(1), "malformed event: expected a JSON object"),
            (json!({"repository": "users"}), "malformed event: manual request: unknown field `repository`"),
            (json!({"repositories": [""]}), "malformed event: manual request: repositories holds an empty name"),
            (
                json!({"policy": {"rules": [{"rulePriority": 1, "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1}, "action": {"type": "delete"}}]}}),
                "malformed event: manual request: rule 1 (rulePriority 1): action type \"delete\"",
            ),
            (json!({"source": "aws.ecr", "detail-type": "ECR Image Action", "detail": {}}), "unexpected event"),
        ] {
            let err = Request::parse(payload.clone()).expect_err("rejected").to_string();
            assert!(err.starts_with(expected), "{payload} → {err}");
        }
    }
}
