//! SNS adapter: [`Notifier`] on `aws-sdk-sns`, publishing to one topic (the
//! stack's alarm topic).

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_sns::Client;

use super::{classify, ApiCalls};
use crate::ports::Notifier;
use crate::AwsError;

/// SNS caps an email subject at 100 characters.
const SUBJECT_MAX: usize = 100;

pub struct SnsNotifier {
    client: Client,
    topic_arn: String,
}

impl SnsNotifier {
    pub fn new(sdk: &SdkConfig, calls: &ApiCalls, topic_arn: &str) -> Self {
        let config = aws_sdk_sns::config::Builder::from(sdk).interceptor(calls.clone()).build();
        Self::from_client(Client::from_conf(config), topic_arn)
    }

    pub fn from_client(client: Client, topic_arn: &str) -> Self {
        SnsNotifier { client, topic_arn: topic_arn.to_string() }
    }
}

#[async_trait]
impl Notifier for SnsNotifier {
    async fn publish(&self, subject: &str, message: &str) -> Result<(), AwsError> {
        // A subject is ASCII without line breaks, at most 100 characters.
        let subject: String = subject
            .chars()
            .map(|c| if c.is_ascii() && !c.is_ascii_control() { c } else { ' ' })
            .take(SUBJECT_MAX)
            .collect();
        self.client
            .publish()
            .topic_arn(&self.topic_arn)
            .subject(subject)
            .message(message)
            .send()
            .await
            .map_err(|e| classify("Publish", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sns::operation::publish::PublishOutput;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    #[tokio::test]
    async fn publishes_to_the_topic_with_a_subject_sns_accepts() {
        let topic = "arn:aws:sns:us-east-1:123456789012:alarms";
        let rule = mock!(Client::publish)
            .match_requests(move |r| {
                r.topic_arn() == Some(topic)
                    && r.subject().is_some_and(|s| s.len() <= SUBJECT_MAX && !s.contains('\n'))
                    && r.message() == Some("body")
            })
            .then_output(|| PublishOutput::builder().message_id("m-1").build());
        let sns = SnsNotifier::from_client(mock_client!(aws_sdk_sns, RuleMode::Sequential, [&rule]), topic);
        sns.publish(&format!("rollout failed\n{}", "x".repeat(200)), "body").await.expect("published");
        assert_eq!(rule.num_calls(), 1);
    }
}
