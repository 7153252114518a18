//! The ECR push event (EventBridge `ECR Image Action`), and the manual
//! preview request. Only a successful push of a tagged image is acted on;
//! anything else well-formed is an [`Input::Ignore`] with its reason.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use serde::Deserialize;
use serde_json::Value;

use autopilot::deploy::Push;
use autopilot::image_ref::{is_digest, is_valid_tag};
use autopilot::invocation::is_eventbridge;
use autopilot::Error;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A successful push of a tagged image.
    Push { push: Push, manifest_media_type: Option<String>, artifact_media_type: Option<String> },
    /// An `ECS Deployment State Change`: how a rollout ended.
    Rollout(RolloutEvent),
    /// A well-formed event that asks for nothing: a failure, a delete, the
    /// untagged child manifest of a multi-arch push.
    Ignore { event_id: String, reason: String },
    /// An operator's "what would a push of this tag do" (always a dry run
    /// unless `dryRun` is false).
    Manual(ManualRequest),
}

/// The end (or progress) of an ECS service deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutEvent {
    pub event_id: String,
    /// `SERVICE_DEPLOYMENT_IN_PROGRESS`, `_COMPLETED` or `_FAILED`.
    pub event_name: String,
    pub deployment_id: String,
    pub service_arn: String,
    pub cluster: String,
    pub reason: Option<String>,
}

