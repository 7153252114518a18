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

use super::{classify, ApiCalls};
use crate::model::{LogGroup, Tags};
use crate::ports::{Created, LogGroupStore};
use crate::AwsError;

pub struct LogsAdapter {
    client: Client,
}

impl LogsAdapter {
    pub fn new(sdk: &SdkConfig, calls: &ApiCalls) -> Self {
        let config = with_retry_classifiers(Builder::from(sdk)).interceptor(calls.clone()).build();
        Self::from_client(Client::from_conf(config))
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
            Some(Err(error)) => {
                OrchestratorError::as_operation_error(error).and_then(|e| e.downcast_ref::<E>()).and_then(|e| e.code())
            }
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
        let mut pages = self.client.describe_log_groups().log_group_name_prefix(name).into_paginator().items().send();
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

/// Adapter tests against the real SDK client with `aws-smithy-mocks`: retry
/// classification and paging are what moto cannot show (it never throttles,
/// never aborts, and answers a prefix search in one page).
#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_cloudwatchlogs::config::retry::RetryConfig;
    use aws_sdk_cloudwatchlogs::operation::create_log_group::CreateLogGroupOutput;
    use aws_sdk_cloudwatchlogs::operation::describe_log_groups::DescribeLogGroupsOutput;
    use aws_sdk_cloudwatchlogs::operation::list_tags_for_resource::ListTagsForResourceOutput;
    use aws_sdk_cloudwatchlogs::operation::put_retention_policy::PutRetentionPolicyOutput;
    use aws_sdk_cloudwatchlogs::types::LogGroup as SdkLogGroup;
    use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};

    fn error_body(code: &str) -> Option<String> {
        Some(format!(r#"{{"__type":"{code}","message":"{code} for the test"}}"#))
    }

    fn adapter(rules: &[&Rule], attempts: u32) -> LogsAdapter {
        let client = mock_client!(aws_sdk_cloudwatchlogs, RuleMode::Sequential, rules, |b| {
            with_retry_classifiers(b).retry_config(RetryConfig::standard().with_max_attempts(attempts))
        });
        LogsAdapter::from_client(client)
    }

    #[tokio::test]
    async fn operation_aborted_is_retried_until_it_succeeds() {
        let rule = mock!(Client::put_retention_policy)
            .sequence()
            .http_status(400, error_body("OperationAbortedException"))
            .times(2)
            .output(|| PutRetentionPolicyOutput::builder().build())
            .build();
        adapter(&[&rule], 5).put_retention("/ecs/users", 7).await.expect("succeeds on the third try");
        assert_eq!(rule.num_calls(), 3);
    }

    #[tokio::test]
    async fn exhausted_throttling_is_a_retryable_error() {
        let rule = mock!(Client::create_log_group)
            .sequence()
            .http_status(400, error_body("ThrottlingException"))
            .repeatedly()
            .build();
        let error = adapter(&[&rule], 3).create("/ecs/users", &Tags::new(), None).await.expect_err("throttled");
        assert_eq!(rule.num_calls(), 3, "the SDK retried up to max attempts");
        assert!(error.retryable);
        assert_eq!(error.code.as_deref(), Some("ThrottlingException"));
        assert_eq!(error.operation, "CreateLogGroup");
    }

    #[tokio::test]
    async fn access_denied_is_not_retried() {
        let rule = mock!(Client::put_retention_policy)
            .sequence()
            .http_status(400, error_body("AccessDeniedException"))
            .repeatedly()
            .build();
        let error = adapter(&[&rule], 5).put_retention("/ecs/users", 7).await.expect_err("denied");
        assert_eq!(rule.num_calls(), 1);
        assert!(!error.retryable);
    }

    #[tokio::test]
    async fn server_errors_are_retried_then_reported_retryable() {
        let rule = mock!(Client::put_retention_policy).sequence().http_status(503, None).repeatedly().build();
        let error = adapter(&[&rule], 2).put_retention("/ecs/users", 7).await.expect_err("unavailable");
        assert_eq!(rule.num_calls(), 2);
        assert!(error.retryable);
    }

    #[tokio::test]
    async fn already_exists_is_success() {
        let exists = mock!(Client::create_log_group)
            .sequence()
            .http_status(400, error_body("ResourceAlreadyExistsException"))
            .build();
        let created = mock!(Client::create_log_group).then_output(|| CreateLogGroupOutput::builder().build());
        let logs = adapter(&[&exists, &created], 3);
        assert_eq!(logs.create("/ecs/users", &Tags::new(), None).await.expect("ok"), Created::AlreadyExisted);
        assert_eq!(logs.create("/ecs/posts", &Tags::new(), None).await.expect("ok"), Created::New);
        assert_eq!(exists.num_calls(), 1, "already-exists is not retried");
    }

    #[tokio::test]
    async fn find_pages_past_prefix_siblings_to_the_exact_name() {
        let group = |name: &str, retention: Option<i32>| {
            SdkLogGroup::builder()
                .log_group_name(name)
                .log_group_arn(format!("arn:aws:logs:us-east-1:123456789012:log-group:{name}"))
                .arn(format!("arn:aws:logs:us-east-1:123456789012:log-group:{name}:*"))
                .set_retention_in_days(retention)
                .build()
        };
        let pages = mock!(Client::describe_log_groups)
            .sequence()
            .output(move || {
                DescribeLogGroupsOutput::builder()
                    .log_groups(group("/ecs/users-envoy", Some(1)))
                    .next_token("page-2")
                    .build()
            })
            .output(move || DescribeLogGroupsOutput::builder().log_groups(group("/ecs/users", None)).build())
            .build();
        let tags = mock!(Client::list_tags_for_resource)
            .match_requests(|r| r.resource_arn() == Some("arn:aws:logs:us-east-1:123456789012:log-group:/ecs/users"))
            .then_output(|| ListTagsForResourceOutput::builder().tags("autopilot:retention", "manual").build());
        let found = adapter(&[&pages, &tags], 3).find("/ecs/users").await.expect("read").expect("found");
        assert_eq!(pages.num_calls(), 2);
        assert_eq!(found.retention_days, None);
        assert_eq!(found.tags.get("autopilot:retention").map(String::as_str), Some("manual"));
        assert_eq!(found.arn.as_deref(), Some("arn:aws:logs:us-east-1:123456789012:log-group:/ecs/users"));
    }
}
