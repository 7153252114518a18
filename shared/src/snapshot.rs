//! Reads shared by prune-images and quota-scan: what ECS uses (for the
//! protection set), and one repository's images planned against a policy.

use std::collections::{BTreeMap, BTreeSet};

use crate::discover;
use crate::lifecycle::Policy;
use crate::ports::{EcsRead, Registry, Repository};
use crate::prune::{self, InUse, PrunePlan, RepoImage, RepositoryId};
use crate::{AwsError, Error};

/// Image references and digests of everything ECS runs or is about to run, in
/// every cluster: each service's task definition and its PRIMARY/ACTIVE
/// deployments', and every running task's task definition and digests.
pub async fn images_in_use(ecs: &dyn EcsRead, concurrency: usize) -> Result<InUse, Error> {
    let clusters = ecs.list_clusters().await?;
    let services = discover::services(ecs, &clusters, concurrency).await?;
    let mut users: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in &services {
        let who = format!("service {}/{}", s.cluster_name(), s.name);
        for td in std::iter::once(&s.task_definition).chain(&s.deployments) {
            users.entry(td.clone()).or_default().insert(who.clone());
        }
    }
    let mut uses = InUse::default();
    // Every cluster, not only those with services: tasks started by RunTask,
    // schedules or Step Functions live in clusters that may have none.
    for cluster in &clusters {
        for task in ecs.running_tasks(cluster).await? {
            let who = format!("task {}", task.arn.rsplit('/').next().unwrap_or(&task.arn));
            uses.digests.extend(task.digests.iter().map(|d| (d.clone(), who.clone())));
            users.entry(task.task_definition.clone()).or_default().insert(who);
        }
    }
    let described = discover::task_definitions(ecs, users.keys().map(String::as_str), concurrency).await?;
    for (name, who) in users {
        let Some(td) = described.get(&name) else { continue };
        let who = format!("{} ({}:{})", who.into_iter().collect::<Vec<_>>().join(", "), td.family, td.revision);
        uses.references.extend(td.containers.iter().map(|c| (c.image.clone(), who.clone())));
    }
    Ok(uses)
}

/// One repository's images and what the policy would delete now.
pub struct RepositorySnapshot {
    pub images: Vec<RepoImage>,
    pub plan: PrunePlan,
}

/// Reads the repository's images and index children and plans them.
/// `Ok(None)` when the repository was deleted in the meantime.
pub async fn plan_repository(
    ecr: &dyn Registry,
    repository: &Repository,
    region: &str,
    policy: &Policy,
    uses: &InUse,
    now: i64,
    max_delete_percent: u32,
) -> Result<Option<RepositorySnapshot>, AwsError> {
    let gone = |e: &AwsError| e.code_is("RepositoryNotFoundException");
    let images = match ecr.images(&repository.name).await {
        Ok(images) => images,
        Err(e) if gone(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    // An archived index cannot be pulled, so BatchGetImage cannot read it.
    let indexes: Vec<String> =
        images.iter().filter(|i| i.is_index() && !i.is_archived()).map(|i| i.digest.clone()).collect();
    let children = match ecr.index_children(&repository.name, &indexes).await {
        Ok(children) => children,
        Err(e) if gone(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let id =
        RepositoryId { name: repository.name.clone(), account: repository.registry_id.clone(), region: region.into() };
    let used = prune::in_use(&id, &images, uses);
    let plan = prune::plan(policy, &images, &used, &children, now, max_delete_percent);
    Ok(Some(RepositorySnapshot { images, plan }))
}

/// Now, in seconds since the epoch (the shell's clock; planners take it as an argument).
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::ecr::EcrAdapter;
    use crate::lifecycle::DEFAULT_POLICY;
    use aws_sdk_ecr::Client;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    /// A repository deleted between DescribeRepositories and DescribeImages is
    /// "gone", not an error: quota-scan and prune-images report and skip it.
    #[tokio::test]
    async fn a_repository_that_disappears_mid_scan_is_skipped() {
        let gone = mock!(Client::describe_images)
            .sequence()
            .http_status(
                400,
                Some(r#"{"__type":"RepositoryNotFoundException","message":"The repository does not exist"}"#.into()),
            )
            .build();
        let ecr = EcrAdapter::from_client(mock_client!(aws_sdk_ecr, RuleMode::Sequential, [&gone]));
        let repository = Repository {
            name: "users".into(),
            arn: "arn:aws:ecr:us-east-1:123456789012:repository/users".into(),
            registry_id: "123456789012".into(),
            tags: Default::default(),
        };
        let policy = Policy::parse(DEFAULT_POLICY).expect("valid");
        let planned = plan_repository(&ecr, &repository, "us-east-1", &policy, &InUse::default(), 0, 80).await;
        assert!(matches!(planned, Ok(None)), "expected a skip");
        assert_eq!(gone.num_calls(), 1);
    }
}
