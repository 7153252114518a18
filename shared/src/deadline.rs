//! The invocation's deadline, and when to stop starting work.
//!
//! Lambda gives every invocation a deadline (`Lambda-Runtime-Deadline-Ms`,
//! milliseconds since the Unix epoch; lambda_runtime's `Context::deadline`).
//! A function that is still working then is killed mid-call. So every
//! function checks, before it starts a unit of work (a repository, a
//! service, a log group), whether less than the margin is left
//! (`DEADLINE_MARGIN_SECS`). If so it starts nothing more, reports what it
//! deferred, and what it had started it finishes: the margin is there so
//! that the unit in flight completes, and no repository is left half done.
//!
//! A value that is not a wall-clock time (before 2001-09-09, 10¹² ms) is
//! treated as no deadline: cargo-lambda's local runtime sends a fixed
//! `600000` there, and a function that read it literally would stop before
//! it began. Real Lambda always sends the wall-clock deadline.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `DEADLINE_MARGIN_SECS` when unset, for prune-images and quota-scan
/// (their timeout is 300 s; one repository can take tens of seconds).
pub const DEFAULT_MARGIN_SECS: u64 = 60;
/// `DEADLINE_MARGIN_SECS` when unset, for deploy-on-push and log-groups
/// (their timeout is 60 s; a service's rollout or a log group takes seconds).
pub const SHORT_MARGIN_SECS: u64 = 10;

/// Below this many milliseconds since the epoch a deadline is not a
/// wall-clock time (see the module documentation).
const WALL_CLOCK_FLOOR_MS: u64 = 1_000_000_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline {
    at: Option<SystemTime>,
    margin: Duration,
}

impl Deadline {
    /// No deadline: work is never deferred (tests, manual tools).
    pub fn none() -> Deadline {
        Deadline { at: None, margin: Duration::ZERO }
    }

    /// From the Runtime API's deadline in epoch milliseconds.
    pub fn from_epoch_ms(deadline_ms: u64, margin: Duration) -> Deadline {
        let at = (deadline_ms >= WALL_CLOCK_FLOOR_MS).then(|| UNIX_EPOCH + Duration::from_millis(deadline_ms));
        Deadline { at, margin }
    }

    /// A deadline `left` from now (tests).
    pub fn in_(left: Duration, margin: Duration) -> Deadline {
        Deadline { at: Some(SystemTime::now() + left), margin }
    }

    /// Time left before Lambda stops the invocation; `None` without a deadline.
    pub fn time_left(&self) -> Option<Duration> {
        self.at.map(|at| at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
    }

    /// True once less than the margin is left: start nothing new.
    pub fn expiring(&self) -> bool {
        self.time_left().is_some_and(|left| left < self.margin)
    }

    /// Whole milliseconds left, for reports; `None` without a deadline.
    pub fn millis_left(&self) -> Option<u64> {
        self.time_left().map(|d| d.as_millis().min(u128::from(u64::MAX)) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_far_enough_away_lets_work_start() {
        let d = Deadline::in_(Duration::from_secs(600), Duration::from_secs(60));
        assert!(!d.expiring());
        assert!(d.millis_left().expect("a deadline") > 500_000);
    }

    #[test]
    fn inside_the_margin_nothing_new_starts() {
        assert!(Deadline::in_(Duration::from_secs(30), Duration::from_secs(60)).expiring());
        assert!(Deadline::in_(Duration::ZERO, Duration::from_secs(1)).expiring());
    }

    #[test]
    fn a_past_wall_clock_deadline_is_expiring() {
        let past = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_millis() as u64 - 5_000;
        let d = Deadline::from_epoch_ms(past, Duration::from_secs(1));
        assert_eq!(d.millis_left(), Some(0));
        assert!(d.expiring());
    }

    #[test]
    fn a_value_that_is_not_a_wall_clock_time_is_no_deadline() {
        // cargo-lambda's local runtime: a fixed 600000.
        let d = Deadline::from_epoch_ms(600_000, Duration::from_secs(60));
        assert_eq!(d.time_left(), None);
        assert!(!d.expiring());
        assert!(!Deadline::none().expiring());
    }
}
