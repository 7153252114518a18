"""boto3 checks of the launcher's additions that the Rust SDK crates of this
workspace cannot make without a new dependency (Lambda, EventBridge,
EventBridge Scheduler), plus ECS task sets on EXTERNAL services.

Run by the Rust test ``tests/emulator.rs`` against its running launcher
(``AUTOPILOT_MOTO_ENDPOINT``); by hand::

    python tests/emulator/autopilot_moto.py -p 5055 &
    AUTOPILOT_MOTO_ENDPOINT=http://127.0.0.1:5055 python -m unittest tests/emulator/test_autopilot_moto.py
"""

from __future__ import annotations

import hashlib
import json
import os
import unittest

import boto3

ENDPOINT = os.environ.get("AUTOPILOT_MOTO_ENDPOINT", "http://127.0.0.1:5055")
# A region of its own, so these checks leave the Rust tests' region alone.
REGION = "eu-west-3"
ACCOUNT = "123456789012"


def client(service: str):
    return boto3.client(
        service,
        region_name=REGION,
        endpoint_url=ENDPOINT,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def push(ecr, repository: str, tag: str, seed: str) -> str:
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "size": 100,
                "digest": "sha256:" + hashlib.sha256(f"config/{seed}".encode()).hexdigest(),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "size": 100,
                    "digest": "sha256:" + hashlib.sha256(f"layer/{seed}".encode()).hexdigest(),
                }
            ],
        }
    )
    digest = "sha256:" + hashlib.sha256(manifest.encode()).hexdigest()
    ecr.put_image(repositoryName=repository, imageManifest=manifest, imageTag=tag, imageDigest=digest)
    return digest


ROLE = f"arn:aws:iam::{ACCOUNT}:role/autopilot-test"


def setUpModule():
    iam = client("iam")
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    try:
        iam.create_role(RoleName="autopilot-test", AssumeRolePolicyDocument=json.dumps(trust))
    except iam.exceptions.EntityAlreadyExistsException:
        pass


class LambdaImageFunctions(unittest.TestCase):
    def test_resolved_image_uri_names_the_digest_the_tag_pointed_at(self):
        ecr, lam = client("ecr"), client("lambda")
        ecr.create_repository(repositoryName="fn-tagged")
        first = push(ecr, "fn-tagged", "latest", "fn-1")
        uri = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/fn-tagged"
        lam.create_function(FunctionName="fn-tagged", Role=ROLE, PackageType="Image", Code={"ImageUri": f"{uri}:latest"})
        push(ecr, "fn-tagged", "latest", "fn-2")  # the tag moves; the function keeps what it resolved
        code = lam.get_function(FunctionName="fn-tagged")["Code"]
        self.assertEqual(code["ImageUri"], f"{uri}:latest")
        self.assertEqual(code["ResolvedImageUri"], f"{uri}@{first}")

    def test_resolved_image_uri_of_a_digest_pin(self):
        ecr, lam = client("ecr"), client("lambda")
        ecr.create_repository(repositoryName="fn-pinned")
        digest = push(ecr, "fn-pinned", "v1", "pin-1")
        uri = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/fn-pinned"
        lam.create_function(FunctionName="fn-pinned", Role=ROLE, PackageType="Image", Code={"ImageUri": f"{uri}@{digest}"})
        code = lam.get_function(FunctionName="fn-pinned")["Code"]
        self.assertEqual(code["ResolvedImageUri"], f"{uri}@{digest}")
        listed = [f for f in lam.list_functions()["Functions"] if f["FunctionName"] == "fn-pinned"]
        self.assertEqual(listed[0]["PackageType"], "Image")
        self.assertEqual(listed[0]["CodeSha256"], digest.split(":", 1)[1])


