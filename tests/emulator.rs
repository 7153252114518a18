//! The local AWS's additions to moto (`tests/emulator/autopilot_moto.py`),
//! exercised through the AWS SDK for Rust clients the functions use, so the
//! responses are known to parse the way the functions will read them.
//! The Lambda, EventBridge and Scheduler parts run as a boto3 unit test
//! (`tests/emulator/test_autopilot_moto.py`) against the same server, to spare
//! the workspace an SDK crate per service.

use std::time::Duration;

use autopilot_e2e::world::{image, Pushed, World};
use autopilot_e2e::{moto, serial, tools_bin, workspace_root, REGION};
use aws_sdk_ecr::types::{ImageIdentifier, ImageStatus, ImageStatusFilter, SubjectIdentifier, TargetStorageClass};
use aws_sdk_ecs::primitives::DateTime;
use aws_sdk_ecs::types::{CreatedAt, DeploymentControllerType, ServiceDeploymentStatus, SortOrder};
use sha2::Digest as _;

const CLUSTER: &str = "shop";

async fn fresh() -> World {
    moto().reset();
    let world = World::new().await;
    world.cluster(CLUSTER).await;
    world
}

/// Every service deployment of `service`, newest first, read page by page.
async fn deployments(world: &World, service: &str) -> Vec<aws_sdk_ecs::types::ServiceDeploymentBrief> {
    let mut all = Vec::new();
    let mut token = None;
    loop {
        let page = world
            .ecs
            .list_service_deployments()
            .cluster(CLUSTER)
            .service(service)
            .max_results(1)
            .set_next_token(token)
            .send()
            .await
            .expect("list_service_deployments");
        all.extend(page.service_deployments().iter().cloned());
        token = page.next_token().map(String::from);
        if token.is_none() {
            return all;
        }
    }
}

async fn digests_of_revision(world: &World, revision_arn: &str) -> Vec<(String, Option<String>)> {
    let out = world
        .ecs
        .describe_service_revisions()
        .service_revision_arns(revision_arn)
        .send()
        .await
        .expect("describe_service_revisions");
    assert!(out.failures().is_empty(), "{:?}", out.failures());
    out.service_revisions()[0]
        .container_images()
        .iter()
        .map(|c| (c.container_name().unwrap_or_default().to_string(), c.image_digest().map(String::from)))
        .collect()
}

