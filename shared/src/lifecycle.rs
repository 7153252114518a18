//! ECR lifecycle-policy documents: parsed and validated the way ECR validates
//! them, and evaluated with ECR's documented semantics, plus our
//! `sinceImagePulled` expiry (ECR itself only archives on pull age).
//!
//! Semantics ("Lifecycle policy properties" and "Lifecycle policy evaluation
//! rules" in the ECR user guide): every rule is evaluated, then rules apply in
//! priority order (lowest `rulePriority` first); an image is expired or
//! archived by zero or one rule; an image that matched the tag requirements
//! of a higher-priority rule is never acted on by a lower-priority one; within
//! a rule the oldest images go first. A rule selects only images of its
//! `storageClass` (`standard` unless it says `archive`), so archive rules and
//! standard rules never compete for an image.
//!
//! Actions: `expire` deletes, `transition` (`targetStorageClass: archive`)
//! moves an image to ECR's archive storage class, where it can no longer be
//! pulled. Archived images are expired only by `sinceImageTransitioned`, and
//! not before [`ARCHIVE_MINIMUM_DAYS`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The default policy: untagged images older than a day, and keep the newest 30.
pub const DEFAULT_POLICY: &str = r#"{"rules": [
  {"rulePriority": 1, "description": "untagged images older than 1 day",
   "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 1},
   "action": {"type": "expire"}},
  {"rulePriority": 2, "description": "keep the newest 30 images",
   "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 30},
   "action": {"type": "expire"}}
]}"#;

/// ECR's quota "Lifecycle policy length": the maximum number of characters in
/// a lifecycle policy (not adjustable). PutLifecyclePolicy also has a minimum
/// of 100, which no valid policy falls under, so only the maximum is checked.
pub const MAX_POLICY_CHARS: usize = 30_720;

/// "Archived images have a minimum storage duration of 90 days. You cannot
/// configure lifecycle policies that delete images that have been in archive
/// for less than 90 days." (ECR user guide, "Archiving an image").
pub const ARCHIVE_MINIMUM_DAYS: u32 = 90;

const DAY: i64 = 86_400;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Sorted by priority, lowest first.
    pub rules: Vec<Rule>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub priority: u32,
    pub description: Option<String>,
    pub tag_status: TagStatus,
    pub tags: TagFilter,
    /// The storage class of the images this rule selects: [`StorageClass::Standard`]
    /// or [`StorageClass::Archive`], never `Activating`.
    pub storage_class: StorageClass,
    pub count: Count,
    pub action: Action,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagStatus {
    Tagged,
    Untagged,
    Any,
}

/// Which tags a `tagged` rule selects: every listed prefix (or pattern) must
/// be matched by some tag of the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagFilter {
    None,
    Prefixes(Vec<String>),
    Patterns(Vec<String>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Count {
    /// Keep the newest N; act on the rest.
    MoreThan(u32),
    /// Act on images pushed (or restored from archive) more than N days ago.
    SincePushed(u32),
    /// Act on images last pulled (or, never pulled, pushed) more than N days ago.
    SincePulled(u32),
    /// Expire archived images archived more than N days ago.
    SinceTransitioned(u32),
}

/// What a rule does to the images it picks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    /// Delete the image.
    Expire,
    /// Move the image to ECR's archive storage class (the only target ECR has).
    Transition,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Expire => "expire",
            Action::Transition => "transition",
        }
    }
}

/// Where an image is stored, from DescribeImages' `imageStatus`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum StorageClass {
    /// `ACTIVE`: pullable, in ECR standard storage.
    #[default]
    Standard,
    /// `ARCHIVED`: in ECR archive storage; described and listed, not pullable.
    Archive,
    /// `ACTIVATING`: being restored from archive (or a status this SDK does
    /// not know). No rule selects it until it settles.
    Activating,
}

impl StorageClass {
    /// The word lifecycle policies use (`standard`, `archive`), or `activating`.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageClass::Standard => "standard",
            StorageClass::Archive => "archive",
            StorageClass::Activating => "activating",
        }
    }
}

/// What a rule needs to know about an image. Times are seconds since the epoch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Candidate {
    pub digest: String,
    pub tags: Vec<String>,
    pub pushed_at: i64,
    pub last_pulled_at: Option<i64>,
    pub storage_class: StorageClass,
    /// When the image was last moved to archive (`lastArchivedAt`).
    pub archived_at: Option<i64>,
    /// When the image was last restored from archive (`lastActivatedAt`).
    pub activated_at: Option<i64>,
}

impl Candidate {
    /// The time its age is counted from: the push, or a later restore from
    /// archive ("If an image was archived and then restored at any point in
    /// the past, the image's last_activated_at is used instead of
    /// pushed_at_time"). Using the later time can only keep an image longer.
    pub fn pushed_basis(&self) -> i64 {
        self.activated_at.map_or(self.pushed_at, |a| a.max(self.pushed_at))
    }

    /// The time pull age is counted from: the last pull, or, never pulled
    /// since it was pushed or restored, the push or restore.
    pub fn pulled_basis(&self) -> i64 {
        self.last_pulled_at.unwrap_or(self.pushed_at).max(self.pushed_basis())
    }
}

