//! ECS adapter: [`EcsRead`] on `aws-sdk-ecs`, paginated with the SDK's
//! paginators.

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_ecs::types::{ServiceField, TaskDefinitionField};
use aws_sdk_ecs::Client;

use super::classify;
use crate::model::{Container, LogConfiguration, Service, TaskDefinition};
use crate::ports::EcsRead;
use crate::AwsError;

/// DescribeServices takes at most this many services per call.
pub const DESCRIBE_SERVICES_BATCH: usize = 10;

pub struct EcsAdapter {
    client: Client,
}

impl EcsAdapter {
    pub fn new(sdk: &SdkConfig) -> Self {
        Self::from_client(Client::new(sdk))
    }

    pub fn from_client(client: Client) -> Self {
        EcsAdapter { client }
    }
}

#[async_trait]
impl EcsRead for EcsAdapter {
    async fn list_clusters(&self) -> Result<Vec<String>, AwsError> {
        self.client
            .list_clusters()
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| classify("ListClusters", e))
    }

    async fn list_services(&self, cluster: &str) -> Result<Vec<String>, AwsError> {
        self.client
            .list_services()
            .cluster(cluster)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| classify("ListServices", e))
    }

    async fn describe_services(&self, cluster: &str, services: &[String]) -> Result<Vec<Service>, AwsError> {
        let mut described = Vec::with_capacity(services.len());
        for batch in services.chunks(DESCRIBE_SERVICES_BATCH) {
            let output = self
                .client
                .describe_services()
                .cluster(cluster)
                .set_services(Some(batch.to_vec()))
                .include(ServiceField::Tags)
                .send()
                .await
                .map_err(|e| classify("DescribeServices", e))?;
            described.extend(output.services().iter().filter_map(to_service));
        }
        Ok(described)
    }

    async fn describe_task_definition(&self, task_definition: &str) -> Result<TaskDefinition, AwsError> {
        let output = self
            .client
            .describe_task_definition()
            .task_definition(task_definition)
            .include(TaskDefinitionField::Tags)
            .send()
            .await
            .map_err(|e| classify("DescribeTaskDefinition", e))?;
        output
            .task_definition()
            .and_then(to_task_definition)
            .ok_or_else(|| AwsError {
                operation: "DescribeTaskDefinition",
                code: None,
                message: format!("no task definition in the response for {task_definition}"),
                retryable: false,
                source: None,
            })
    }
}

fn to_service(s: &aws_sdk_ecs::types::Service) -> Option<Service> {
    Some(Service {
        arn: s.service_arn()?.to_string(),
        name: s.service_name()?.to_string(),
        cluster_arn: s.cluster_arn()?.to_string(),
        task_definition: s.task_definition()?.to_string(),
        tags: s
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
            .collect(),
    })
}

fn to_task_definition(td: &aws_sdk_ecs::types::TaskDefinition) -> Option<TaskDefinition> {
    Some(TaskDefinition {
        arn: td.task_definition_arn()?.to_string(),
        family: td.family()?.to_string(),
        revision: td.revision(),
        containers: td
            .container_definitions()
            .iter()
            .map(|c| Container {
                name: c.name().unwrap_or_default().to_string(),
                image: c.image().unwrap_or_default().to_string(),
                log: c.log_configuration().map(|l| LogConfiguration {
                    driver: l.log_driver().as_str().to_string(),
                    options: l
                        .options()
                        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                        .unwrap_or_default(),
                }),
            })
            .collect(),
    })
}