#[tokio::test]
async fn a_service_revision_pins_the_digest_its_tag_named_at_each_deployment() {
    let _lock = serial().await;
    let world = fresh().await;
    world.repository("users").await;
    // A second tag keeps the first image alive when `latest` moves (moto deletes it otherwise).
    let first = world.push_image("users", &["latest", "v1"], "arm64", "one").await;
    let td = world.task_definition_of("users", "users", &[("users", ""), ("envoy", "")]).await;
    world.service(CLUSTER, "users", &td).await;

    // `latest` moves on, and a forced deployment picks it up.
    let second = world.push_image("users", &["latest"], "arm64", "two").await;
    assert_ne!(first.digest, second.digest);
    world
        .ecs
        .update_service()
        .cluster(CLUSTER)
        .service("users")
        .force_new_deployment(true)
        .send()
        .await
        .expect("update");

    let found = deployments(&world, "users").await;
    assert_eq!(found.len(), 2, "paged one by one: {found:?}");
    assert!(found.iter().all(|d| d.status() == Some(&ServiceDeploymentStatus::Successful)));
    let (newest, oldest) = (&found[0], &found[1]);
    assert!(newest.created_at() >= oldest.created_at(), "newest first");
    assert!(newest.service_arn().is_some_and(|a| a.ends_with(&format!("service/{CLUSTER}/users"))));

    let described = world
        .ecs
        .describe_service_deployments()
        .service_deployment_arns(newest.service_deployment_arn().expect("arn"))
        .service_deployment_arns(oldest.service_deployment_arn().expect("arn"))
        .service_deployment_arns(format!(
            "arn:aws:ecs:{REGION}:123456789012:service-deployment/{CLUSTER}/users/missing"
        ))
        .send()
        .await
        .expect("describe_service_deployments");
    assert_eq!(described.failures().len(), 1);
    assert_eq!(described.failures()[0].reason(), Some("MISSING"));
    let [newest_full, oldest_full] = described.service_deployments() else { panic!("two deployments") };
    let old_target = oldest_full.target_service_revision().and_then(|r| r.arn()).expect("old target");
    let new_target = newest_full.target_service_revision().and_then(|r| r.arn()).expect("new target");
    assert!(oldest_full.source_service_revisions().is_empty(), "created from nothing");
    assert_eq!(newest_full.source_service_revisions().iter().filter_map(|r| r.arn()).collect::<Vec<_>>(), [old_target]);
    assert_eq!(Some(new_target), newest.target_service_revision_arn());
    assert!(newest_full.finished_at().is_some());

    let envoy = ("envoy".to_string(), None); // not an ECR image: no digest
    assert_eq!(
        digests_of_revision(&world, old_target).await,
        [("users".into(), Some(first.digest.clone())), envoy.clone()]
    );
    assert_eq!(digests_of_revision(&world, new_target).await, [("users".into(), Some(second.digest.clone())), envoy]);

    // Filters: status and creation time.
    let in_progress = world
        .ecs
        .list_service_deployments()
        .cluster(CLUSTER)
        .service("users")
        .status(ServiceDeploymentStatus::InProgress)
        .send()
        .await
        .expect("list");
    assert!(in_progress.service_deployments().is_empty());
    let later = DateTime::from_secs(newest.created_at().expect("created").secs() + 3600);
    let after_later = world
        .ecs
        .list_service_deployments()
        .cluster(CLUSTER)
        .service("users")
        .created_at(CreatedAt::builder().after(later).build())
        .send()
        .await
        .expect("list");
    assert!(after_later.service_deployments().is_empty());
    let before_later = world
        .ecs
        .list_service_deployments()
        .cluster(CLUSTER)
        .service("users")
        .created_at(CreatedAt::builder().before(later).build())
        .send()
        .await
        .expect("list");
    assert_eq!(before_later.service_deployments().len(), 2);

    // A digest-pinned image keeps its digest, whatever the tags say.
    let pinned = world
        .task_definition_running(
            "pinned",
            &format!("{}@{}", image("users", "v1").trim_end_matches(":v1"), first.digest),
        )
        .await;
    world.service(CLUSTER, "pinned", &pinned).await;
    let target = deployments(&world, "pinned").await[0].target_service_revision_arn().expect("target").to_string();
    assert_eq!(digests_of_revision(&world, &target).await, [("pinned".into(), Some(first.digest))]);
}

