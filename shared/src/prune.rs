//! The prune planner: what a lifecycle policy expires in one repository, what
//! must be kept whatever the policy says, and the order of deletion. Pure.
//!
//! Protected, and so never deleted:
//! - digests an ECS service deployment or a running task uses, including
//!   those a task definition names by tag (resolved to the digest the tag
//!   points at now) — since mid-2024 ECS pins the digest a tag resolved to,
//!   so an *untagged* image can be exactly what a service runs;
//! - every child (platform manifests and attestations) of every image index
//!   that is kept.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::image_ref::ImageRef;
use crate::lifecycle::{Candidate, Policy};

pub const TAG_PRUNE: &str = "autopilot:prune";

/// One image row of a repository, as DescribeImages reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoImage {
    pub digest: String,
    pub tags: Vec<String>,
    pub pushed_at: i64,
    pub last_pulled_at: Option<i64>,
    pub size_bytes: Option<i64>,
    pub media_type: Option<String>,
    /// In ECR's archive storage class (`imageStatus` ARCHIVED): not billed as
    /// standard storage, and not pullable until restored.
    pub archived: bool,
}

impl RepoImage {
    pub fn is_index(&self) -> bool {
        self.media_type.as_deref().is_some_and(crate::aws::ecr::is_index_media_type)
    }
}

/// What ECS uses, across every cluster: image references of the task
/// definitions of service deployments and running tasks, and the digests
/// running tasks report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InUse {
    /// `(image reference, who uses it)`.
    pub references: Vec<(String, String)>,
    /// `(digest, who runs it)`.
    pub digests: Vec<(String, String)>,
}

/// The repository being planned, and where it lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepositoryId {
    pub name: String,
    pub account: String,
    pub region: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Protected {
    pub digest: String,
    pub tags: Vec<String>,
    pub reason: String,
    /// The rule that would have expired it, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expired_by_rule: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrunePlan {
    pub images_seen: usize,
    /// Rule priority → images it expired (protected ones included).
    pub expired_by_rule: BTreeMap<u32, usize>,
    pub protected: Vec<Protected>,
    /// Untagged indexes to delete first, so their children are no longer referenced.
    pub delete_indexes: Vec<String>,
    /// What each index in `delete_indexes` references: if one of them cannot
    /// be deleted, its children must not be deleted either.
    pub index_children: BTreeMap<String, Vec<String>>,
    /// Everything else to delete, after the indexes.
    pub delete_images: Vec<String>,
    /// Set when the safety brake stopped every deletion in this repository.
    pub brake: Option<String>,
    pub bytes_to_reclaim: i64,
}

impl PrunePlan {
    pub fn deletions(&self) -> usize {
        self.delete_indexes.len() + self.delete_images.len()
    }
}

/// Which digests of this repository ECS uses, and why (every reason, sorted,
/// so the result does not depend on the order ECS listed things in).
pub fn in_use(repository: &RepositoryId, images: &[RepoImage], uses: &InUse) -> BTreeMap<String, String> {
    let present: BTreeSet<&str> = images.iter().map(|i| i.digest.as_str()).collect();
    let mut protected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (reference, who) in &uses.references {
        let Some(image) = ImageRef::parse(reference) else { continue };
        let ours =
            image.ecr_registry().is_some_and(|r| r.account == repository.account && r.region == repository.region)
                && image.repository == repository.name;
        if !ours {
            continue;
        }
        if let Some(digest) = &image.digest {
            protected.entry(digest.clone()).or_default().insert(format!("in use by {who} (pinned by digest)"));
        } else {
            let tag = image.tag.as_deref().unwrap_or("latest");
            if let Some(found) = images.iter().find(|i| i.tags.iter().any(|t| t == tag)) {
                protected.entry(found.digest.clone()).or_default().insert(format!("in use by {who} (tag {tag})"));
            }
        }
    }
    for (digest, who) in &uses.digests {
        if present.contains(digest.as_str()) {
            protected.entry(digest.clone()).or_default().insert(format!("running in {who}"));
        }
    }
    protected
        .into_iter()
        .map(|(digest, reasons)| (digest, reasons.into_iter().collect::<Vec<_>>().join("; ")))
        .collect()
}

