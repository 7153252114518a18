//! The prune planner: what a lifecycle policy expires or archives in one
//! repository, what must be kept whatever the policy says, and the order of
//! deletion. Pure.
//!
//! Protected, and so never deleted nor archived (an archived image cannot be
//! pulled, so archiving what is in use breaks it as surely as deleting it):
//! - digests something uses ([`crate::in_use`]: services and their pinned
//!   revisions, task sets, tasks, task-definition families, scheduled rules
//!   and schedules, Lambda image functions), including those named by tag
//!   (resolved to the digest the tag points at now) — since mid-2024 ECS pins
//!   the digest a tag resolved to, so an *untagged* image can be exactly what
//!   a service runs;
//! - every child (platform manifests and attestations) of every image index
//!   that is kept;
//! - every referrer (signature, SBOM, attestation: an artifact whose
//!   `subject` is the image) of every image that is kept.
//!
//! The referrers of an image that is deleted are deleted with it, before it.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::image_ref::ImageRef;
use crate::lifecycle::{Action, Candidate, Policy, StorageClass};

pub const TAG_PRUNE: &str = "autopilot:prune";

/// One image row of a repository, as DescribeImages reports it (archived
/// images included). Times are seconds since the epoch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepoImage {
    pub digest: String,
    pub tags: Vec<String>,
    pub pushed_at: i64,
    pub last_pulled_at: Option<i64>,
    pub size_bytes: Option<i64>,
    pub media_type: Option<String>,
    /// `artifactMediaType`: the config media type (or the manifest's
    /// `artifactType`), which tells a container image from an artifact.
    pub artifact_type: Option<String>,
    /// `subjectManifestDigest`: for a referrer (signature, SBOM,
    /// attestation), the image it refers to.
    pub subject: Option<String>,
    /// From `imageStatus`: ACTIVE is standard, ARCHIVED is archive.
    pub storage_class: StorageClass,
    /// `lastArchivedAt`: when it last moved to archive.
    pub archived_at: Option<i64>,
    /// `lastActivatedAt`: when it was last restored from archive.
    pub activated_at: Option<i64>,
}

impl RepoImage {
    pub fn is_index(&self) -> bool {
        self.media_type.as_deref().is_some_and(crate::media::is_index_media_type)
    }

    /// In ECR's archive storage class: listed and described, but not
    /// pullable, so BatchGetImage cannot read it.
    pub fn is_archived(&self) -> bool {
        self.storage_class == StorageClass::Archive
    }

    /// Could this row be a referrer whose subject DescribeImages did not
    /// name? Not an index, no `subjectManifestDigest`, and not known to be a
    /// container image by its config: an artifact (a Helm chart, a signature
    /// pushed before ECR reported subjects) or a row with no artifact type.
    /// Such a row makes the planner ask ListImageReferrers instead of
    /// trusting DescribeImages alone ([`crate::snapshot::plan_repository`]).
    pub fn may_hide_its_subject(&self) -> bool {
        !self.is_index()
            && self.subject.is_none()
            && !self.artifact_type.as_deref().is_some_and(crate::media::is_image_config_media_type)
    }

    /// The image a tag of this row names as its subject, in the schemes
    /// that predate the OCI referrers API: cosign's `sha256-<hex>.sig`,
    /// `.att` and `.sbom` (signatures, attestations and SBOMs cosign stores
    /// by default as tagged images beside what they sign), and the OCI
    /// referrers tag schema's bare `sha256-<hex>` (an index of referrers).
    /// Nothing else links such a row to its image, so without this a rule
    /// on tagged images could expire the signature of an image it keeps.
    pub fn tag_subject(&self) -> Option<String> {
        self.tags.iter().find_map(|tag| {
            let rest = tag.strip_prefix("sha256-")?;
            let (hex, suffix) = rest.split_at_checked(64)?;
            let hex_ok = hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            (hex_ok && matches!(suffix, "" | ".sig" | ".att" | ".sbom")).then(|| format!("sha256:{hex}"))
        })
    }

    /// What a lifecycle rule sees of this image.
    pub fn candidate(&self) -> Candidate {
        Candidate {
            digest: self.digest.clone(),
            tags: self.tags.clone(),
            pushed_at: self.pushed_at,
            last_pulled_at: self.last_pulled_at,
            storage_class: self.storage_class,
            archived_at: self.archived_at,
            activated_at: self.activated_at,
        }
    }
}

/// What is in use, from every source: see [`crate::in_use`].
pub use crate::in_use::InUse;
use crate::in_use::User;

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
    /// The rule that would have archived it, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transitioned_by_rule: Option<u32>,
}

/// Added to the reason of a protected image that a rule would have archived.
pub const NOT_ARCHIVED: &str = "not archived either: an archived image cannot be pulled";

/// The planner's safety settings, whatever the policy says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Safety {
    /// The brake: a plan that would delete or archive more than this share
    /// of a repository's images does neither there (`PRUNE_MAX_DELETE_PERCENT`).
    pub max_delete_percent: u32,
    /// The age floor: an image pushed less than this many seconds ago is
    /// neither deleted nor archived (`PRUNE_MIN_AGE_HOURS`). A multi-arch
    /// push uploads its untagged children first and the index seconds later:
    /// without a floor, a count rule on untagged images could delete the
    /// children of an index still in flight.
    pub min_age_seconds: i64,
}

impl Safety {
    /// The brake alone, no age floor.
    pub fn brake(max_delete_percent: u32) -> Safety {
        Safety { max_delete_percent, min_age_seconds: 0 }
    }
}

/// The reason a protected image gives when the age floor kept it.
pub const YOUNGER_THAN_FLOOR: &str = "younger than the age floor";