class ScheduledEcsTargets(unittest.TestCase):
    TD = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/nightly:3"
    CLUSTER = f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/jobs"

    def test_eventbridge_rule_target_keeps_its_ecs_parameters(self):
        events = client("events")
        events.create_event_bus(Name="jobs-bus")
        for bus in ("default", "jobs-bus"):
            if bus == "default":
                events.put_rule(Name=f"nightly-{bus}", ScheduleExpression="cron(0 3 * * ? *)")
            else:
                events.put_rule(Name=f"nightly-{bus}", EventPattern=json.dumps({"source": ["jobs"]}), EventBusName=bus)
            events.put_targets(
                Rule=f"nightly-{bus}",
                EventBusName=bus,
                Targets=[
                    {
                        "Id": "job",
                        "Arn": self.CLUSTER,
                        "RoleArn": ROLE,
                        "EcsParameters": {"TaskDefinitionArn": self.TD, "TaskCount": 1, "LaunchType": "FARGATE"},
                    }
                ],
            )
            targets = events.list_targets_by_rule(Rule=f"nightly-{bus}", EventBusName=bus)["Targets"]
            self.assertEqual(targets[0]["EcsParameters"]["TaskDefinitionArn"], self.TD)
        buses = [b["Name"] for b in events.list_event_buses()["EventBuses"]]
        self.assertIn("jobs-bus", buses)

    def test_scheduler_schedule_keeps_its_ecs_parameters(self):
        scheduler = client("scheduler")
        scheduler.create_schedule(
            Name="nightly",
            ScheduleExpression="cron(0 3 * * ? *)",
            FlexibleTimeWindow={"Mode": "OFF"},
            Target={
                "Arn": self.CLUSTER,
                "RoleArn": ROLE,
                "EcsParameters": {"TaskDefinitionArn": self.TD, "TaskCount": 1},
            },
        )
        listed = scheduler.list_schedules()["Schedules"]
        self.assertIn("nightly", [s["Name"] for s in listed])
        got = scheduler.get_schedule(Name="nightly")
        self.assertEqual(got["Target"]["EcsParameters"]["TaskDefinitionArn"], self.TD)


