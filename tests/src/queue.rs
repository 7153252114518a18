//! Lambda's SQS event source mapping, which moto does not emulate: a work
//! queue on moto's SQS and a poller that hands its messages to a function
//! the way Lambda does (BatchSize 1, ReportBatchItemFailures).

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use serde_json::{json, Value};

use crate::{moto, Lambda, REGION};

/// Lambda's SQS poller, for one queue and one function, one message a time.
pub struct EventSourceMapping {
    pub sqs: aws_sdk_sqs::Client,
    pub url: String,
    pub arn: String,
    pub dead_letter_url: String,
}

/// One delivery: the batch it carried, and whether the function failed it.
#[derive(Debug)]
pub struct Delivery {
    pub batch: Value,
    pub failed: bool,
    /// The function's answer.
    pub answer: Value,
    /// How long the invocation took, in seconds.
    pub seconds: f64,
}

impl EventSourceMapping {
    /// A work queue (visibility 1 s, so a failed batch is back quickly) with
    /// a dead-letter queue after `max_receives` receives.
    pub async fn create(name: &str, max_receives: u32) -> EventSourceMapping {
        let sqs = aws_sdk_sqs::Client::new(&moto().sdk_config().await);
        let dead_letter_url = sqs
            .create_queue()
            .queue_name(format!("{name}-dlq"))
            .send()
            .await
            .expect("create dead-letter queue")
            .queue_url
            .expect("url");
        let dead_letter_arn = queue_arn(&sqs, &dead_letter_url).await;
        let redrive = json!({"deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": max_receives}).to_string();
        let url = sqs
            .create_queue()
            .queue_name(name)
            .attributes(QueueAttributeName::VisibilityTimeout, "1")
            .attributes(QueueAttributeName::RedrivePolicy, redrive)
            .send()
            .await
            .expect("create work queue")
            .queue_url
            .expect("url");
        let arn = queue_arn(&sqs, &url).await;
        EventSourceMapping { sqs, url, arn, dead_letter_url }
    }

    /// Receives one message and hands it to `lambda` as Lambda would; `None`
    /// when the queue has nothing visible.
    pub async fn deliver_one(&self, lambda: &Lambda) -> Option<Delivery> {
        let received = self
            .sqs
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(1)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .expect("receive");
        let message = received.messages().first()?.clone();
        let id = message.message_id().expect("id").to_string();
        let body = message.body().unwrap_or_default().to_string();
        let attributes: BTreeMap<String, String> = message
            .attributes()
            .map(|a| a.iter().map(|(k, v)| (k.as_str().to_string(), v.clone())).collect())
            .unwrap_or_default();
        let event = json!({"Records": [{
            "messageId": id,
            "receiptHandle": message.receipt_handle().unwrap_or_default(),
            "body": body,
            "attributes": attributes,
            "messageAttributes": {},
            "md5OfBody": message.md5_of_body().unwrap_or_default(),
            "eventSource": "aws:sqs",
            "eventSourceARN": self.arn,
            "awsRegion": REGION,
        }]});
        let began = std::time::Instant::now();
        let answer = lambda.invoke(&event).unwrap_or_else(|e| panic!("SQS invocation failed: {e:?}"));
        let seconds = began.elapsed().as_secs_f64();
        let failures =
            answer["batchItemFailures"].as_array().unwrap_or_else(|| panic!("no batchItemFailures: {answer}"));
        let failed = failures.iter().any(|f| f["itemIdentifier"] == id.as_str());
        if !failed {
            self.sqs
                .delete_message()
                .queue_url(&self.url)
                .receipt_handle(message.receipt_handle().unwrap_or_default())
                .send()
                .await
                .expect("delete");
        }
        Some(Delivery { batch: serde_json::from_str(&body).unwrap_or(Value::Null), failed, answer, seconds })
    }

    /// Delivers until the queue stays empty past the visibility timeout;
    /// more than `most` deliveries means it does not drain (a panic).
    pub async fn drain(&self, lambda: &Lambda, most: usize, on_delivery: impl Fn(usize)) -> Vec<Delivery> {
        let mut deliveries = Vec::new();
        let mut idle = 0;
        while idle < 3 {
            on_delivery(deliveries.len());
            match self.deliver_one(lambda).await {
                Some(delivery) => {
                    idle = 0;
                    deliveries.push(delivery);
                    assert!(deliveries.len() <= most, "the queue does not drain: {deliveries:?}");
                }
                None => {
                    idle += 1;
                    tokio::time::sleep(Duration::from_millis(800)).await;
                }
            }
        }
        deliveries
    }

    pub async fn dead_letters(&self) -> usize {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.dead_letter_url)
            .max_number_of_messages(10)
            .send()
            .await
            .expect("receive dead letters");
        out.messages().len()
    }
}

pub async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> String {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("queue attributes");
    out.attributes().and_then(|a| a.get(&QueueAttributeName::QueueArn)).expect("QueueArn").clone()
}
