//! The functions' JSON reports as compact tables, for people: `make demo`
//! prints them (`--json` prints the reports themselves) and the demo's test
//! reads the rows back. Each printer takes a report exactly as the function
//! returned it, so any step of the demo, or a test, can reuse it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;

/// Cells longer than this are cut with `…`, so a row stays one line.
const MAX_CELL: usize = 72;

/// A table: a header row and rows of cells, printed as aligned columns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table { headers: headers.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }

    pub fn push<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let mut row: Vec<String> = cells.into_iter().map(Into::into).map(|c| cut(&c)).collect();
        row.resize(self.headers.len(), String::new());
        self.rows.push(row);
    }

    /// The cell of `row` under `header`.
    pub fn cell<'a>(&'a self, row: &'a [String], header: &str) -> &'a str {
        self.headers.iter().position(|h| h == header).and_then(|i| row.get(i)).map_or("", String::as_str)
    }

    /// Reads back a table as [`Display`](fmt::Display) printed it: the column
    /// starts come from the rule line of dashes under the header.
    pub fn parse(text: &str) -> Option<Table> {
        let lines: Vec<Vec<char>> = text.lines().map(|l| l.chars().collect()).collect();
        let rule = lines.get(1)?;
        let mut columns = Vec::new();
        let mut at = 0;
        while at < rule.len() {
            if rule[at] != '-' {
                at += 1;
                continue;
            }
            let start = at;
            while at < rule.len() && rule[at] == '-' {
                at += 1;
            }
            columns.push(start);
        }
        let split = |line: &Vec<char>| -> Vec<String> {
            columns
                .iter()
                .enumerate()
                .map(|(i, start)| {
                    let end = columns.get(i + 1).copied().unwrap_or(line.len()).min(line.len());
                    line.get(*start..end).map(|c| c.iter().collect::<String>().trim().to_string()).unwrap_or_default()
                })
                .collect()
        };
        let mut table = Table { headers: split(&lines[0]), rows: Vec::new() };
        for line in &lines[2..] {
            if line.iter().collect::<String>() == "(none)" || line.is_empty() {
                break;
            }
            table.rows.push(split(line));
        }
        Some(table)
    }

    /// The rows whose cell under `header` equals `value`.
    pub fn rows_where<'a>(&'a self, header: &str, value: &str) -> Vec<&'a Vec<String>> {
        self.rows.iter().filter(|r| self.cell(r, header) == value).collect()
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|i| {
                self.rows
                    .iter()
                    .map(|r| r[i].chars().count())
                    .chain([self.headers[i].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            let padded: Vec<String> =
                cells.iter().zip(&widths).map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count()))).collect();
            padded.join("  ").trim_end().to_string()
        };
        writeln!(f, "{}", line(&self.headers))?;
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        writeln!(f, "{}", rule.join("  "))?;
        if self.rows.is_empty() {
            return writeln!(f, "(none)");
        }
        for row in &self.rows {
            writeln!(f, "{}", line(row))?;
        }
        Ok(())
    }
}

