//! The deployment: `template.yaml` passes cfn-lint and `sam validate --lint`,
//! and its translation (the SAM translator, offline) is least-privilege and
//! has what every function needs. Written over all functions, so the next ones
//! are checked the same way.

use std::collections::BTreeSet;
use std::process::Command;

use autopilot::log_groups::RETENTION_DAYS_ALLOWED;
use autopilot_e2e::{tools_bin, workspace_root};
use serde_json::Value;

/// Actions that support no resource-level permissions, so `"*"` is the only
/// Resource IAM accepts for them.
const UNSCOPABLE: &[&str] = &[
    "ecs:ListClusters",
    "ecs:ListServices",
    "ecs:ListTasks",
    "ecs:DescribeTaskDefinition",
    "ecs:RegisterTaskDefinition",
];

fn run(tool: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new(tools_bin().join(tool))
        .args(args)
        .current_dir(workspace_root())
        .env("SAM_CLI_TELEMETRY", "0")
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

fn translated() -> Value {
    let script = workspace_root().join("tests/sam_translate.py");
    let (ok, text) = run("python", &[script.to_str().expect("utf-8 path"), "template.yaml"]);
    assert!(ok, "SAM translation failed:\n{text}");
    serde_json::from_str(&text).expect("translator prints JSON")
}

fn resources_of<'a>(template: &'a Value, kind: &str) -> Vec<(&'a String, &'a Value)> {
    template["Resources"].as_object().expect("Resources").iter().filter(|(_, r)| r["Type"] == kind).collect()
}

fn as_list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    }
}

#[test]
fn cfn_lint_is_clean() {
    let (ok, text) = run("cfn-lint", &["template.yaml"]);
    assert!(ok, "cfn-lint:\n{text}");
}

#[test]
fn sam_validate_lint_is_clean() {
    let (ok, text) = run("sam", &["validate", "--lint", "--template-file", "template.yaml"]);
    assert!(ok, "sam validate --lint:\n{text}");
}

#[test]
fn every_function_is_arm64_al2023_json_logging_with_a_failure_destination() {
    let template = translated();
    let functions = resources_of(&template, "AWS::Lambda::Function");
    let names: BTreeSet<&str> = functions.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains("LogGroupsFunction"), "{names:?}");
    for (name, function) in functions {
        let p = &function["Properties"];
        assert_eq!(p["Runtime"], "provided.al2023", "{name}");
        assert_eq!(p["Architectures"], serde_json::json!(["arm64"]), "{name}");
        assert_eq!(p["Handler"], "bootstrap", "{name}");
        assert_eq!(p["LoggingConfig"]["LogFormat"], "JSON", "{name}");
        // Its own log group, with a retention.
        let group = p["LoggingConfig"]["LogGroup"]["Ref"].as_str().expect("own log group");
        let retention = &template["Resources"][group]["Properties"]["RetentionInDays"];
        assert!(!retention.is_null(), "{name}: {group} has no retention");
        // Failed async invocations go to the SQS failure queue.
        let invoke_config = template["Resources"]
            .as_object()
            .expect("Resources")
            .values()
            .find(|r| r["Type"] == "AWS::Lambda::EventInvokeConfig" && r["Properties"]["FunctionName"]["Ref"] == **name)
            .unwrap_or_else(|| panic!("{name}: no EventInvokeConfig"));
        let destination = &invoke_config["Properties"]["DestinationConfig"]["OnFailure"]["Destination"];
        assert_eq!(destination["Fn::GetAtt"][0], "FailureQueue", "{name}");
    }
}