/// One repository's plan. Apply order: `delete_indexes`, then
/// `delete_images`, then `transition_images`; an image whose index in
/// `index_children` failed to delete is neither deleted nor archived (ECR
/// refuses to expire or archive an image a manifest list still references).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrunePlan {
    pub images_seen: usize,
    /// Rule priority → images it expired (protected ones included).
    pub expired_by_rule: BTreeMap<u32, usize>,
    /// Rule priority → images it archived (protected ones included).
    pub transitioned_by_rule: BTreeMap<u32, usize>,
    pub protected: Vec<Protected>,
    /// Referrers of deleted images, deleted before their subjects: a referrer
    /// left without its subject could never be found again by ListImageReferrers.
    pub delete_referrers: Vec<String>,
    /// Untagged indexes to delete first, so their children are no longer referenced.
    pub delete_indexes: Vec<String>,
    /// What each deleted parent references: an index its children, a referrer
    /// its subject. If a parent cannot be deleted, what it references is kept.
    pub index_children: BTreeMap<String, Vec<String>>,
    /// Everything else to delete, after the indexes.
    pub delete_images: Vec<String>,
    /// Standard images to move to archive (UpdateImageStorageClass with
    /// target archive), after the deletions. None is protected.
    pub transition_images: Vec<String>,
    /// Set when the safety brake stopped every deletion and transition in
    /// this repository.
    pub brake: Option<String>,
    pub bytes_to_reclaim: i64,
    /// Bytes that move from standard to archive storage.
    pub bytes_to_archive: i64,
}

impl PrunePlan {
    pub fn deletions(&self) -> usize {
        self.delete_referrers.len() + self.delete_indexes.len() + self.delete_images.len()
    }

    /// Every digest to delete, in the order of deletion.
    pub fn to_delete(&self) -> impl Iterator<Item = &String> {
        self.delete_referrers.iter().chain(&self.delete_indexes).chain(&self.delete_images)
    }

    pub fn transitions(&self) -> usize {
        self.transition_images.len()
    }
}

/// Which digests of this repository something uses, and why (every reason,
/// sorted, so the result does not depend on the order sources listed things in).
pub fn in_use(repository: &RepositoryId, images: &[RepoImage], uses: &InUse) -> BTreeMap<String, String> {
    users_of(repository, images, uses)
        .into_iter()
        .map(|(digest, users)| {
            let reasons: BTreeSet<String> = users.iter().map(|(who, how)| format!("in use by {who} ({how})")).collect();
            (digest, reasons.into_iter().collect::<Vec<_>>().join("; "))
        })
        .collect()
}

/// Digest of this repository → who uses it and how (`pinned by digest`,
/// `tag latest`, `digest`). A reference by tag counts for the image the tag
/// points at now.
pub fn users_of(
    repository: &RepositoryId,
    images: &[RepoImage],
    uses: &InUse,
) -> BTreeMap<String, BTreeSet<(User, String)>> {
    let present: BTreeSet<&str> = images.iter().map(|i| i.digest.as_str()).collect();
    let mut found: BTreeMap<String, BTreeSet<(User, String)>> = BTreeMap::new();
    for (reference, users) in &uses.references {
        let Some(image) = ImageRef::parse(reference) else { continue };
        if !is_ours(repository, &image) {
            continue;
        }
        let (digest, how) = if let Some(digest) = &image.digest {
            (Some(digest.clone()), "pinned by digest".to_string())
        } else {
            let tag = image.tag.as_deref().unwrap_or("latest");
            let found = images.iter().find(|i| i.tags.iter().any(|t| t == tag));
            (found.map(|i| i.digest.clone()), format!("tag {tag}"))
        };
        let Some(digest) = digest else { continue };
        for who in users {
            found.entry(digest.clone()).or_default().insert((who.clone(), how.clone()));
        }
    }
    for (digest, users) in &uses.digests {
        if present.contains(digest.as_str()) {
            for who in users {
                found.entry(digest.clone()).or_default().insert((who.clone(), "digest".to_string()));
            }
        }
    }
    found
}

/// Does this reference name this repository, in its account and region?
pub fn is_ours(repository: &RepositoryId, image: &ImageRef) -> bool {
    image.ecr_registry().is_some_and(|r| r.account == repository.account && r.region == repository.region)
        && image.repository == repository.name
}