/// What the policy decided for one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The `rulePriority` of the rule that decided.
    pub rule: u32,
    pub action: Action,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyDoc {
    rules: Vec<RuleDoc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RuleDoc {
    rule_priority: i64,
    #[serde(default)]
    description: Option<String>,
    selection: SelectionDoc,
    action: ActionDoc,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SelectionDoc {
    tag_status: String,
    #[serde(default)]
    tag_prefix_list: Option<Vec<String>>,
    #[serde(default)]
    tag_pattern_list: Option<Vec<String>>,
    #[serde(default)]
    storage_class: Option<String>,
    count_type: String,
    #[serde(default)]
    count_unit: Option<String>,
    count_number: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ActionDoc {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    target_storage_class: Option<String>,
}

impl Policy {
    /// A policy from its JSON text.
    pub fn parse(text: &str) -> Result<Policy, String> {
        check_length(text)?;
        let value: Value = serde_json::from_str(text).map_err(|e| format!("policy is not valid JSON: {e}"))?;
        Self::from_document(&value)
    }

    /// A policy from a JSON object, or from a string holding one (as ECR's
    /// own API takes it). An object is measured as the compact JSON text
    /// it would be sent to ECR as.
    pub fn from_value(value: &Value) -> Result<Policy, String> {
        if let Value::String(text) = value {
            return Self::parse(text);
        }
        check_length(&value.to_string())?;
        Self::from_document(value)
    }

    fn from_document(value: &Value) -> Result<Policy, String> {
        let doc: PolicyDoc = serde_json::from_value(value.clone()).map_err(|e| format!("policy: {e}"))?;
        if doc.rules.is_empty() {
            return Err("policy: rules is empty; give at least one rule".into());
        }
        let mut rules = Vec::with_capacity(doc.rules.len());
        let mut seen = BTreeSet::new();
        for (index, rule) in doc.rules.into_iter().enumerate() {
            let name = format!("rule {} (rulePriority {})", index + 1, rule.rule_priority);
            let rule = validate(rule).map_err(|problem| format!("{name}: {problem}"))?;
            if !seen.insert(rule.priority) {
                return Err(format!(
                    "{name}: rulePriority {} is used by more than one rule; each rule must have a unique value for rulePriority",
                    rule.priority
                ));
            }
            rules.push(rule);
        }
        rules.sort_by_key(|r| r.priority);
        for class in [StorageClass::Standard, StorageClass::Archive] {
            validate_storage_class(&rules, class)?;
        }
        Ok(Policy { rules })
    }

    /// What the policy does to each image (digest → the deciding rule and its
    /// action). Images no rule acts on are absent. Pure; `now` is seconds
    /// since the epoch.
    pub fn evaluate(&self, images: &[Candidate], now: i64) -> BTreeMap<String, Decision> {
        // Newest first, ties broken by digest, so the result does not depend
        // on the order of the input.
        let mut ordered: Vec<&Candidate> = images.iter().collect();
        ordered.sort_by(|a, b| b.pushed_basis().cmp(&a.pushed_basis()).then_with(|| a.digest.cmp(&b.digest)));
        let mut decided: BTreeMap<String, Decision> = BTreeMap::new();
        let mut claimed: BTreeSet<&str> = BTreeSet::new();
        for rule in &self.rules {
            let selected: Vec<&Candidate> = ordered.iter().copied().filter(|i| rule.selects(i)).collect();
            let older_than = |days: u32| now - i64::from(days) * DAY;
            let acting: Vec<&Candidate> = match rule.count {
                Count::MoreThan(keep) => selected.iter().copied().skip(keep as usize).collect(),
                Count::SincePushed(days) => {
                    selected.iter().copied().filter(|i| i.pushed_basis() < older_than(days)).collect()
                }
                Count::SincePulled(days) => {
                    selected.iter().copied().filter(|i| i.pulled_basis() < older_than(days)).collect()
                }
                // An archived image whose archive time is unknown is kept:
                // deleting it might break the 90-day minimum.
                Count::SinceTransitioned(days) => {
                    selected.iter().copied().filter(|i| i.archived_at.is_some_and(|t| t < older_than(days))).collect()
                }
            };
            for image in acting {
                if !claimed.contains(image.digest.as_str()) {
                    decided
                        .entry(image.digest.clone())
                        .or_insert(Decision { rule: rule.priority, action: rule.action });
                }
            }
            claimed.extend(selected.iter().map(|i| i.digest.as_str()));
        }
        decided
    }

    /// Which rule expires (deletes) each image: [`Policy::evaluate`] without
    /// the transitions.
    pub fn expired(&self, images: &[Candidate], now: i64) -> BTreeMap<String, u32> {
        self.evaluate(images, now)
            .into_iter()
            .filter(|(_, d)| d.action == Action::Expire)
            .map(|(digest, d)| (digest, d.rule))
            .collect()
    }
}

impl Rule {
    pub fn selects(&self, image: &Candidate) -> bool {
        if image.storage_class != self.storage_class {
            return false;
        }
        match self.tag_status {
            TagStatus::Any => true,
            TagStatus::Untagged => image.tags.is_empty(),
            TagStatus::Tagged => {
                !image.tags.is_empty()
                    && match &self.tags {
                        TagFilter::None => true,
                        TagFilter::Prefixes(prefixes) => {
                            prefixes.iter().all(|p| image.tags.iter().any(|t| t.starts_with(p.as_str())))
                        }
                        TagFilter::Patterns(patterns) => {
                            patterns.iter().all(|p| image.tags.iter().any(|t| wildcard_match(p, t)))
                        }
                    }
            }
        }
    }
}

fn check_length(text: &str) -> Result<(), String> {
    // Smithy string lengths count characters (Unicode scalar values), not bytes.
    let length = text.chars().count();
    if length > MAX_POLICY_CHARS {
        return Err(format!(
            "policy is {length} characters long; ECR's lifecycle policy length quota is {MAX_POLICY_CHARS} characters"
        ));
    }
    Ok(())
}

/// The rules ECR checks across the rules that select one storage class
/// ("Lifecycle policy evaluation rules" and "Lifecycle policy properties").
fn validate_storage_class(rules: &[Rule], class: StorageClass) -> Result<(), String> {
    let of_class: Vec<&Rule> = rules.iter().filter(|r| r.storage_class == class).collect();
    let name = class.as_str();
    // "Only one rule selecting a specific storage class is allowed to select
    // untagged images." Read as tagStatus "untagged": an "any" rule also
    // sees untagged images, yet ECR's own examples pair one with an untagged
    // rule (this crate's DEFAULT_POLICY has that shape too).
    let untagged: Vec<u32> =
        of_class.iter().filter(|r| r.tag_status == TagStatus::Untagged).map(|r| r.priority).collect();
    if let [first, second, ..] = untagged[..] {
        return Err(format!(
            "rules with rulePriority {first} and {second} both select untagged {name} images; only one rule selecting a specific storage class is allowed to select untagged images"
        ));
    }
    // "The set of all rules selecting a specific storage class must contain
    // a unique set of prefixes": read as no two rules with the same
    // tagPrefixList (as a set), the narrowest reading, so that no policy ECR
    // accepts is refused.
    let mut prefix_sets: BTreeMap<BTreeSet<&str>, u32> = BTreeMap::new();
    for rule in &of_class {
        if let TagFilter::Prefixes(prefixes) = &rule.tags {
            let set: BTreeSet<&str> = prefixes.iter().map(String::as_str).collect();
            if let Some(other) = prefix_sets.insert(set, rule.priority) {
                return Err(format!(
                    "rules with rulePriority {other} and {} select {name} images with the same tagPrefixList; the set of all rules selecting a specific storage class must contain a unique set of prefixes",
                    rule.priority
                ));
            }
        }
    }
    // "A rule with a tagStatus value of any must have the highest value for
    // rulePriority and be evaluated last." Checked among the rules of one
    // storage class: ECR accepts an "any" transition rule at priority 1 with
    // an "any" archive expiry at priority 2 (its documented archive example,
    // also exercised by the AWS Terraform provider's acceptance test).
    let highest = of_class.last().map_or(0, |r| r.priority);
    if let Some(any) = of_class.iter().find(|r| r.tag_status == TagStatus::Any && r.priority != highest) {
        return Err(format!(
            "rule with rulePriority {}: a tagStatus \"any\" rule must have the highest rulePriority and be evaluated last among the rules selecting {name} images ({highest} is higher)",
            any.priority
        ));
    }
    Ok(())
}

fn validate(rule: RuleDoc) -> Result<Rule, String> {
    let priority = u32::try_from(rule.rule_priority)
        .ok()
        .filter(|p| *p >= 1)
        .ok_or_else(|| format!("rulePriority must be a whole number of at least 1, got {}", rule.rule_priority))?;
    let action = match (rule.action.kind.as_str(), rule.action.target_storage_class.as_deref()) {
        ("expire", None) => Action::Expire,
        ("expire", Some(_)) => return Err("targetStorageClass is only allowed with action type \"transition\"".into()),
        ("transition", Some("archive")) => Action::Transition,
        ("transition", Some(other)) => {
            return Err(format!("targetStorageClass {other:?} is not supported; archive is the only supported value"))
        }
        ("transition", None) => {
            return Err(
                "action type \"transition\" needs targetStorageClass \"archive\" (required if type is transition)"
                    .into(),
            )
        }
        (other, _) => {
            return Err(format!("action type {other:?} is not allowed; the supported values are expire and transition"))
        }
    };
    let s = rule.selection;
    let tag_status = match s.tag_status.as_str() {
        "tagged" => TagStatus::Tagged,
        "untagged" => TagStatus::Untagged,
        "any" => TagStatus::Any,
        other => return Err(format!("tagStatus {other:?} is not one of tagged, untagged, any")),
    };
    let tags = match (s.tag_prefix_list, s.tag_pattern_list) {
        (Some(_), Some(_)) => return Err("give tagPrefixList or tagPatternList, not both".into()),
        (Some(p), None) if tag_status == TagStatus::Tagged => TagFilter::Prefixes(non_empty("tagPrefixList", p)?),
        (None, Some(p)) if tag_status == TagStatus::Tagged => {
            let patterns = non_empty("tagPatternList", p)?;
            if let Some(bad) = patterns.iter().find(|p| p.matches('*').count() > 4) {
                return Err(format!("tagPatternList entry {bad:?} has more than 4 wildcards (*)"));
            }
            TagFilter::Patterns(patterns)
        }
        (None, None) if tag_status == TagStatus::Tagged => {
            return Err("a tagged rule needs tagPrefixList or tagPatternList".into())
        }
        (None, None) => TagFilter::None,
        _ => return Err("tagPrefixList and tagPatternList are only allowed with tagStatus \"tagged\"".into()),
    };
    let storage_class = match s.storage_class.as_deref() {
        None | Some("standard") => StorageClass::Standard,
        Some("archive") => StorageClass::Archive,
        Some(other) => return Err(format!("storageClass {other:?} is not one of standard, archive")),
    };
    let number = u32::try_from(s.count_number)
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| format!("countNumber must be a whole number of at least 1, got {}", s.count_number))?;
    let days = |unit: Option<String>, kind: &str| match unit.as_deref() {
        Some("days") => Ok(number),
        Some(other) => Err(format!("countUnit {other:?} is not allowed with {kind}; use \"days\"")),
        None => Err(format!("{kind} needs countUnit \"days\"")),
    };
    let count = match s.count_type.as_str() {
        "imageCountMoreThan" => match s.count_unit {
            None => Count::MoreThan(number),
            Some(_) => return Err("countUnit is not allowed with imageCountMoreThan".into()),
        },
        "sinceImagePushed" => Count::SincePushed(days(s.count_unit, "sinceImagePushed")?),
        // ECR only archives on pull age; expiring on it is this crate's addition.
        "sinceImagePulled" => Count::SincePulled(days(s.count_unit, "sinceImagePulled")?),
        "sinceImageTransitioned" => Count::SinceTransitioned(days(s.count_unit, "sinceImageTransitioned")?),
        other => {
            return Err(format!(
                "countType {other:?} is not one of imageCountMoreThan, sinceImagePushed, sinceImagePulled, sinceImageTransitioned"
            ))
        }
    };
    match (count, storage_class) {
        (Count::SinceTransitioned(_), StorageClass::Standard) if s.storage_class.is_none() => {
            return Err("sinceImageTransitioned needs storageClass \"archive\": when using a count type of sinceImageTransitioned, storageClass is required, and the only supported value is archive".into())
        }
        (Count::SinceTransitioned(_), StorageClass::Standard) => {
            return Err("storageClass \"standard\" is not allowed with sinceImageTransitioned; the only supported value is archive".into())
        }
        (Count::SinceTransitioned(days), _) if days < ARCHIVE_MINIMUM_DAYS => {
            return Err(format!(
                "countNumber {days} is below the archive minimum: archived images have a minimum storage duration of {ARCHIVE_MINIMUM_DAYS} days, and a lifecycle policy cannot delete images archived for less"
            ))
        }
        (Count::SinceTransitioned(_), _) if action == Action::Transition => {
            return Err("sinceImageTransitioned selects archived images, which can only be expired; use action type \"expire\"".into())
        }
        (Count::MoreThan(_) | Count::SincePushed(_) | Count::SincePulled(_), StorageClass::Archive) => {
            return Err("storageClass \"archive\" is only allowed with countType sinceImageTransitioned; with imageCountMoreThan, sinceImagePushed or sinceImagePulled the only supported value is standard".into())
        }
        _ => {}
    }
    Ok(Rule { priority, description: rule.description, tag_status, tags, storage_class, count, action })
}

fn non_empty(field: &str, list: Vec<String>) -> Result<Vec<String>, String> {
    if list.is_empty() || list.iter().any(|s| s.is_empty()) {
        return Err(format!("{field} must list at least one non-empty value"));
    }
    // No image tag holds a control character or white space, so such an
    // entry matches nothing: it is a mistake (or an attack), not a filter.
    if let Some(bad) = list.iter().find(|s| s.chars().any(|c| c.is_control() || c.is_whitespace())) {
        return Err(format!("{field} entry {bad:?} holds a control character or white space, which no tag can"));
    }
    Ok(list)
}

/// `*` matches any run of characters (ECR's tagPatternList).
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DAY: i64 = 86_400;
    const NOW: i64 = 1_800_000_000;

    fn image(name: &str, tags: &[&str], days_ago: i64) -> Candidate {
        Candidate {
            digest: name.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            pushed_at: NOW - days_ago * DAY,
            ..Candidate::default()
        }
    }

    /// An image archived `archived_days_ago`.
    fn archived(name: &str, tags: &[&str], days_ago: i64, archived_days_ago: i64) -> Candidate {
        Candidate {
            storage_class: StorageClass::Archive,
            archived_at: Some(NOW - archived_days_ago * DAY),
            ..image(name, tags, days_ago)
        }
    }

    fn transition(priority: u32, selection: Value) -> Value {
        json!({"rulePriority": priority, "selection": selection, "action": {"type": "transition", "targetStorageClass": "archive"}})
    }

    fn decisions(p: &Policy, images: &[Candidate]) -> Vec<(String, u32, Action)> {
        p.evaluate(images, NOW).into_iter().map(|(d, x)| (d, x.rule, x.action)).collect()
    }

    /// The validation error for a policy made of these rules.
    fn rejected(rules: Value) -> String {
        Policy::from_value(&json!({ "rules": rules })).expect_err("invalid")
    }

    fn untagged_pushed(days: u32) -> Value {
        json!({"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": days})
    }

    fn archive_expiry(days: u32) -> Value {
        json!({"tagStatus": "any", "storageClass": "archive", "countType": "sinceImageTransitioned", "countUnit": "days", "countNumber": days})
    }

    fn policy(rules: Value) -> Policy {
        Policy::from_value(&json!({ "rules": rules })).expect("valid policy")
    }

    fn rule(priority: u32, selection: Value) -> Value {
        json!({"rulePriority": priority, "selection": selection, "action": {"type": "expire"}})
    }

    fn expired(p: &Policy, images: &[Candidate]) -> Vec<(String, u32)> {
        p.expired(images, NOW).into_iter().collect()
    }

    #[test]
    fn default_policy_is_valid() {
        let p = Policy::parse(DEFAULT_POLICY).expect("valid");
        assert_eq!(p.rules.len(), 2);
        assert_eq!(p.rules[0].count, Count::SincePushed(1));
        assert_eq!(p.rules[1].count, Count::MoreThan(30));
    }

    #[test]
    fn untagged_older_than_a_day() {
        let p = policy(json!([rule(
            1,
            json!({"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 1})
        )]));
        let images = [image("old", &[], 2), image("new", &[], 0), image("tagged-old", &["v1"], 9)];
        assert_eq!(expired(&p, &images), [("old".to_string(), 1)]);
    }

    #[test]
    fn keep_newest_n_expires_the_oldest() {
        let p =
            policy(json!([rule(1, json!({"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 2}))]));
        let images = [image("a", &["1"], 4), image("b", &[], 3), image("c", &["3"], 2), image("d", &["4"], 1)];
        assert_eq!(expired(&p, &images), [("a".to_string(), 1), ("b".to_string(), 1)]);
    }

    /// AWS's "filtering on multiple rules" example: rule 2 counts images rule
    /// 1 also selected, but cannot expire them.
    #[test]
    fn multiple_rules_as_documented() {
        let p = policy(json!([
            rule(
                1,
                json!({"tagStatus": "tagged", "tagPrefixList": ["alpha"], "countType": "imageCountMoreThan", "countNumber": 1})
            ),
            rule(
                2,
                json!({"tagStatus": "tagged", "tagPrefixList": ["beta"], "countType": "imageCountMoreThan", "countNumber": 1})
            ),
        ]));
        let images = [
            image("A", &["alpha-1", "beta-1"], 10),
            image("B", &["alpha-2", "beta-2"], 9),
            image("C", &["alpha-3"], 8),
            image("D", &["beta-3"], 7),
            image("E", &["beta-4"], 6),
        ];
        assert_eq!(expired(&p, &images), [("A".to_string(), 1), ("B".to_string(), 1), ("D".to_string(), 2)]);
    }

    #[test]
    fn a_higher_rule_that_keeps_an_image_shields_it_from_lower_rules() {
        let p = policy(json!([
            rule(
                1,
                json!({"tagStatus": "tagged", "tagPrefixList": ["prod"], "countType": "imageCountMoreThan", "countNumber": 5})
            ),
            rule(2, json!({"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1})),
        ]));
        let images =
            [image("p1", &["prod-1"], 9), image("p2", &["prod-2"], 8), image("x", &["dev"], 1), image("y", &[], 5)];
        // any keeps the newest 1 (x); y expires; p1 and p2 were selected by rule 1
        assert_eq!(expired(&p, &images), [("y".to_string(), 2)]);
    }

    #[test]
    fn multiple_prefixes_must_all_match() {
        let p = policy(json!([rule(
            1,
            json!({"tagStatus": "tagged", "tagPrefixList": ["alpha", "beta"], "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 1})
        )]));
        let images = [image("both", &["alpha-1", "beta-1"], 5), image("one", &["alpha-2"], 5)];
        assert_eq!(expired(&p, &images), [("both".to_string(), 1)]);
    }

    #[test]
    fn patterns_with_wildcards() {
        assert!(wildcard_match("prod*", "prod-1"));
        assert!(wildcard_match("*-rc*", "v1.2-rc3"));
        assert!(wildcard_match("v*.*.*", "v1.2.3"));
        assert!(!wildcard_match("v*.*.*", "v1.2"));
        assert!(wildcard_match("exact", "exact") && !wildcard_match("exact", "exactly"));
        assert!(wildcard_match("a*a", "aa") && !wildcard_match("a*a", "a"));
    }

    #[test]
    fn since_pulled_uses_push_time_when_never_pulled() {
        let p = policy(json!([rule(
            1,
            json!({"tagStatus": "any", "countType": "sinceImagePulled", "countUnit": "days", "countNumber": 30})
        )]));
        let mut pulled = image("pulled-recently", &["a"], 90);
        pulled.last_pulled_at = Some(NOW - 2 * DAY);
        let images = [pulled, image("never-pulled-old", &["b"], 40), image("never-pulled-new", &["c"], 3)];
        assert_eq!(expired(&p, &images), [("never-pulled-old".to_string(), 1)]);
    }

    #[test]
    fn invalid_policies_name_the_rule_and_the_problem() {
        let ok =
            json!({"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 1});
        let cases = [
            (json!({"rules": []}), "rules is empty"),
            (
                json!({"rules": [rule(1, ok.clone()), rule(1, ok.clone())]}),
                "rule 2 (rulePriority 1): rulePriority 1 is used by more than one rule",
            ),
            (
                json!({"rules": [rule(1, json!({"tagStatus": "all", "countType": "imageCountMoreThan", "countNumber": 1}))]}),
                "tagStatus \"all\"",
            ),
            (
                json!({"rules": [rule(1, json!({"tagStatus": "tagged", "countType": "imageCountMoreThan", "countNumber": 1}))]}),
                "a tagged rule needs tagPrefixList or tagPatternList",
            ),
            (
                json!({"rules": [rule(1, json!({"tagStatus": "tagged", "tagPrefixList": ["a"], "tagPatternList": ["b*"], "countType": "imageCountMoreThan", "countNumber": 1}))]}),
                "not both",
            ),
            (
                json!({"rules": [rule(1, json!({"tagStatus": "tagged", "tagPatternList": ["*a*b*c*d*e"], "countType": "imageCountMoreThan", "countNumber": 1}))]}),
                "more than 4 wildcards",
            ),
            (
                json!({"rules": [rule(1, json!({"tagStatus": "tagged", "tagPrefixList": ["v\u{7}"], "countType": "imageCountMoreThan", "countNumber": 1}))]}),
                "tagPrefixList entry \"v\\u{7}\" holds a control character",
            ),
            (
                json!({"rules": [rule(1, json!({"tagStatus": "tagged", "tagPatternList": ["rel *"], "countType": "imageCountMoreThan", "countNumber": 1}))]}),
                "tagPatternList entry \"rel *\" holds a control character or white space",
            ),
            (
                json!({"rules": [rule(2, json!({"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1})), rule(3, ok.clone())]}),
                "must have the highest rulePriority",
            ),
            (
                json!({"rules": [rule(1, json!({"tagStatus": "untagged", "countType": "sinceImagePushed", "countNumber": 1}))]}),
                "needs countUnit \"days\"",
            ),
            (
                json!({"rules": [rule(1, json!({"tagStatus": "untagged", "countType": "imageCountMoreThan", "countUnit": "days", "countNumber": 1}))]}),
                "countUnit is not allowed",
            ),
            (
                json!({"rules": [rule(1, json!({"tagStatus": "untagged", "countType": "sinceImageBuilt", "countUnit": "days", "countNumber": 1}))]}),
                "countType \"sinceImageBuilt\"",
            ),
            (
                json!({"rules": [rule(1, json!({"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 0}))]}),
                "countNumber must be",
            ),
            (
                json!({"rules": [{"rulePriority": 1, "selection": ok.clone(), "action": {"type": "archive"}}]}),
                "action type \"archive\"",
            ),
            (
                json!({"rules": [{"rulePriority": 0, "selection": ok.clone(), "action": {"type": "expire"}}]}),
                "rulePriority must be",
            ),
            (
                json!({"rules": [{"rulePriority": 1, "selection": ok, "action": {"type": "expire"}, "extra": 1}]}),
                "unknown field `extra`",
            ),
            (json!("{not json"), "policy is not valid JSON"),
        ];
        for (doc, expected) in cases {
            let err = Policy::from_value(&doc).expect_err("invalid");
            assert!(err.contains(expected), "{doc} → {err}");
        }
    }

    #[test]
    fn a_policy_given_as_a_string_is_accepted() {
        let p = Policy::from_value(&Value::String(DEFAULT_POLICY.into())).expect("valid");
        assert_eq!(p.rules.len(), 2);
    }

    // ---- storage classes: evaluation ----

    /// ECR's archive example: archive what nobody pulled for 90 days, delete
    /// what has been in archive for a year.
    #[test]
    fn transition_then_expire_from_archive() {
        let p = policy(json!([
            transition(
                1,
                json!({"tagStatus": "any", "countType": "sinceImagePulled", "countUnit": "days", "countNumber": 90})
            ),
            rule(2, archive_expiry(365)),
        ]));
        let mut pulled = image("pulled", &["v3"], 400);
        pulled.last_pulled_at = Some(NOW - 10 * DAY);
        let images = [
            image("cold", &["v1"], 200),
            pulled,
            image("new", &["v4"], 5),
            archived("long-archived", &["v0"], 900, 400),
            archived("recently-archived", &["v2"], 500, 100),
        ];
        assert_eq!(
            decisions(&p, &images),
            [("cold".to_string(), 1, Action::Transition), ("long-archived".to_string(), 2, Action::Expire)]
        );
        assert_eq!(p.expired(&images, NOW), BTreeMap::from([("long-archived".to_string(), 2)]));
    }

    #[test]
    fn a_rule_sees_only_images_of_its_storage_class() {
        // keep the newest 2 standard images: the archived ones neither count
        // towards the 2 nor expire, however old they are
        let p =
            policy(json!([rule(1, json!({"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 2}))]));
        let images = [
            archived("a1", &["old"], 1, 100),
            archived("a2", &[], 2, 100),
            image("s1", &["1"], 3),
            image("s2", &["2"], 4),
            image("s3", &["3"], 5),
        ];
        assert_eq!(decisions(&p, &images), [("s3".to_string(), 1, Action::Expire)]);
        // and an archive rule never touches a standard image
        let p = policy(json!([rule(1, archive_expiry(90))]));
        let images = [image("standard-old", &[], 999), archived("archived-old", &[], 999, 91)];
        assert_eq!(decisions(&p, &images), [("archived-old".to_string(), 1, Action::Expire)]);
    }

    #[test]
    fn an_image_being_restored_is_selected_by_no_rule() {
        let p = policy(json!([
            rule(1, untagged_pushed(1)),
            rule(
                2,
                json!({"tagStatus": "any", "storageClass": "archive", "countType": "sinceImageTransitioned", "countUnit": "days", "countNumber": 90})
            ),
        ]));
        let restoring = Candidate { storage_class: StorageClass::Activating, ..archived("restoring", &[], 500, 400) };
        assert!(p.evaluate(&[restoring], NOW).is_empty());
    }

    #[test]
    fn an_archived_image_with_no_archive_time_is_kept() {
        let p = policy(json!([rule(1, archive_expiry(90))]));
        let unknown = Candidate { archived_at: None, ..archived("unknown", &[], 900, 0) };
        assert!(p.evaluate(&[unknown], NOW).is_empty());
    }

    #[test]
    fn a_restored_image_ages_from_its_restore() {
        let p = policy(json!([transition(1, untagged_pushed(30))]));
        let restored = Candidate { activated_at: Some(NOW - 2 * DAY), ..image("restored", &[], 400) };
        let restored_long_ago =
            Candidate { activated_at: Some(NOW - 40 * DAY), ..image("restored-long-ago", &[], 400) };
        assert_eq!(
            decisions(&p, &[restored, restored_long_ago]),
            [("restored-long-ago".to_string(), 1, Action::Transition)]
        );
        // pull age too: restored 2 days ago and not pulled since
        let p = policy(json!([transition(
            1,
            json!({"tagStatus": "any", "countType": "sinceImagePulled", "countUnit": "days", "countNumber": 30})
        )]));
        let restored = Candidate {
            activated_at: Some(NOW - 2 * DAY),
            last_pulled_at: Some(NOW - 300 * DAY),
            ..image("restored", &["v1"], 400)
        };
        assert!(p.evaluate(&[restored], NOW).is_empty());
    }

    /// A transition rule that selects an image by its tags shields it from a
    /// lower-priority expiry even when it does not archive it (yet).
    #[test]
    fn a_transition_rule_shields_what_it_selects_from_lower_rules() {
        let p = policy(json!([
            transition(
                1,
                json!({"tagStatus": "tagged", "tagPatternList": ["release-*"], "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 180})
            ),
            rule(2, json!({"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1})),
        ]));
        let images = [
            image("release-old", &["release-1"], 200),
            image("release-new", &["release-2"], 20),
            image("dev", &["dev-9"], 30),
            image("latest", &["latest"], 1),
        ];
        assert_eq!(
            decisions(&p, &images),
            [("dev".to_string(), 2, Action::Expire), ("release-old".to_string(), 1, Action::Transition)]
        );
    }

    #[test]
    fn storage_classes_and_actions_are_read() {
        let p = policy(json!([transition(1, untagged_pushed(7)), rule(2, archive_expiry(120))]));
        assert_eq!(p.rules[0].action, Action::Transition);
        assert_eq!(p.rules[0].storage_class, StorageClass::Standard);
        assert_eq!(p.rules[1].action, Action::Expire);
        assert_eq!(p.rules[1].storage_class, StorageClass::Archive);
        assert_eq!(p.rules[1].count, Count::SinceTransitioned(120));
        // an explicit "standard" is the default
        let explicit = policy(json!([rule(
            1,
            json!({"tagStatus": "untagged", "storageClass": "standard", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 7})
        )]));
        assert_eq!(explicit.rules[0].storage_class, StorageClass::Standard);
    }

    // ---- validation: one test per rule ----

    #[test]
    fn priorities_must_be_unique() {
        let err = rejected(json!([rule(3, untagged_pushed(1)), transition(3, untagged_pushed(2))]));
        assert!(err.contains("rulePriority 3 is used by more than one rule"), "{err}");
        assert!(err.contains("must have a unique value for rulePriority"), "{err}");
    }

    #[test]
    fn only_one_untagged_rule_per_storage_class() {
        let err = rejected(json!([rule(1, untagged_pushed(1)), transition(2, untagged_pushed(30))]));
        assert!(
            err.contains("only one rule selecting a specific storage class is allowed to select untagged images"),
            "{err}"
        );
        assert!(err.contains("rulePriority 1 and 2"), "{err}");
        // one per class is fine
        policy(json!([
            transition(1, untagged_pushed(30)),
            rule(
                2,
                json!({"tagStatus": "untagged", "storageClass": "archive", "countType": "sinceImageTransitioned", "countUnit": "days", "countNumber": 90})
            ),
        ]));
    }

    #[test]
    fn an_any_rule_comes_last_among_its_storage_class() {
        let err = rejected(json!([
            rule(1, json!({"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 5})),
            transition(
                2,
                json!({"tagStatus": "tagged", "tagPrefixList": ["v"], "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 9})
            ),
        ]));
        assert!(err.contains("a tagStatus \"any\" rule must have the highest rulePriority"), "{err}");
        assert!(err.contains("standard images (2 is higher)"), "{err}");
        // an archive rule after a standard "any" rule is a different class
        let accepted = policy(json!([
            transition(
                1,
                json!({"tagStatus": "any", "countType": "sinceImagePulled", "countUnit": "days", "countNumber": 90})
            ),
            rule(2, archive_expiry(365)),
        ]));
        assert_eq!(accepted.rules.len(), 2);
    }

    #[test]
    fn prefix_sets_are_unique_per_storage_class() {
        let tagged = |prefixes: Value| json!({"tagStatus": "tagged", "tagPrefixList": prefixes, "countType": "imageCountMoreThan", "countNumber": 3});
        let err = rejected(json!([rule(1, tagged(json!(["prod", "v"]))), rule(2, tagged(json!(["v", "prod"])))]));
        assert!(err.contains("must contain a unique set of prefixes"), "{err}");
        // different sets are fine
        policy(json!([rule(1, tagged(json!(["prod"]))), rule(2, tagged(json!(["prod", "v"])))]));
    }

    /// A policy of exactly `chars` characters, padded in its description
    /// with `pad` (one character, whatever its UTF-8 length).
    fn policy_text(chars: usize, pad: char) -> String {
        let text = |description: &str| {
            format!(
                r#"{{"rules":[{{"rulePriority":1,"description":"{description}","selection":{{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":1}},"action":{{"type":"expire"}}}}]}}"#
            )
        };
        let base = text("").chars().count();
        text(&pad.to_string().repeat(chars - base))
    }

    #[test]
    fn a_policy_longer_than_ecr_allows_is_rejected() {
        let longest = policy_text(MAX_POLICY_CHARS, 'x');
        assert_eq!(longest.chars().count(), 30_720);
        Policy::parse(&longest).expect("30,720 characters is allowed");
        let err = Policy::parse(&policy_text(MAX_POLICY_CHARS + 1, 'x')).expect_err("too long");
        assert!(err.contains("policy is 30721 characters long"), "{err}");
        assert!(err.contains("lifecycle policy length quota is 30720 characters"), "{err}");
        // characters, not bytes: 30,720 characters of which most take two bytes
        let wide = policy_text(MAX_POLICY_CHARS, 'é');
        assert!(wide.len() > MAX_POLICY_CHARS);
        Policy::parse(&wide).expect("counted in characters");
        // a JSON object is measured as the text it would be sent as
        let object: Value = serde_json::from_str(&policy_text(MAX_POLICY_CHARS + 1, 'x')).expect("json");
        assert!(Policy::from_value(&object).is_err());
        assert!(Policy::from_value(&Value::String(policy_text(MAX_POLICY_CHARS + 1, 'x'))).is_err());
    }

    #[test]
    fn unknown_fields_are_rejected_at_every_level() {
        let cases = [
            (json!({"rules": [rule(1, untagged_pushed(1))], "version": 2}), "unknown field `version`"),
            (
                json!({"rules": [{"rulePriority": 1, "selection": untagged_pushed(1), "action": {"type": "expire"}, "extra": 1}]}),
                "unknown field `extra`",
            ),
            (
                json!({"rules": [rule(1, json!({"tagStatus": "untagged", "storage": "archive", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 1}))]}),
                "unknown field `storage`",
            ),
            (
                json!({"rules": [{"rulePriority": 1, "selection": untagged_pushed(1), "action": {"type": "transition", "storageClass": "archive"}}]}),
                "unknown field `storageClass`",
            ),
        ];
        for (doc, expected) in cases {
            let err = Policy::from_value(&doc).expect_err("invalid");
            assert!(err.contains(expected), "{doc} → {err}");
        }
    }

    #[test]
    fn a_transition_needs_target_storage_class_archive() {
        let missing = json!([{"rulePriority": 1, "selection": untagged_pushed(1), "action": {"type": "transition"}}]);
        let err = rejected(missing);
        assert!(err.contains("needs targetStorageClass \"archive\""), "{err}");
        let standard = json!([{"rulePriority": 1, "selection": untagged_pushed(1), "action": {"type": "transition", "targetStorageClass": "standard"}}]);
        assert!(rejected(standard).contains("archive is the only supported value"));
        let on_expire = json!([{"rulePriority": 1, "selection": untagged_pushed(1), "action": {"type": "expire", "targetStorageClass": "archive"}}]);
        assert!(rejected(on_expire).contains("targetStorageClass is only allowed with action type \"transition\""));
    }

    #[test]
    fn since_image_transitioned_needs_storage_class_archive() {
        let omitted =
            json!({"tagStatus": "any", "countType": "sinceImageTransitioned", "countUnit": "days", "countNumber": 90});
        let err = rejected(json!([rule(1, omitted)]));
        assert!(err.contains("storageClass is required, and the only supported value is archive"), "{err}");
        let standard = json!({"tagStatus": "any", "storageClass": "standard", "countType": "sinceImageTransitioned", "countUnit": "days", "countNumber": 90});
        assert!(rejected(json!([rule(1, standard)])).contains("storageClass \"standard\" is not allowed"));
        let no_unit = json!({"tagStatus": "any", "storageClass": "archive", "countType": "sinceImageTransitioned", "countNumber": 90});
        assert!(rejected(json!([rule(1, no_unit)])).contains("sinceImageTransitioned needs countUnit \"days\""));
    }

    #[test]
    fn archived_images_cannot_expire_before_the_archive_minimum() {
        let err = rejected(json!([rule(1, archive_expiry(89))]));
        assert!(err.contains("minimum storage duration of 90 days"), "{err}");
        policy(json!([rule(1, archive_expiry(90))]));
    }

    #[test]
    fn archived_images_can_only_be_expired() {
        let err = rejected(json!([transition(1, archive_expiry(90))]));
        assert!(err.contains("can only be expired"), "{err}");
    }

    #[test]
    fn storage_class_archive_goes_only_with_since_image_transitioned() {
        for count in [
            json!({"countType": "imageCountMoreThan", "countNumber": 3}),
            json!({"countType": "sinceImagePushed", "countUnit": "days", "countNumber": 3}),
            json!({"countType": "sinceImagePulled", "countUnit": "days", "countNumber": 3}),
        ] {
            let mut selection = json!({"tagStatus": "any", "storageClass": "archive"});
            selection.as_object_mut().expect("object").extend(count.as_object().expect("object").clone());
            let err = rejected(json!([rule(1, selection)]));
            assert!(
                err.contains("storageClass \"archive\" is only allowed with countType sinceImageTransitioned"),
                "{err}"
            );
        }
    }

    #[test]
    fn storage_class_is_standard_or_archive() {
        let selection = json!({"tagStatus": "untagged", "storageClass": "glacier", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 1});
        assert!(
            rejected(json!([rule(1, selection)])).contains("storageClass \"glacier\" is not one of standard, archive")
        );
    }

    #[test]
    fn unknown_actions_name_the_supported_ones() {
        let err = rejected(json!([{"rulePriority": 1, "selection": untagged_pushed(1), "action": {"type": "delete"}}]));
        assert!(err.contains("the supported values are expire and transition"), "{err}");
    }

    proptest::proptest! {
        /// Whatever the images, an image is acted on by at most one rule (by
        /// construction of the map), only by a rule that selects it, with
        /// that rule's action, and never an archived image before the
        /// archive minimum.
        #[test]
        fn decisions_come_from_a_rule_that_selects_the_image(
            rows in proptest::collection::vec((0usize..3, 0i64..400, proptest::option::of(0i64..400), 0u8..3), 1..30),
            keep in 1u32..5,
            days in 1u32..60,
        ) {
            let p = policy(json!([
                transition(1, json!({"tagStatus": "tagged", "tagPrefixList": ["rel"], "countType": "sinceImagePushed", "countUnit": "days", "countNumber": days})),
                rule(2, untagged_pushed(days)),
                rule(3, json!({"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": keep})),
                rule(4, archive_expiry(90 + days)),
            ]));
            let tags = [vec![], vec!["rel-1"], vec!["dev"]];
            let images: Vec<Candidate> = rows.iter().enumerate().map(|(i, (t, age, archived_age, class))| {
                let base = image(&format!("i{i}"), &tags[*t], *age);
                match class {
                    0 => base,
                    1 => Candidate { storage_class: StorageClass::Archive, archived_at: archived_age.map(|a| NOW - a * DAY), ..base },
                    _ => Candidate { storage_class: StorageClass::Activating, ..base },
                }
            }).collect();
            for (digest, decision) in p.evaluate(&images, NOW) {
                let image = images.iter().find(|i| i.digest == digest).expect("known");
                let rule = p.rules.iter().find(|r| r.priority == decision.rule).expect("a rule");
                proptest::prop_assert!(rule.selects(image));
                proptest::prop_assert_eq!(rule.action, decision.action);
                proptest::prop_assert!(image.storage_class != StorageClass::Activating);
                if image.storage_class == StorageClass::Archive {
                    proptest::prop_assert_eq!(decision.action, Action::Expire);
                    let archived_at = image.archived_at.expect("an archive time");
                    proptest::prop_assert!(archived_at < NOW - i64::from(ARCHIVE_MINIMUM_DAYS) * DAY);
                }
                // no higher-priority rule selected it
                for higher in p.rules.iter().filter(|r| r.priority < decision.rule) {
                    proptest::prop_assert!(!higher.selects(image));
                }
            }
        }
    }
}
