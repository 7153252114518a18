//! The quota-scan arithmetic: honest per-repository figures and statuses
//! against quotas. Pure.
//!
//! `imageSizeInBytes` misleads twice: it counts a layer shared by two images
//! twice, and an image index's row repeats the size of a child that is listed
//! as a row of its own. Stored bytes here skip index rows; deduplicated bytes
//! (optional) count each layer digest once.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::prune::RepoImage;

/// 500 MB, the private-repository free tier, read as decimal megabytes: the
/// smaller of the two readings, so warnings come early.
pub const FREE_TIER_BYTES: u64 = 500_000_000;
/// ECR's default "images per repository" quota (adjustable on request).
pub const DEFAULT_IMAGES_PER_REPOSITORY: u64 = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Over,
}

impl Status {
    /// `over` at or above 100 %, `warn` at or above `warn_percent`.
    pub fn of(utilization_percent: f64, warn_percent: u32) -> Status {
        if utilization_percent >= 100.0 {
            Status::Over
        } else if utilization_percent >= f64::from(warn_percent) {
            Status::Warn
        } else {
            Status::Ok
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quotas {
    pub storage_bytes: u64,
    pub images_per_repository: u64,
    pub warn_percent: u32,
}

/// Image count (every row not archived: tagged, untagged, indexes,
/// artifacts), stored bytes (index and archived rows skipped) and how many
/// rows are indexes. Archived rows are counted by [`archived`].
pub fn measure(images: &[RepoImage]) -> (usize, u64, usize) {
    let active: Vec<&RepoImage> = images.iter().filter(|i| !i.is_archived()).collect();
    let indexes = active.iter().filter(|i| i.is_index()).count();
    let bytes = active.iter().filter(|i| !i.is_index()).map(|i| i.size_bytes.unwrap_or(0).max(0) as u64).sum();
    (active.len(), bytes, indexes)
}

/// Archived rows: ECR's archive storage class, billed apart from standard
/// storage, so neither in the image count nor in the storage figure above.
pub fn archived(images: &[RepoImage]) -> usize {
    images.iter().filter(|i| i.is_archived()).count()
}

/// Bytes when every distinct layer (by digest) is counted once.
pub fn deduplicated<'a>(layers: impl IntoIterator<Item = (&'a str, u64)>) -> u64 {
    let distinct: BTreeMap<&str, u64> = layers.into_iter().collect();
    distinct.values().sum()
}

pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    (part as f64 * 100.0 / whole as f64 * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(n: u32, size: Option<i64>, index: bool) -> RepoImage {
        RepoImage {
            digest: format!("sha256:{n:064x}"),
            tags: vec![],
            pushed_at: 0,
            last_pulled_at: None,
            size_bytes: size,
            media_type: Some(
                if index {
                    "application/vnd.docker.distribution.manifest.list.v2+json"
                } else {
                    "application/vnd.docker.distribution.manifest.v2+json"
                }
                .into(),
            ),
            ..RepoImage::default()
        }
    }

    #[test]
    fn index_rows_are_counted_as_images_but_not_as_bytes() {
        // As real ECR lists a multi-arch image: the index row repeats its largest child's size.
        let images =
            [row(1, Some(300), true), row(2, Some(300), false), row(3, Some(280), false), row(4, Some(50), false)];
        assert_eq!(measure(&images), (4, 630, 1));
    }

    #[test]
    fn archived_rows_are_counted_apart_and_their_bytes_not_at_all() {
        let archived =
            |n| RepoImage { storage_class: crate::lifecycle::StorageClass::Archive, ..row(n, Some(1_000), false) };
        let images = [row(1, Some(300), false), archived(2), archived(3)];
        assert_eq!(measure(&images), (1, 300, 0));
        assert_eq!(super::archived(&images), 2);
    }

    #[test]
    fn shared_layers_count_once() {
        let layers = [
            ("sha256:base", 30_000_000),
            ("sha256:app-1", 2_000_000),
            ("sha256:base", 30_000_000),
            ("sha256:app-2", 2_100_000),
        ];
        assert_eq!(deduplicated(layers), 34_100_000);
    }

    #[test]
    fn statuses_at_the_thresholds() {
        assert_eq!(Status::of(79.99, 80), Status::Ok);
        assert_eq!(Status::of(80.0, 80), Status::Warn);
        assert_eq!(Status::of(99.99, 80), Status::Warn);
        assert_eq!(Status::of(100.0, 80), Status::Over);
        assert_eq!(percent(400_000_000, FREE_TIER_BYTES), 80.0);
        assert_eq!(percent(1, 0), 0.0);
    }
}