#[test]
fn roles_are_least_privilege() {
    let template = translated();
    let roles = resources_of(&template, "AWS::IAM::Role");
    assert!(!roles.is_empty());
    let mut statements = 0;
    for (role, resource) in roles {
        let p = &resource["Properties"];
        assert!(p["ManagedPolicyArns"].is_null(), "{role}: managed policies hide '*' resources");
        for policy in p["Policies"].as_array().expect("inline policies") {
            for statement in as_list(&policy["PolicyDocument"]["Statement"]) {
                statements += 1;
                let actions: Vec<String> =
                    as_list(&statement["Action"]).iter().filter_map(|a| a.as_str().map(String::from)).collect();
                for action in &actions {
                    assert!(!action.contains('*'), "{role}: wildcard action {action}");
                }
                if as_list(&statement["Resource"]).iter().any(|r| r == "*") {
                    for action in &actions {
                        assert!(UNSCOPABLE.contains(&action.as_str()), "{role}: {action} on '*' but it can be scoped");
                    }
                }
            }
        }
    }
    assert!(statements > 0, "no policy statements were checked");
}

#[test]
fn log_groups_triggers_and_parameters() {
    let template = translated();
    let rules = resources_of(&template, "AWS::Events::Rule");
    let api = rules
        .iter()
        .find(|(_, r)| r["Properties"]["EventPattern"]["source"] == serde_json::json!(["aws.ecs"]))
        .expect("an ECS CloudTrail rule");
    let pattern = &api.1["Properties"]["EventPattern"];
    assert_eq!(pattern["detail-type"], serde_json::json!(["AWS API Call via CloudTrail"]));
    assert_eq!(
        pattern["detail"]["eventName"],
        serde_json::json!(["RegisterTaskDefinition", "CreateService", "UpdateService"])
    );
    assert!(
        rules.iter().any(|(_, r)| r["Properties"]["ScheduleExpression"]["Ref"] == "SweepSchedule"),
        "a schedule rule"
    );
    let params = &template["Parameters"];
    assert_eq!(params["SweepSchedule"]["Default"], "rate(1 hour)");
    let allowed: Vec<i64> = params["LogRetentionDays"]["AllowedValues"]
        .as_array()
        .expect("AllowedValues")
        .iter()
        .filter_map(|v| v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
        .collect();
    let expected: Vec<i64> = RETENTION_DAYS_ALLOWED.iter().map(|d| i64::from(*d)).collect();
    assert_eq!(allowed, expected, "template and code disagree on retention values");
}

#[test]
fn event_files_are_json_objects_sam_local_invoke_accepts() {
    let dir = workspace_root().join("events");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("events/") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable");
        let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(value.is_object(), "{} is not a JSON object", path.display());
        seen += 1;
    }
    assert!(seen >= 4, "expected the log-groups events, found {seen}");
}

fn statements_of(template: &Value, role: &str) -> Vec<Value> {
    template["Resources"][role]["Properties"]["Policies"]
        .as_array()
        .expect("inline policies")
        .iter()
        .flat_map(|p| as_list(&p["PolicyDocument"]["Statement"]))
        .collect()
}

#[test]
fn deploy_on_push_trigger_serialisation_and_pass_role() {
    let template = translated();
    let rules = resources_of(&template, "AWS::Events::Rule");
    let push = rules
        .iter()
        .find(|(_, r)| r["Properties"]["EventPattern"]["source"] == serde_json::json!(["aws.ecr"]))
        .expect("an ECR push rule");
    assert_eq!(
        push.1["Properties"]["EventPattern"],
        serde_json::json!({"source": ["aws.ecr"], "detail-type": ["ECR Image Action"],
                           "detail": {"action-type": ["PUSH"], "result": ["SUCCESS"]}})
    );
    let function = &template["Resources"]["DeployOnPushFunction"]["Properties"];
    assert_eq!(function["ReservedConcurrentExecutions"], 1, "pushes are applied one at a time");
    // iam:PassRole, in every role, only ever to ECS tasks.
    let mut pass_role = 0;
    for (role, _) in resources_of(&template, "AWS::IAM::Role") {
        for statement in statements_of(&template, role) {
            if as_list(&statement["Action"]).iter().any(|a| a == "iam:PassRole") {
                pass_role += 1;
                assert_eq!(
                    statement["Condition"]["StringEquals"]["iam:PassedToService"], "ecs-tasks.amazonaws.com",
                    "{role}: PassRole without the ECS-tasks condition"
                );
            }
        }
    }
    assert_eq!(pass_role, 1);
    // The write calls deploy-on-push needs are there, and no others.
    let actions: BTreeSet<String> = statements_of(&template, "DeployOnPushRole")
        .iter()
        .flat_map(|s| as_list(&s["Action"]))
        .filter_map(|a| a.as_str().map(String::from))
        .collect();
    for needed in ["ecs:RegisterTaskDefinition", "ecs:UpdateService", "ecs:TagResource", "ecr:BatchGetImage"] {
        assert!(actions.contains(needed), "{needed} missing");
    }
    assert!(!actions
        .iter()
        .any(|a| a.starts_with("ecr:") && !a.starts_with("ecr:Describe") && a != "ecr:BatchGetImage"));
}