class RunningTasks(unittest.TestCase):
    def test_every_container_of_a_task_reports_the_digest_it_started_from(self):
        ecr, ecs, ec2 = client("ecr"), client("ecs"), client("ec2")
        ecr.create_repository(repositoryName="jobs")
        started = push(ecr, "jobs", "latest", "job-1")
        ecs.create_cluster(clusterName="batch")
        td = ecs.register_task_definition(
            family="job",
            requiresCompatibilities=["FARGATE"],
            networkMode="awsvpc",
            cpu="256",
            memory="512",
            containerDefinitions=[
                {"name": "job", "image": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/jobs:latest", "memory": 128},
                {"name": "sidecar", "image": "busybox:1.36", "memory": 64},
            ],
        )["taskDefinition"]["taskDefinitionArn"]
        network = {
            "awsvpcConfiguration": {
                "subnets": [ec2.describe_subnets()["Subnets"][0]["SubnetId"]],
                "securityGroups": [ec2.describe_security_groups()["SecurityGroups"][0]["GroupId"]],
            }
        }
        arn = ecs.run_task(cluster="batch", taskDefinition=td, launchType="FARGATE", networkConfiguration=network)[
            "tasks"
        ][0]["taskArn"]
        push(ecr, "jobs", "latest", "job-2")  # the tag moves on; the task keeps what it pulled
        containers = ecs.describe_tasks(cluster="batch", tasks=[arn])["tasks"][0]["containers"]
        self.assertEqual([(c["name"], c.get("imageDigest")) for c in containers], [("job", started), ("sidecar", None)])
        self.assertEqual(len({c["containerArn"] for c in containers}), 2)


class BenchWorld(unittest.TestCase):
    """The benchmark's world endpoint, and the boto3 peer of the prune job on it."""

    def test_the_world_has_its_shape_and_the_peer_prunes_what_the_policy_expires(self):
        import subprocess
        import sys
        import urllib.request

        region = "ca-west-1"
        body = {"repositories": 3, "imagesEach": 5, "services": 4, "clusters": 2, "seed": 7, "region": region}
        request = urllib.request.Request(
            f"{ENDPOINT}/autopilot-api/bench/world", data=json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(request) as response:
            self.assertEqual(json.load(response)["images"], 15)
        ecr = boto3.client("ecr", region_name=region, endpoint_url=ENDPOINT,
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        ecs = boto3.client("ecs", region_name=region, endpoint_url=ENDPOINT,
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        images = sorted(ecr.describe_images(repositoryName="repo-00001")["imageDetails"], key=lambda i: i["imagePushedAt"])
        self.assertEqual(len(images), 5)
        self.assertEqual([i.get("imageTags", []) for i in images], [[], [], [], ["previous"], ["latest"]])
        manifest = ecr.batch_get_image(repositoryName="repo-00001", imageIds=[{"imageDigest": images[0]["imageDigest"]}])
        text = manifest["images"][0]["imageManifest"]
        self.assertEqual(images[0]["imageDigest"], "sha256:" + hashlib.sha256(text.encode()).hexdigest())
        # Service 1 (cluster-01) pins repo-00001's oldest image; its task runs it.
        td = ecs.describe_services(cluster="cluster-01", services=["svc-0001"])["services"][0]["taskDefinition"]
        image = ecs.describe_task_definition(taskDefinition=td)["taskDefinition"]["containerDefinitions"][0]["image"]
        self.assertTrue(image.endswith(f"/repo-00001@{images[0]['imageDigest']}"), image)
        tasks = ecs.list_tasks(cluster="cluster-01")["taskArns"]
        self.assertEqual(len(tasks), 2)
        # The peer: 3 untagged old images per repository, less the pinned one
        # in repo-00001 (service 3 pins repo-00000's oldest: 3 mod 3 = 0).
        peer = os.path.join(os.path.dirname(__file__), "..", "bench", "boto3_prune.py")
        env = dict(os.environ, AWS_ENDPOINT_URL=ENDPOINT, AWS_DEFAULT_REGION=region, AWS_REGION=region,
                   AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
        out = subprocess.run([sys.executable, peer], env=env, capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.splitlines()[-1])
        self.assertEqual(result["imagesSeen"], 15)
        self.assertEqual(result["imagesDeleted"], 9 - 2)
        self.assertEqual(result["keptInUse"], 2)
        left = ecr.describe_images(repositoryName="repo-00001")["imageDetails"]
        self.assertEqual(sorted(i["imageDigest"] for i in left),
                         sorted(i["imageDigest"] for i in [images[0], images[3], images[4]]))
        self.assertEqual(result["apiCalls"]["BatchDeleteImage"], 3)

    def test_stats_count_the_requests_and_cpu_time_of_each_operation(self):
        import urllib.request

        def stats():
            with urllib.request.urlopen(f"{ENDPOINT}/autopilot-api/bench/stats?region={REGION}") as response:
                return json.load(response)

        before = stats()
        ecr = client("ecr")
        for _ in range(3):
            ecr.describe_repositories()
        client("lambda").list_functions()
        after = stats()
        self.assertGreaterEqual(after["cpuSeconds"], before["cpuSeconds"])

        def requests(snapshot, operation):
            return snapshot["cpuByOperation"].get(operation, {}).get("requests", 0)

        # Other tests may share the server, so at least, not exactly.
        self.assertGreaterEqual(requests(after, "DescribeRepositories") - requests(before, "DescribeRepositories"), 3)
        self.assertGreaterEqual(requests(after, "GET /2015-03-31/functions") - requests(before, "GET /2015-03-31/functions"), 1)
        spent = after["cpuByOperation"]["DescribeRepositories"]["cpuSeconds"]
        self.assertGreater(spent, 0.0)
        self.assertLessEqual(spent, after["cpuSeconds"])


class ExternalTaskSets(unittest.TestCase):
    def test_task_sets_of_an_external_service_describe_their_task_definition(self):
        ecs = client("ecs")
        ecs.create_cluster(clusterName="ext")
        td = ecs.register_task_definition(
            family="ext-app", containerDefinitions=[{"name": "app", "image": "nginx:1", "memory": 128}]
        )["taskDefinition"]["taskDefinitionArn"]
        ecs.create_service(cluster="ext", serviceName="ext-svc", desiredCount=0, deploymentController={"type": "EXTERNAL"})
        created = ecs.create_task_set(cluster="ext", service="ext-svc", taskDefinition=td, externalId="blue")["taskSet"]
        service = ecs.describe_services(cluster="ext", services=["ext-svc"])["services"][0]
        self.assertEqual(service["deploymentController"]["type"], "EXTERNAL")
        sets = ecs.describe_task_sets(cluster="ext", service="ext-svc")["taskSets"]
        self.assertEqual([s["taskDefinition"] for s in sets], [td])
        self.assertEqual(sets[0]["taskSetArn"], created["taskSetArn"])
        # ECS keeps no service deployments for EXTERNAL services.
        self.assertEqual(ecs.list_service_deployments(cluster="ext", service="ext-svc")["serviceDeployments"], [])
        with self.assertRaises(ecs.exceptions.InvalidParameterException):
            ecs.update_service(cluster="ext", service="ext-svc", taskDefinition=td)


if __name__ == "__main__":
    unittest.main()
