//! ECR lifecycle-policy documents: parsed and validated the way ECR validates
//! them, and evaluated with ECR's documented semantics, plus our
//! `sinceImagePulled` count type.
//!
//! Semantics ("Lifecycle policy properties", "Examples of lifecycle
//! policies"): every rule is evaluated, then rules apply in priority order
//! (lowest `rulePriority` first); an image is expired by zero or one rule; an
//! image that matched the tag requirements of a higher-priority rule is never
//! expired by a lower-priority one; within a rule the oldest images (by push
//! time) go first.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
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
    pub count: Count,
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
    /// Keep the newest N; expire the rest.
    MoreThan(u32),
    /// Expire images pushed more than N days ago.
    SincePushed(u32),
    /// Expire images last pulled (or, never pulled, pushed) more than N days ago.
    SincePulled(u32),
}

/// What a rule needs to know about an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub digest: String,
    pub tags: Vec<String>,
    /// Seconds since the epoch.
    pub pushed_at: i64,
    pub last_pulled_at: Option<i64>,
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
    count_type: String,
    #[serde(default)]
    count_unit: Option<String>,
    count_number: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionDoc {
    #[serde(rename = "type")]
    kind: String,
}

impl Policy {
    /// A policy from its JSON text.
    pub fn parse(text: &str) -> Result<Policy, String> {
        let value: Value = serde_json::from_str(text).map_err(|e| format!("policy is not valid JSON: {e}"))?;
        Self::from_value(&value)
    }

    /// A policy from a JSON object, or from a string holding one (as ECR's
    /// own API takes it).
    pub fn from_value(value: &Value) -> Result<Policy, String> {
        if let Value::String(text) = value {
            return Self::parse(text);
        }
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
                return Err(format!("{name}: rulePriority {} is used by more than one rule", rule.priority));
            }
            rules.push(rule);
        }
        rules.sort_by_key(|r| r.priority);
        let highest = rules.last().map_or(0, |r| r.priority);
        if let Some(any) = rules.iter().find(|r| r.tag_status == TagStatus::Any && r.priority != highest) {
            return Err(format!(
                "rule with rulePriority {}: a tagStatus \"any\" rule must have the highest rulePriority ({highest} is higher)",
                any.priority
            ));
        }
        Ok(Policy { rules })
    }

    /// Which rule expires each image (digest → rule priority). Pure; `now`
    /// is seconds since the epoch.
    pub fn expired(&self, images: &[Candidate], now: i64) -> BTreeMap<String, u32> {
        // Newest first, ties broken by digest, so the result does not depend
        // on the order of the input.
        let mut ordered: Vec<&Candidate> = images.iter().collect();
        ordered.sort_by(|a, b| b.pushed_at.cmp(&a.pushed_at).then_with(|| a.digest.cmp(&b.digest)));
        let mut expired: BTreeMap<String, u32> = BTreeMap::new();
        let mut claimed: BTreeSet<&str> = BTreeSet::new();
        for rule in &self.rules {
            let selected: Vec<&Candidate> = ordered.iter().copied().filter(|i| rule.selects(i)).collect();
            let expiring: Vec<&Candidate> = match rule.count {
                Count::MoreThan(keep) => selected.iter().copied().skip(keep as usize).collect(),
                Count::SincePushed(days) => {
                    selected.iter().copied().filter(|i| i.pushed_at < now - i64::from(days) * 86_400).collect()
                }
                Count::SincePulled(days) => selected
                    .iter()
                    .copied()
                    .filter(|i| {
                        i.last_pulled_at.unwrap_or(i.pushed_at).max(i.pushed_at) < now - i64::from(days) * 86_400
                    })
                    .collect(),
            };
            for image in expiring {
                if !claimed.contains(image.digest.as_str()) {
                    expired.entry(image.digest.clone()).or_insert(rule.priority);
                }
            }
            claimed.extend(selected.iter().map(|i| i.digest.as_str()));
        }
        expired
    }
}

impl Rule {
    pub fn selects(&self, image: &Candidate) -> bool {
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

fn validate(rule: RuleDoc) -> Result<Rule, String> {
    let priority = u32::try_from(rule.rule_priority)
        .ok()
        .filter(|p| *p >= 1)
        .ok_or_else(|| format!("rulePriority must be a whole number of at least 1, got {}", rule.rule_priority))?;
    if rule.action.kind != "expire" {
        return Err(format!("action type {:?} is not allowed; the only action is \"expire\"", rule.action.kind));
    }
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
        "sinceImagePulled" => Count::SincePulled(days(s.count_unit, "sinceImagePulled")?),
        other => {
            return Err(format!(
                "countType {other:?} is not one of imageCountMoreThan, sinceImagePushed, sinceImagePulled"
            ))
        }
    };
    Ok(Rule { priority, description: rule.description, tag_status, tags, count })
}

fn non_empty(field: &str, list: Vec<String>) -> Result<Vec<String>, String> {
    if list.is_empty() || list.iter().any(|s| s.is_empty()) {
        return Err(format!("{field} must list at least one non-empty value"));
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
            last_pulled_at: None,
        }
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
}
