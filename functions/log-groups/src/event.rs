//! What invoked us: an ECS API call seen by CloudTrail, the schedule, or an
//! operator's manual payload. Anything else is a clear, non-retryable error
//! raised before any AWS call.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use serde::Deserialize;
use serde_json::Value;

use autopilot::invocation::is_eventbridge;
use autopilot::Error;

/// The ECS API calls whose CloudTrail events we act on.
pub const API_CALLS: &[&str] = &["RegisterTaskDefinition", "CreateService", "UpdateService"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The EventBridge schedule: sweep every service.
    Schedule,
    /// An ECS API call: ensure the groups of the task definitions it touched.
    ApiCall(ApiCall),
    /// `{"dryRun": true, "clusters": [...], "taskDefinitions": [...]}`.
    Manual(ManualRequest),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiCall {
    pub event_id: Option<String>,
    pub event_name: String,
    /// CloudTrail's `errorCode`: the call failed and changed nothing.
    pub error_code: Option<String>,
    pub cluster: Option<String>,
    pub service: Option<String>,
    /// The task definition named by the call (ARN or `family[:revision]`).
    pub task_definition: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManualRequest {
    #[serde(default)]
    pub dry_run: Option<bool>,
    /// Clusters to sweep instead of `CLUSTERS`.
    #[serde(default)]
    pub clusters: Option<Vec<String>>,
    /// Task definitions to ensure (ARNs or `family[:revision]`), no sweep.
    #[serde(default)]
    pub task_definitions: Option<Vec<String>>,
}

impl Trigger {
    pub fn parse(payload: Value) -> Result<Trigger, Error> {
        let Value::Object(_) = &payload else {
            return Err(Error::malformed(format!(
                "expected a JSON object (an EventBridge event or a manual request), got {}",
                kind_of(&payload)
            )));
        };
        if !is_eventbridge(&payload) {
            let request: ManualRequest = serde_json::from_value(payload).map_err(|e| {
                Error::malformed(format!("manual request: {e} (accepted fields: dryRun, clusters, taskDefinitions)"))
            })?;
            request.validate()?;
            return Ok(Trigger::Manual(request));
        }
        let event: EventBridgeEvent<Value> =
            serde_json::from_value(payload).map_err(|e| Error::malformed(format!("EventBridge envelope: {e}")))?;
        match (event.source.as_str(), event.detail_type.as_str()) {
            ("aws.events", "Scheduled Event") => Ok(Trigger::Schedule),
            ("aws.ecs", "AWS API Call via CloudTrail") => ApiCall::from_detail(event.detail).map(Trigger::ApiCall),
            (source, detail_type) => Err(Error::UnexpectedEvent(format!(
                "source {source:?} with detail-type {detail_type:?}; log-groups handles ECS CloudTrail events \
                 ({}), the schedule and manual requests",
                API_CALLS.join(", ")
            ))),
        }
    }

    pub fn name(&self) -> String {
        match self {
            Trigger::Schedule => "schedule".into(),
            Trigger::ApiCall(call) => format!("cloudtrail:{}", call.event_name),
            Trigger::Manual(_) => "manual".into(),
        }
    }

    /// The payload's own dry-run request (DRY_RUN can only add to it). The
    /// one rule for manual payloads: a preview unless it says
    /// `"dryRun": false`. Events and the schedule act.
    pub fn dry_run(&self) -> bool {
        matches!(self, Trigger::Manual(request) if request.dry_run != Some(false))
    }
}

impl ManualRequest {
    fn validate(&self) -> Result<(), Error> {
        let lists = [("clusters", &self.clusters), ("taskDefinitions", &self.task_definitions)];
        for (field, list) in lists {
            if list.iter().flatten().any(|v| v.trim().is_empty()) {
                return Err(Error::malformed(format!("manual request: {field} holds an empty name")));
            }
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CloudTrailDetail {
    event_source: String,
    event_name: String,
    #[serde(default, rename = "eventID")]
    event_id: Option<String>,
    #[serde(default)]
    error_code: Option<String>,
    #[serde(default)]
    request_parameters: Option<RequestParameters>,
    #[serde(default)]
    response_elements: Option<ResponseElements>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestParameters {
    cluster: Option<String>,
    /// CreateService names the service `serviceName`; UpdateService `service`.
    service_name: Option<String>,
    service: Option<String>,
    task_definition: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResponseElements {
    task_definition: Option<TaskDefinitionElement>,
    service: Option<ServiceElement>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TaskDefinitionElement {
    task_definition_arn: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServiceElement {
    service_name: Option<String>,
    cluster_arn: Option<String>,
    task_definition: Option<String>,
}

impl ApiCall {
    fn from_detail(detail: Value) -> Result<ApiCall, Error> {
        let detail: CloudTrailDetail =
            serde_json::from_value(detail).map_err(|e| Error::malformed(format!("CloudTrail detail: {e}")))?;
        if detail.event_source != "ecs.amazonaws.com" || !API_CALLS.contains(&detail.event_name.as_str()) {
            return Err(Error::UnexpectedEvent(format!(
                "CloudTrail {} from {}; log-groups handles {} from ecs.amazonaws.com",
                detail.event_name,
                detail.event_source,
                API_CALLS.join(", ")
            )));
        }
        let request = detail.request_parameters.unwrap_or_default();
        let response = detail.response_elements.unwrap_or_default();
        let service = response.service.as_ref();
        let call = ApiCall {
            event_id: detail.event_id,
            event_name: detail.event_name,
            error_code: detail.error_code,
            cluster: service.and_then(|s| s.cluster_arn.clone()).or(request.cluster),
            service: service.and_then(|s| s.service_name.clone()).or(request.service_name).or(request.service),
            task_definition: response
                .task_definition
                .and_then(|t| t.task_definition_arn)
                .or_else(|| service.and_then(|s| s.task_definition.clone()))
                .or(request.task_definition),
        };
        let names_something = call.service.is_some() || call.task_definition.is_some();
        if call.error_code.is_none() && !names_something {
            return Err(Error::malformed(format!(
                "CloudTrail {} names neither a service nor a task definition",
                call.event_name
            )));
        }
        Ok(call)
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
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
    fn fixtures_parse_to_their_triggers() {
        assert_eq!(Trigger::parse(fixture("log-groups-schedule.json")).unwrap(), Trigger::Schedule);
        let Trigger::ApiCall(call) = Trigger::parse(fixture("log-groups-register-task-definition.json")).unwrap()
        else {
            panic!("expected an API call")
        };
        assert_eq!(call.event_name, "RegisterTaskDefinition");
        assert_eq!(call.task_definition.as_deref(), Some("arn:aws:ecs:us-east-1:123456789012:task-definition/users:1"));
        assert_eq!(call.service, None);
        let Trigger::ApiCall(call) = Trigger::parse(fixture("log-groups-create-service.json")).unwrap() else {
            panic!("expected an API call")
        };
        assert_eq!(call.event_name, "CreateService");
        assert_eq!(call.service.as_deref(), Some("threads"));
        assert_eq!(call.cluster.as_deref(), Some("arn:aws:ecs:us-east-1:123456789012:cluster/microservices"));
        let manual = Trigger::parse(fixture("log-groups-manual-dry-run.json")).unwrap();
        assert!(manual.dry_run());
    }

    #[test]
    fn a_manual_payload_is_a_preview_unless_it_says_dry_run_false() {
        assert!(Trigger::parse(json!({})).unwrap().dry_run(), "{{}} is a preview");
        assert!(Trigger::parse(json!({"clusters": ["prod"]})).unwrap().dry_run());
        assert!(!Trigger::parse(json!({"clusters": ["prod"], "dryRun": false})).unwrap().dry_run());
        assert!(!Trigger::parse(fixture("log-groups-schedule.json")).unwrap().dry_run(), "the schedule acts");
        assert!(!Trigger::parse(fixture("log-groups-create-service.json")).unwrap().dry_run(), "events act");
        // one of the two envelope keys alone is no EventBridge event
        let lone = Trigger::parse(json!({"source": "aws.events"})).unwrap_err().to_string();
        assert!(lone.starts_with("malformed event: manual request: unknown field `source`"), "{lone}");
    }

    #[test]
    fn update_service_without_response_uses_request_parameters() {
        let event = json!({
            "detail-type": "AWS API Call via CloudTrail", "source": "aws.ecs",
            "detail": {"eventSource": "ecs.amazonaws.com", "eventName": "UpdateService",
                       "requestParameters": {"cluster": "microservices", "service": "posts", "forceNewDeployment": true}}
        });
        let Trigger::ApiCall(call) = Trigger::parse(event).unwrap() else { panic!() };
        assert_eq!(call.cluster.as_deref(), Some("microservices"));
        assert_eq!(call.service.as_deref(), Some("posts"));
        assert_eq!(call.task_definition, None);
    }

    #[test]
    fn failed_calls_are_recognised() {
        let event = json!({
            "detail-type": "AWS API Call via CloudTrail", "source": "aws.ecs",
            "detail": {"eventSource": "ecs.amazonaws.com", "eventName": "CreateService",
                       "errorCode": "AccessDenied", "requestParameters": null, "responseElements": null}
        });
        let Trigger::ApiCall(call) = Trigger::parse(event).unwrap() else { panic!() };
        assert_eq!(call.error_code.as_deref(), Some("AccessDenied"));
    }

    #[test]
    fn bad_payloads_get_clear_errors() {
        let cases = [
            (json!("hello"), "malformed event: expected a JSON object"),
            (json!([1]), "malformed event: expected a JSON object"),
            (json!({"dryRun": "yes"}), "malformed event: manual request: invalid type"),
            (json!({"cluster": "x"}), "malformed event: manual request: unknown field `cluster`"),
            (json!({"clusters": [""]}), "malformed event: manual request: clusters holds an empty name"),
            // one envelope key alone is a manual payload with an unknown field
            (json!({"source": "aws.ecs"}), "malformed event: manual request: unknown field `source`"),
            (
                json!({"source": "aws.ecs", "detail-type": "AWS API Call via CloudTrail"}),
                "malformed event: EventBridge envelope: missing field `detail`",
            ),
            (
                json!({"source": "aws.ecr", "detail-type": "ECR Image Action", "detail": {}}),
                "unexpected event: source \"aws.ecr\" with detail-type \"ECR Image Action\"",
            ),
            (
                json!({"source": "aws.ecs", "detail-type": "AWS API Call via CloudTrail",
                       "detail": {"eventSource": "ecs.amazonaws.com", "eventName": "DeleteService"}}),
                "unexpected event: CloudTrail DeleteService from ecs.amazonaws.com",
            ),
            (
                json!({"source": "aws.ecs", "detail-type": "AWS API Call via CloudTrail",
                       "detail": {"eventSource": "ecs.amazonaws.com"}}),
                "malformed event: CloudTrail detail: missing field `eventName`",
            ),
            (
                json!({"source": "aws.ecs", "detail-type": "AWS API Call via CloudTrail",
                       "detail": {"eventSource": "ecs.amazonaws.com", "eventName": "CreateService", "requestParameters": {}}}),
                "malformed event: CloudTrail CreateService names neither a service nor a task definition",
            ),
        ];
        for (payload, expected) in cases {
            let err = Trigger::parse(payload.clone()).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{payload} → {err}");
        }
    }
}
