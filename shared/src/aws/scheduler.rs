//! EventBridge Scheduler adapter: [`ScheduleTargets`] on `aws-sdk-scheduler`.
//! ListSchedules (every group) says only each target's ARN; GetSchedule is
//! asked only for schedules that target ECS.

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_scheduler::Client;

use super::{classify, ApiCalls};
use crate::ports::{EcsTarget, ScheduleTargets};
use crate::AwsError;

/// The universal target that calls ECS RunTask with the schedule's input.
const RUN_TASK_TARGET: &str = "aws-sdk:ecs:runTask";

pub struct SchedulerAdapter {
    client: Client,
}

impl SchedulerAdapter {
    /// A client for `region` (the SDK configuration's own when `None`).
    pub fn new(sdk: &SdkConfig, calls: &ApiCalls, region: Option<&str>) -> Self {
        let mut config = aws_sdk_scheduler::config::Builder::from(sdk).interceptor(calls.clone());
        if let Some(region) = region {
            config = config.region(aws_config::Region::new(region.to_string()));
        }
        Self::from_client(Client::from_conf(config.build()))
    }

    pub fn from_client(client: Client) -> Self {
        SchedulerAdapter { client }
    }
}

/// Does a target with this ARN run an ECS task? An ECS cluster ARN (the
/// templated target) or the universal RunTask target.
pub fn targets_ecs(arn: &str) -> bool {
    arn.contains(":ecs:") && arn.contains(":cluster/") || arn.ends_with(RUN_TASK_TARGET)
}

#[async_trait]
impl ScheduleTargets for SchedulerAdapter {
    async fn ecs_targets(&self) -> Result<Vec<EcsTarget>, AwsError> {
        let summaries: Vec<aws_sdk_scheduler::types::ScheduleSummary> = self
            .client
            .list_schedules()
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| classify("ListSchedules", e))?;
        let mut found = Vec::new();
        for s in summaries {
            let (Some(name), Some(arn)) = (s.name(), s.target().map(|t| t.arn())) else { continue };
            if !targets_ecs(arn) {
                continue;
            }
            let group = s.group_name().unwrap_or("default");
            let result = self.client.get_schedule().name(name).group_name(group).send().await;
            let output = match result {
                Ok(output) => output,
                Err(e) => {
                    let error = classify("GetSchedule", e);
                    if error.code_is("ResourceNotFoundException") {
                        continue; // deleted since the listing
                    }
                    return Err(error);
                }
            };
            let Some(target) = output.target() else { continue };
            let who = format!("{group}/{name}");
            if let Some(td) = target.ecs_parameters().map(|p| p.task_definition_arn()) {
                found.push((who, td.to_string()));
            } else if let Some(td) = target.input().and_then(run_task_input_task_definition) {
                found.push((who, td));
            }
        }
        Ok(found)
    }
}

/// The universal RunTask target's input is the RunTask request itself.
pub fn run_task_input_task_definition(input: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(input).ok()?;
    value.get("TaskDefinition").or_else(|| value.get("taskDefinition"))?.as_str().map(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecs_targets_are_clusters_or_the_run_task_target() {
        assert!(targets_ecs("arn:aws:ecs:us-east-1:123456789012:cluster/batch"));
        assert!(targets_ecs("arn:aws:scheduler:::aws-sdk:ecs:runTask"));
        assert!(!targets_ecs("arn:aws:lambda:us-east-1:123456789012:function:f"));
        assert!(!targets_ecs("arn:aws:sqs:us-east-1:123456789012:cluster/odd-queue-name"));
        assert_eq!(
            run_task_input_task_definition(r#"{"Cluster":"c","TaskDefinition":"nightly:3"}"#).as_deref(),
            Some("nightly:3")
        );
        assert_eq!(run_task_input_task_definition("not json"), None);
    }
}
