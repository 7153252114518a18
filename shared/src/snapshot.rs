//! Reads shared by prune-images and quota-scan: one repository's images
//! planned against a policy and the "in use" set ([`crate::in_use`]).

use std::collections::{BTreeMap, BTreeSet};

use tracing::debug;

use crate::lifecycle::Policy;
use crate::ports::{Registry, Repository};
use crate::prune::{self, InUse, PrunePlan, RepoImage, RepositoryId, Safety};
use crate::AwsError;

/// One repository's images and what the policy would delete now.
pub struct RepositorySnapshot {
    pub images: Vec<RepoImage>,
    /// What each index references, by digest.
    pub children: BTreeMap<String, Vec<String>>,
    /// Subject → its referrers: named by DescribeImages, and asked of
    /// ListImageReferrers only when a row might hide its subject.
    pub referrers: BTreeMap<String, Vec<String>>,
    pub plan: PrunePlan,
}

impl RepositorySnapshot {
    /// The same images planned again against a newer "in use" set.
    pub fn replan(&self, id: &RepositoryId, policy: &Policy, uses: &InUse, now: i64, safety: Safety) -> PrunePlan {
        let used = prune::in_use(id, &self.images, uses);
        prune::plan(policy, &self.images, &used, &self.children, &self.referrers, now, safety)
    }

    /// Planned again with the repository's rows as DescribeImages lists them
    /// now (`images`), against a newer "in use" set: a tag moved onto an
    /// expired image since the first listing (a rollback by re-tagging)
    /// takes it out of the untagged rules, and a use by that tag resolves to
    /// it. Index children are the first listing's; referrers are those it
    /// knew plus what the new rows name.
    pub fn replan_listed(
        &self,
        images: &[RepoImage],
        id: &RepositoryId,
        policy: &Policy,
        uses: &InUse,
        now: i64,
        safety: Safety,
    ) -> PrunePlan {
        let mut referrers = self.referrers.clone();
        merge(&mut referrers, listed_referrers(images));
        let used = prune::in_use(id, images, uses);
        prune::plan(policy, images, &used, &self.children, &referrers, now, safety)
    }
}

