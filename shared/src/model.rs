//! Our own types for the things the functions reason about. Adapters convert
//! AWS SDK shapes into these; planners see nothing else.

use std::collections::BTreeMap;

pub type Tags = BTreeMap<String, String>;

/// One revision of an ECS task definition, as far as the planners need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskDefinition {
    pub arn: String,
    pub family: String,
    pub revision: i32,
    pub containers: Vec<Container>,
    /// `runtimePlatform.cpuArchitecture` (`ARM64`, `X86_64`); unset means X86_64.
    pub cpu_architecture: Option<String>,
    pub tags: Tags,
}

impl TaskDefinition {
    /// The OCI architecture its tasks run on: `arm64` or `amd64`.
    pub fn oci_architecture(&self) -> &'static str {
        match self.cpu_architecture.as_deref() {
            Some(a) if a.eq_ignore_ascii_case("ARM64") => "arm64",
            _ => "amd64",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    pub name: String,
    pub image: String,
    pub log: Option<LogConfiguration>,
}

/// A container's `logConfiguration`: the driver and its options verbatim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfiguration {
    pub driver: String,
    pub options: BTreeMap<String, String>,
}

/// An ECS service with its tags and the task definition it runs now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub arn: String,
    pub name: String,
    pub cluster_arn: String,
    /// The service's current task definition (an ARN, or `family:revision`).
    pub task_definition: String,
    pub tags: Tags,
    /// The deployment circuit breaker is on and rolls back a failed deployment.
    pub circuit_breaker_rollback: bool,
    /// Task definitions of the PRIMARY and ACTIVE deployments: what its tasks
    /// may be running now, which can differ from `task_definition` mid-rollout.
    pub deployments: Vec<String>,
}

/// A running task: its task definition and the digests its containers run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningTask {
    pub arn: String,
    pub task_definition: String,
    pub digests: Vec<String>,
}

impl Service {
    pub fn cluster_name(&self) -> &str {
        cluster_name(&self.cluster_arn)
    }
}

/// `arn:aws:ecs:us-east-1:123456789012:cluster/prod` → `prod`; a bare name is
/// returned as it is.
pub fn cluster_name(cluster: &str) -> &str {
    match cluster.rsplit_once(":cluster/") {
        Some((_, name)) => name,
        None => cluster,
    }
}

/// An image in an ECR repository, as DescribeImages reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub digest: String,
    pub tags: Vec<String>,
    /// Push time, seconds since the epoch.
    pub pushed_at: i64,
    pub size_bytes: Option<i64>,
    pub manifest_media_type: Option<String>,
    /// The account whose registry holds it.
    pub registry_id: Option<String>,
}

/// A platform an image index offers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
}

/// A CloudWatch Logs log group as it exists now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogGroup {
    pub name: String,
    /// The ARN without the trailing `:*`, as TagResource takes it.
    pub arn: Option<String>,
    /// `None` means "never expire": nobody has set a retention.
    pub retention_days: Option<i32>,
    pub kms_key_id: Option<String>,
    pub tags: Tags,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_name_from_arn_or_name() {
        assert_eq!(cluster_name("arn:aws:ecs:us-east-1:123456789012:cluster/prod"), "prod");
        assert_eq!(cluster_name("prod"), "prod");
    }
}