#[tokio::test]
async fn a_test_ends_a_rollout_and_ecs_rolls_the_service_back() {
    let _lock = serial().await;
    let world = fresh().await;
    world.repository("users").await;
    world.push_image("users", &["latest"], "arm64", "one").await;
    let v1 = world.task_definition_of("users", "users", &[("users", "")]).await;
    world.service(CLUSTER, "users", &v1).await;

    moto().set_new_deployment_status("IN_PROGRESS");
    let v2 = world.task_definition_of("users", "users", &[("users", "")]).await;
    world.ecs.update_service().cluster(CLUSTER).service("users").task_definition(&v2).send().await.expect("update");
    assert_eq!(world.service_task_definition(CLUSTER, "users").await, v2, "stored as the ARN");
    let found = deployments(&world, "users").await;
    assert_eq!(found[0].status(), Some(&ServiceDeploymentStatus::InProgress));
    assert!(found[0].finished_at().is_none());

    // A third revision while the second still rolls: the second is stopped.
    let v3 = world.task_definition_of("users", "users", &[("users", "")]).await;
    world.ecs.update_service().cluster(CLUSTER).service("users").task_definition(&v3).send().await.expect("update");
    let found = deployments(&world, "users").await;
    let statuses: Vec<_> = found.iter().map(|d| d.status().cloned().expect("status")).collect();
    assert_eq!(
        statuses,
        [ServiceDeploymentStatus::InProgress, ServiceDeploymentStatus::Stopped, ServiceDeploymentStatus::Successful]
    );
    let v1_revision = found[2].target_service_revision_arn().expect("v1 revision").to_string();

    // The circuit breaker rolls the third back.
    let arn = found[0].service_deployment_arn().expect("arn").to_string();
    let shown = moto().set_deployment_status(&arn, "ROLLBACK_SUCCESSFUL", Some("tasks failed to start"));
    assert_eq!(shown["status"], "ROLLBACK_SUCCESSFUL");
    let described =
        world.ecs.describe_service_deployments().service_deployment_arns(&arn).send().await.expect("describe");
    let deployment = &described.service_deployments()[0];
    assert_eq!(deployment.status(), Some(&ServiceDeploymentStatus::RollbackSuccessful));
    let rollback = deployment.rollback().expect("rollback");
    assert_eq!(rollback.reason(), Some("tasks failed to start"));
    // Sources are what ran before: v1 (completed) and v2 (stopped mid-rollout);
    // ECS rolls back to the last revision that completed, v1.
    let sources: Vec<_> = deployment.source_service_revisions().iter().filter_map(|r| r.arn()).collect();
    assert_eq!(sources.len(), 2, "{sources:?}");
    assert!(sources.contains(&v1_revision.as_str()), "{sources:?}");
    let back_to = rollback.service_revision_arn().expect("rollback revision");
    assert_eq!(back_to, v1_revision);
    let back_td = world
        .ecs
        .describe_service_revisions()
        .service_revision_arns(back_to)
        .send()
        .await
        .expect("describe")
        .service_revisions()[0]
        .task_definition()
        .expect("td")
        .to_string();
    assert_eq!(back_td, v1);
    assert_eq!(world.service_task_definition(CLUSTER, "users").await, v1, "the service runs the rollback target");

    // The newest deployment by service name, through the other helper.
    let shown = moto().set_latest_deployment_status(REGION, CLUSTER, "users", "ROLLBACK_FAILED");
    assert_eq!(shown["serviceDeploymentArn"], arn.as_str());

    // Reset restores the default starting status.
    moto().reset();
    let world = fresh().await;
    world.repository("users").await;
    let td = world.task_definition_of("users", "users", &[("users", "")]).await;
    world.service(CLUSTER, "users", &td).await;
    assert_eq!(deployments(&world, "users").await[0].status(), Some(&ServiceDeploymentStatus::Successful));
}

#[tokio::test]
async fn code_deploy_and_external_services_refuse_a_new_task_definition() {
    let _lock = serial().await;
    let world = fresh().await;
    let td = world.task_definition_running("bluegreen", "nginx:1.27").await;
    world.service_with_controller(CLUSTER, "bluegreen", Some(&td), DeploymentControllerType::CodeDeploy).await;
    let err = world
        .ecs
        .update_service()
        .cluster(CLUSTER)
        .service("bluegreen")
        .task_definition(&td)
        .send()
        .await
        .expect_err("ECS refuses");
    let err = err.into_service_error();
    assert!(err.is_invalid_parameter_exception(), "{err:?}");
    assert!(err.meta().message().is_some_and(|m| m.contains("CODE_DEPLOY")), "{err:?}");
    // Updates that ECS allows still work, and make no service deployment.
    world.ecs.update_service().cluster(CLUSTER).service("bluegreen").desired_count(2).send().await.expect("scale");
    assert!(deployments(&world, "bluegreen").await.is_empty());

    world.service_with_controller(CLUSTER, "external", None, DeploymentControllerType::External).await;
    let set = world
        .ecs
        .create_task_set()
        .cluster(CLUSTER)
        .service("external")
        .task_definition(&td)
        .external_id("blue")
        .send()
        .await
        .expect("create_task_set");
    let sets = world.ecs.describe_task_sets().cluster(CLUSTER).service("external").send().await.expect("describe");
    assert_eq!(sets.task_sets().len(), 1);
    assert_eq!(sets.task_sets()[0].task_definition(), Some(td.as_str()));
    assert_eq!(sets.task_sets()[0].task_set_arn(), set.task_set().and_then(|s| s.task_set_arn()));
    let err = world
        .ecs
        .update_service()
        .cluster(CLUSTER)
        .service("external")
        .task_definition(&td)
        .send()
        .await
        .expect_err("ECS refuses")
        .into_service_error();
    assert!(err.is_invalid_parameter_exception(), "{err:?}");
}