/// The whole plan for one repository. `children` maps each index digest to
/// the digests it references (read with BatchGetImage); `referrers` maps a
/// subject digest to its referrers (ListImageReferrers); `now` is seconds
/// since the epoch; `safety` holds the brake and the age floor. An image
/// younger than the floor is protected like one in use (so its children and
/// referrers are kept too).
pub fn plan(
    policy: &Policy,
    images: &[RepoImage],
    in_use: &BTreeMap<String, String>,
    children: &BTreeMap<String, Vec<String>>,
    referrers: &BTreeMap<String, Vec<String>>,
    now: i64,
    safety: Safety,
) -> PrunePlan {
    let max_delete_percent = safety.max_delete_percent;
    let candidates: Vec<Candidate> = images.iter().map(RepoImage::candidate).collect();
    let decisions = policy.evaluate(&candidates, now);
    let expired: BTreeMap<&str, u32> =
        decisions.iter().filter(|(_, d)| d.action == Action::Expire).map(|(k, d)| (k.as_str(), d.rule)).collect();
    let by_digest: BTreeMap<&str, &RepoImage> = images.iter().map(|i| (i.digest.as_str(), i)).collect();

    // Protection, to a fixed point: what is in use; the children of every
    // kept index (an index being archived is kept); the referrers of every
    // kept image. "Doomed" is what would be deleted with what is protected so
    // far: the expired, and the referrers of anything doomed. Protections
    // only grow, so doomed only shrinks, and the loop ends.
    let mut reasons: BTreeMap<String, String> = in_use.clone();
    if safety.min_age_seconds > 0 {
        // What a rule selected, and referrers (deleted with their subject
        // whatever their age): an image nothing would touch needs no
        // protection, and listing it would only swell the report.
        let referrer: BTreeSet<&String> = referrers.values().flatten().collect();
        let selected = images.iter().filter(|i| decisions.contains_key(&i.digest) || referrer.contains(&i.digest));
        for image in selected.filter(|i| now - i.pushed_at < safety.min_age_seconds) {
            let floor = format!("{YOUNGER_THAN_FLOOR} ({})", age_floor_text(safety.min_age_seconds));
            reasons
                .entry(image.digest.clone())
                .and_modify(|r| {
                    r.push_str("; ");
                    r.push_str(&floor)
                })
                .or_insert(floor);
        }
    }
    let doomed = loop {
        let doomed = doomed_by(&expired, &reasons, referrers, &by_digest);
        let mut added = false;
        let links = children
            .iter()
            .map(|(parent, kids)| (parent, kids, "part of kept index"))
            .chain(referrers.iter().map(|(subject, refs)| (subject, refs, "referrer of kept image")));
        for (parent, kids, why) in links {
            if doomed.contains(parent.as_str()) || !by_digest.contains_key(parent.as_str()) {
                continue;
            }
            for kid in kids {
                if by_digest.contains_key(kid.as_str()) && !reasons.contains_key(kid) {
                    reasons.insert(kid.clone(), format!("{why} {parent}"));
                    added = true;
                }
            }
        }
        if !added {
            break doomed;
        }
    };
    // referrer → its doomed subjects: the edges that order deletion
    let mut subjects_of: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (subject, refs) in referrers {
        if doomed.contains(subject.as_str()) {
            for r in refs.iter().filter(|r| doomed.contains(r.as_str())) {
                subjects_of.entry(r.as_str()).or_default().push(subject.clone());
            }
        }
    }

    let mut plan = PrunePlan { images_seen: images.len(), ..PrunePlan::default() };
    for decision in decisions.values() {
        let counts = match decision.action {
            Action::Expire => &mut plan.expired_by_rule,
            Action::Transition => &mut plan.transitioned_by_rule,
        };
        *counts.entry(decision.rule).or_default() += 1;
    }
    for (digest, reason) in &reasons {
        let Some(image) = by_digest.get(digest.as_str()) else { continue };
        let decision = decisions.get(digest);
        let by = |action: Action| decision.filter(|d| d.action == action).map(|d| d.rule);
        let transitioned_by_rule = by(Action::Transition);
        plan.protected.push(Protected {
            digest: digest.clone(),
            tags: image.tags.clone(),
            reason: match transitioned_by_rule {
                Some(_) => format!("{reason}; {NOT_ARCHIVED}"),
                None => reason.clone(),
            },
            expired_by_rule: by(Action::Expire),
            transitioned_by_rule,
        });
    }
    for (digest, decision) in decisions.iter().filter(|(d, _)| !reasons.contains_key(*d)) {
        let Some(image) = by_digest.get(digest.as_str()) else { continue };
        if decision.action == Action::Transition && !doomed.contains(digest.as_str()) {
            plan.bytes_to_archive += image.size_bytes.unwrap_or(0);
            plan.transition_images.push(digest.clone());
        }
    }
    for digest in &doomed {
        let Some(image) = by_digest.get(digest) else { continue };
        plan.bytes_to_reclaim += image.size_bytes.unwrap_or(0);
        if let Some(subjects) = subjects_of.get(digest) {
            plan.delete_referrers.push(digest.to_string());
            let mut edges = subjects.clone();
            edges.extend(children.get(*digest).into_iter().flatten().cloned());
            plan.index_children.insert(digest.to_string(), edges);
        } else if image.is_index() {
            plan.delete_indexes.push(digest.to_string());
            plan.index_children.insert(digest.to_string(), children.get(*digest).cloned().unwrap_or_default());
        } else {
            plan.delete_images.push(digest.to_string());
        }
    }
    // The brake counts archiving too: it is undone by a restore, but until
    // then nothing can pull the image.
    let (deletions, transitions) = (plan.deletions(), plan.transitions());
    let acting = deletions + transitions;
    if acting > 0 && acting * 100 > images.len() * max_delete_percent as usize {
        let what = match (deletions, transitions) {
            (_, 0) => "deleted",
            (0, _) => "archived",
            _ => "deleted or archived",
        };
        plan.brake = Some(format!(
            "safety brake: {acting} of {} images ({}%) would be {what}, more than PRUNE_MAX_DELETE_PERCENT={max_delete_percent}; nothing {what} in this repository",
            images.len(),
            acting * 100 / images.len().max(1)
        ));
    }
    plan
}

/// `1 h`, or `90 min` when the floor is not whole hours.
fn age_floor_text(seconds: i64) -> String {
    if seconds % 3600 == 0 {
        format!("{} h", seconds / 3600)
    } else {
        format!("{} min", (seconds + 59) / 60)
    }
}

