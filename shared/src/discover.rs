//! Discovery shared by the functions that read what ECS runs: the services
//! of some clusters, and their task definitions, each described once.

use std::collections::BTreeMap;

use futures::stream::{self, StreamExt, TryStreamExt};

use crate::model::{Service, TaskDefinition};
use crate::ports::EcsRead;
use crate::{AwsError, Error};

/// Every service in these clusters (all clusters when empty), with tags.
pub async fn services(ecs: &dyn EcsRead, clusters: &[String], concurrency: usize) -> Result<Vec<Service>, Error> {
    let clusters = if clusters.is_empty() { ecs.list_clusters().await? } else { clusters.to_vec() };
    let per_cluster: Vec<Vec<Service>> = stream::iter(clusters)
        .map(|cluster| async move {
            let what = || format!("cluster {cluster:?} (from CLUSTERS or the request)");
            let arns = ecs.list_services(&cluster).await.map_err(|e| not_found_as(e, what))?;
            ecs.describe_services(&cluster, &arns).await.map_err(|e| not_found_as(e, what))
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    let mut services: Vec<Service> = per_cluster.into_iter().flatten().collect();
    services.sort_by(|a, b| a.arn.cmp(&b.arn));
    Ok(services)
}

/// DescribeTaskDefinition once per distinct name (ARN or `family[:revision]`).
pub async fn task_definitions<'a>(
    ecs: &dyn EcsRead,
    names: impl IntoIterator<Item = &'a str>,
    concurrency: usize,
) -> Result<BTreeMap<String, TaskDefinition>, Error> {
    let mut distinct: Vec<&str> = names.into_iter().collect();
    distinct.sort_unstable();
    distinct.dedup();
    stream::iter(distinct)
        .map(|name| async move {
            let td = ecs
                .describe_task_definition(name)
                .await
                .map_err(|e| not_found_as(e, || format!("task definition {name:?}")))?;
            Ok::<_, Error>((name.to_string(), td))
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await
}

/// ECS says "not found" as ClusterNotFoundException or ServiceNotFoundException,
/// or as a ClientException for task definitions; all become a clear
/// [`Error::NotFound`].
pub fn not_found_as(error: AwsError, what: impl FnOnce() -> String) -> Error {
    let missing = error.code_is("ClusterNotFoundException")
        || error.code_is("ServiceNotFoundException")
        || (error.code_is("ClientException") && error.message.to_ascii_lowercase().contains("unable to describe"));
    if missing {
        Error::NotFound(format!("{}: {}", what(), error.message))
    } else {
        Error::Aws(error)
    }
}
