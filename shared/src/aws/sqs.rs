//! SQS adapter: [`WorkQueue`] on `aws-sdk-sqs`, sending to one queue (the
//! function's work queue, `WORK_QUEUE_URL`) ten messages a call.

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use aws_sdk_sqs::Client;

use super::{classify, ApiCalls};
use crate::ports::WorkQueue;
use crate::AwsError;

/// SendMessageBatch takes at most ten entries.
pub const SEND_BATCH: usize = 10;

pub struct SqsWorkQueue {
    client: Client,
    queue_url: String,
}

impl SqsWorkQueue {
    pub fn new(sdk: &SdkConfig, calls: &ApiCalls, queue_url: &str) -> Self {
        let config = aws_sdk_sqs::config::Builder::from(sdk).interceptor(calls.clone()).build();
        Self::from_client(Client::from_conf(config), queue_url)
    }

    pub fn from_client(client: Client, queue_url: &str) -> Self {
        SqsWorkQueue { client, queue_url: queue_url.to_string() }
    }

    /// One SendMessageBatch; the entries SQS did not take, by index.
    async fn send_batch(&self, bodies: &[(usize, &String)]) -> Result<Vec<(usize, String)>, AwsError> {
        let entries = bodies
            .iter()
            .map(|(i, body)| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body.as_str())
                    .build()
                    .map_err(|e| AwsError::unexpected("SendMessageBatch", e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let output = self
            .client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| classify("SendMessageBatch", e))?;
        Ok(output
            .failed()
            .iter()
            .map(|f| {
                let index = f.id().parse().unwrap_or(usize::MAX);
                (index, format!("{}: {}", f.code(), f.message().unwrap_or_default()))
            })
            .collect())
    }
}

#[async_trait]
impl WorkQueue for SqsWorkQueue {
    /// Ten a call; entries SQS refused one by one are sent once more, and
    /// still refused they fail the whole send, naming the first.
    async fn send(&self, bodies: &[String]) -> Result<(), AwsError> {
        let indexed: Vec<(usize, &String)> = bodies.iter().enumerate().collect();
        for chunk in indexed.chunks(SEND_BATCH) {
            let failed = self.send_batch(chunk).await?;
            if failed.is_empty() {
                continue;
            }
            let again: Vec<(usize, &String)> =
                chunk.iter().filter(|(i, _)| failed.iter().any(|(f, _)| f == i)).copied().collect();
            let still = self.send_batch(&again).await?;
            if let Some((index, why)) = still.first() {
                return Err(AwsError {
                    retryable: true,
                    ..AwsError::unexpected(
                        "SendMessageBatch",
                        format!("{} message(s) not accepted; message {index}: {why}", still.len()),
                    )
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchOutput;
    use aws_sdk_sqs::types::{BatchResultErrorEntry, SendMessageBatchResultEntry};
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    fn ok(id: &str) -> SendMessageBatchResultEntry {
        SendMessageBatchResultEntry::builder().id(id).message_id("m").md5_of_message_body("x").build().expect("entry")
    }

    #[tokio::test]
    async fn sends_ten_a_call() {
        let rule = mock!(Client::send_message_batch)
            .match_requests(|r| r.entries().len() <= SEND_BATCH && r.queue_url() == Some("https://q"))
            .then_output(|| {
                SendMessageBatchOutput::builder().successful(ok("0")).set_failed(Some(vec![])).build().expect("output")
            });
        let client = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&rule]);
        let bodies: Vec<String> = (0..23).map(|i| format!("{{\"batch\":{i}}}")).collect();
        SqsWorkQueue::from_client(client, "https://q").send(&bodies).await.expect("sent");
        assert_eq!(rule.num_calls(), 3, "23 messages: 10 + 10 + 3");
    }

    #[tokio::test]
    async fn an_entry_refused_twice_fails_the_send() {
        let refused = || {
            SendMessageBatchOutput::builder()
                .set_successful(Some(vec![]))
                .failed(
                    BatchResultErrorEntry::builder()
                        .id("1")
                        .code("InternalError")
                        .sender_fault(false)
                        .message("try later")
                        .build()
                        .expect("entry"),
                )
                .build()
                .expect("output")
        };
        let rule = mock!(Client::send_message_batch).then_output(refused);
        let client = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&rule]);
        let error = SqsWorkQueue::from_client(client, "https://q")
            .send(&["a".to_string(), "b".to_string()])
            .await
            .expect_err("refused twice");
        assert_eq!(rule.num_calls(), 2, "the refused entry is sent once more");
        assert!(error.retryable);
        assert!(error.message.contains("message 1: InternalError: try later"), "{error}");
    }
}
