//! Reports that stay inside their limits at any registry size.
//!
//! A report used to be one JSON log line plus the invocation's response. At
//! scale that line passes CloudWatch Logs' event limit (256 KB: the rest is
//! cut) and the response passes Lambda's 6 MB limit (the invocation fails,
//! and is retried). So prune-images and quota-scan answer, and end their log,
//! with a summary of fixed size, and write the detail as one log line per
//! repository, each cut to [`DETAIL_LINE_MAX_BYTES`]: long lists keep their
//! first items and say how many they lost in `truncated`, long strings keep
//! their first [`STRING_MAX_CHARS`] characters.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Map, Value};

/// CloudWatch Logs' limit on one log event.
pub const LOG_EVENT_MAX_BYTES: usize = 256 * 1024;
/// Lambda's limit on a synchronous invocation's response.
pub const RESPONSE_MAX_BYTES: usize = 6 * 1024 * 1024;
/// The most a per-repository detail line carries: a quarter of the log
/// event limit, leaving room for the log record around it and for the
/// escaping of the JSON it is embedded in.
pub const DETAIL_LINE_MAX_BYTES: usize = 64 * 1024;
/// A longer string (a reason naming many users) keeps this many characters.
pub const STRING_MAX_CHARS: usize = 1024;
/// The most items a summary lists (failed repositories, the largest ones).
pub const SUMMARY_LIST_MAX: usize = 20;

/// `value` as one JSON line of at most `max_bytes`: the arrays among its
/// top-level fields are cut to the longest common length that fits, with
/// `truncated` counting what each lost; every string is cut to
/// [`STRING_MAX_CHARS`]. A value whose scalars alone exceed `max_bytes`
/// (not one of ours) comes back with every array emptied.
pub fn bounded_line(value: &impl Serialize, max_bytes: usize) -> String {
    let mut full = serde_json::to_value(value).unwrap_or(Value::Null);
    cut_strings(&mut full);
    let longest = match &full {
        Value::Object(fields) => fields.values().filter_map(Value::as_array).map(Vec::len).max().unwrap_or(0),
        _ => 0,
    };
    let mut cap = longest;
    loop {
        let text = with_cap(&full, cap).to_string();
        if text.len() <= max_bytes || cap == 0 {
            return text;
        }
        cap /= 2;
    }
}

/// The first `cap` items of each top-level array, and what was left out.
fn with_cap(full: &Value, cap: usize) -> Value {
    let Value::Object(fields) = full else { return full.clone() };
    let mut truncated: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Map::new();
    for (key, value) in fields {
        match value {
            Value::Array(items) if items.len() > cap => {
                truncated.insert(key.clone(), items.len() - cap);
                out.insert(key.clone(), Value::Array(items[..cap].to_vec()));
            }
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    if !truncated.is_empty() {
        out.insert("truncated".into(), json!(truncated));
    }
    Value::Object(out)
}

fn cut_strings(value: &mut Value) {
    match value {
        Value::String(s) if s.chars().count() > STRING_MAX_CHARS => {
            let omitted = s.chars().count() - STRING_MAX_CHARS;
            *s = format!("{}… ({omitted} more characters)", s.chars().take(STRING_MAX_CHARS).collect::<String>());
        }
        Value::Array(items) => items.iter_mut().for_each(cut_strings),
        Value::Object(fields) => fields.values_mut().for_each(cut_strings),
        _ => {}
    }
}

/// At most [`SUMMARY_LIST_MAX`] items, and how many more there were.
pub fn first_few<T>(items: impl IntoIterator<Item = T>) -> (Vec<T>, usize) {
    let mut kept = Vec::new();
    let mut more = 0;
    for item in items {
        if kept.len() < SUMMARY_LIST_MAX {
            kept.push(item);
        } else {
            more += 1;
        }
    }
    (kept, more)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_value_is_left_whole() {
        let v = json!({"repository": "users", "deleted": ["a", "b"], "protected": []});
        let line = bounded_line(&v, DETAIL_LINE_MAX_BYTES);
        assert_eq!(serde_json::from_str::<Value>(&line).expect("json"), v);
    }

    #[test]
    fn long_lists_are_cut_with_a_count_and_long_strings_shortened() {
        let deleted: Vec<String> = (0..50_000).map(|i| format!("sha256:{i:064x}")).collect();
        let v = json!({"repository": "users", "deleted": deleted, "kept": ["x"], "reason": "r".repeat(5000)});
        let line = bounded_line(&v, DETAIL_LINE_MAX_BYTES);
        assert!(line.len() <= DETAIL_LINE_MAX_BYTES, "{}", line.len());
        let back: Value = serde_json::from_str(&line).expect("json");
        let kept = back["deleted"].as_array().map_or(0, Vec::len);
        assert!(kept > 100, "keeps as much as fits: {kept}");
        assert_eq!(back["truncated"]["deleted"], 50_000 - kept);
        assert_eq!(back["kept"], json!(["x"]), "short lists are whole");
        assert!(back["truncated"].get("kept").is_none());
        assert!(back["reason"].as_str().unwrap_or_default().ends_with("… (3976 more characters)"));
        assert_eq!(back["repository"], "users");
    }

    #[test]
    fn first_few_counts_the_rest() {
        let (kept, more) = first_few(0..100);
        assert_eq!((kept.len(), more), (SUMMARY_LIST_MAX, 100 - SUMMARY_LIST_MAX));
        assert_eq!(first_few(0..3), (vec![0, 1, 2], 0));
    }
}