#[test]
fn prune_images_schedule_parameters_and_delete_scope() {
    let template = translated();
    let params = &template["Parameters"];
    for name in ["PrunePolicy", "PruneMaxDeletePercent", "PruneDefaultMode", "PruneRepositoryArnPattern", "DryRun"] {
        assert!(!params[name].is_null(), "parameter {name}");
    }
    let rules = resources_of(&template, "AWS::Events::Rule");
    assert!(rules.iter().any(|(_, r)| r["Properties"]["ScheduleExpression"]["Ref"] == "PruneSchedule"));
    assert_eq!(params["PruneSchedule"]["Default"], "rate(1 day)");
    // BatchDeleteImage is the only write, scoped by the repository pattern.
    let statements = statements_of(&template, "PruneImagesRole");
    let delete = statements
        .iter()
        .find(|s| as_list(&s["Action"]).iter().any(|a| a == "ecr:BatchDeleteImage"))
        .expect("a delete statement");
    assert_eq!(as_list(&delete["Action"]).len(), 1);
    assert_eq!(delete["Resource"]["Fn::If"][2]["Ref"], "PruneRepositoryArnPattern");
    let writes: Vec<String> = statements
        .iter()
        .flat_map(|s| as_list(&s["Action"]))
        .filter_map(|a| a.as_str().map(String::from))
        .filter(|a| a.starts_with("ecs:") && !(a.contains(":List") || a.contains(":Describe")))
        .collect();
    assert!(writes.is_empty(), "prune-images may only read ECS: {writes:?}");
}

#[test]
fn quota_scan_schedule_alarm_and_topic() {
    let template = translated();
    let params = &template["Parameters"];
    assert_eq!(params["StorageQuotaBytes"]["Default"], 500000000);
    assert_eq!(params["QuotaSchedule"]["Default"], "rate(1 hour)");
    let alarm = &template["Resources"]["RegistryStorageAlarm"]["Properties"];
    assert_eq!(alarm["MetricName"], "RegistryStorageUtilization");
    assert_eq!(alarm["Namespace"], "ECRAutopilot");
    assert_eq!(alarm["Threshold"]["Ref"], "WarnPercent");
    assert_eq!(alarm["ComparisonOperator"], "GreaterThanOrEqualToThreshold");
    assert_eq!(alarm["Dimensions"], serde_json::json!([{"Name": "Function", "Value": "quota-scan"}]));
    assert_eq!(alarm["AlarmActions"], serde_json::json!([{"Ref": "AlarmTopic"}]));
    let subscription = &template["Resources"]["AlarmEmailSubscription"];
    assert_eq!(subscription["Condition"], "HasAlarmEmail");
    assert_eq!(subscription["Properties"]["Protocol"], "email");
    // quota-scan only reads.
    let actions: Vec<String> = statements_of(&template, "QuotaScanRole")
        .iter()
        .flat_map(|s| as_list(&s["Action"]))
        .filter_map(|a| a.as_str().map(String::from))
        .filter(|a| !a.starts_with("logs:") && a != "sqs:SendMessage")
        .collect();
    for action in &actions {
        let read = ["Describe", "List", "BatchGetImage"].iter().any(|verb| action.contains(verb));
        assert!(read, "quota-scan may only read: {action}");
    }
}