/// The `detail` of an `ECS Deployment State Change` event.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeploymentStateChange {
    event_name: String,
    deployment_id: String,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManualRequest {
    pub repository: String,
    pub tag: String,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

/// The `detail` of an `ECR Image Action` event.
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ImageAction {
    action_type: String,
    result: String,
    repository_name: String,
    #[serde(default)]
    image_digest: Option<String>,
    #[serde(default)]
    image_tag: Option<String>,
    #[serde(default)]
    manifest_media_type: Option<String>,
    #[serde(default)]
    artifact_media_type: Option<String>,
}

impl Input {
    pub fn parse(payload: Value) -> Result<Input, Error> {
        let Value::Object(_) = &payload else {
            return Err(Error::malformed("expected a JSON object (an EventBridge event or a manual request)"));
        };
        if !is_eventbridge(&payload) {
            let request: ManualRequest = serde_json::from_value(payload)
                .map_err(|e| Error::malformed(format!("manual request: {e} (fields: repository, tag, dryRun)")))?;
            if request.repository.trim().is_empty() || !is_valid_tag(&request.tag) {
                return Err(Error::malformed(
                    "manual request: repository must be set and tag must be a valid image tag",
                ));
            }
            return Ok(Input::Manual(request));
        }
        let event: EventBridgeEvent<Value> =
            serde_json::from_value(payload).map_err(|e| Error::malformed(format!("EventBridge envelope: {e}")))?;
        if event.source == "aws.ecs" && event.detail_type == "ECS Deployment State Change" {
            return rollout(event);
        }
        if event.source != "aws.ecr" || event.detail_type != "ECR Image Action" {
            return Err(Error::UnexpectedEvent(format!(
                "source {:?} with detail-type {:?}; deploy-on-push handles aws.ecr \"ECR Image Action\" and aws.ecs \"ECS Deployment State Change\" events",
                event.source, event.detail_type
            )));
        }
        let event_id =
            event.id.clone().filter(|id| !id.is_empty()).ok_or_else(|| Error::malformed("event has no id"))?;
        let detail: ImageAction = serde_json::from_value(event.detail)
            .map_err(|e| Error::malformed(format!("ECR Image Action detail: {e}")))?;
        let ignore = |reason: String| Ok(Input::Ignore { event_id: event_id.clone(), reason });
        if detail.action_type != "PUSH" {
            return ignore(format!("action-type {} is not a push", detail.action_type));
        }
        if detail.result != "SUCCESS" {
            return ignore(format!("the push did not succeed (result {})", detail.result));
        }
        let tag = detail.image_tag.unwrap_or_default();
        if tag.is_empty() {
            return ignore(
                "untagged push (a child manifest of a multi-arch image): the tagged index is deployed".into(),
            );
        }
        let digest = detail.image_digest.unwrap_or_default();
        if !is_digest(&digest) {
            return Err(Error::malformed(format!("image-digest {digest:?} is not sha256:<64 hex digits>")));
        }
        if !is_valid_tag(&tag) || detail.repository_name.trim().is_empty() {
            return Err(Error::malformed(format!(
                "repository {:?} or tag {tag:?} is not valid",
                detail.repository_name
            )));
        }
        let (Some(account), Some(region)) = (event.account, event.region) else {
            return Err(Error::malformed("event has no account or region"));
        };
        Ok(Input::Push {
            push: Push { account, region, repository: detail.repository_name, digest, tag, event_id },
            manifest_media_type: detail.manifest_media_type,
            artifact_media_type: detail.artifact_media_type,
        })
    }
}

fn rollout(event: EventBridgeEvent<Value>) -> Result<Input, Error> {
    let event_id = event.id.clone().filter(|id| !id.is_empty()).ok_or_else(|| Error::malformed("event has no id"))?;
    let detail: DeploymentStateChange = serde_json::from_value(event.detail)
        .map_err(|e| Error::malformed(format!("ECS Deployment State Change detail: {e}")))?;
    let service_arn = event
        .resources
        .iter()
        .flatten()
        .find(|r| r.starts_with("arn:") && r.contains(":service/"))
        .cloned()
        .ok_or_else(|| Error::malformed("ECS Deployment State Change: resources name no service ARN"))?;
    // arn:aws:ecs:<region>:<account>:service/<cluster>/<service>
    let cluster = service_arn
        .split_once(":service/")
        .and_then(|(prefix, rest)| Some(format!("{prefix}:cluster/{}", rest.split_once('/')?.0)))
        .ok_or_else(|| Error::malformed(format!("{service_arn} is not a service ARN with its cluster")))?;
    if !detail.deployment_id.starts_with("ecs-svc/") {
        return Err(Error::malformed(format!("deploymentId {:?} is not ecs-svc/<id>", detail.deployment_id)));
    }
    Ok(Input::Rollout(RolloutEvent {
        event_id,
        event_name: detail.event_name,
        deployment_id: detail.deployment_id,
        service_arn,
        cluster,
        reason: detail.reason,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fixture(name: &str) -> Value {
        let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn documented_push_is_a_push() {
        let Input::Push { push, .. } = Input::parse(fixture("deploy-on-push-push.json")).expect("parses") else {
            panic!("expected a push")
        };
        assert_eq!((push.repository.as_str(), push.tag.as_str()), ("users", "latest"));
        assert_eq!((push.account.as_str(), push.region.as_str()), ("123456789012", "us-east-1"));
    }

    #[test]
    fn failures_deletes_and_children_are_ignored_with_a_reason() {
        for (file, expected) in [
            ("deploy-on-push-push-failed.json", "the push did not succeed"),
            ("deploy-on-push-delete.json", "action-type DELETE is not a push"),
            ("deploy-on-push-multiarch-child-1.json", "untagged push"),
        ] {
            match Input::parse(fixture(file)).expect(file) {
                Input::Ignore { reason, .. } => assert!(reason.starts_with(expected), "{file}: {reason}"),
                other => panic!("{file}: {other:?}"),
            }
        }
        assert!(matches!(
            Input::parse(fixture("deploy-on-push-multiarch-index.json")).expect("index"),
            Input::Push { manifest_media_type: Some(_), .. }
        ));
    }

    #[test]
    fn documented_deployment_state_changes_parse() {
        let Input::Rollout(failed) = Input::parse(fixture("deploy-on-push-deployment-failed.json")).expect("parses")
        else {
            panic!("expected a rollout")
        };
        assert_eq!(failed.event_name, "SERVICE_DEPLOYMENT_FAILED");
        assert_eq!(failed.service_arn, "arn:aws:ecs:us-east-1:123456789012:service/microservices/users");
        assert_eq!(failed.cluster, "arn:aws:ecs:us-east-1:123456789012:cluster/microservices");
        assert!(failed.reason.as_deref().unwrap_or_default().contains("circuit breaker"));
        let mut no_service = fixture("deploy-on-push-deployment-failed.json");
        no_service["resources"] = json!([]);
        assert!(Input::parse(no_service).unwrap_err().to_string().contains("no service ARN"));
    }

    #[test]
    fn malformed_events_are_errors() {
        let mut bad_digest = fixture("deploy-on-push-push.json");
        bad_digest["detail"]["image-digest"] = json!("sha256:123");
        let mut no_repo = fixture("deploy-on-push-push.json");
        no_repo["detail"].as_object_mut().expect("detail").remove("repository-name");
        let mut bad_tag = fixture("deploy-on-push-push.json");
        bad_tag["detail"]["image-tag"] = json!("-bad tag");
        let cases = [
            (json!(null), "malformed event: expected a JSON object"),
            (bad_digest, "malformed event: image-digest"),
            (no_repo, "malformed event: ECR Image Action detail: missing field `repository-name`"),
            (bad_tag, "malformed event: repository"),
            (
                json!({"source": "aws.ecs", "detail-type": "AWS API Call via CloudTrail", "detail": {}}),
                "unexpected event",
            ),
            (json!({"repository": "users"}), "malformed event: manual request: missing field `tag`"),
        ];
        for (payload, expected) in cases {
            let err = Input::parse(payload.clone()).expect_err("rejected").to_string();
            assert!(err.starts_with(expected), "{payload} → {err}");
        }
    }
}