/// Reads the repository's images and index children and plans them.
///
/// Referrers come from DescribeImages itself: each referrer row names its
/// subject (`subjectManifestDigest`), so kept images keep theirs and deleted
/// ones take theirs along at no extra call. Only when the plan deletes
/// something, `read_referrers` is set and some row could be a referrer that
/// DescribeImages did not say so of ([`RepoImage::may_hide_its_subject`]:
/// an artifact or a row without an artifact type, that no index lists),
/// does it ask ListImageReferrers of every image (one call each, archived
/// referrers included) and plan again with both.
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
    let referrers = listed_referrers(&images);
    let mut snapshot = RepositorySnapshot { images, children, referrers, plan: PrunePlan::default() };
    snapshot.plan = snapshot.replan(&id, policy, uses, now, safety);
    if snapshot.plan.deletions() == 0 || !read_referrers {
        return Ok(Some(snapshot));
    }
    match unexplained(&snapshot) {
        None => return Ok(Some(snapshot)),
        Some(row) => debug!(
            repository = %repository.name,
            digest = %row.digest,
            artifact_type = row.artifact_type.as_deref().unwrap_or("none"),
            "a row may be a referrer whose subject DescribeImages did not name: asking ListImageReferrers"
        ),
    }
    let subjects: Vec<String> = snapshot.images.iter().map(|i| i.digest.clone()).collect();
    let asked = match ecr.referrers(&repository.name, &subjects).await {
        Ok(referrers) => referrers,
        Err(e) if gone(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    if merge(&mut snapshot.referrers, asked) {
        snapshot.plan = snapshot.replan(&id, policy, uses, now, safety);
    }
    Ok(Some(snapshot))
}

/// Subject → its referrers, as DescribeImages names them
/// (`subjectManifestDigest`), or else as a cosign-style tag does
/// ([`RepoImage::tag_subject`]).
pub fn listed_referrers(images: &[RepoImage]) -> BTreeMap<String, Vec<String>> {
    let mut referrers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for image in images {
        let subject = image.subject.clone().or_else(|| image.tag_subject());
        if let Some(subject) = subject.filter(|s| *s != image.digest) {
            referrers.entry(subject).or_default().push(image.digest.clone());
        }
    }
    referrers
}

/// The first row that could be a referrer DescribeImages did not name the
/// subject of; a row an index lists is a platform manifest or attestation of
/// that index, accounted for by the index.
fn unexplained(snapshot: &RepositorySnapshot) -> Option<&RepoImage> {
    let listed: BTreeSet<&String> = snapshot.children.values().flatten().collect();
    snapshot.images.iter().find(|i| i.may_hide_its_subject() && !listed.contains(&i.digest))
}

/// Adds what ListImageReferrers found to what DescribeImages listed; true
/// when that added a referrer.
fn merge(into: &mut BTreeMap<String, Vec<String>>, asked: BTreeMap<String, Vec<String>>) -> bool {
    let mut added = false;
    for (subject, found) in asked {
        let known = into.entry(subject).or_default();
        for digest in found {
            if !known.contains(&digest) {
                known.push(digest);
                added = true;
            }
        }
    }
    into.retain(|_, refs| !refs.is_empty());
    added
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
    use aws_sdk_ecr::operation::describe_images::DescribeImagesOutput;
    use aws_sdk_ecr::operation::list_image_referrers::ListImageReferrersOutput;
    use aws_sdk_ecr::types::ImageReferrer;
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

    const SIGNATURE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
    const HELM: &str = "application/vnd.cncf.helm.config.v1+json";
    const DAY: i64 = 86_400;

    fn d(n: u32) -> String {
        format!("sha256:{n:064x}")
    }

    /// A DescribeImages row pushed at the epoch (older than any rule's days).
    fn row(n: u32, tag: Option<&str>, artifact: &str, subject: Option<u32>) -> aws_sdk_ecr::types::ImageDetail {
        aws_sdk_ecr::types::ImageDetail::builder()
            .image_digest(d(n))
            .set_image_tags(tag.map(|t| vec![t.to_string()]))
            .image_pushed_at(aws_sdk_ecr::primitives::DateTime::from_secs(0))
            .image_size_in_bytes(100)
            .image_manifest_media_type(crate::media::OCI_MANIFEST)
            .artifact_media_type(artifact)
            .set_subject_manifest_digest(subject.map(d))
            .build()
    }

    fn users() -> Repository {
        Repository {
            name: "users".into(),
            arn: "arn:aws:ecr:us-east-1:123456789012:repository/users".into(),
            registry_id: "123456789012".into(),
            ..Repository::default()
        }
    }

    async fn plan_of(ecr: &EcrAdapter, read_referrers: bool) -> RepositorySnapshot {
        let policy = Policy::parse(DEFAULT_POLICY).expect("valid");
        let uses = InUse::default();
        plan_repository(ecr, &users(), "us-east-1", &policy, &uses, 10 * DAY, Safety::brake(100), read_referrers)
            .await
            .expect("planned")
            .expect("repository exists")
    }

    /// Real ECR names each referrer's subject in DescribeImages
    /// (`subjectManifestDigest`): the kept image keeps its signature, the
    /// expired one takes its own along, and no ListImageReferrers is made
    /// (the mock client has no rule for it, so a call would fail the plan).
    #[tokio::test]
    async fn referrers_named_by_describe_images_need_no_list_image_referrers() {
        let config = crate::media::OCI_IMAGE_CONFIG;
        let describe = mock!(Client::describe_images).then_output(move || {
            DescribeImagesOutput::builder()
                .image_details(row(1, Some("v1"), config, None))
                .image_details(row(2, None, SIGNATURE, Some(1)))
                .image_details(row(3, None, config, None))
                .image_details(row(4, None, SIGNATURE, Some(3)))
                .build()
        });
        let ecr = EcrAdapter::from_client(mock_client!(aws_sdk_ecr, RuleMode::MatchAny, [&describe]));
        let snapshot = plan_of(&ecr, true).await;
        assert_eq!(snapshot.referrers, BTreeMap::from([(d(1), vec![d(2)]), (d(3), vec![d(4)])]));
        assert_eq!(snapshot.plan.delete_referrers, [d(4)]);
        assert_eq!(snapshot.plan.delete_images, [d(3)]);
        let kept = snapshot.plan.protected.iter().find(|p| p.digest == d(2)).expect("the signature is protected");
        assert!(kept.reason.contains("referrer"), "{}", kept.reason);
        assert_eq!(describe.num_calls(), 1);
    }

    /// An artifact whose subject DescribeImages does not name (a Helm chart,
    /// or a signature pushed before ECR reported subjects) may still be a
    /// referrer: then every image's referrers are asked, and what
    /// ListImageReferrers finds is protected like what DescribeImages names.
    #[tokio::test]
    async fn a_row_that_may_hide_its_subject_makes_the_plan_ask_list_image_referrers() {
        let config = crate::media::OCI_IMAGE_CONFIG;
        let describe = mock!(Client::describe_images).then_output(move || {
            DescribeImagesOutput::builder()
                .image_details(row(1, Some("v1"), config, None))
                .image_details(row(2, None, SIGNATURE, None))
                .image_details(row(3, None, config, None))
                .image_details(row(5, None, HELM, None))
                .build()
        });
        let of_one = mock!(Client::list_image_referrers)
            .match_requests(|r| r.subject_id().map(|s| s.image_digest()) == Some(d(1).as_str()))
            .then_output(|| {
                ListImageReferrersOutput::builder()
                    .referrers(
                        ImageReferrer::builder()
                            .digest(d(2))
                            .media_type(crate::media::OCI_MANIFEST)
                            .size(100)
                            .build()
                            .expect("referrer"),
                    )
                    .build()
            });
        let none = mock!(Client::list_image_referrers).then_output(|| ListImageReferrersOutput::builder().build());
        let ecr = EcrAdapter::from_client(mock_client!(aws_sdk_ecr, RuleMode::MatchAny, [&describe, &of_one, &none]));
        let snapshot = plan_of(&ecr, true).await;
        assert_eq!(of_one.num_calls() + none.num_calls(), 4, "one call per image");
        assert_eq!(snapshot.referrers, BTreeMap::from([(d(1), vec![d(2)])]));
        assert!(snapshot.plan.protected.iter().any(|p| p.digest == d(2)), "the kept image's signature stays");
        assert_eq!(snapshot.plan.delete_images, [d(3), d(5)]);

        // quota-scan's estimate does without the calls
        let before = of_one.num_calls() + none.num_calls();
        let estimate = plan_of(&ecr, false).await;
        assert_eq!(of_one.num_calls() + none.num_calls(), before);
        assert!(estimate.referrers.is_empty());
    }

    /// Rows that are container images, indexes, or the children an index
    /// lists (its platform manifests and attestations) hide nothing; an
    /// artifact without a subject, or a row without an artifact type, may.
    #[test]
    fn which_rows_may_hide_their_subject() {
        let image = |artifact: Option<&str>, subject: Option<u32>, media: &str| RepoImage {
            digest: d(9),
            media_type: Some(media.into()),
            artifact_type: artifact.map(String::from),
            subject: subject.map(d),
            ..RepoImage::default()
        };
        let manifest = crate::media::OCI_MANIFEST;
        assert!(!image(Some(crate::media::OCI_IMAGE_CONFIG), None, manifest).may_hide_its_subject());
        assert!(!image(Some(crate::media::DOCKER_IMAGE_CONFIG), None, manifest).may_hide_its_subject());
        assert!(!image(Some(SIGNATURE), Some(1), manifest).may_hide_its_subject());
        assert!(!image(None, None, crate::media::OCI_INDEX).may_hide_its_subject());
        assert!(image(Some(SIGNATURE), None, manifest).may_hide_its_subject());
        assert!(image(Some(HELM), None, manifest).may_hide_its_subject());
        assert!(image(None, None, manifest).may_hide_its_subject());

        let mut snapshot = RepositorySnapshot {
            images: vec![image(None, None, manifest)],
            children: BTreeMap::new(),
            referrers: BTreeMap::new(),
            plan: PrunePlan::default(),
        };
        assert!(unexplained(&snapshot).is_some());
        snapshot.children.insert(d(8), vec![d(9)]);
        assert!(unexplained(&snapshot).is_none(), "an index lists it");
    }

    /// DescribeImages' subject first; a cosign-style tag names one where it
    /// says nothing; a row naming itself is no referrer.
    #[test]
    fn referrers_come_from_the_subject_or_else_a_cosign_tag() {
        let tagged = |digest: u32, tag: String, subject: Option<u32>| RepoImage {
            digest: d(digest),
            tags: vec![tag],
            subject: subject.map(d),
            ..RepoImage::default()
        };
        let sig = |of: u32| format!("{}.sig", d(of).replace(':', "-"));
        let images = [
            tagged(5, sig(1), None),
            tagged(6, "v1".into(), Some(2)),
            tagged(7, sig(3), Some(2)),
            tagged(8, sig(8), None),
        ];
        assert_eq!(listed_referrers(&images), BTreeMap::from([(d(1), vec![d(5)]), (d(2), vec![d(6), d(7)])]));
    }

    #[test]
    fn what_list_image_referrers_adds_is_merged_once() {
        let mut known = BTreeMap::from([(d(1), vec![d(2)])]);
        assert!(!merge(&mut known, BTreeMap::from([(d(1), vec![d(2)])])));
        assert!(merge(&mut known, BTreeMap::from([(d(1), vec![d(2), d(4)]), (d(3), vec![d(5)])])));
        assert_eq!(known, BTreeMap::from([(d(1), vec![d(2), d(4)]), (d(3), vec![d(5)])]));
    }
}
