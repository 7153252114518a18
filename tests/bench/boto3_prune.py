"""The benchmark's peer: the prune job written the way the popular Python ECR
cleanup Lambdas are (boto3, one repository after another), for `make bench` to
run against the same world on the same local AWS as prune-images.

What it does, at the level those Lambdas do it:
1. images in use: every cluster's running tasks (ListClusters, ListTasks,
   DescribeTasks), and the task definition each names (DescribeTaskDefinition,
   once per revision): a container image by tag or by digest, and the digest the
   task reports for it, are kept;
2. every repository (DescribeRepositories), every image (DescribeImages);
3. the same rules as prune-images' default policy: untagged images pushed more
   than one day ago expire; of the rest, all but the newest 30 expire;
4. expired images not in use are deleted with BatchDeleteImage, 100 a call.

It is not a model of prune-images (no service revisions, referrers, index
children, safety brake, tag overrides); it is the job those tools do.

Run: ``python boto3_prune.py`` with ``AWS_ENDPOINT_URL``, ``AWS_REGION`` and
credentials in the environment. It prints one JSON document: images seen and
deleted, API calls per operation, wall time of the job (from the handler's
start; interpreter start and imports are the cold start, which the bench
measures separately) and the process's peak RSS.
"""

import collections
import datetime
import json
import os
import resource
import time

import boto3

UNTAGGED_DAYS = 1
KEEP_NEWEST = 30
DELETE_BATCH = 100

CALLS = collections.Counter()


def _count(event_name, **_):
    # before-call.<service>.<Operation>
    CALLS[event_name.rsplit(".", 1)[-1]] += 1


def _client(session, service):
    client = session.client(service)
    client.meta.events.register("before-call", _count)
    return client


def images_in_use(ecs):
    """Image references and digests that running tasks use."""
    references, digests = set(), set()
    definitions = {}
    for page in ecs.get_paginator("list_clusters").paginate():
        for cluster in page["clusterArns"]:
            task_arns = []
            for tasks_page in ecs.get_paginator("list_tasks").paginate(cluster=cluster, desiredStatus="RUNNING"):
                task_arns.extend(tasks_page["taskArns"])
            for start in range(0, len(task_arns), 100):
                described = ecs.describe_tasks(cluster=cluster, tasks=task_arns[start : start + 100])
                for task in described["tasks"]:
                    for container in task.get("containers", []):
                        if container.get("imageDigest"):
                            digests.add(container["imageDigest"])
                    arn = task["taskDefinitionArn"]
                    if arn not in definitions:
                        definitions[arn] = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
    for definition in definitions.values():
        for container in definition.get("containerDefinitions", []):
            image = container.get("image", "")
            references.add(image)
            if "@" in image:
                digests.add(image.split("@", 1)[1])
    return references, digests


def expired(images, now):
    """The images the two rules expire, each by at most one rule."""
    cutoff = now - datetime.timedelta(days=UNTAGGED_DAYS)
    gone, rest = [], []
    for image in images:
        if not image.get("imageTags") and image["imagePushedAt"] < cutoff:
            gone.append(image)
        else:
            rest.append(image)
    rest.sort(key=lambda i: i["imagePushedAt"], reverse=True)
    return gone + rest[KEEP_NEWEST:]


def in_use(image, uri, references, digests):
    if image["imageDigest"] in digests or f"{uri}@{image['imageDigest']}" in references:
        return True
    return any(f"{uri}:{tag}" in references for tag in image.get("imageTags", []))


def handler(event, context):
    session = boto3.session.Session()
    ecr, ecs = _client(session, "ecr"), _client(session, "ecs")
    now = datetime.datetime.now(datetime.timezone.utc)
    references, digests = images_in_use(ecs)
    seen = deleted = kept_in_use = 0
    for page in ecr.get_paginator("describe_repositories").paginate():
        for repository in page["repositories"]:
            name, uri = repository["repositoryName"], repository["repositoryUri"]
            images = []
            for images_page in ecr.get_paginator("describe_images").paginate(repositoryName=name):
                images.extend(images_page["imageDetails"])
            seen += len(images)
            doomed = []
            for image in expired(images, now):
                if in_use(image, uri, references, digests):
                    kept_in_use += 1
                else:
                    doomed.append({"imageDigest": image["imageDigest"]})
            for start in range(0, len(doomed), DELETE_BATCH):
                response = ecr.batch_delete_image(repositoryName=name, imageIds=doomed[start : start + DELETE_BATCH])
                failed = {f["imageId"].get("imageDigest") for f in response.get("failures", [])}
                deleted += sum(1 for d in doomed[start : start + DELETE_BATCH] if d["imageDigest"] not in failed)
    return {"imagesSeen": seen, "imagesDeleted": deleted, "keptInUse": kept_in_use}


if __name__ == "__main__":
    started = time.monotonic()
    result = handler({}, None)
    result["wallSeconds"] = round(time.monotonic() - started, 3)
    result["apiCalls"] = dict(sorted(CALLS.items()))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["peakRssKiB"] = usage.ru_maxrss
    # CPU time of this process (user + system) since it started, imports included.
    result["cpuSeconds"] = round(usage.ru_utime + usage.ru_stime, 3)
    print(json.dumps(result))
