//! Our own types for the things the functions reason about. Adapters convert
//! AWS SDK shapes into these; planners see nothing else.

use std::collections::BTreeMap;

pub type Tags = BTreeMap<String, String>;

/// One revision of an ECS task definition, as far as the planners need it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskDefinition {
    pub arn: String,
    pub family: String,
    pub revision: i32,
    pub containers: Vec<Container>,
    /// `runtimePlatform.cpuArchitecture` (`ARM64`, `X86_64`), when set.
    pub cpu_architecture: Option<String>,
    /// `runtimePlatform.operatingSystemFamily` (`LINUX`, `WINDOWS_SERVER_2022_CORE`, …), when set.
    pub os_family: Option<String>,
    pub tags: Tags,
}

impl TaskDefinition {
    /// The platform its `runtimePlatform` declares, in OCI words, or `None`
    /// when it declares neither architecture nor operating system.
    pub fn declared_platform(&self) -> Option<Platform> {
        let os = self.os_family.as_deref().map(oci_os);
        let architecture = self.cpu_architecture.as_deref().map(oci_architecture);
        match (os, architecture) {
            (None, None) => None,
            // ECS runs Windows tasks on x86_64 only; Linux defaults to X86_64.
            (os, architecture) => Some(Platform {
                os: os.unwrap_or("linux").to_string(),
                architecture: architecture.unwrap_or("amd64").to_string(),
            }),
        }
    }
}

/// ECS's `ARM64` / `X86_64` (or an instance's `arm64` / `x86_64` attribute) in OCI words.
pub fn oci_architecture(ecs: &str) -> &'static str {
    match ecs.trim().to_ascii_lowercase().as_str() {
        "arm64" | "aarch64" => "arm64",
        "x86_64" | "amd64" => "amd64",
        _ => "unknown",
    }
}

/// ECS's `LINUX` / `WINDOWS_SERVER_*` (or an instance's `ecs.os-type`) in OCI words.
pub fn oci_os(ecs: &str) -> &'static str {
    let ecs = ecs.trim().to_ascii_lowercase();
    if ecs.starts_with("windows") {
        "windows"
    } else if ecs == "linux" {
        "linux"
    } else {
        "unknown"
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
#[derive(Clone, Debug, Default, PartialEq, Eq)]
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
    /// `deploymentController.type`: `ECS` (also when unset), `CODE_DEPLOY`, `EXTERNAL`.
    pub deployment_controller: Option<String>,
    /// `launchType` (`FARGATE`, `EC2`, `EXTERNAL`), when the service names one.
    pub launch_type: Option<String>,
    /// The capacity providers of its strategy, when it has one.
    pub capacity_providers: Vec<String>,
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

    /// Runs on Fargate: its launch type, or every provider of its strategy.
    pub fn on_fargate(&self) -> bool {
        match self.launch_type.as_deref() {
            Some(t) => t.eq_ignore_ascii_case("FARGATE"),
            None => {
                !self.capacity_providers.is_empty()
                    && self
                        .capacity_providers
                        .iter()
                        .all(|p| p.eq_ignore_ascii_case("FARGATE") || p.eq_ignore_ascii_case("FARGATE_SPOT"))
            }
        }
    }
}

/// One service deployment (ListServiceDeployments) with the revision it
/// deploys (DescribeServiceRevisions).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceDeployment {
    pub arn: String,
    /// `PENDING`, `IN_PROGRESS`, `SUCCESSFUL`, `STOPPED`, `ROLLBACK_SUCCESSFUL`, …
    pub status: String,
    pub status_reason: Option<String>,
    /// Seconds since the epoch.
    pub created_at: i64,
    pub revision: Option<ServiceRevision>,
}

/// A service revision: the task definition and, per container, the digest
/// ECS resolved its image to when the deployment started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceRevision {
    pub arn: String,
    pub task_definition: String,
    /// `(container, image as written, digest ECS pinned)`.
    pub containers: Vec<(String, String, Option<String>)>,
}

/// What an image manifest is, as deploy-on-push needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Manifest {
    /// An image index: the platforms it offers (attestations left out).
    Index { platforms: Vec<Platform> },
    /// A single manifest: its config descriptor, and the OCI `artifactType` if set.
    Single { config_media_type: String, config_digest: String, config_size: Option<u64>, artifact_type: Option<String> },
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