fn cut(cell: &str) -> String {
    let cell = cell.replace('\n', " ");
    if cell.chars().count() <= MAX_CELL {
        return cell;
    }
    let mut short: String = cell.chars().take(MAX_CELL - 1).collect();
    short.push('…');
    short
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn list(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

/// `sha256:` and the first 12 hex digits, as `docker images` shows them.
pub fn short_digest(digest: &str) -> String {
    match digest.strip_prefix("sha256:") {
        Some(hex) => format!("sha256:{}", &hex[..hex.len().min(12)]),
        None => digest.to_string(),
    }
}

/// An image reference without its registry host, its digest shortened:
/// `users:latest`, `users@sha256:73da1f0e2b4c`.
pub fn short_image(reference: &str) -> String {
    let path = match reference.split_once('/') {
        Some((host, rest)) if host.contains('.') || host.contains(':') => rest,
        _ => reference,
    };
    match path.split_once('@') {
        Some((name, digest)) => format!("{name}@{}", short_digest(digest)),
        None => path.to_string(),
    }
}

/// Bytes in decimal units, as the 500 MB free tier counts them.
pub fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn percent(v: &Value) -> String {
    match v.as_f64() {
        Some(p) if p > 0.0 && p < 0.01 => "<0.01 %".into(),
        Some(p) => format!("{p:.2} %"),
        None => String::new(),
    }
}

fn days(v: &Value) -> String {
    v.as_i64().map_or_else(|| "?".into(), |d| format!("{d} d"))
}

/// log-groups: group, retention before → after, action.
pub fn log_groups(report: &Value) -> Table {
    let mut table = Table::new(&["group", "retention before → after", "action"]);
    let dry_run = report["dryRun"] == true;
    let mut seen = BTreeSet::new();
    for group in list(&report["groups"]) {
        let name = text(&group["logGroup"]);
        seen.insert(name.clone());
        let result = text(&group["result"]);
        let retention = match result.as_str() {
            "created" => format!("missing → {}", days(&group["retentionDays"])),
            "retention-set" => format!("never expire → {}", days(&group["retentionDays"])),
            "already-compliant" => format!("{0} → {0}", days(&group["retentionDays"])),
            _ => "-".into(),
        };
        let mut action = if dry_run && group["applied"] != true && result != "already-compliant" {
            format!("{result} (dry run)")
        } else {
            result
        };
        for detail in [&group["reason"], &group["error"]] {
            if let Some(detail) = detail.as_str() {
                action = format!("{action}: {detail}");
            }
        }
        table.push([name, retention, action]);
    }
    for skipped in list(&report["skipped"]) {
        let name = text(&skipped["logGroup"]);
        if !seen.contains(&name) {
            table.push([name, "-".into(), format!("skipped: {}", text(&skipped["reason"]))]);
        }
    }
    table
}

/// deploy-on-push: service, container, from → to, status, reason.
pub fn rollouts(report: &Value) -> Table {
    let mut table = Table::new(&["service", "container", "from → to", "status", "reason"]);
    let services = list(&report["services"]);
    if services.is_empty() {
        let reason = report["skipped"].as_str().or(report["reason"].as_str()).unwrap_or("no service tracks this push");
        table.push(["-".into(), "-".into(), "-".into(), "skipped".into(), reason.to_string()]);
    }
    for service in services {
        let name = format!("{}/{}", text(&service["cluster"]), text(&service["service"]));
        let status = text(&service["status"]);
        let reason = [&service["reason"], &service["error"]]
            .into_iter()
            .find_map(|v| v.as_str().map(String::from))
            .or_else(|| {
                service["warnings"].as_array().filter(|w| !w.is_empty()).map(|w| format!("warning: {}", text(&w[0])))
            })
            .unwrap_or_default();
        let changes = list(&service["changes"]);
        if changes.is_empty() {
            table.push([name, "-".into(), "-".into(), status, reason]);
            continue;
        }
        for change in changes {
            let moved = format!("{} → {}", short_image(&text(&change["from"])), short_image(&text(&change["to"])));
            table.push([name.clone(), text(&change["container"]), moved, status.clone(), reason.clone()]);
        }
    }
    table
}

/// quota-scan: repository, images, bytes, % of quota, status, reclaimable;
/// the registry last.
pub fn quota(report: &Value) -> Table {
    let mut table = Table::new(&["repository", "images", "bytes", "% of quota", "status", "reclaimable"]);
    let reclaimable = |images: &Value, bytes: &Value| match (images.as_u64(), bytes.as_f64()) {
        (Some(n), Some(b)) => format!("{n} image(s), {}", human_bytes(b)),
        (None, Some(b)) => human_bytes(b),
        _ => "-".into(),
    };
    for repository in list(&report["repositories"]) {
        let name = text(&repository["repository"]);
        if let Some(skipped) = repository["skipped"].as_str() {
            table.push([name, "-".into(), "-".into(), "-".into(), "skipped".into(), skipped.to_string()]);
            continue;
        }
        let mut status = text(&repository["status"]);
        if let Some(brake) = repository["reclaimBrake"].as_str() {
            status = format!("{status} (brake: {brake})");
        }
        table.push([
            name,
            text(&repository["imageCount"]),
            human_bytes(repository["storedBytes"].as_f64().unwrap_or(0.0)),
            percent(&repository["storagePercent"]),
            status,
            reclaimable(&repository["reclaimableImages"], &repository["reclaimableBytes"]),
        ]);
    }
    let registry = &report["registry"];
    if registry.is_object() {
        table.push([
            "(registry)".to_string(),
            text(&registry["imageCount"]),
            human_bytes(registry["storageBytes"].as_f64().unwrap_or(0.0)),
            percent(&registry["storagePercent"]),
            text(&registry["status"]),
            reclaimable(&registry["reclaimableImages"], &registry["reclaimableBytes"]),
        ]);
    }
    table
}

/// quota-scan's audit: one row per image in use that a native lifecycle
/// policy expires (or archives) now or within 24 hours.
pub fn audit(report: &Value) -> Table {
    let mut table = Table::new(&["repository", "digest", "tags", "native rule", "due", "used by"]);
    for repository in list(&report["repositories"]) {
        for e in list(&repository["audit"]["expiries"]) {
            let tags: Vec<String> = list(&e["tags"]).iter().map(text).collect();
            let used_by: Vec<String> = list(&e["usedBy"]).iter().map(text).collect();
            table.push([
                text(&repository["repository"]),
                short_digest(e["digest"].as_str().unwrap_or_default()),
                if tags.is_empty() { "<untagged>".into() } else { tags.join(", ") },
                format!("{} {}", text(&e["action"]), text(&e["rulePriority"])),
                text(&e["due"]),
                used_by.join("; "),
            ]);
        }
    }
    table
}

/// What a registry held before a run: repository → digest → tags.
pub type Inventory = BTreeMap<String, BTreeMap<String, Vec<String>>>;

/// prune-images: repository, digest, tags, decision, reason. `before` (read
/// before the run) names the tags of deleted images and adds a row for every
/// image the policy did not expire; an empty inventory shows only what the
/// report names.
pub fn prune(report: &Value, before: &Inventory) -> Table {
    let mut table = Table::new(&["repository", "digest", "tags", "decision", "reason"]);
    let no_images = BTreeMap::new();
    for repository in list(&report["repositories"]) {
        let name = text(&repository["repository"]);
        if let Some(skipped) = repository["skipped"].as_str() {
            table.push([name, "-".into(), "-".into(), "skipped".into(), skipped.to_string()]);
            continue;
        }
        let images = before.get(&name).unwrap_or(&no_images);
        let tags_of = |digest: &str, listed: Option<&Value>| {
            let tags: Vec<String> = match listed {
                Some(tags) => list(tags).iter().map(text).collect(),
                None => images.get(digest).cloned().unwrap_or_default(),
            };
            if tags.is_empty() {
                "<untagged>".to_string()
            } else {
                tags.join(",")
            }
        };
        let dry_run = repository["dryRun"] == true;
        let mut named = BTreeSet::new();
        let rules: Vec<String> =
            repository["expiredByRule"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
        let expired_by = match rules.as_slice() {
            [rule] => format!("expired by rule {rule}"),
            _ => "expired by the policy".to_string(),
        };
        for protected in list(&repository["protected"]) {
            let digest = text(&protected["digest"]);
            named.insert(digest.clone());
            let mut reason = text(&protected["reason"]);
            if let Some(rule) = protected["expiredByRule"].as_u64() {
                reason = format!("{reason} (rule {rule} expired it)");
            }
            let tags = tags_of(&digest, Some(&protected["tags"]));
            table.push([name.clone(), short_digest(&digest), tags, "kept".into(), reason]);
        }
        let outcomes: [(&str, &str, String); 3] = [
            ("deleted", if dry_run { "would delete" } else { "deleted" }, expired_by),
            ("kept", "kept", "ECR refused: referenced by a manifest list".into()),
            ("alreadyGone", "already gone", "deleted by someone else first".into()),
        ];
        for (field, decision, reason) in outcomes {
            for digest in list(&repository[field]) {
                let digest = text(&digest);
                named.insert(digest.clone());
                let tags = tags_of(&digest, None);
                table.push([name.clone(), short_digest(&digest), tags, decision.into(), reason.clone()]);
            }
        }
        for failure in list(&repository["failed"]) {
            let digest = text(&failure["digest"]);
            named.insert(digest.clone());
            let reason = format!("{}: {}", text(&failure["code"]), text(&failure["message"]));
            table.push([name.clone(), short_digest(&digest), tags_of(&digest, None), "failed".into(), reason]);
        }
        if let Some(brake) = repository["brake"].as_str() {
            table.push([name.clone(), "-".into(), "-".into(), "none deleted".into(), brake.to_string()]);
        }
        for digest in images.keys().filter(|d| !named.contains(*d)) {
            let tags = tags_of(digest, None);
            table.push([name.clone(), short_digest(digest), tags, "kept".into(), "not expired by the policy".into()]);
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_align_and_long_cells_are_cut() {
        let mut t = Table::new(&["a", "bb"]);
        t.push(["x", "y"]);
        t.push(["long".to_string(), "z".repeat(100)]);
        let text = t.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "a     bb");
        assert_eq!(lines[2], "x     y");
        assert!(lines[3].ends_with('…') && lines[3].chars().count() == 6 + MAX_CELL);
    }

    #[test]
    fn a_printed_table_reads_back() {
        let mut t = Table::new(&["service", "from → to", "status"]);
        t.push(["microservices/users", "users:latest → users@sha256:0123456789ab", "updated"]);
        t.push(["microservices/posts", "-", "skipped"]);
        assert_eq!(Table::parse(&t.to_string()), Some(t));
    }

    #[test]
    fn short_forms() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(short_digest(&digest), "sha256:abababababab");
        assert_eq!(
            short_image(&format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/team/users@{digest}")),
            "team/users@sha256:abababababab"
        );
        assert_eq!(short_image("123456789012.dkr.ecr.us-east-1.amazonaws.com/users:latest"), "users:latest");
        assert_eq!(short_image("nginx:1"), "nginx:1");
        assert_eq!(human_bytes(3_210_411.0), "3.2 MB");
        assert_eq!(human_bytes(999.0), "999 B");
    }

    #[test]
    fn a_rollout_row_per_changed_container() {
        let report = json!({"services": [
            {"cluster": "c", "service": "users", "status": "updated",
             "changes": [{"container": "app", "from": "r.dkr.ecr.x.amazonaws.com/users:latest",
                          "to": format!("r.dkr.ecr.x.amazonaws.com/users@sha256:{}", "1".repeat(64))}]},
            {"cluster": "c", "service": "posts", "status": "skipped", "reason": "not tracked"}]});
        let t = rollouts(&report);
        assert_eq!(t.rows[0], ["c/users", "app", "users:latest → users@sha256:111111111111", "updated", ""]);
        assert_eq!(t.rows[1], ["c/posts", "-", "-", "skipped", "not tracked"]);
    }

    #[test]
    fn prune_rows_say_why() {
        let (a, b, c) = (
            format!("sha256:{}", "a".repeat(64)),
            format!("sha256:{}", "b".repeat(64)),
            format!("sha256:{}", "c".repeat(64)),
        );
        let report = json!({"repositories": [{"repository": "users", "dryRun": false, "expiredByRule": {"1": 2},
            "protected": [{"digest": a, "tags": ["latest"], "reason": "in use by service m/users (pinned by digest)"}],
            "deleted": [b], "kept": [], "alreadyGone": [], "failed": []}]});
        let images =
            BTreeMap::from([(a.clone(), vec!["latest".to_string()]), (b.clone(), vec![]), (c, vec!["v0".into()])]);
        let t = prune(&report, &Inventory::from([("users".to_string(), images)]));
        assert_eq!(
            t.rows[0],
            ["users", "sha256:aaaaaaaaaaaa", "latest", "kept", "in use by service m/users (pinned by digest)"]
        );
        assert_eq!(t.rows[1], ["users", "sha256:bbbbbbbbbbbb", "<untagged>", "deleted", "expired by rule 1"]);
        assert_eq!(t.rows[2], ["users", "sha256:cccccccccccc", "v0", "kept", "not expired by the policy"]);
    }
}