/// The whole plan for one repository. `children` maps each index digest to
/// the digests it references (read with BatchGetImage); `now` is seconds since
/// the epoch; `max_delete_percent` is the safety brake.
pub fn plan(
    policy: &Policy,
    images: &[RepoImage],
    in_use: &BTreeMap<String, String>,
    children: &BTreeMap<String, Vec<String>>,
    now: i64,
    max_delete_percent: u32,
) -> PrunePlan {
    let candidates: Vec<Candidate> = images
        .iter()
        .map(|i| Candidate {
            digest: i.digest.clone(),
            tags: i.tags.clone(),
            pushed_at: i.pushed_at,
            last_pulled_at: i.last_pulled_at,
        })
        .collect();
    let expired = policy.expired(&candidates, now);
    let by_digest: BTreeMap<&str, &RepoImage> = images.iter().map(|i| (i.digest.as_str(), i)).collect();

    // Protection: what ECS uses, then the children of every index that is
    // kept (not expired, or protected), to a fixed point for nested indexes.
    let mut reasons: BTreeMap<String, String> = in_use.clone();
    loop {
        let mut added = false;
        for (index, kids) in children {
            let kept = !expired.contains_key(index) || reasons.contains_key(index);
            if !kept || !by_digest.contains_key(index.as_str()) {
                continue;
            }
            for kid in kids {
                if by_digest.contains_key(kid.as_str()) && !reasons.contains_key(kid) {
                    reasons.insert(kid.clone(), format!("part of kept index {index}"));
                    added = true;
                }
            }
        }
        if !added {
            break;
        }
    }

    let mut plan = PrunePlan { images_seen: images.len(), ..PrunePlan::default() };
    for rule in expired.values() {
        *plan.expired_by_rule.entry(*rule).or_default() += 1;
    }
    for (digest, reason) in &reasons {
        if let Some(image) = by_digest.get(digest.as_str()) {
            plan.protected.push(Protected {
                digest: digest.clone(),
                tags: image.tags.clone(),
                reason: reason.clone(),
                expired_by_rule: expired.get(digest).copied(),
            });
        }
    }
    for digest in expired.keys().filter(|d| !reasons.contains_key(*d)) {
        let Some(image) = by_digest.get(digest.as_str()) else { continue };
        plan.bytes_to_reclaim += image.size_bytes.unwrap_or(0);
        if image.is_index() {
            plan.delete_indexes.push(digest.clone());
            plan.index_children.insert(digest.clone(), children.get(digest).cloned().unwrap_or_default());
        } else {
            plan.delete_images.push(digest.clone());
        }
    }
    let deletions = plan.deletions();
    if deletions > 0 && deletions * 100 > images.len() * max_delete_percent as usize {
        plan.brake = Some(format!(
            "safety brake: {deletions} of {} images ({}%) would be deleted, more than PRUNE_MAX_DELETE_PERCENT={max_delete_percent}; nothing deleted in this repository",
            images.len(),
            deletions * 100 / images.len().max(1)
        ));
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::DEFAULT_POLICY;
    use proptest::prelude::*;

    const DAY: i64 = 86_400;
    const NOW: i64 = 1_800_000_000;
    const HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
    const INDEX: &str = "application/vnd.oci.image.index.v1+json";

    fn d(n: u32) -> String {
        format!("sha256:{n:064x}")
    }

    fn img(n: u32, tags: &[&str], days_ago: i64) -> RepoImage {
        RepoImage {
            digest: d(n),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            pushed_at: NOW - days_ago * DAY,
            last_pulled_at: None,
            archived: false,
            size_bytes: Some(1000 + i64::from(n)),
            media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
        }
    }

    fn index(n: u32, tags: &[&str], days_ago: i64) -> RepoImage {
        RepoImage { size_bytes: None, media_type: Some(INDEX.into()), ..img(n, tags, days_ago) }
    }

    fn repo() -> RepositoryId {
        RepositoryId { name: "users".into(), account: "123456789012".into(), region: "us-east-1".into() }
    }

    fn default_policy() -> Policy {
        Policy::parse(DEFAULT_POLICY).expect("valid")
    }

    #[test]
    fn tutorial_registry_loses_only_old_unused_untagged_images() {
        // GIVEN latest, three old untagged leftovers of earlier pushes, one fresh untagged
        let images = [img(1, &["latest"], 0), img(2, &[], 3), img(3, &[], 5), img(4, &[], 9), img(5, &[], 0)];
        // AND a service whose deployment pinned the digest of an earlier push
        let uses = InUse {
            references: vec![(format!("{HOST}/users@{}", d(3)), "service prod/users".into())],
            digests: vec![],
        };
        let protected = in_use(&repo(), &images, &uses);
        let plan = plan(&default_policy(), &images, &protected, &BTreeMap::new(), NOW, 100);
        assert_eq!(plan.delete_images, [d(2), d(4)]);
        assert_eq!(plan.protected.len(), 1);
        assert_eq!(plan.protected[0].reason, "in use by service prod/users (pinned by digest)");
        assert_eq!(plan.protected[0].expired_by_rule, Some(1));
        assert_eq!(plan.bytes_to_reclaim, 1002 + 1004);
        assert_eq!(plan.expired_by_rule.get(&1), Some(&3));
    }

    #[test]
    fn tags_resolve_to_digests_and_other_registries_are_ignored() {
        let images = [img(1, &["v1"], 40), img(2, &["v2"], 1)];
        let uses = InUse {
            references: vec![
                (format!("{HOST}/users:v1"), "task definition users:7".into()),
                ("210987654321.dkr.ecr.us-east-1.amazonaws.com/users@".to_string() + &d(2), "elsewhere".into()),
                (format!("{HOST}/posts@{}", d(2)), "another repository".into()),
            ],
            digests: vec![(d(2), "task abc".into()), (d(99), "task gone".into())],
        };
        let protected = in_use(&repo(), &images, &uses);
        assert_eq!(protected[&d(1)], "in use by task definition users:7 (tag v1)");
        assert_eq!(protected[&d(2)], "running in task abc");
        assert_eq!(protected.len(), 2);
    }

    #[test]
    fn a_kept_index_keeps_its_children_and_attestations() {
        // GIVEN a tagged multi-arch index with two platform children and an attestation, all untagged and old
        let images = [index(10, &["latest"], 5), img(11, &[], 5), img(12, &[], 5), img(13, &[], 5)];
        let children = BTreeMap::from([(d(10), vec![d(11), d(12), d(13)])]);
        let plan = plan(&default_policy(), &images, &BTreeMap::new(), &children, NOW, 100);
        assert!(plan.delete_images.is_empty() && plan.delete_indexes.is_empty(), "{plan:?}");
        assert_eq!(plan.protected.len(), 3);
        assert!(plan.protected.iter().all(|p| p.reason == format!("part of kept index {}", d(10))));
    }

    #[test]
    fn an_expired_untagged_index_goes_first_and_its_orphans_follow() {
        let images = [index(10, &[], 5), img(11, &[], 5), img(12, &[], 5), img(1, &["latest"], 0)];
        let children = BTreeMap::from([(d(10), vec![d(11), d(12)])]);
        let plan = plan(&default_policy(), &images, &BTreeMap::new(), &children, NOW, 100);
        assert_eq!(plan.delete_indexes, [d(10)]);
        assert_eq!(plan.delete_images, [d(11), d(12)]);
    }

    #[test]
    fn an_index_in_use_keeps_its_children_even_when_expired() {
        let images = [index(10, &[], 5), img(11, &[], 5)];
        let children = BTreeMap::from([(d(10), vec![d(11)])]);
        let uses = BTreeMap::from([(d(10), "in use by service prod/users (pinned by digest)".to_string())]);
        let plan = plan(&default_policy(), &images, &uses, &children, NOW, 100);
        assert_eq!(plan.deletions(), 0);
        assert_eq!(plan.protected.len(), 2);
    }

    #[test]
    fn the_safety_brake_stops_a_repository() {
        let images = [img(1, &["latest"], 0), img(2, &[], 3), img(3, &[], 5)];
        let plan = plan(&default_policy(), &images, &BTreeMap::new(), &BTreeMap::new(), NOW, 50);
        assert_eq!(plan.deletions(), 2);
        assert!(
            plan.brake.as_deref().unwrap_or("").starts_with("safety brake: 2 of 3 images (66%)"),
            "{:?}",
            plan.brake
        );
        let allowed = super::plan(&default_policy(), &images, &BTreeMap::new(), &BTreeMap::new(), NOW, 70);
        assert_eq!(allowed.brake, None);
    }

    /// A random registry: tagged and untagged images of random ages, indexes
    /// whose children (and attestations) are other rows, services pinned to
    /// random digests or tags, running tasks.
    fn registry() -> impl Strategy<Value = (Vec<RepoImage>, BTreeMap<String, Vec<String>>, InUse)> {
        let image = (
            prop::collection::vec(prop::sample::select(vec!["latest", "v1", "v2", "prod-1", "dev"]), 0..3),
            0i64..60,
            any::<bool>(),
        );
        (
            prop::collection::vec(image, 1..40),
            prop::collection::vec((0usize..40, 0usize..40), 0..10),
            prop::collection::vec(0usize..40, 0..6),
            prop::collection::vec(0usize..40, 0..4),
        )
            .prop_map(|(rows, links, pinned, running)| {
                let n = rows.len();
                let mut images: Vec<RepoImage> = rows
                    .into_iter()
                    .enumerate()
                    .map(|(i, (tags, age, is_index))| {
                        let mut tags: Vec<&str> = tags;
                        tags.sort();
                        tags.dedup();
                        let row = img(i as u32, &tags, age);
                        if is_index {
                            RepoImage { media_type: Some(INDEX.into()), size_bytes: None, ..row }
                        } else {
                            row
                        }
                    })
                    .collect();
                // a tag lives on one image only
                let mut seen = BTreeSet::new();
                for image in &mut images {
                    image.tags.retain(|t| seen.insert(t.clone()));
                }
                let mut children: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for (parent, child) in links {
                    let (parent, child) = (parent % n, child % n);
                    if parent != child && images[parent].is_index() && !images[child].is_index() {
                        children.entry(d(parent as u32)).or_default().push(d(child as u32));
                    }
                }
                let references = pinned
                    .into_iter()
                    .map(|i| (format!("{HOST}/users@{}", d((i % n) as u32)), format!("service s{i}")))
                    .chain([(format!("{HOST}/users:latest"), "service web".to_string())])
                    .collect();
                let digests = running.into_iter().map(|i| (d((i % n) as u32), format!("task t{i}"))).collect();
                (images, children, InUse { references, digests })
            })
    }

    proptest! {
        #[test]
        fn protected_images_are_never_deleted(
            (images, children, uses) in registry(),
            keep in 1u32..10,
            days in 1u32..30,
        ) {
            let policy = Policy::from_value(&serde_json::json!({"rules": [
                {"rulePriority": 1, "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": days}, "action": {"type": "expire"}},
                {"rulePriority": 2, "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": keep}, "action": {"type": "expire"}},
            ]})).expect("valid");
            let used = in_use(&repo(), &images, &uses);
            let p = plan(&policy, &images, &used, &children, NOW, 100);
            let deleted: BTreeSet<&String> = p.delete_indexes.iter().chain(&p.delete_images).collect();
            for protected in &p.protected {
                prop_assert!(!deleted.contains(&protected.digest), "deleting protected {}", protected.digest);
            }
            for digest in used.keys() {
                prop_assert!(!deleted.contains(digest), "deleting in-use {digest}");
            }
            // no child of a kept index is deleted
            for (index, kids) in &children {
                if !deleted.contains(index) {
                    for kid in kids {
                        prop_assert!(!deleted.contains(kid), "deleting {kid}, child of kept {index}");
                    }
                }
            }
        }

        #[test]
        fn an_untagged_only_rule_never_deletes_a_tagged_image((images, children, uses) in registry(), days in 1u32..30) {
            let policy = Policy::from_value(&serde_json::json!({"rules": [
                {"rulePriority": 1, "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": days}, "action": {"type": "expire"}},
            ]})).expect("valid");
            let used = in_use(&repo(), &images, &uses);
            let p = plan(&policy, &images, &used, &children, NOW, 100);
            for digest in p.delete_indexes.iter().chain(&p.delete_images) {
                let image = images.iter().find(|i| &i.digest == digest).expect("known");
                prop_assert!(image.tags.is_empty(), "tagged {digest} deleted by an untagged rule");
            }
        }

        #[test]
        fn the_plan_does_not_depend_on_input_order((images, children, uses) in registry(), seed in any::<u64>()) {
            let policy = Policy::parse(DEFAULT_POLICY).expect("valid");
            let used = in_use(&repo(), &images, &uses);
            let forward = plan(&policy, &images, &used, &children, NOW, 100);
            let mut shuffled = images.clone();
            // a deterministic shuffle from the seed
            let len = shuffled.len();
            for i in (1..len).rev() {
                let j = (seed.wrapping_mul(6364136223846793005).wrapping_add(i as u64) % (i as u64 + 1)) as usize;
                shuffled.swap(i, j);
            }
            let mut reversed_uses = uses.clone();
            reversed_uses.references.reverse();
            reversed_uses.digests.reverse();
            let used_again = in_use(&repo(), &shuffled, &reversed_uses);
            prop_assert_eq!(&used, &used_again);
            let again = plan(&policy, &shuffled, &used_again, &children, NOW, 100);
            prop_assert_eq!(forward, again);
        }
    }
}
