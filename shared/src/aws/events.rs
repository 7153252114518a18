//! EventBridge adapter: [`RuleTargets`] on `aws-sdk-eventbridge`. Every event
//! bus, every rule on it, every target with ECS parameters.

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_eventbridge::Client;

use super::{classify, ApiCalls};
use crate::ports::{EcsTarget, RuleTargets};
use crate::AwsError;

/// ListEventBuses, ListRules and ListTargetsByRule page size (their maximum).
const PAGE: i32 = 100;

pub struct EventBridgeAdapter {
    client: Client,
}

impl EventBridgeAdapter {
    /// A client for `region` (the SDK configuration's own when `None`).
    pub fn new(sdk: &SdkConfig, calls: &ApiCalls, region: Option<&str>) -> Self {
        let mut config = aws_sdk_eventbridge::config::Builder::from(sdk).interceptor(calls.clone());
        if let Some(region) = region {
            config = config.region(aws_config::Region::new(region.to_string()));
        }
        Self::from_client(Client::from_conf(config.build()))
    }

    pub fn from_client(client: Client) -> Self {
        EventBridgeAdapter { client }
    }

    async fn buses(&self) -> Result<Vec<String>, AwsError> {
        let mut buses = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let output = self
                .client
                .list_event_buses()
                .limit(PAGE)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| classify("ListEventBuses", e))?;
            buses.extend(output.event_buses().iter().filter_map(|b| b.name().map(String::from)));
            match output.next_token() {
                Some(next) if !next.is_empty() => token = Some(next.to_string()),
                _ => return Ok(buses),
            }
        }
    }

    async fn rules(&self, bus: &str) -> Result<Vec<String>, AwsError> {
        let mut rules = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let output = self
                .client
                .list_rules()
                .event_bus_name(bus)
                .limit(PAGE)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| classify("ListRules", e))?;
            rules.extend(output.rules().iter().filter_map(|r| r.name().map(String::from)));
            match output.next_token() {
                Some(next) if !next.is_empty() => token = Some(next.to_string()),
                _ => return Ok(rules),
            }
        }
    }
}

#[async_trait]
impl RuleTargets for EventBridgeAdapter {
    async fn ecs_targets(&self) -> Result<Vec<EcsTarget>, AwsError> {
        let mut found = Vec::new();
        for bus in self.buses().await? {
            for rule in self.rules(&bus).await? {
                let mut token: Option<String> = None;
                loop {
                    let result = self
                        .client
                        .list_targets_by_rule()
                        .rule(&rule)
                        .event_bus_name(&bus)
                        .limit(PAGE)
                        .set_next_token(token.take())
                        .send()
                        .await;
                    let output = match result {
                        Ok(output) => output,
                        // deleted since ListRules: it targets nothing any more
                        Err(e) => {
                            let error = classify("ListTargetsByRule", e);
                            if error.code_is("ResourceNotFoundException") {
                                break;
                            }
                            return Err(error);
                        }
                    };
                    for target in output.targets() {
                        if let Some(td) = target.ecs_parameters().map(|p| p.task_definition_arn()) {
                            found.push((format!("{bus}/{rule}"), td.to_string()));
                        }
                    }
                    match output.next_token() {
                        Some(next) if !next.is_empty() => token = Some(next.to_string()),
                        _ => break,
                    }
                }
            }
        }
        Ok(found)
    }
}