#[tokio::test]
async fn list_task_definitions_sorts_both_ways() {
    let _lock = serial().await;
    let world = fresh().await;
    for family in ["beta", "alpha", "beta", "alpha", "alpha"] {
        world.task_definition_running(family, "nginx:1.27").await;
    }
    let list = |sort: SortOrder, family: Option<&str>| {
        let request = world.ecs.list_task_definitions().sort(sort).set_family_prefix(family.map(String::from));
        async move {
            let out = request.send().await.expect("list_task_definitions");
            out.task_definition_arns()
                .iter()
                .map(|a| a.rsplit('/').next().unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(SortOrder::Asc, None).await, ["alpha:1", "alpha:2", "alpha:3", "beta:1", "beta:2"]);
    assert_eq!(list(SortOrder::Desc, None).await, ["beta:2", "beta:1", "alpha:3", "alpha:2", "alpha:1"]);
    assert_eq!(list(SortOrder::Desc, Some("alpha")).await, ["alpha:3", "alpha:2", "alpha:1"]);
    let page = world.ecs.list_task_definitions().sort(SortOrder::Desc).max_results(2).send().await.expect("page");
    assert_eq!(page.task_definition_arns().len(), 2);
    assert!(page.next_token().is_some());
}

#[tokio::test]
async fn a_layer_download_url_serves_the_blob_the_test_registered() {
    let _lock = serial().await;
    let world = fresh().await;
    world.repository("users").await;
    let pushed = world.push_image_with_config("users", &["latest"], "amd64", "linux", "cfg").await;

    // The function's path: the manifest, its config digest, the download URL, one GET.
    let got = world
        .ecr
        .batch_get_image()
        .repository_name("users")
        .image_ids(ImageIdentifier::builder().image_digest(&pushed.digest).build())
        .send()
        .await
        .expect("batch_get_image");
    let manifest: serde_json::Value =
        serde_json::from_str(got.images()[0].image_manifest().expect("manifest")).expect("json");
    let config_digest = manifest["config"]["digest"].as_str().expect("config digest");
    let url = world
        .ecr
        .get_download_url_for_layer()
        .repository_name("users")
        .layer_digest(config_digest)
        .send()
        .await
        .expect("get_download_url_for_layer");
    assert_eq!(url.layer_digest(), Some(config_digest));
    let body =
        ureq::get(url.download_url().expect("url")).call().expect("GET blob").body_mut().read_to_vec().expect("bytes");
    assert_eq!(body.len() as u64, manifest["config"]["size"].as_u64().expect("size"));
    let config: serde_json::Value = serde_json::from_slice(&body).expect("config json");
    assert_eq!((config["architecture"].as_str(), config["os"].as_str()), (Some("amd64"), Some("linux")));

    // An unknown digest.
    let err = world
        .ecr
        .get_download_url_for_layer()
        .repository_name("users")
        .layer_digest(format!("sha256:{}", "0".repeat(64)))
        .send()
        .await
        .expect_err("unknown layer")
        .into_service_error();
    assert!(err.is_layers_not_found_exception(), "{err:?}");

    // A blob whose URL fails, and a blob uploaded through ECR's own layer API.
    let failing = moto().put_blob_with(REGION, "users", Some(&format!("sha256:{}", "1".repeat(64))), b"{}", Some(503));
    let url = world.ecr.get_download_url_for_layer().repository_name("users").layer_digest(&failing).send().await;
    let agent = ureq::Agent::new_with_config(ureq::Agent::config_builder().http_status_as_error(false).build());
    let status = agent.get(url.expect("url").download_url().expect("url")).call().expect("GET").status();
    assert_eq!(status.as_u16(), 503);

    let upload = world.ecr.initiate_layer_upload().repository_name("users").send().await.expect("initiate");
    let upload_id = upload.upload_id().expect("upload id");
    let bytes = b"layer bytes".to_vec();
    world
        .ecr
        .upload_layer_part()
        .repository_name("users")
        .upload_id(upload_id)
        .part_first_byte(0)
        .part_last_byte(bytes.len() as i64 - 1)
        .layer_part_blob(aws_sdk_ecr::primitives::Blob::new(bytes.clone()))
        .send()
        .await
        .expect("upload_layer_part");
    let done = world
        .ecr
        .complete_layer_upload()
        .repository_name("users")
        .upload_id(upload_id)
        .layer_digests(format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes))))
        .send()
        .await
        .expect("complete_layer_upload");
    let url = world
        .ecr
        .get_download_url_for_layer()
        .repository_name("users")
        .layer_digest(done.layer_digest().expect("digest"))
        .send()
        .await
        .expect("url");
    let served =
        ureq::get(url.download_url().expect("url")).call().expect("GET").body_mut().read_to_vec().expect("bytes");
    assert_eq!(served, bytes);
}