/// What is deleted given the protections so far: the expired ones that are
/// not protected, and, transitively, the unprotected referrers of those.
fn doomed_by<'a>(
    expired: &BTreeMap<&str, u32>,
    reasons: &BTreeMap<String, String>,
    referrers: &BTreeMap<String, Vec<String>>,
    present: &BTreeMap<&'a str, &RepoImage>,
) -> BTreeSet<&'a str> {
    let mut doomed: BTreeSet<&'a str> =
        present.keys().copied().filter(|d| expired.contains_key(*d) && !reasons.contains_key(*d)).collect();
    let mut stack: Vec<&'a str> = doomed.iter().copied().collect();
    while let Some(subject) = stack.pop() {
        for r in referrers.get(subject).into_iter().flatten() {
            let Some((key, _)) = present.get_key_value(r.as_str()) else { continue };
            if !reasons.contains_key(r) && doomed.insert(key) {
                stack.push(key);
            }
        }
    }
    doomed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::FakeUsage;
    use crate::in_use::readers::Sources;
    use crate::in_use::{InUseReader, Source, User};
    use crate::lifecycle::DEFAULT_POLICY;
    use crate::model::{Container, TaskDefinition};
    use crate::ports::{
        ContainerImage, DeploymentBrief, FunctionImage, ServiceDeployment, ServiceRevision, ServiceUsage, TaskUsage,
    };
    use proptest::prelude::*;
    use std::sync::Arc;

    const DAY: i64 = 86_400;
    const NOW: i64 = 1_800_000_000;
    const HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
    const INDEX: &str = "application/vnd.oci.image.index.v1+json";

    fn service(name: &str) -> User {
        User::new(Source::ServiceDeployment, name, "us-east-1")
    }

    fn d(n: u32) -> String {
        format!("sha256:{n:064x}")
    }

    fn img(n: u32, tags: &[&str], days_ago: i64) -> RepoImage {
        RepoImage {
            digest: d(n),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            pushed_at: NOW - days_ago * DAY,
            size_bytes: Some(1000 + i64::from(n)),
            media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
            ..RepoImage::default()
        }
    }

    fn archived(n: u32, tags: &[&str], days_ago: i64, archived_days_ago: i64) -> RepoImage {
        RepoImage {
            storage_class: StorageClass::Archive,
            archived_at: Some(NOW - archived_days_ago * DAY),
            ..img(n, tags, days_ago)
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
        let mut uses = InUse::default();
        uses.add_reference(format!("{HOST}/users@{}", d(3)), service("prod/users"));
        let protected = in_use(&repo(), &images, &uses);
        let plan =
            plan(&default_policy(), &images, &protected, &BTreeMap::new(), &BTreeMap::new(), NOW, Safety::brake(100));
        assert_eq!(plan.delete_images, [d(2), d(4)]);
        assert_eq!(plan.protected.len(), 1);
        assert_eq!(plan.protected[0].reason, "in use by service prod/users in us-east-1 (pinned by digest)");
        assert_eq!(plan.protected[0].expired_by_rule, Some(1));
        assert_eq!(plan.bytes_to_reclaim, 1002 + 1004);
        assert_eq!(plan.expired_by_rule.get(&1), Some(&3));
    }

    #[test]
    fn tags_resolve_to_digests_and_other_registries_are_ignored() {
        let images = [img(1, &["v1"], 40), img(2, &["v2"], 1)];
        let mut uses = InUse::default();
        uses.add_reference(
            format!("{HOST}/users:v1"),
            User::new(Source::TaskDefinitionFamily, "users (users:7)", "us-east-1"),
        );
        uses.add_reference(
            "210987654321.dkr.ecr.us-east-1.amazonaws.com/users@".to_string() + &d(2),
            service("elsewhere"),
        );
        uses.add_reference(format!("{HOST}/posts@{}", d(2)), service("another repository"));
        uses.add_digest(d(2), User::new(Source::Task, "prod/abc", "us-east-1"));
        uses.add_digest(d(99), User::new(Source::Task, "prod/gone", "us-east-1"));
        let protected = in_use(&repo(), &images, &uses);
        assert_eq!(protected[&d(1)], "in use by task definition family users (users:7) in us-east-1 (tag v1)");
        assert_eq!(protected[&d(2)], "in use by task prod/abc in us-east-1 (digest)");
        assert_eq!(protected.len(), 2);
    }

    #[test]
    fn a_cosign_tag_names_its_subject_and_nothing_else_does() {
        let hex = "0123456789abcdef".repeat(4);
        let row = |tag: &str| RepoImage { digest: d(9), tags: vec!["v1".into(), tag.into()], ..RepoImage::default() };
        for tag in [
            format!("sha256-{hex}.sig"),
            format!("sha256-{hex}.att"),
            format!("sha256-{hex}.sbom"),
            format!("sha256-{hex}"),
        ] {
            assert_eq!(row(&tag).tag_subject(), Some(format!("sha256:{hex}")), "{tag}");
        }
        let upper = hex.to_ascii_uppercase();
        for tag in [
            format!("sha256-{upper}.sig"),
            format!("sha256-{}.sig", &hex[1..]),
            format!("sha256-{hex}0.sig"),
            format!("sha256-{hex}.sig2"),
            format!("sha512-{hex}.sig"),
            format!("sha256:{hex}"),
            "latest".to_string(),
        ] {
            assert_eq!(row(&tag).tag_subject(), None, "{tag}");
        }
    }

    #[test]
    fn a_kept_image_keeps_its_referrers_and_a_deleted_one_takes_them_along() {
        // GIVEN latest (1) with a signature (5), an old untagged image (2)
        // with an SBOM (3) that has its own signature (4), all untagged old
        let images = [img(1, &["latest"], 0), img(2, &[], 5), img(3, &[], 0), img(4, &[], 0), img(5, &[], 5)];
        let referrers = BTreeMap::from([(d(1), vec![d(5)]), (d(2), vec![d(3)]), (d(3), vec![d(4)])]);
        let plan =
            plan(&default_policy(), &images, &BTreeMap::new(), &BTreeMap::new(), &referrers, NOW, Safety::brake(100));
        // THEN 3 and 4 go, though young, because their subject goes, before it
        assert_eq!(plan.delete_referrers, [d(3), d(4)]);
        assert_eq!(plan.delete_images, [d(2)]);
        assert_eq!(plan.index_children[&d(4)], [d(3)]);
        assert_eq!(plan.protected.len(), 1);
        assert_eq!(plan.protected[0].reason, format!("referrer of kept image {}", d(1)));
        // AND when something uses the image, its referrers stay too
        let uses = BTreeMap::from([(d(2), "in use by Lambda function f:1 in us-east-1 (digest)".to_string())]);
        let kept =
            super::plan(&default_policy(), &images, &uses, &BTreeMap::new(), &referrers, NOW, Safety::brake(100));
        assert_eq!(kept.deletions(), 0, "{kept:?}");
    }

    #[test]
    fn a_kept_index_keeps_its_children_and_attestations() {
        // GIVEN a tagged multi-arch index with two platform children and an attestation, all untagged and old
        let images = [index(10, &["latest"], 5), img(11, &[], 5), img(12, &[], 5), img(13, &[], 5)];
        let children = BTreeMap::from([(d(10), vec![d(11), d(12), d(13)])]);
        let plan =
            plan(&default_policy(), &images, &BTreeMap::new(), &children, &BTreeMap::new(), NOW, Safety::brake(100));
        assert!(plan.delete_images.is_empty() && plan.delete_indexes.is_empty(), "{plan:?}");
        assert_eq!(plan.protected.len(), 3);
        assert!(plan.protected.iter().all(|p| p.reason == format!("part of kept index {}", d(10))));
    }

    #[test]
    fn an_expired_untagged_index_goes_first_and_its_orphans_follow() {
        let images = [index(10, &[], 5), img(11, &[], 5), img(12, &[], 5), img(1, &["latest"], 0)];
        let children = BTreeMap::from([(d(10), vec![d(11), d(12)])]);
        let plan =
            plan(&default_policy(), &images, &BTreeMap::new(), &children, &BTreeMap::new(), NOW, Safety::brake(100));
        assert_eq!(plan.delete_indexes, [d(10)]);
        assert_eq!(plan.delete_images, [d(11), d(12)]);
    }

    #[test]
    fn an_index_in_use_keeps_its_children_even_when_expired() {
        let images = [index(10, &[], 5), img(11, &[], 5)];
        let children = BTreeMap::from([(d(10), vec![d(11)])]);
        let uses = BTreeMap::from([(d(10), "in use by service prod/users (pinned by digest)".to_string())]);
        let plan = plan(&default_policy(), &images, &uses, &children, &BTreeMap::new(), NOW, Safety::brake(100));
        assert_eq!(plan.deletions(), 0);
        assert_eq!(plan.protected.len(), 2);
    }

    #[test]
    fn the_safety_brake_stops_a_repository() {
        let images = [img(1, &["latest"], 0), img(2, &[], 3), img(3, &[], 5)];
        let plan = plan(
            &default_policy(),
            &images,
            &BTreeMap::new(),
            &BTreeMap::new(),
            &BTreeMap::new(),
            NOW,
            Safety::brake(50),
        );
        assert_eq!(plan.deletions(), 2);
        assert!(
            plan.brake.as_deref().unwrap_or("").starts_with("safety brake: 2 of 3 images (66%)"),
            "{:?}",
            plan.brake
        );
        let allowed = super::plan(
            &default_policy(),
            &images,
            &BTreeMap::new(),
            &BTreeMap::new(),
            &BTreeMap::new(),
            NOW,
            Safety::brake(70),
        );
        assert_eq!(allowed.brake, None);
    }

    #[test]
    fn a_multi_arch_push_in_flight_keeps_its_young_children() {
        // GIVEN the tutorials' count rule on untagged images, two old
        // untagged leftovers, and the two untagged children of a multi-arch
        // push uploaded 30 s ago, whose index has not arrived yet
        let policy = Policy::from_value(&serde_json::json!({"rules": [
            {"rulePriority": 1, "selection": {"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1}, "action": {"type": "expire"}},
        ]}))
        .expect("valid");
        let young = |n: u32, seconds: i64| RepoImage { pushed_at: NOW - seconds, ..img(n, &[], 0) };
        let images = [img(1, &[], 5), img(2, &[], 4), young(3, 40), young(4, 30)];
        let floor = Safety { max_delete_percent: 100, min_age_seconds: 3600 };
        let plan = plan(&policy, &images, &BTreeMap::new(), &BTreeMap::new(), &BTreeMap::new(), NOW, floor);
        // THEN the rule keeps the newest child and expires the three others;
        // the floor keeps the other child
        assert_eq!(plan.expired_by_rule.get(&1), Some(&3));
        assert_eq!(plan.delete_images, [d(1), d(2)]);
        let kept: Vec<(&str, &str)> = plan.protected.iter().map(|p| (p.digest.as_str(), p.reason.as_str())).collect();
        assert_eq!(kept, [(d(3).as_str(), "younger than the age floor (1 h)")]);
        assert_eq!(plan.protected[0].expired_by_rule, Some(1));
        // AND without the floor the rule deletes a child of the push in flight
        let bare = super::plan(
            &policy,
            &images,
            &BTreeMap::new(),
            &BTreeMap::new(),
            &BTreeMap::new(),
            NOW,
            Safety::brake(100),
        );
        assert!(bare.delete_images.contains(&d(3)), "{bare:?}");
        // AND an image in use and young gives both reasons
        let uses = BTreeMap::from([(d(3), "in use by task prod/abc in us-east-1 (digest)".to_string())]);
        let both = super::plan(&policy, &images, &uses, &BTreeMap::new(), &BTreeMap::new(), NOW, floor);
        assert_eq!(
            both.protected[0].reason,
            "in use by task prod/abc in us-east-1 (digest); younger than the age floor (1 h)"
        );
        // AND a young untagged index keeps its old children
        // (9 is the newest, which the rule keeps; 10 is expired)
        let images = [
            RepoImage { pushed_at: NOW - 100, ..index(10, &[], 0) },
            RepoImage { pushed_at: NOW - 10, ..index(9, &[], 0) },
            img(11, &[], 5),
            img(12, &[], 5),
        ];
        let children = BTreeMap::from([(d(10), vec![d(11), d(12)])]);
        let minutes = Safety { max_delete_percent: 100, min_age_seconds: 90 * 60 };
        let plan = super::plan(&policy, &images, &BTreeMap::new(), &children, &BTreeMap::new(), NOW, minutes);
        assert_eq!(plan.deletions(), 0, "{plan:?}");
        let floor_kept = plan.protected.iter().find(|p| p.digest == d(10)).expect("the index is protected");
        assert_eq!(floor_kept.reason, "younger than the age floor (90 min)");
        let child = plan.protected.iter().find(|p| p.digest == d(11)).expect("its child is protected");
        assert_eq!(child.reason, format!("part of kept index {}", d(10)));
    }

    /// Archive what has not been pushed for 30 days, delete what has been in
    /// archive for 90.
    fn archive_policy() -> Policy {
        Policy::from_value(&serde_json::json!({"rules": [
            {"rulePriority": 1, "selection": {"tagStatus": "any", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 30},
             "action": {"type": "transition", "targetStorageClass": "archive"}},
            {"rulePriority": 2, "selection": {"tagStatus": "any", "storageClass": "archive", "countType": "sinceImageTransitioned", "countUnit": "days", "countNumber": 90},
             "action": {"type": "expire"}},
        ]}))
        .expect("valid")
    }

    #[test]
    fn transitions_are_planned_apart_from_deletions() {
        let images = [
            img(1, &["latest"], 1),
            img(2, &["v1"], 40),
            img(3, &[], 60),
            archived(4, &["v0"], 400, 100),
            archived(5, &[], 300, 10),
        ];
        let plan = plan(
            &archive_policy(),
            &images,
            &BTreeMap::new(),
            &BTreeMap::new(),
            &BTreeMap::new(),
            NOW,
            Safety::brake(100),
        );
        assert_eq!(plan.transition_images, [d(2), d(3)]);
        assert_eq!(plan.delete_images, [d(4)]);
        assert!(plan.delete_indexes.is_empty() && plan.protected.is_empty());
        assert_eq!(plan.transitioned_by_rule, BTreeMap::from([(1, 2)]));
        assert_eq!(plan.expired_by_rule, BTreeMap::from([(2, 1)]));
        assert_eq!(plan.bytes_to_archive, 1002 + 1003);
        assert_eq!(plan.bytes_to_reclaim, 1004);
        assert_eq!((plan.deletions(), plan.transitions()), (1, 2));
    }

    #[test]
    fn an_image_in_use_is_never_archived_either() {
        let images = [img(1, &["latest"], 1), img(2, &["v1"], 40), img(3, &["v2"], 50)];
        let mut uses = InUse::default();
        uses.add_reference(
            format!("{HOST}/users:v1"),
            User::new(Source::EventBridgeRule, "default/nightly", "us-east-1"),
        );
        uses.add_digest(d(3), User::new(Source::Task, "prod/abc", "us-east-1"));
        let used = in_use(&repo(), &images, &uses);
        let plan = plan(&archive_policy(), &images, &used, &BTreeMap::new(), &BTreeMap::new(), NOW, Safety::brake(100));
        assert!(plan.transition_images.is_empty(), "{plan:?}");
        assert_eq!(plan.protected.len(), 2);
        assert_eq!(
            plan.protected[0].reason,
            "in use by EventBridge rule default/nightly in us-east-1 (tag v1); not archived either: an archived image cannot be pulled"
        );
        assert_eq!(plan.protected[0].transitioned_by_rule, Some(1));
        assert_eq!(plan.protected[0].expired_by_rule, None);
        assert_eq!(plan.protected[1].reason, format!("in use by task prod/abc in us-east-1 (digest); {NOT_ARCHIVED}"));
        // the rule still counts what it would have archived
        assert_eq!(plan.transitioned_by_rule, BTreeMap::from([(1, 2)]));
    }

    #[test]
    fn an_index_being_archived_keeps_its_children_in_standard_storage() {
        // an old multi-arch image: the index is archived, its children are
        // neither archived (ECR refuses while the index references them) nor
        // expired by the untagged rule
        let policy = Policy::from_value(&serde_json::json!({"rules": [
            {"rulePriority": 1, "selection": {"tagStatus": "tagged", "tagPrefixList": ["v"], "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 30},
             "action": {"type": "transition", "targetStorageClass": "archive"}},
            {"rulePriority": 2, "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 1},
             "action": {"type": "expire"}},
        ]}))
        .expect("valid");
        let images = [index(10, &["v1"], 40), img(11, &[], 40), img(12, &[], 40), img(13, &[], 40)];
        let children = BTreeMap::from([(d(10), vec![d(11), d(12)])]);
        let plan = plan(&policy, &images, &BTreeMap::new(), &children, &BTreeMap::new(), NOW, Safety::brake(100));
        assert_eq!(plan.transition_images, [d(10)]);
        assert_eq!(plan.delete_images, [d(13)]);
        let kept: Vec<(&str, &str)> = plan.protected.iter().map(|p| (p.digest.as_str(), p.reason.as_str())).collect();
        let reason = format!("part of kept index {}", d(10));
        assert_eq!(kept, [(d(11).as_str(), reason.as_str()), (d(12).as_str(), reason.as_str())]);
    }

    #[test]
    fn the_safety_brake_counts_archiving() {
        let images = [img(1, &["latest"], 1), img(2, &["v1"], 40), img(3, &["v2"], 50)];
        let plan = plan(
            &archive_policy(),
            &images,
            &BTreeMap::new(),
            &BTreeMap::new(),
            &BTreeMap::new(),
            NOW,
            Safety::brake(50),
        );
        assert_eq!(
            plan.brake.as_deref(),
            Some("safety brake: 2 of 3 images (66%) would be archived, more than PRUNE_MAX_DELETE_PERCENT=50; nothing archived in this repository")
        );
    }

    #[test]
    fn archived_rows_are_images_but_not_readable_indexes() {
        let archived_index = RepoImage { storage_class: StorageClass::Archive, ..index(10, &[], 5) };
        assert!(archived_index.is_index() && archived_index.is_archived());
        assert!(!img(1, &[], 1).is_archived());
        let c = archived(4, &["v0"], 400, 100).candidate();
        assert_eq!((c.storage_class, c.archived_at), (StorageClass::Archive, Some(NOW - 100 * DAY)));
    }

    const TAGS: [&str; 5] = ["latest", "v1", "v2", "prod-1", "dev"];

    /// One consumer of one source, naming image `image` by digest, or
    /// `TAGS[tag]` by tag.
    #[derive(Clone, Debug)]
    struct Consumer {
        source: usize,
        image: usize,
        tag: Option<usize>,
    }

    fn task_definition(family: &str, image: &str) -> TaskDefinition {
        TaskDefinition {
            arn: format!("arn:aws:ecs:us-east-1:123456789012:task-definition/{family}:1"),
            family: family.into(),
            revision: 1,
            containers: vec![Container { name: "app".into(), image: image.into(), log: None }],
            cpu_architecture: None,
            tags: Default::default(),
            ..TaskDefinition::default()
        }
    }

    /// The sources as ECS, EventBridge, Scheduler and Lambda would report
    /// these consumers: each one in the shape its source has.
    fn sources_of(consumers: &[Consumer], n: usize) -> FakeUsage {
        let cluster = "arn:aws:ecs:us-east-1:123456789012:cluster/prod".to_string();
        let mut world = FakeUsage::default();
        for (k, c) in consumers.iter().enumerate() {
            let digest = d((c.image % n) as u32);
            let (reference, pinned) = match c.tag {
                Some(t) => (format!("{HOST}/users:{}", TAGS[t % TAGS.len()]), None),
                None => (format!("{HOST}/users@{digest}"), Some(digest.clone())),
            };
            let service = |controller: &str, task_sets: Vec<String>| ServiceUsage {
                arn: format!("arn:aws:ecs:us-east-1:123456789012:service/prod/s{k}"),
                name: format!("s{k}"),
                cluster_arn: cluster.clone(),
                controller: controller.into(),
                task_definition: None,
                deployment_task_definitions: vec![],
                task_set_task_definitions: task_sets,
                tags: Default::default(),
            };
            match Source::ALL[c.source % Source::ALL.len()] {
                Source::ServiceDeployment => {
                    let s = service("ECS", vec![]);
                    let (old, new) = (format!("rev{k}-old"), format!("rev{k}"));
                    // a finished deployment from an old revision to this one
                    world.deployments.insert(
                        s.arn.clone(),
                        vec![(
                            DeploymentBrief {
                                arn: format!("dep{k}"),
                                status: "SUCCESSFUL".into(),
                                created_at: 1,
                                target_revision: Some(new.clone()),
                            },
                            ServiceDeployment {
                                arn: format!("dep{k}"),
                                target_revision: Some(new.clone()),
                                source_revisions: vec![old],
                            },
                        )],
                    );
                    world.revisions.push(ServiceRevision {
                        arn: new,
                        task_definition: None,
                        images: vec![ContainerImage { image: reference, digest: pinned }],
                    });
                    world.services.push(s);
                }
                Source::TaskSet => {
                    world.services.push(service("EXTERNAL", vec![format!("ts{k}:1")]));
                    world.task_definitions.push(task_definition(&format!("ts{k}"), &reference));
                }
                Source::Task => world.tasks.push((
                    cluster.clone(),
                    TaskUsage {
                        arn: format!("arn:aws:ecs:us-east-1:123456789012:task/prod/t{k}"),
                        task_definition: String::new(),
                        images: vec![ContainerImage { image: reference, digest: pinned }],
                    },
                )),
                Source::TaskDefinitionFamily => {
                    world.task_definitions.push(task_definition(&format!("fam{k}"), &reference))
                }
                Source::EventBridgeRule => {
                    let td = task_definition(&format!("rule{k}"), &reference);
                    world.rules.push((format!("default/r{k}"), td.arn.clone()));
                    world.task_definitions.push(td);
                }
                Source::SchedulerSchedule => {
                    let td = task_definition(&format!("sched{k}"), &reference);
                    // a target without revision: the family's latest
                    world.schedules.push((format!("default/s{k}"), td.arn.trim_end_matches(":1").to_string()));
                    world.task_definitions.push(td);
                }
                Source::LambdaFunction => world.functions.push(FunctionImage {
                    name: format!("f{k}:$LATEST"),
                    image_uri: Some(reference.clone()),
                    resolved_image_uri: Some(format!("{HOST}/users@{digest}")).filter(|_| c.tag.is_none()),
                }),
            }
        }
        world
    }

    /// The set as the readers build it from those sources.
    fn read(world: FakeUsage) -> InUse {
        let sources = Sources { regions: vec![FakeUsage::region(&Arc::new(world), "us-east-1")], concurrency: 2 };
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        runtime.block_on(sources.read()).expect("every source readable")
    }

    /// A random registry: tagged and untagged images of random ages, indexes
    /// whose children (and attestations) are other rows, referrers, and
    /// consumers from every source of "in use".
    #[allow(clippy::type_complexity)]
    fn registry(
    ) -> impl Strategy<Value = (Vec<RepoImage>, BTreeMap<String, Vec<String>>, BTreeMap<String, Vec<String>>, Vec<Consumer>)>
    {
        let image = (
            prop::collection::vec(prop::sample::select(TAGS.to_vec()), 0..3),
            0i64..60,
            any::<bool>(),
            // archived some days ago, or standard
            prop::option::weighted(0.3, 0i64..200),
        );
        let consumer = (0usize..7, 0usize..40, prop::option::of(0usize..5)).prop_map(|(source, image, tag)| Consumer {
            source,
            image,
            tag,
        });
        (
            prop::collection::vec(image, 1..40),
            prop::collection::vec((0usize..40, 0usize..40), 0..10),
            prop::collection::vec((0usize..40, 0usize..40), 0..6),
            prop::collection::vec(consumer, 0..10),
        )
            .prop_map(|(rows, links, refs, consumers)| {
                let n = rows.len();
                let mut images: Vec<RepoImage> = rows
                    .into_iter()
                    .enumerate()
                    .map(|(i, (tags, age, is_index, archived_days))| {
                        let mut tags: Vec<&str> = tags;
                        tags.sort();
                        tags.dedup();
                        let row = match archived_days {
                            Some(days) => archived(i as u32, &tags, age + days, days),
                            None => img(i as u32, &tags, age),
                        };
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
                // a referrer names one subject (its manifest's `subject` field)
                let mut referrers: BTreeMap<String, Vec<String>> = BTreeMap::new();
                let mut has_subject = BTreeSet::new();
                for (subject, referrer) in refs {
                    let (subject, referrer) = (subject % n, referrer % n);
                    if subject != referrer && has_subject.insert(referrer) {
                        referrers.entry(d(subject as u32)).or_default().push(d(referrer as u32));
                    }
                }
                (images, children, referrers, consumers)
            })
    }

    /// What the consumers need, worked out from them directly (not through
    /// the readers): each digest named, and what each named tag points at.
    fn needed(consumers: &[Consumer], images: &[RepoImage]) -> BTreeSet<String> {
        consumers
            .iter()
            .filter_map(|c| match c.tag {
                None => Some(d((c.image % images.len()) as u32)),
                Some(t) => {
                    images.iter().find(|i| i.tags.iter().any(|x| x == TAGS[t % TAGS.len()])).map(|i| i.digest.clone())
                }
            })
            .collect()
    }

    proptest! {
        #[test]
        fn images_any_source_uses_are_never_deleted(
            (images, children, referrers, consumers) in registry(),
            keep in 1u32..10,
            days in 1u32..30,
        ) {
            let policy = Policy::from_value(&serde_json::json!({"rules": [
                {"rulePriority": 1, "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": days}, "action": {"type": "expire"}},
                {"rulePriority": 2, "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": keep}, "action": {"type": "expire"}},
            ]})).expect("valid");
            let uses = read(sources_of(&consumers, images.len()));
            let used = in_use(&repo(), &images, &uses);
            let p = plan(&policy, &images, &used, &children, &referrers, NOW, Safety::brake(100));
            let deleted: BTreeSet<&String> = p.to_delete().collect();
            for protected in &p.protected {
                prop_assert!(!deleted.contains(&protected.digest), "deleting protected {}", protected.digest);
            }
            for digest in needed(&consumers, &images) {
                prop_assert!(!deleted.contains(&digest), "deleting {digest}, which a consumer uses: {consumers:?}");
            }
            // the referrers of a kept image stay; those of a deleted one go
            // too, unless something else protects them
            let protected: BTreeSet<&String> = p.protected.iter().map(|x| &x.digest).collect();
            for (subject, refs) in &referrers {
                for r in refs.iter().filter(|r| images.iter().any(|i| &i.digest == *r)) {
                    if deleted.contains(subject) {
                        prop_assert!(deleted.contains(r) || protected.contains(r), "{r} left behind by deleted {subject}");
                    } else if images.iter().any(|i| &i.digest == subject) {
                        prop_assert!(!deleted.contains(r), "deleting {r}, a referrer of kept {subject}");
                    }
                }
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

        /// With transition and archive-expiry rules too: nothing protected is
        /// deleted or archived, nothing is both, only standard images are
        /// archived, and an archived image is deleted only after the 90 days.
        #[test]
        fn protected_images_are_never_archived(
            (images, children, referrers, consumers) in registry(),
            keep in 1u32..10,
            days in 1u32..40,
        ) {
            let policy = Policy::from_value(&serde_json::json!({"rules": [
                {"rulePriority": 1, "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": days}, "action": {"type": "expire"}},
                {"rulePriority": 2, "selection": {"tagStatus": "tagged", "tagPrefixList": ["v"], "countType": "sinceImagePushed", "countUnit": "days", "countNumber": days}, "action": {"type": "transition", "targetStorageClass": "archive"}},
                {"rulePriority": 3, "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": keep}, "action": {"type": "transition", "targetStorageClass": "archive"}},
                {"rulePriority": 4, "selection": {"tagStatus": "any", "storageClass": "archive", "countType": "sinceImageTransitioned", "countUnit": "days", "countNumber": 90 + days}, "action": {"type": "expire"}},
            ]})).expect("valid");
            let uses = read(sources_of(&consumers, images.len()));
            let used = in_use(&repo(), &images, &uses);
            let p = plan(&policy, &images, &used, &children, &referrers, NOW, Safety::brake(100));
            let deleted: BTreeSet<&String> = p.to_delete().collect();
            let archived: BTreeSet<&String> = p.transition_images.iter().collect();
            prop_assert!(deleted.is_disjoint(&archived), "both deleted and archived");
            let by_digest: BTreeMap<&str, &RepoImage> = images.iter().map(|i| (i.digest.as_str(), i)).collect();
            for digest in &archived {
                prop_assert!(!used.contains_key(*digest), "archiving in-use {digest}");
                prop_assert_eq!(by_digest[digest.as_str()].storage_class, StorageClass::Standard);
            }
            for protected in &p.protected {
                prop_assert!(!archived.contains(&protected.digest) && !deleted.contains(&protected.digest));
                if protected.transitioned_by_rule.is_some() {
                    prop_assert!(protected.reason.ends_with(NOT_ARCHIVED));
                }
            }
            // (a referrer goes with its subject, from archive too, as ECR's
            // own lifecycle takes referrers along)
            for digest in deleted.iter().filter(|d| !p.delete_referrers.contains(d)) {
                let image = by_digest[digest.as_str()];
                if image.is_archived() {
                    let archived_at = image.archived_at.expect("archived rows have a time");
                    prop_assert!(archived_at < NOW - 90 * DAY, "{digest} deleted inside the archive minimum");
                }
            }
            // no child of an index that stays (standard or archived) is deleted or archived
            for (index, kids) in &children {
                if !deleted.contains(index) && by_digest.contains_key(index.as_str()) {
                    for kid in kids {
                        prop_assert!(!deleted.contains(kid) && !archived.contains(kid), "{kid}, child of kept {index}");
                    }
                }
            }
        }

        /// Whatever the rules (count rules ignore age), nothing pushed less
        /// than the age floor ago is deleted or archived, and each such image
        /// the rules selected is reported as protected by the floor.
        #[test]
        fn nothing_younger_than_the_age_floor_is_ever_deleted(
            (images, children, referrers, consumers) in registry(),
            keep in 0u32..5,
            floor_hours in 1i64..(61 * 24),
            archive in any::<bool>(),
        ) {
            let action = if archive { serde_json::json!({"type": "transition", "targetStorageClass": "archive"}) } else { serde_json::json!({"type": "expire"}) };
            let policy = Policy::from_value(&serde_json::json!({"rules": [
                {"rulePriority": 1, "selection": {"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": keep.max(1)}, "action": {"type": "expire"}},
                {"rulePriority": 2, "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": keep.max(1)}, "action": action},
                {"rulePriority": 3, "selection": {"tagStatus": "any", "storageClass": "archive", "countType": "sinceImageTransitioned", "countUnit": "days", "countNumber": 90}, "action": {"type": "expire"}},
            ]})).expect("valid");
            let uses = read(sources_of(&consumers, images.len()));
            let used = in_use(&repo(), &images, &uses);
            let floor = Safety { max_delete_percent: 100, min_age_seconds: floor_hours * 3600 };
            let p = plan(&policy, &images, &used, &children, &referrers, NOW, floor);
            let by_digest: BTreeMap<&str, &RepoImage> = images.iter().map(|i| (i.digest.as_str(), i)).collect();
            for digest in p.to_delete().chain(&p.transition_images) {
                let age = NOW - by_digest[digest.as_str()].pushed_at;
                prop_assert!(age >= floor.min_age_seconds, "{digest} is {age} s old, the floor is {} s", floor.min_age_seconds);
            }
            for protected in &p.protected {
                let young = NOW - by_digest[protected.digest.as_str()].pushed_at < floor.min_age_seconds;
                let selected = protected.expired_by_rule.is_some() || protected.transitioned_by_rule.is_some();
                if protected.reason.contains(YOUNGER_THAN_FLOOR) {
                    prop_assert!(young, "{:?}", protected);
                } else {
                    prop_assert!(!(young && selected), "{:?} is young and selected but not said to be", protected);
                }
            }
        }

        #[test]
        fn an_untagged_only_rule_never_deletes_a_tagged_image((images, children, _referrers, consumers) in registry(), days in 1u32..30) {
            let policy = Policy::from_value(&serde_json::json!({"rules": [
                {"rulePriority": 1, "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": days}, "action": {"type": "expire"}},
            ]})).expect("valid");
            let uses = read(sources_of(&consumers, images.len()));
            let used = in_use(&repo(), &images, &uses);
            let p = plan(&policy, &images, &used, &children, &BTreeMap::new(), NOW, Safety::brake(100));
            for digest in p.to_delete() {
                let image = images.iter().find(|i| &i.digest == digest).expect("known");
                prop_assert!(image.tags.is_empty(), "tagged {digest} deleted by an untagged rule");
            }
        }

        #[test]
        fn the_plan_does_not_depend_on_input_order((images, children, referrers, consumers) in registry(), seed in any::<u64>()) {
            let policy = Policy::parse(DEFAULT_POLICY).expect("valid");
            let uses = read(sources_of(&consumers, images.len()));
            let used = in_use(&repo(), &images, &uses);
            let forward = plan(&policy, &images, &used, &children, &referrers, NOW, Safety::brake(100));
            let mut shuffled = images.clone();
            // a deterministic shuffle from the seed
            let len = shuffled.len();
            for i in (1..len).rev() {
                let j = (seed.wrapping_mul(6364136223846793005).wrapping_add(i as u64) % (i as u64 + 1)) as usize;
                shuffled.swap(i, j);
            }
            let used_again = in_use(&repo(), &shuffled, &uses);
            prop_assert_eq!(&used, &used_again);
            let again = plan(&policy, &shuffled, &used_again, &children, &referrers, NOW, Safety::brake(100));
            prop_assert_eq!(forward, again);
        }
    }
}
