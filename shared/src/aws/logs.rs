//! CloudWatch Logs adapter: [`LogGroupStore`] on `aws-sdk-cloudwatchlogs`.

use std::marker::PhantomData;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_cloudwatchlogs::config::retry::{ClassifyRetry, RetryAction};
use aws_sdk_cloudwatchlogs::config::Builder;
use aws_sdk_cloudwatchlogs::error::ProvideErrorMetadata;
use aws_sdk_cloudwatchlogs::operation::create_log_group::CreateLogGroupError;
use aws_sdk_cloudwatchlogs::operation::describe_log_groups::DescribeLogGroupsError;
use aws_sdk_cloudwatchlogs::operation::list_tags_for_resource::ListTagsForResourceError;
use aws_sdk_cloudwatchlogs::operation::put_retention_policy::PutRetentionPolicyError;
use aws_sdk_cloudwatchlogs::operation::tag_resource::TagResourceError;
use aws_sdk_cloudwatchlogs::Client;
use aws_smithy_runtime_api::client::interceptors::context::InterceptorContext;
use aws_smithy_runtime_api::client::orchestrator::OrchestratorError;

use super::classify;
use crate::model::{LogGroup, Tags};
use crate::ports::{Created, LogGroupStore};
use crate::AwsError;

pub struct LogsAdapter {
    client: Client,
}

impl LogsAdapter {
    pub fn new(sdk: &SdkConfig) -> Self {
        Self::from_client(Client::from_conf(with_retry_classifiers(Builder::from(sdk)).build()))
    }

    pub fn from_client(client: Client) -> Self {
        LogsAdapter { client }
    }
}

/// CloudWatch Logs answers `OperationAbortedException` when two writers touch
/// one group at once. The SDK's standard classifier does not retry it; these
/// classifiers make it a transient error, so it gets the same backoff as
/// throttling, for every operation this adapter calls.
pub fn with_retry_classifiers(builder: Builder) -> Builder {
    builder
        .retry_classifier(AbortedIsTransient::<CreateLogGroupError>::new())
        .retry_classifier(AbortedIsTransient::<PutRetentionPolicyError>::new())
        .retry_classifier(AbortedIsTransient::<TagResourceError>::new())
        .retry_classifier(AbortedIsTransient::<DescribeLogGroupsError>::new())
        .retry_classifier(AbortedIsTransient::<ListTagsForResourceError>::new())
}

#[derive(Debug)]
struct AbortedIsTransient<E>(PhantomData<fn() -> E>);

impl<E> AbortedIsTransient<E> {
    fn new() -> Self {
        AbortedIsTransient(PhantomData)
    }
}

impl<E> ClassifyRetry for AbortedIsTransient<E>
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        let code = match ctx.output_or_error() {
            Some(Err(error)) => OrchestratorError::as_operation_error(error)
                .and_then(|e| e.downcast_ref::<E>())
                .and_then(|e| e.code()),
            _ => None,
        };
        match code {
            Some("OperationAbortedException") => RetryAction::transient_error(),
            _ => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "OperationAbortedException is transient"
    }
}

#[async_trait]
impl LogGroupStore for LogsAdapter {
    async fn find(&self, name: &str) -> Result<Option<LogGroup>, AwsError> {
        // The prefix match may return siblings (`/ecs/users-envoy` for
        // `/ecs/users`); page through them for the exact name.
        let mut pages = self
            .client
            .describe_log_groups()
            .log_group_name_prefix(name)
            .into_paginator()
            .items()
            .send();
        let mut found = None;
        while let Some(group) = pages.next().await {
            let group = group.map_err(|e| classify("DescribeLogGroups", e))?;
            if group.log_group_name() == Some(name) {
                found = Some(group);
                break;
            }
        }
        let Some(group) = found else {
            return Ok(None);
        };
        let arn = group
            .log_group_arn()
            .map(String::from)
            .or_else(|| group.arn().map(|a| a.trim_end_matches(":*").to_string()));
        let tags = match &arn {
            Some(arn) => self
                .client
                .list_tags_for_resource()
                .resource_arn(arn)
                .send()
                .await
                .map_err(|e| classify("ListTagsForResource", e))?
                .tags
                .unwrap_or_default()
                .into_iter()
                .collect(),
            None => Tags::new(),
        };
        Ok(Some(LogGroup {
            name: name.to_string(),
            arn,
            retention_days: group.retention_in_days(),
            kms_key_id: group.kms_key_id().map(String::from),
            tags,
        }))
    }

    async fn create(&self, name: &str, tags: &Tags, kms_key_id: Option<&str>) -> Result<Created, AwsError> {
        let result = self
            .client
            .create_log_group()
            .log_group_name(name)
            .set_tags(Some(tags.clone().into_iter().collect()))
            .set_kms_key_id(kms_key_id.map(String::from))
            .send()
            .await;
        match result {
            Ok(_) => Ok(Created::New),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_already_exists_exception()) => {
                Ok(Created::AlreadyExisted)
            }
            Err(e) => Err(classify("CreateLogGroup", e)),
        }
    }

    async fn put_retention(&self, name: &str, days: i32) -> Result<(), AwsError> {
        self.client
            .put_retention_policy()
            .log_group_name(name)
            .retention_in_days(days)
            .send()
            .await
            .map_err(|e| classify("PutRetentionPolicy", e))?;
        Ok(())
    }

    async fn tag(&self, arn: &str, tags: &Tags) -> Result<(), AwsError> {
        self.client
            .tag_resource()
            .resource_arn(arn)
            .set_tags(Some(tags.clone().into_iter().collect()))
            .send()
            .await
            .map_err(|e| classify("TagResource", e))?;
        Ok(())
    }
}