#[tokio::test]
async fn referrers_are_the_artifacts_whose_subject_is_the_image() {
    let _lock = serial().await;
    let world = fresh().await;
    world.repository("users").await;
    let signed = world.push_image("users", &["v1"], "arm64", "signed").await;
    let other = world.push_image("users", &["v2"], "arm64", "other").await;
    let signature =
        world.push_referrer("users", &signed, "application/vnd.dev.cosign.artifact.sig.v1+json", "sig").await;
    let sbom = world.push_referrer("users", &signed, "application/spdx+json", "sbom").await;
    world.push_referrer("users", &other, "application/spdx+json", "other-sbom").await;

    let subject = SubjectIdentifier::builder().image_digest(&signed.digest).build().expect("subject");
    let out = world
        .ecr
        .list_image_referrers()
        .repository_name("users")
        .subject_id(subject.clone())
        .send()
        .await
        .expect("list_image_referrers");
    let mut found: Vec<_> = out
        .referrers()
        .iter()
        .map(|r| {
            (r.digest().to_string(), r.artifact_type().unwrap_or_default().to_string(), r.artifact_status().cloned())
        })
        .collect();
    found.sort();
    let mut expected = vec![
        (
            signature.clone(),
            "application/vnd.dev.cosign.artifact.sig.v1+json".to_string(),
            Some(aws_sdk_ecr::types::ArtifactStatus::Active),
        ),
        (sbom.clone(), "application/spdx+json".to_string(), Some(aws_sdk_ecr::types::ArtifactStatus::Active)),
    ];
    expected.sort();
    assert_eq!(found, expected);
    assert!(out
        .referrers()
        .iter()
        .all(|r| r.size() > 0 && r.media_type() == "application/vnd.oci.image.manifest.v1+json"));

    let only_sboms = world
        .ecr
        .list_image_referrers()
        .repository_name("users")
        .subject_id(subject)
        .filter(aws_sdk_ecr::types::ListImageReferrersFilter::builder().artifact_types("application/spdx+json").build())
        .send()
        .await
        .expect("filtered");
    assert_eq!(only_sboms.referrers().iter().map(|r| r.digest()).collect::<Vec<_>>(), [sbom.as_str()]);

    let described = world
        .ecr
        .describe_images()
        .repository_name("users")
        .image_ids(ImageIdentifier::builder().image_digest(&signature).build())
        .send()
        .await
        .expect("describe_images");
    let detail = &described.image_details()[0];
    assert_eq!(detail.subject_manifest_digest(), Some(signed.digest.as_str()));
    assert_eq!(detail.artifact_media_type(), Some("application/vnd.dev.cosign.artifact.sig.v1+json"));
}

