//! A snapshot of everything the functions write, read back from the local
//! AWS, so a test can say "nothing changed" or "the same end state" exactly:
//!
//! - ECS: every task definition (ACTIVE and INACTIVE) with its status, tags
//!   and each container's image and log options; every service's task
//!   definition, desired count and tags;
//! - ECR: per repository, every image (whatever its `imageStatus`) with its
//!   tags and status, and the repository's lifecycle policy text;
//! - CloudWatch Logs: every log group with its retention, KMS key and tags.
//!
//! Times (`registeredAt`, `imagePushedAt`, ...) are left out: two runs that
//! build the same world differ in them and nothing else.

use std::collections::BTreeMap;

use aws_sdk_ecr::types::{DescribeImagesFilter, ImageStatusFilter};
use aws_sdk_ecs::types::TaskDefinitionField;

use crate::world::World;

/// One line per resource, keyed by a stable name; compare with `==`, show
/// differences with [`diff`].
pub type Snapshot = BTreeMap<String, String>;

pub async fn snapshot(world: &World) -> Snapshot {
    let mut out = Snapshot::new();
    ecs(world, &mut out).await;
    ecr(world, &mut out).await;
    logs(world, &mut out).await;
    out
}

async fn ecs(world: &World, out: &mut Snapshot) {
    for status in [aws_sdk_ecs::types::TaskDefinitionStatus::Active, aws_sdk_ecs::types::TaskDefinitionStatus::Inactive]
    {
        let arns: Vec<String> = world
            .ecs
            .list_task_definitions()
            .status(status)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .expect("list_task_definitions");
        for arn in arns {
            let out_td = world
                .ecs
                .describe_task_definition()
                .task_definition(&arn)
                .include(TaskDefinitionField::Tags)
                .send()
                .await
                .expect("describe_task_definition");
            let td = out_td.task_definition().expect("task definition");
            let containers: Vec<String> = td
                .container_definitions()
                .iter()
                .map(|c| {
                    let options: BTreeMap<_, _> =
                        c.log_configuration().and_then(|l| l.options()).map(|o| o.iter().collect()).unwrap_or_default();
                    format!("{}={} logs={:?}", c.name().unwrap_or_default(), c.image().unwrap_or_default(), options)
                })
                .collect();
            let tags: BTreeMap<_, _> =
                out_td.tags().iter().map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default())).collect();
            out.insert(
                format!("ecs task-definition {arn}"),
                format!("status={:?} containers={containers:?} tags={tags:?}", td.status()),
            );
        }
    }
    let clusters = world.ecs.list_clusters().send().await.expect("list_clusters");
    for cluster in clusters.cluster_arns() {
        let services = world.ecs.list_services().cluster(cluster).send().await.expect("list_services");
        for chunk in services.service_arns().chunks(10) {
            let described = world
                .ecs
                .describe_services()
                .cluster(cluster)
                .set_services(Some(chunk.to_vec()))
                .include(aws_sdk_ecs::types::ServiceField::Tags)
                .send()
                .await
                .expect("describe_services");
            for service in described.services() {
                let tags: BTreeMap<_, _> = service
                    .tags()
                    .iter()
                    .map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default()))
                    .collect();
                out.insert(
                    format!("ecs service {}", service.service_arn().unwrap_or_default()),
                    format!(
                        "taskDefinition={} desired={} tags={tags:?}",
                        service.task_definition().unwrap_or_default(),
                        service.desired_count()
                    ),
                );
            }
        }
    }
}

async fn ecr(world: &World, out: &mut Snapshot) {
    let repositories = world.ecr.describe_repositories().send().await.expect("describe_repositories");
    for repository in repositories.repositories() {
        let name = repository.repository_name().unwrap_or_default();
        let images = world
            .ecr
            .describe_images()
            .repository_name(name)
            .filter(DescribeImagesFilter::builder().image_status(ImageStatusFilter::Any).build())
            .send()
            .await
            .expect("describe_images");
        for image in images.image_details() {
            let mut tags = image.image_tags().to_vec();
            tags.sort();
            out.insert(
                format!("ecr image {name}@{}", image.image_digest().unwrap_or_default()),
                format!("tags={tags:?} status={:?}", image.image_status()),
            );
        }
        let policy = world.ecr.get_lifecycle_policy().repository_name(name).send().await;
        let policy = policy.ok().and_then(|p| p.lifecycle_policy_text().map(String::from));
        out.insert(format!("ecr repository {name}"), format!("lifecyclePolicy={policy:?}"));
    }
}

async fn logs(world: &World, out: &mut Snapshot) {
    let groups: Vec<_> = world
        .logs
        .describe_log_groups()
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .expect("describe_log_groups");
    for group in groups {
        let name = group.log_group_name().unwrap_or_default();
        let tags: BTreeMap<_, _> = world
            .logs
            .list_tags_for_resource()
            .resource_arn(group.log_group_arn().unwrap_or_default().trim_end_matches(":*"))
            .send()
            .await
            .expect("list_tags_for_resource")
            .tags
            .unwrap_or_default()
            .into_iter()
            .collect();
        out.insert(
            format!("logs group {name}"),
            format!("retention={:?} kms={:?} tags={tags:?}", group.retention_in_days(), group.kms_key_id()),
        );
    }
}

/// The lines that differ, `-` for `before` and `+` for `after`; empty when equal.
pub fn diff(before: &Snapshot, after: &Snapshot) -> String {
    let mut text = String::new();
    for (key, value) in before {
        match after.get(key) {
            Some(v) if v == value => {}
            Some(v) => text.push_str(&format!("- {key}: {value}\n+ {key}: {v}\n")),
            None => text.push_str(&format!("- {key}: {value}\n")),
        }
    }
    for (key, value) in after {
        if !before.contains_key(key) {
            text.push_str(&format!("+ {key}: {value}\n"));
        }
    }
    text
}
