//! Reads shared by prune-images and quota-scan: one repository's images
//! planned against a policy and the "in use" set ([`crate::in_use`]).

use std::collections::BTreeMap;

use crate::lifecycle::Policy;
use crate::ports::{Registry, Repository};
use crate::prune::{self, InUse, PrunePlan, RepoImage, RepositoryId, Safety};
use crate::AwsError;

/// One repository's images and what the policy would delete now.
pub struct RepositorySnapshot {
    pub images: Vec<RepoImage>,
    /// What each index references, by digest.
    pub children: BTreeMap<String, Vec<String>>,
    /// Subject → its referrers; read only when the plan deletes something.
    pub referrers: BTreeMap<String, Vec<String>>,
    pub plan: PrunePlan,
}

impl RepositorySnapshot {
    /// The same images planned again against a newer "in use" set.
    pub fn replan(&self, id: &RepositoryId, policy: &Policy, uses: &InUse, now: i64, safety: Safety) -> PrunePlan {
        let used = prune::in_use(id, &self.images, uses);
        prune::plan(policy, &self.images, &used, &self.children, &self.referrers, now, safety)
    }
}

/// Reads the repository's images and index children and plans them; when
/// the plan deletes something and `read_referrers`, reads the referrers of
/// every image (kept ones keep theirs, deleted ones take theirs along: one
/// ListImageReferrers per image) and plans again.
/// `Ok(None)` when the repository was deleted in the meantime.
#[allow(clippy::too_many_arguments)] // each is one fact of the plan; a struct would only rename them
pub async fn plan_repository(
    ecr: &dyn Registry,
    repository: &Repository,
    region: &str,
    policy: &Policy,
    uses: &InUse,
    now: i64,
    safety: Safety,
    read_referrers: bool,
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
    let id = repository_id(repository, region);
    let mut snapshot = RepositorySnapshot { images, children, referrers: BTreeMap::new(), plan: PrunePlan::default() };
    snapshot.plan = snapshot.replan(&id, policy, uses, now, safety);
    if snapshot.plan.deletions() == 0 || !read_referrers {
        return Ok(Some(snapshot));
    }
    let subjects: Vec<String> = snapshot.images.iter().map(|i| i.digest.clone()).collect();
    snapshot.referrers = match ecr.referrers(&repository.name, &subjects).await {
        Ok(referrers) => referrers,
        Err(e) if gone(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    if !snapshot.referrers.is_empty() {
        snapshot.plan = snapshot.replan(&id, policy, uses, now, safety);
    }
    Ok(Some(snapshot))
}

/// The repository as the planner names it.
pub fn repository_id(repository: &Repository, region: &str) -> RepositoryId {
    RepositoryId { name: repository.name.clone(), account: repository.registry_id.clone(), region: region.into() }
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
            ..Repository::default()
        };
        let policy = Policy::parse(DEFAULT_POLICY).expect("valid");
        let planned =
            plan_repository(&ecr, &repository, "us-east-1", &policy, &InUse::default(), 0, Safety::brake(80), true)
                .await;
        assert!(matches!(planned, Ok(None)), "expected a skip");
        assert_eq!(gone.num_calls(), 1);
    }
}