async fn statuses(world: &World, filter: Option<ImageStatusFilter>) -> Vec<(String, ImageStatus)> {
    let out = world
        .ecr
        .describe_images()
        .repository_name("users")
        .set_filter(filter.map(|f| aws_sdk_ecr::types::DescribeImagesFilter::builder().image_status(f).build()))
        .send()
        .await
        .expect("describe_images");
    let mut rows: Vec<_> = out
        .image_details()
        .iter()
        .map(|d| (d.image_digest().expect("digest").to_string(), d.image_status().cloned().expect("status")))
        .collect();
    rows.sort();
    rows
}

#[tokio::test]
async fn archived_images_leave_the_default_listing_and_come_back_through_activation() {
    let _lock = serial().await;
    let world = fresh().await;
    world.repository("users").await;
    let old: Pushed = world.push_image("users", &["v1"], "arm64", "old").await;
    let new = world.push_image("users", &["v2"], "arm64", "new").await;

    let archived = world
        .ecr
        .update_image_storage_class()
        .repository_name("users")
        .image_id(ImageIdentifier::builder().image_tag("v1").build())
        .target_storage_class(TargetStorageClass::Archive)
        .send()
        .await
        .expect("update_image_storage_class");
    assert_eq!(archived.image_status(), Some(&ImageStatus::Archived));
    assert_eq!(archived.image_id().and_then(|i| i.image_digest()), Some(old.digest.as_str()));

    // ACTIVE only unless asked, as ECR documents.
    assert_eq!(statuses(&world, None).await, [(new.digest.clone(), ImageStatus::Active)]);
    let mut everything = vec![(old.digest.clone(), ImageStatus::Archived), (new.digest.clone(), ImageStatus::Active)];
    everything.sort();
    assert_eq!(statuses(&world, Some(ImageStatusFilter::Any)).await, everything);
    assert_eq!(
        statuses(&world, Some(ImageStatusFilter::Archived)).await,
        [(old.digest.clone(), ImageStatus::Archived)]
    );
    let listed = world.ecr.list_images().repository_name("users").send().await.expect("list_images");
    assert_eq!(listed.image_ids().iter().filter_map(|i| i.image_digest()).collect::<Vec<_>>(), [new.digest.as_str()]);

    let by_id = world
        .ecr
        .describe_images()
        .repository_name("users")
        .image_ids(ImageIdentifier::builder().image_digest(&old.digest).build())
        .send()
        .await
        .expect("by id");
    assert!(by_id.image_details()[0].last_archived_at().is_some());

    // Back to standard: ACTIVATING until the test says the restore finished.
    let restoring = world
        .ecr
        .update_image_storage_class()
        .repository_name("users")
        .image_id(ImageIdentifier::builder().image_digest(&old.digest).build())
        .target_storage_class(TargetStorageClass::Standard)
        .send()
        .await
        .expect("restore");
    assert_eq!(restoring.image_status(), Some(&ImageStatus::Activating));
    moto().set_image_status(REGION, "users", &old.digest, "ACTIVE");
    let by_id = world
        .ecr
        .describe_images()
        .repository_name("users")
        .image_ids(ImageIdentifier::builder().image_digest(&old.digest).build())
        .send()
        .await
        .expect("by id");
    assert_eq!(by_id.image_details()[0].image_status(), Some(&ImageStatus::Active));
    assert!(by_id.image_details()[0].last_activated_at().is_some());
}

/// Lambda image functions, EventBridge rules and Scheduler schedules with ECS
/// targets, running tasks' digests and EXTERNAL task sets, checked with boto3
/// against this server (their setup needs EC2, Lambda and Scheduler clients).
#[tokio::test]
async fn boto3_checks_of_lambda_eventbridge_and_scheduler() {
    let _lock = serial().await;
    moto().reset();
    let endpoint = moto().endpoint.clone();
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(tools_bin().join("python"))
            .args(["-m", "unittest", "-v", "tests/emulator/test_autopilot_moto.py"])
            .env("AUTOPILOT_MOTO_ENDPOINT", endpoint)
            .current_dir(workspace_root())
            .output(),
    )
    .await
    .expect("boto3 checks within 2 minutes")
    .expect("python runs");
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("Ran 8 tests"), "{text}");
}
