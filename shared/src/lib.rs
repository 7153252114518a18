//! ecr-autopilot's library: what the four functions share.
//!
//! The shape is a functional core with an imperative shell. Planners
//! ([`log_groups`], [`deploy`]) are pure functions over our own types ([`model`]); ports
//! ([`ports`]) are small traits with our own types in and out; adapters
//! ([`aws`]) implement the ports on the AWS SDK and never leak its types.
//! Configuration ([`config`]), errors ([`error`]) and telemetry ([`telemetry`])
//! are shared so every function starts, fails and reports the same way.

pub mod audit;
pub mod aws;
pub mod config;
pub mod deadline;
pub mod deploy;
pub mod discover;
pub mod ensure;
pub mod error;
pub mod fanout;
pub mod image_ref;
pub mod in_use;
pub mod invocation;
pub mod lifecycle;
pub mod log_groups;
pub mod media;
pub mod model;
pub mod origin;
pub mod payload;
pub mod ports;
pub mod prune;
pub mod quota;
pub mod report;
pub mod snapshot;
pub mod telemetry;
pub mod track;

#[cfg(any(test, feature = "test-support"))]
pub mod fakes;

pub use error::{AwsError, Error};
