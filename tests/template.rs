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
/// The only actions allowed on `"*"`, each with why: IAM offers no resource
/// type (or no useful one) for them. Anything else must name its resources.
const UNSCOPABLE: &[(&str, &str)] = &[
    ("ecs:ListClusters", "no resource type: lists the account's clusters"),
    ("ecs:ListServices", "no resource type; the cluster is a condition key, and every cluster is read"),
    ("ecs:ListTasks", "scoped only by container instance, which Fargate tasks lack"),
    ("ecs:DescribeTaskDefinition", "no resource type for task definitions on Describe"),
    ("ecs:RegisterTaskDefinition", "no resource type: the revision does not exist yet"),
    ("ecs:ListTaskDefinitionFamilies", "no resource type"),
    ("events:ListEventBuses", "no resource type"),
    ("events:ListRules", "no resource type: lists every bus's rules"),
    ("scheduler:ListSchedules", "no resource type"),
    ("lambda:ListFunctions", "no resource type"),
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

/// template.yaml as written, not translated.
fn raw() -> Value {
    let script = workspace_root().join("tests/sam_translate.py");
    let (ok, text) = run("python", &[script.to_str().expect("utf-8 path"), "template.yaml", "--raw"]);
    assert!(ok, "reading template.yaml failed:\n{text}");
    serde_json::from_str(&text).expect("the script prints JSON")
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

/// `sam build` must build each function the way `make arm64` does: one
/// package, so Cargo enables only that function's features of the shared crate
/// and links only the SDK clients it calls. SAM's rust-cargolambda method runs
/// `cargo lambda build --bin <Binary>` in CodeUri; from the workspace root
/// that would select every member and unify their features, from the member's
/// own directory it selects that package alone.
#[test]
fn every_function_is_built_alone_from_its_own_package_directory() {
    let template = raw();
    let functions = resources_of(&template, "AWS::Serverless::Function");
    assert!(!functions.is_empty(), "no function in template.yaml");
    for (name, function) in functions {
        assert_eq!(function["Metadata"]["BuildMethod"], "rust-cargolambda", "{name}");
        let binary = function["Metadata"]["BuildProperties"]["Binary"].as_str().expect("Binary");
        let code_uri = function["Properties"]["CodeUri"].as_str().expect("CodeUri");
        assert_eq!(code_uri, format!("functions/{binary}"), "{name}");
        let manifest = std::fs::read_to_string(workspace_root().join(code_uri).join("Cargo.toml")).expect("Cargo.toml");
        assert!(manifest.contains(&format!("name = \"{binary}\"")), "{name}: {code_uri} builds no binary {binary}");
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
                        assert!(
                            UNSCOPABLE.iter().any(|(a, _)| a == action),
                            "{role}: {action} on '*' but it can be scoped (or add it to UNSCOPABLE with the reason)"
                        );
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
        .find(|(_, r)| {
            r["Properties"]["EventPattern"]["detail-type"] == serde_json::json!(["AWS API Call via CloudTrail"])
        })
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
    assert_eq!(
        function["ReservedConcurrentExecutions"],
        serde_json::json!({"Fn::If": ["HasDeployReservedConcurrency", {"Ref": "DeployReservedConcurrency"}, {"Ref": "AWS::NoValue"}]}),
        "one push at a time only when the operator reserves concurrency"
    );
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
    let ecr_reads = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"];
    assert!(!actions
        .iter()
        .any(|a| a.starts_with("ecr:") && !a.starts_with("ecr:Describe") && !ecr_reads.contains(&a.as_str())));
}

/// Evaluates the intrinsics a condition value uses (`Ref` to a parameter,
/// `Fn::Join`, `Fn::Split`), as CloudFormation would with these parameters.
fn evaluate(value: &Value, parameters: &[(&str, &str)]) -> Value {
    let object = match value {
        Value::Array(items) => return Value::Array(items.iter().map(|v| evaluate(v, parameters)).collect()),
        Value::Object(object) if object.len() == 1 => object,
        other => return other.clone(),
    };
    let (function, argument) = object.iter().next().expect("one key");
    let text = |v: &Value| v.as_str().expect("a string").to_string();
    match function.as_str() {
        "Ref" => {
            let name = text(argument);
            let found = parameters.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("parameter {name}"));
            Value::String(found.1.to_string())
        }
        "Fn::Join" => {
            let separator = text(&argument[0]);
            let parts = evaluate(&argument[1], parameters);
            let parts: Vec<String> = parts.as_array().expect("a list").iter().map(text).collect();
            Value::String(parts.join(&separator))
        }
        "Fn::Split" => {
            let separator = text(&argument[0]);
            let whole = text(&evaluate(&argument[1], parameters));
            Value::Array(whole.split(separator.as_str()).map(|s| Value::String(s.to_string())).collect())
        }
        other => panic!("intrinsic {other} is not evaluated by this test"),
    }
}

/// IAM's StringLike: `*` any run of characters, `?` one character.
fn string_like(pattern: &str, value: &str) -> bool {
    let (p, v): (Vec<char>, Vec<char>) = (pattern.chars().collect(), value.chars().collect());
    let mut matches = vec![vec![false; v.len() + 1]; p.len() + 1];
    matches[0][0] = true;
    for i in 1..=p.len() {
        matches[i][0] = matches[i - 1][0] && p[i - 1] == '*';
        for j in 1..=v.len() {
            matches[i][j] = match p[i - 1] {
                '*' => matches[i - 1][j] || matches[i][j - 1],
                '?' => matches[i - 1][j - 1],
                c => matches[i - 1][j - 1] && c == v[j - 1],
            };
        }
    }
    matches[p.len()][v.len()]
}

#[test]
fn clusters_given_as_names_or_arns_with_spaces_scope_update_service() {
    let template = translated();
    let update = statements_of(&template, "DeployOnPushRole")
        .into_iter()
        .find(|s| as_list(&s["Action"]).iter().any(|a| a == "ecs:UpdateService"))
        .expect("an UpdateService statement");
    let condition = &update["Condition"]["StringLike"]["Fn::If"];
    assert_eq!(condition[0], "HasClusters");
    let arn = |name: &str| format!("arn:aws:ecs:us-east-1:123456789012:cluster/{name}");
    for clusters in
        [format!("{}, staging", arn("prod")), format!(" staging ,{} ", arn("prod")), "prod,staging".to_string()]
    {
        let allowed = evaluate(&condition[1]["ecs:cluster"], &[("Clusters", &clusters)]);
        let patterns: Vec<String> =
            allowed.as_array().expect("a list").iter().map(|v| v.as_str().expect("text").to_string()).collect();
        let permits = |cluster: &str| patterns.iter().any(|p| string_like(p, cluster));
        assert!(permits(&arn("prod")), "{clusters:?}: prod denied by {patterns:?}");
        assert!(permits(&arn("staging")), "{clusters:?}: staging denied by {patterns:?}");
        for other in ["dev", "prod-eu", "staging2", "pro"] {
            assert!(!permits(&arn(other)), "{clusters:?}: {other} allowed by {patterns:?}");
        }
    }
    assert_eq!(condition[2]["Ref"], "AWS::NoValue", "no CLUSTERS: every service of the account and region");
}

#[test]
fn deploy_on_push_follows_rollouts_and_reads_what_its_guards_need() {
    let template = translated();
    let rules = resources_of(&template, "AWS::Events::Rule");
    let (_, rollouts) = rules
        .iter()
        .find(|(_, r)| {
            r["Properties"]["EventPattern"]["detail-type"] == serde_json::json!(["ECS Deployment State Change"])
        })
        .expect("a deployment-state rule");
    let p = &rollouts["Properties"];
    assert_eq!(p["EventPattern"]["source"], serde_json::json!(["aws.ecs"]));
    assert_eq!(
        p["EventPattern"]["detail"]["eventName"],
        serde_json::json!(["SERVICE_DEPLOYMENT_COMPLETED", "SERVICE_DEPLOYMENT_FAILED"])
    );
    assert_eq!(p["Targets"][0]["Arn"]["Fn::GetAtt"], serde_json::json!(["DeployOnPushFunction", "Arn"]));
    let env = &template["Resources"]["DeployOnPushFunction"]["Properties"]["Environment"]["Variables"];
    assert_eq!(env["ALARM_TOPIC_ARN"]["Ref"], "AlarmTopic");

    let statements = statements_of(&template, "DeployOnPushRole");
    let with = |action: &str| {
        statements
            .iter()
            .find(|s| as_list(&s["Action"]).iter().any(|a| a == action))
            .unwrap_or_else(|| panic!("{action} missing"))
            .clone()
    };
    let publish = with("sns:Publish");
    assert_eq!(publish["Resource"]["Ref"], "AlarmTopic", "publishes to the alarm topic only");
    assert_eq!(as_list(&publish["Action"]).len(), 1);
    let blob = with("ecr:GetDownloadUrlForLayer");
    assert!(blob["Resource"]["Fn::Sub"].as_str().unwrap_or_default().contains(":repository/"));
    for read in
        ["ecs:ListServiceDeployments", "ecs:DescribeServiceRevisions", "ecs:ListAttributes", "ecs:DescribeTasks"]
    {
        let statement = with(read);
        assert_ne!(statement["Resource"], "*", "{read} is scoped");
    }
}

#[test]
fn prune_images_schedule_parameters_and_delete_scope() {
    let template = translated();
    let params = &template["Parameters"];
    for name in [
        "PrunePolicy",
        "PruneMaxDeletePercent",
        "PruneDefaultMode",
        "PruneMinAgeHours",
        "PruneRepositoryArnPattern",
        "DryRun",
    ] {
        assert!(!params[name].is_null(), "parameter {name}");
    }
    // A new install deletes nothing until its owner switches it on.
    assert_eq!(params["PruneDefaultMode"]["Default"], "dry-run");
    assert_eq!(params["PruneDefaultMode"]["AllowedValues"], serde_json::json!(["on", "off", "dry-run"]));
    // The age floor: one hour unless set, the same for quota-scan's figures.
    assert_eq!(params["PruneMinAgeHours"]["Default"], 1);
    assert_eq!(
        (params["PruneMinAgeHours"]["MinValue"].as_u64(), params["PruneMinAgeHours"]["MaxValue"].as_u64()),
        (Some(0), Some(8760))
    );
    for function in ["PruneImagesFunction", "QuotaScanFunction"] {
        let variables = &template["Resources"][function]["Properties"]["Environment"]["Variables"];
        assert_eq!(variables["PRUNE_MIN_AGE_HOURS"]["Ref"], "PruneMinAgeHours", "{function}");
    }
    assert_eq!(
        template["Resources"]["PruneImagesFunction"]["Properties"]["Environment"]["Variables"]["PRUNE_DEFAULT_MODE"]
            ["Ref"],
        "PruneDefaultMode"
    );
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
    // Every source of "in use" is readable, in every protected region.
    let actions: Vec<String> =
        statements.iter().flat_map(|s| as_list(&s["Action"])).filter_map(|a| a.as_str().map(String::from)).collect();
    for needed in [
        "ecs:ListServiceDeployments",
        "ecs:DescribeServiceDeployments",
        "ecs:DescribeServiceRevisions",
        "ecs:ListTaskDefinitionFamilies",
        "events:ListEventBuses",
        "events:ListRules",
        "events:ListTargetsByRule",
        "scheduler:ListSchedules",
        "scheduler:GetSchedule",
        "lambda:ListFunctions",
        "lambda:GetFunction",
        "ecr:ListImageReferrers",
    ] {
        assert!(actions.iter().any(|a| a == needed), "prune-images lacks {needed}");
    }
    assert!(!params["ProtectRegions"].is_null(), "parameter ProtectRegions");
    let variables = &template["Resources"]["PruneImagesFunction"]["Properties"]["Environment"]["Variables"];
    assert_eq!(variables["PROTECT_REGIONS"]["Ref"], "ProtectRegions");
    // Its own and quota-scan's index reads must not count as pulls.
    let exclusions: Vec<String> = resources_of(&template, "AWS::ECR::PullTimeUpdateExclusion")
        .iter()
        .map(|(_, r)| r["Properties"]["PrincipalArn"]["Fn::GetAtt"][0].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(exclusions, ["PruneImagesRole", "QuotaScanRole"]);
}

#[test]
fn quota_scan_schedule_alarm_and_topic() {
    let template = translated();
    let params = &template["Parameters"];
    assert_eq!(params["StorageQuotaBytes"]["Default"], 500000000);
    assert_eq!(params["ImagesPerRepositoryQuota"]["Default"], 100000, "ECR's default today");
    assert_eq!(params["QuotaSchedule"]["Default"], "rate(1 hour)");
    // The registry's bytes, whole (one invocation) or the sum of a fanned-out
    // cycle's batch shares over one scan period, against the quota.
    let alarm = &template["Resources"]["RegistryStorageAlarm"]["Properties"];
    let queries = alarm["Metrics"].as_array().expect("metric math");
    let stat = |id: &str| {
        let q = queries.iter().find(|q| q["Id"] == id).unwrap_or_else(|| panic!("no query {id}"));
        let m = &q["MetricStat"];
        assert_eq!(m["Metric"]["Namespace"]["Ref"], "MetricsNamespace");
        assert_eq!(m["Metric"]["Dimensions"], serde_json::json!([{"Name": "Function", "Value": "quota-scan"}]));
        assert_eq!(m["Period"]["Ref"], "QuotaScanAlarmPeriod");
        let name = m["Metric"]["MetricName"].as_str().unwrap_or_default().to_string();
        (name, m["Stat"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(stat("whole"), ("RegistryStorageBytes".to_string(), "Maximum".to_string()));
    assert_eq!(stat("shares"), ("BatchStorageBytes".to_string(), "Sum".to_string()));
    let returned = queries.iter().find(|q| q["ReturnData"] == true).expect("one returned");
    assert_eq!(returned["Expression"]["Fn::Sub"], "100 * (FILL(whole, 0) + FILL(shares, 0)) / ${StorageQuotaBytes}");
    assert_eq!(params["MetricsNamespace"]["Default"], "ECRAutopilot");
    assert_eq!(alarm["Threshold"]["Ref"], "WarnPercent");
    assert_eq!(alarm["ComparisonOperator"], "GreaterThanOrEqualToThreshold");
    assert_eq!(alarm["AlarmActions"], serde_json::json!([{"Ref": "AlarmTopic"}]));
    // No data (a scan that never ran) is not "under the threshold".
    assert_eq!(alarm["TreatMissingData"], "missing");
    // A scan that stopped running is an alarm of its own: two periods
    // without ScanCompleted, absent data breaching.
    let scans = &template["Resources"]["ScanCompletedAlarm"]["Properties"];
    assert_eq!(scans["MetricName"], "ScanCompleted");
    assert_eq!(scans["Namespace"]["Ref"], "MetricsNamespace");
    assert_eq!(scans["Dimensions"], serde_json::json!([{"Name": "Function", "Value": "quota-scan"}]));
    assert_eq!(scans["Statistic"], "Sum");
    assert_eq!((scans["EvaluationPeriods"].as_u64(), scans["DatapointsToAlarm"].as_u64()), (Some(2), Some(2)));
    assert_eq!(scans["Period"]["Ref"], "QuotaScanAlarmPeriod");
    assert_eq!(params["QuotaScanAlarmPeriod"]["Default"], 3600, "the default QuotaSchedule's interval");
    assert_eq!(
        (scans["ComparisonOperator"].as_str(), scans["Threshold"].as_f64()),
        (Some("LessThanThreshold"), Some(1.0))
    );
    assert_eq!(scans["TreatMissingData"], "breaching");
    assert_eq!(scans["AlarmActions"], serde_json::json!([{"Ref": "AlarmTopic"}]));
    let subscription = &template["Resources"]["AlarmEmailSubscription"];
    assert_eq!(subscription["Condition"], "HasAlarmEmail");
    assert_eq!(subscription["Properties"]["Protocol"], "email");
    // quota-scan only reads (and uses its own work queue).
    let actions: Vec<String> = statements_of(&template, "QuotaScanRole")
        .iter()
        .filter(|s| s["Resource"]["Fn::GetAtt"][0] != "QuotaWorkQueue")
        .flat_map(|s| as_list(&s["Action"]))
        .filter_map(|a| a.as_str().map(String::from))
        .filter(|a| !a.starts_with("logs:") && a != "sqs:SendMessage")
        .collect();
    for action in &actions {
        let read = ["Describe", "List", "BatchGetImage", ":Get"].iter().any(|verb| action.contains(verb));
        assert!(read, "quota-scan may only read: {action}");
    }
}

/// Issue 14: quota-scan's audit alarms on NativePolicyInUseExpiries > 0 to
/// the alarm topic, and reads native lifecycle policies and repository
/// settings without gaining any write.
#[test]
fn native_policy_audit_alarm_and_read_only_iam() {
    let template = translated();
    let alarm = &template["Resources"]["NativePolicyInUseExpiriesAlarm"]["Properties"];
    assert_eq!(alarm["MetricName"], "NativePolicyInUseExpiries");
    assert_eq!(alarm["Namespace"]["Ref"], "MetricsNamespace");
    assert_eq!(alarm["Dimensions"], serde_json::json!([{"Name": "Function", "Value": "quota-scan"}]));
    assert_eq!(
        (alarm["Threshold"].as_f64(), alarm["ComparisonOperator"].as_str()),
        (Some(0.0), Some("GreaterThanThreshold"))
    );
    assert_eq!(alarm["AlarmActions"], serde_json::json!([{"Ref": "AlarmTopic"}]));
    assert_eq!(alarm["TreatMissingData"], "notBreaching", "no data (in-use set unreadable, or no run) is not an alarm");
    assert!(
        emitted_metric_names().contains("NativePolicyInUseExpiries"),
        "the alarm watches a metric quota-scan emits"
    );

    let statements = statements_of(&template, "QuotaScanRole");
    let ecr: Vec<(String, Vec<Value>)> = statements
        .iter()
        .flat_map(|s| as_list(&s["Action"]).into_iter().map(move |a| (a, as_list(&s["Resource"]))))
        .filter_map(|(a, r)| a.as_str().filter(|a| a.starts_with("ecr:")).map(|a| (a.to_string(), r)))
        .collect();
    for needed in ["ecr:GetLifecyclePolicy", "ecr:DescribeRepositories"] {
        let (_, resources) =
            ecr.iter().find(|(a, _)| a == needed).unwrap_or_else(|| panic!("quota-scan lacks {needed}"));
        let scoped = resources.iter().all(|r| r["Fn::Sub"].as_str().is_some_and(|s| s.ends_with(":repository/*")));
        assert!(scoped, "{needed} is scoped to this account's repositories: {resources:?}");
    }
    // No ECR write of any kind, named or by wildcard.
    const WRITES: &[&str] = &[
        "Put",
        "Delete",
        "Update",
        "Tag",
        "Untag",
        "Set",
        "Start",
        "Create",
        "Upload",
        "Initiate",
        "Complete",
        "Replicate",
        "Batch",
    ];
    for (action, _) in &ecr {
        let verb = action.trim_start_matches("ecr:");
        assert!(!verb.contains('*'), "quota-scan has a wildcard ECR action: {action}");
        let writes = WRITES.iter().any(|w| verb.starts_with(w)) && verb != "BatchGetImage";
        assert!(!writes, "quota-scan may only read ECR: {action}");
    }
    assert!(
        template["Resources"]["QuotaScanFunction"]["Properties"]["Environment"]["Variables"]["PRUNE_DEFAULT_MODE"]
            ["Ref"]
            == "PruneDefaultMode",
        "the audit knows where prune-images deletes"
    );
}

fn alarms(template: &Value) -> Vec<(&String, &Value)> {
    resources_of(template, "AWS::CloudWatch::Alarm")
}

/// The topic every alarm notifies: no SSE, or a customer-managed key of this
/// template whose policy lets CloudWatch use it. `alias/aws/sns` (or any key
/// we cannot see the policy of) fails: CloudWatch cannot publish through it.
#[test]
fn alarm_topic_is_usable_by_cloudwatch() {
    let template = translated();
    let mut topics = BTreeSet::new();
    for (name, alarm) in alarms(&template) {
        let actions = as_list(&alarm["Properties"]["AlarmActions"]);
        assert!(!actions.is_empty(), "{name} notifies no one");
        for action in actions {
            topics.insert(action["Ref"].as_str().unwrap_or_else(|| panic!("{name}: action {action}")).to_string());
        }
    }
    assert!(!topics.is_empty());
    for topic in topics {
        let resource = &template["Resources"][&topic];
        assert_eq!(resource["Type"], "AWS::SNS::Topic", "{topic}");
        let key = &resource["Properties"]["KmsMasterKeyId"];
        if key.is_null() {
            continue;
        }
        // A customer-managed key of this stack, and its policy allows CloudWatch.
        let key_name = key["Ref"]
            .as_str()
            .or_else(|| key["Fn::GetAtt"][0].as_str())
            .unwrap_or_else(|| panic!("{topic}: key {key} is not a key of this stack (alias/aws/sns?)"));
        let key_resource = &template["Resources"][key_name];
        assert_eq!(key_resource["Type"], "AWS::KMS::Key", "{topic}: {key_name}");
        let allows_cloudwatch = as_list(&key_resource["Properties"]["KeyPolicy"]["Statement"]).iter().any(|s| {
            let actions: Vec<Value> = as_list(&s["Action"]);
            s["Effect"] == "Allow"
                && as_list(&s["Principal"]["Service"]).iter().any(|p| p == "cloudwatch.amazonaws.com")
                && actions.iter().any(|a| a == "kms:Decrypt")
                && actions.iter().any(|a| a == "kms:GenerateDataKey*" || a == "kms:GenerateDataKey")
        });
        assert!(allows_cloudwatch, "{topic}: {key_name}'s policy does not let cloudwatch.amazonaws.com use it");
    }
}

/// A literal reservation fails stack creation on accounts whose concurrency
/// quota is 10; only the DeployReservedConcurrency parameter may set one.
#[test]
fn no_literal_reserved_concurrency() {
    let template = translated();
    for (name, function) in resources_of(&template, "AWS::Lambda::Function") {
        let reserved = &function["Properties"]["ReservedConcurrentExecutions"];
        if reserved.is_null() {
            continue;
        }
        let branches = reserved["Fn::If"].as_array().unwrap_or_else(|| panic!("{name}: literal {reserved}"));
        assert_eq!(branches.len(), 3, "{name}");
        assert!(branches[1]["Ref"].is_string(), "{name}: reserved from a parameter, not {}", branches[1]);
        assert_eq!(branches[2], serde_json::json!({"Ref": "AWS::NoValue"}), "{name}: unreserved by default");
    }
    let parameter = &template["Parameters"]["DeployReservedConcurrency"];
    assert_eq!(parameter["Default"], "", "unreserved unless the operator asks");
    assert_eq!(
        template["Conditions"]["HasDeployReservedConcurrency"],
        serde_json::json!({"Fn::Not": [{"Fn::Equals": [{"Ref": "DeployReservedConcurrency"}, ""]}]})
    );
}

/// Every function has an Errors alarm and a Duration alarm at 80 % of its own
/// timeout, both notifying the alarm topic.
#[test]
fn every_function_has_errors_and_duration_alarms() {
    let template = translated();
    let functions = resources_of(&template, "AWS::Lambda::Function");
    assert_eq!(functions.len(), 4, "the four functions");
    let alarms = alarms(&template);
    for (name, function) in functions {
        let timeout_s = function["Properties"]["Timeout"].as_f64().unwrap_or_else(|| panic!("{name}: Timeout"));
        let on = |metric: &str| {
            alarms
                .iter()
                .filter(|(_, a)| {
                    let p = &a["Properties"];
                    p["Namespace"] == "AWS/Lambda"
                        && p["MetricName"] == metric
                        && p["Dimensions"] == serde_json::json!([{"Name": "FunctionName", "Value": {"Ref": name}}])
                })
                .map(|(_, a)| &a["Properties"])
                .collect::<Vec<_>>()
        };
        let errors = on("Errors");
        assert_eq!(errors.len(), 1, "{name}: one Errors alarm");
        assert_eq!(errors[0]["Statistic"], "Sum", "{name}");
        assert_eq!(errors[0]["Threshold"], 0, "{name}: any error");
        assert_eq!(errors[0]["ComparisonOperator"], "GreaterThanThreshold", "{name}");
        let duration = on("Duration");
        assert_eq!(duration.len(), 1, "{name}: one Duration alarm");
        assert_eq!(duration[0]["Statistic"], "Maximum", "{name}");
        assert_eq!(duration[0]["ComparisonOperator"], "GreaterThanThreshold", "{name}");
        let threshold = duration[0]["Threshold"].as_f64().unwrap_or_else(|| panic!("{name}: numeric threshold"));
        assert_eq!(threshold, 0.8 * timeout_s * 1000.0, "{name}: 80 % of its {timeout_s} s timeout, in ms");
        for alarm in errors.iter().chain(&duration) {
            assert_eq!(alarm["AlarmActions"], serde_json::json!([{"Ref": "AlarmTopic"}]), "{name}");
            assert_eq!(alarm["TreatMissingData"], "notBreaching", "{name}: no invocation is not an error");
        }
    }
}

/// EventBridge events a function rejects (answered, not retried) are counted
/// in `EventsRejected`; one alarm adds up every function's count.
#[test]
fn events_rejected_alarm_watches_every_function() {
    let template = translated();
    let alarm = &template["Resources"]["EventsRejectedAlarm"]["Properties"];
    let queries = alarm["Metrics"].as_array().expect("a metric-math alarm");
    let returned: Vec<&Value> = queries.iter().filter(|q| q["ReturnData"] == true).collect();
    assert_eq!(returned.len(), 1, "one expression is the alarm's series");
    let expression = returned[0]["Expression"].as_str().expect("an expression");
    let mut watched = BTreeSet::new();
    for query in queries.iter().filter(|q| q["ReturnData"] == false) {
        let stat = &query["MetricStat"];
        assert_eq!(stat["Metric"]["MetricName"], "EventsRejected");
        assert_eq!(stat["Metric"]["Namespace"]["Ref"], "MetricsNamespace");
        assert_eq!(stat["Stat"], "Sum");
        let id = query["Id"].as_str().expect("id");
        assert!(expression.contains(&format!("FILL({id}, 0)")), "{id} is not summed: {expression}");
        let dimensions = stat["Metric"]["Dimensions"].as_array().expect("dimensions");
        assert_eq!(dimensions.len(), 1);
        assert_eq!(dimensions[0]["Name"], "Function");
        watched.insert(dimensions[0]["Value"].as_str().expect("function").to_string());
    }
    assert_eq!(
        watched,
        ["deploy-on-push", "log-groups", "prune-images", "quota-scan"].map(String::from).into_iter().collect(),
        "every function"
    );
    assert_eq!(
        (alarm["ComparisonOperator"].as_str(), alarm["Threshold"].as_f64()),
        (Some("GreaterThanThreshold"), Some(0.0))
    );
    assert_eq!(alarm["TreatMissingData"], "notBreaching", "no rejection is no data");
    assert_eq!(alarm["AlarmActions"], serde_json::json!([{"Ref": "AlarmTopic"}]));
    assert!(emitted_metric_names().contains("EventsRejected"), "no function emits EventsRejected");
}

/// Every alarm on one of our metrics names a metric some function emits.
#[test]
fn alarms_watch_metrics_the_functions_emit() {
    let template = translated();
    let emitted = emitted_metric_names();
    for (name, alarm) in alarms(&template) {
        let p = &alarm["Properties"];
        let mut ours: Vec<&Value> = Vec::new();
        if p["Namespace"]["Ref"] == "MetricsNamespace" {
            ours.push(&p["MetricName"]);
        }
        for query in p["Metrics"].as_array().into_iter().flatten() {
            if query["MetricStat"]["Metric"]["Namespace"]["Ref"] == "MetricsNamespace" {
                ours.push(&query["MetricStat"]["Metric"]["MetricName"]);
            }
        }
        for metric in ours {
            let metric = metric.as_str().unwrap_or_default();
            assert!(emitted.contains(metric), "{name} watches {metric}, which no function emits");
        }
    }
}

/// `MetricsNamespace` reaches every function's METRICS_NAMESPACE and every
/// alarm on our own metrics.
#[test]
fn metrics_namespace_is_one_parameter() {
    let template = translated();
    for (name, function) in resources_of(&template, "AWS::Lambda::Function") {
        assert_eq!(
            function["Properties"]["Environment"]["Variables"]["METRICS_NAMESPACE"],
            serde_json::json!({"Ref": "MetricsNamespace"}),
            "{name}"
        );
    }
    for (name, alarm) in alarms(&template) {
        let p = &alarm["Properties"];
        let mut namespaces = vec![&p["Namespace"]];
        if let Some(queries) = p["Metrics"].as_array() {
            namespaces = queries
                .iter()
                .filter(|q| !q["MetricStat"].is_null())
                .map(|q| &q["MetricStat"]["Metric"]["Namespace"])
                .collect();
            assert!(!namespaces.is_empty(), "{name}: a metric-math alarm over no metric");
        }
        for namespace in namespaces {
            assert!(
                namespace.as_str().is_some_and(|n| n.starts_with("AWS/")) || namespace["Ref"] == "MetricsNamespace",
                "{name}: namespace {namespace}"
            );
        }
    }
}

/// Metric names in an EMF `.put("Name", …)` call in the functions' and the
/// library's non-test code.
fn emitted_metric_names() -> BTreeSet<String> {
    fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = workspace_root();
    let mut files = Vec::new();
    sources(&root.join("shared/src"), &mut files);
    for entry in std::fs::read_dir(root.join("functions")).expect("functions/") {
        sources(&entry.expect("entry").path().join("src"), &mut files);
    }
    let mut names = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable source");
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (at, _) in code.match_indices(".put(") {
            let rest = code[at + ".put(".len()..].trim_start();
            if let Some(literal) = rest.strip_prefix('"') {
                if let Some(end) = literal.find('"') {
                    names.insert(literal[..end].to_string());
                }
            }
        }
    }
    names
}

/// The Lambda metrics the dashboard may use.
const LAMBDA_METRICS: &[&str] = &["Errors", "Duration", "Invocations", "Throttles"];

/// The dashboard body with `${…}` replaced: `${WarnPercent}` by a number, the
/// namespace by a marker, anything else by its name.
fn dashboard(template: &Value) -> Value {
    let body = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
        .as_str()
        .expect("DashboardBody is one !Sub string");
    let mut text = String::new();
    let mut rest = body;
    while let Some(start) = rest.find("${") {
        text.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closed ${…}") + start;
        let name = &rest[start + 2..end];
        text.push_str(match name {
            "WarnPercent" => "80",
            "MetricsNamespace" => "<MetricsNamespace>",
            other => other,
        });
        rest = &rest[end + 1..];
    }
    text.push_str(rest);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("dashboard body is not JSON: {e}\n{text}"))
}

/// (namespace, metric, stat) of every metric a widget names, plain or in a
/// SEARCH expression.
fn widget_metrics(widget: &Value) -> Vec<(String, String, String)> {
    let p = &widget["properties"];
    let default_stat = p["stat"].as_str().unwrap_or("Average").to_string();
    let mut found = Vec::new();
    for line in p["metrics"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let line = line.as_array().expect("a metrics line is an array");
        if let Some(expression) = line[0]["expression"].as_str() {
            let namespace = expression
                .split("Namespace=\"")
                .nth(1)
                .or_else(|| expression.split("SEARCH('{").nth(1))
                .and_then(|s| s.split(['"', ',', '}']).next())
                .unwrap_or_default()
                .to_string();
            let stat = expression.rsplit("', '").next().and_then(|s| s.split('\'').next()).unwrap_or_default();
            for part in expression.split("MetricName=\"").skip(1) {
                let name = part.split('"').next().unwrap_or_default();
                found.push((namespace.clone(), name.to_string(), stat.to_string()));
            }
        } else {
            let options = line.iter().find(|v| v.is_object());
            let stat = options.and_then(|o| o["stat"].as_str()).unwrap_or(&default_stat);
            found.push((
                line[0].as_str().expect("namespace").to_string(),
                line[1].as_str().expect("metric name").to_string(),
                stat.to_string(),
            ));
        }
    }
    found
}

#[test]
fn dashboard_shows_only_metrics_the_functions_emit() {
    let template = translated();
    let emitted = emitted_metric_names();
    for known in [
        "RegistryStorageUtilization",
        "ImagesDeleted",
        "LogGroupsCreated",
        "ServicesUpdated",
        "RolloutsSucceeded",
        "RolloutsFailed",
        "RolloutsRolledBack",
        "PushesSkipped",
        "EventsRejected",
        "ScanCompleted",
    ] {
        assert!(emitted.contains(known), "the source scan missed {known}: {emitted:?}");
    }
    let body = dashboard(&template);
    let widgets = body["widgets"].as_array().expect("widgets");
    let mut titles = BTreeSet::new();
    let mut shown = BTreeSet::new();
    for widget in widgets {
        titles.insert(widget["properties"]["title"].as_str().expect("every widget has a title").to_string());
        for (namespace, metric, stat) in widget_metrics(widget) {
            assert!(!stat.is_empty(), "{metric}: no statistic");
            shown.insert(metric.clone());
            match namespace.as_str() {
                "AWS/Lambda" => assert!(LAMBDA_METRICS.contains(&metric.as_str()), "AWS/Lambda {metric}"),
                "<MetricsNamespace>" => {
                    assert!(
                        emitted.contains(&metric),
                        "the dashboard shows {metric}, which no function emits (emitted: {emitted:?})"
                    );
                }
                other => panic!("{metric}: namespace {other} is neither MetricsNamespace nor AWS/Lambda"),
            }
        }
    }
    // What the issue asks the dashboard to show.
    for needed in [
        "RegistryStorageUtilization",
        "RepositoryStorageBytes",
        "RolloutsSucceeded",
        "RolloutsFailed",
        "RolloutsRolledBack",
        "PushesSkipped",
        "EventsRejected",
        "ScanCompleted",
        "ImagesDeleted",
        "ImagesProtected",
        "BytesReclaimed",
        "LogGroupsCreated",
        "LogGroupsRetentionSet",
        "NativePolicyInUseExpiries",
        "Errors",
        "Duration",
    ] {
        assert!(shown.contains(needed), "the dashboard does not show {needed}");
    }
    // The storage widget draws the warn line at WarnPercent.
    let storage = widgets
        .iter()
        .find(|w| widget_metrics(w).iter().any(|(_, m, _)| m == "RegistryStorageUtilization"))
        .expect("a storage widget");
    let lines = storage["properties"]["annotations"]["horizontal"].as_array().expect("annotation lines");
    assert!(lines.iter().any(|l| l["value"] == 80), "no warn line at WarnPercent: {lines:?}");
    // Errors and durations of every function.
    let raw = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"].as_str().unwrap_or_default();
    for (name, _) in resources_of(&template, "AWS::Lambda::Function") {
        for metric in ["Errors", "Duration"] {
            assert!(
                raw.contains(&format!(r#"["AWS/Lambda", "{metric}", "FunctionName", "${{{name}}}""#)),
                "the dashboard lacks {metric} of {name}"
            );
        }
    }
    assert_eq!(titles.len(), widgets.len(), "widget titles are distinct");
    // Skipped pushes get a widget of their own, a line per reason class.
    assert!(titles.contains("Pushes skipped, by reason"), "{titles:?}");
    assert!(
        raw.contains(r#"SEARCH('{${MetricsNamespace},Function,Reason} MetricName=\"PushesSkipped\"'"#),
        "no line per Reason"
    );
    for alarm in ["ScanCompletedAlarm", "EventsRejectedAlarm"] {
        assert!(raw.contains(&format!("${{{alarm}.Arn}}")), "the alarm widget lacks {alarm}");
    }
    let url = template["Outputs"]["DashboardUrl"]["Value"]["Fn::Sub"].as_str().expect("a DashboardUrl output");
    assert!(url.contains("#dashboards/dashboard/${Dashboard}") && url.contains("region=${AWS::Region}"), "{url}");
}

#[test]
fn sar_metadata_and_license() {
    let template = translated();
    let app = &template["Metadata"]["AWS::ServerlessRepo::Application"];
    for field in ["Name", "Description", "Author", "SemanticVersion"] {
        assert!(app[field].as_str().is_some_and(|v| !v.is_empty()), "SAR {field}");
    }
    assert!(app["Description"].as_str().is_some_and(|d| d.len() <= 256), "SAR descriptions are at most 256 characters");
    assert_eq!(app["SpdxLicenseId"], "Apache-2.0", "as Cargo.toml says");
    let cargo = std::fs::read_to_string(workspace_root().join("Cargo.toml")).expect("Cargo.toml");
    assert!(cargo.contains(r#"license = "Apache-2.0""#));
    for file in ["LicenseUrl", "ReadmeUrl"] {
        let path = workspace_root().join(app[file].as_str().expect(file));
        assert!(path.exists(), "{file}: {} is missing", path.display());
    }
    let license = std::fs::read_to_string(workspace_root().join("LICENSE")).expect("LICENSE");
    assert!(license.contains("Apache License") && license.contains("Version 2.0, January 2004"));
    let manifest = std::fs::read_to_string(workspace_root().join("shared/Cargo.toml")).expect("shared/Cargo.toml");
    let version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("a crate version");
    assert_eq!(app["SemanticVersion"], version, "the SAR version follows the crates'");
}

/// `samconfig.toml` deploys the stack with what `sam deploy` needs, and asks
/// before changing it.
#[test]
fn samconfig_has_the_deploy_defaults() {
    let text = std::fs::read_to_string(workspace_root().join("samconfig.toml")).expect("samconfig.toml");
    let section = text.split("[default.deploy.parameters]").nth(1).expect("a [default.deploy.parameters] section");
    let section = section.split("\n[").next().unwrap_or_default();
    for line in [r#"stack_name = "ecr-autopilot""#, r#"capabilities = "CAPABILITY_IAM""#, "confirm_changeset = true"] {
        assert!(section.lines().any(|l| l.trim() == line), "samconfig.toml lacks {line}");
    }
    assert!(
        !section.lines().any(|l| l.trim_start().starts_with("region")),
        "no region: `make deploy` runs the guided deploy until one is saved"
    );
    let ignore = std::fs::read_to_string(workspace_root().join(".gitignore")).expect(".gitignore");
    assert!(ignore.lines().any(|l| l.trim() == ".aws-sam/"), ".aws-sam/ is ignored");
}

#[test]
fn update_service_is_allowed_only_on_opted_in_services() {
    let template = translated();
    let statements = statements_of(&template, "DeployOnPushRole");
    let updates: Vec<&Value> =
        statements.iter().filter(|s| as_list(&s["Action"]).iter().any(|a| a == "ecs:UpdateService")).collect();
    assert_eq!(updates.len(), 1, "one statement grants UpdateService");
    // IAM itself refuses a service without autopilot:deploy=on (the value the
    // code acts on; dry-run services are never updated).
    assert_eq!(
        updates[0]["Condition"]["StringEquals"],
        serde_json::json!({"aws:ResourceTag/autopilot:deploy": "on"}),
        "{:#}",
        updates[0]
    );
    assert_eq!(updates[0]["Effect"], "Allow");
    // No other role may update a service.
    for (role, _) in resources_of(&template, "AWS::IAM::Role") {
        if role != "DeployOnPushRole" {
            let any = statements_of(&template, role).iter().any(|s| {
                as_list(&s["Action"]).iter().any(|a| a.as_str().is_some_and(|a| a.starts_with("ecs:UpdateService")))
            });
            assert!(!any, "{role} may update services");
        }
    }
}

#[test]
fn pass_role_is_limited_to_pass_role_arns_or_the_documented_default() {
    let template = translated();
    let parameter = &template["Parameters"]["PassRoleArns"];
    assert_eq!(parameter["Type"], "CommaDelimitedList");
    assert_eq!(parameter["Default"], "");
    let pass = statements_of(&template, "DeployOnPushRole")
        .into_iter()
        .find(|s| as_list(&s["Action"]).iter().any(|a| a == "iam:PassRole"))
        .expect("a PassRole statement");
    assert_eq!(pass["Condition"]["StringEquals"]["iam:PassedToService"], "ecs-tasks.amazonaws.com");
    let choice = &pass["Resource"]["Fn::If"];
    assert_eq!(choice[0], "DefaultPassRoles");
    assert_eq!(choice[2], serde_json::json!({"Ref": "PassRoleArns"}));
    assert_eq!(
        template["Conditions"]["DefaultPassRoles"],
        serde_json::json!({"Fn::Equals": [{"Fn::Join": ["", {"Ref": "PassRoleArns"}]}, ""]})
    );
    // The default: the roles the ECS tutorials create, ecs-* names and the
    // /ecs/ path, never every role of the account.
    let defaults: Vec<String> = as_list(&choice[1])
        .iter()
        .map(|r| r["Fn::Sub"].as_str().expect("an ARN under Fn::Sub").replace("${AWS::Partition}", "aws"))
        .map(|r| r.replace("${AWS::AccountId}", "123456789012"))
        .collect();
    let allows =
        |role: &str| defaults.iter().any(|p| string_like(p, &format!("arn:aws:iam::123456789012:role/{role}")));
    for role in ["ecsTaskExecutionRole", "ecsTaskRole", "ecs-users-task", "ecs/users"] {
        assert!(allows(role), "{role} denied by {defaults:?}");
    }
    for role in ["admin", "OrganizationAccountAccessRole", "ecr-autopilot-DeployOnPushRole", "service-role/x"] {
        assert!(!allows(role), "{role} allowed by {defaults:?}");
    }
    // The README documents the parameter and its default.
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README");
    assert!(readme.contains("`PassRoleArns`") && !readme.contains("PassRoleArnPattern"));
}

/// The fan-out of prune-images and quota-scan (README, "Scale"): each has a
/// work queue, an event source mapping on it (one batch an invocation,
/// failed batches alone redelivered, bounded concurrency), a dead-letter
/// queue and alarms on both, the queue's URL in its environment, and a role
/// that can use only that queue.
#[test]
fn prune_images_and_quota_scan_fan_out_over_work_queues_with_dead_letter_queues_and_alarms() {
    let template = translated();
    for (function, role, queue, dead_letters) in [
        ("PruneImagesFunction", "PruneImagesRole", "PruneWorkQueue", "PruneWorkDeadLetterQueue"),
        ("QuotaScanFunction", "QuotaScanRole", "QuotaWorkQueue", "QuotaWorkDeadLetterQueue"),
    ] {
        fans_out(&template, function, role, queue, dead_letters);
    }
    let params = &template["Parameters"];
    let batch = &params["FanOutBatchSize"];
    assert_eq!((batch["Default"].as_u64(), batch["MaxValue"].as_u64()), (Some(200), Some(500)));
    assert_eq!(params["FanOutConcurrency"]["MinValue"], 2);
}

fn fans_out(template: &Value, function: &str, role: &str, queue_name: &str, dead_letters: &str) {
    let resources = &template["Resources"];
    let queue = &resources[queue_name]["Properties"];
    assert_eq!(resources[queue_name]["Type"], "AWS::SQS::Queue");
    let timeout = resources[function]["Properties"]["Timeout"].as_u64().expect("timeout");
    let visibility = queue["VisibilityTimeout"].as_u64().expect("visibility timeout");
    assert!(
        visibility >= 6 * timeout,
        "{queue_name}: visibility {visibility} s, timeout {timeout} s: Lambda advises 6×"
    );
    assert_eq!(queue["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0], dead_letters);
    let receives = queue["RedrivePolicy"]["maxReceiveCount"].as_u64().expect("maxReceiveCount");
    assert!((2..=5).contains(&receives), "a failed batch is retried, then parked: {receives}");
    assert_eq!(queue["SqsManagedSseEnabled"], true);

    let mappings = resources_of(template, "AWS::Lambda::EventSourceMapping");
    let (_, mapping) = mappings
        .iter()
        .find(|(_, m)| m["Properties"]["EventSourceArn"]["Fn::GetAtt"][0] == queue_name)
        .unwrap_or_else(|| panic!("no event source mapping on {queue_name}"));
    let p = &mapping["Properties"];
    assert_eq!(p["FunctionName"]["Ref"], function);
    assert_eq!(p["BatchSize"], 1, "one batch an invocation");
    assert_eq!(p["FunctionResponseTypes"], serde_json::json!(["ReportBatchItemFailures"]));
    assert_eq!(p["ScalingConfig"]["MaximumConcurrency"]["Ref"], "FanOutConcurrency");

    let variables = &resources[function]["Properties"]["Environment"]["Variables"];
    assert_eq!(variables["WORK_QUEUE_URL"]["Ref"], queue_name);
    assert_eq!(variables["FANOUT_BATCH_SIZE"]["Ref"], "FanOutBatchSize");
    let margin: u64 = variables["DEADLINE_MARGIN_SECS"].as_str().expect("margin").parse().expect("a number");
    assert!(margin < timeout, "the margin must leave time to work");

    let watched: Vec<(String, String)> = alarms(template)
        .iter()
        .filter(|(_, a)| a["Properties"]["Namespace"] == "AWS/SQS")
        .map(|(_, a)| {
            let p = &a["Properties"];
            let queue = p["Dimensions"][0]["Value"]["Fn::GetAtt"][0].as_str().unwrap_or_default().to_string();
            (queue, p["MetricName"].as_str().unwrap_or_default().to_string())
        })
        .collect();
    for expected in
        [(dead_letters, "ApproximateNumberOfMessagesVisible"), (queue_name, "ApproximateAgeOfOldestMessage")]
    {
        assert!(
            watched.iter().any(|(q, m)| (q.as_str(), m.as_str()) == expected),
            "no alarm on {expected:?}: {watched:?}"
        );
    }

    let statements = statements_of(template, role);
    let on_sqs = |s: &&Value| as_list(&s["Action"]).iter().any(|a| a.as_str().is_some_and(|a| a.starts_with("sqs:")));
    for statement in statements.iter().filter(on_sqs) {
        let resource = &statement["Resource"]["Fn::GetAtt"][0];
        assert!(resource == queue_name || resource == "FailureQueue", "{role}: sqs on {resource}");
    }
    let work: Vec<Value> = statements
        .iter()
        .filter(|s| s["Resource"]["Fn::GetAtt"][0] == queue_name)
        .flat_map(|s| as_list(&s["Action"]))
        .collect();
    for needed in ["sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"] {
        assert!(work.iter().any(|a| a == needed), "{role} lacks {needed} on its work queue");
    }
}
