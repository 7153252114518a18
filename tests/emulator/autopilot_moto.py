"""The local AWS for ecr-autopilot's tests: moto server (5.2.5) plus what it lacks.

Run with the tool virtualenv's python (``scripts/setup.sh`` installs moto there)::

    python tests/emulator/autopilot_moto.py -H 127.0.0.1 -p PORT

It serves exactly what ``moto_server -H 127.0.0.1 -p PORT`` serves, on loopback
only, with these additions built from moto's own backend state. None of this is
product code: the functions talk to it through ``AWS_ENDPOINT_URL`` like to AWS.

TESTING NOTES (what is added, and how faithful it is)

ECS
- ``ListServiceDeployments`` / ``DescribeServiceDeployments`` /
  ``DescribeServiceRevisions`` (shapes from the AWS API model). A service
  revision is recorded on ``CreateService``, and on ``UpdateService`` when the
  task definition changes or ``forceNewDeployment`` is set, for services with
  the ECS (rolling) deployment controller, as ECS does. At that moment each
  container's image is resolved to ``containerImages[].imageDigest``: an ECR
  image (``<account>.dkr.ecr.<region>.amazonaws.com/<repo>:<tag>``) to the digest
  its tag names in moto's ECR right now; an image pinned by digest keeps that
  digest; anything else gets no digest. Each revision comes with a service
  deployment whose ``sourceServiceRevisions`` are the revisions running before
  (the target of the last completed deployment, plus anything still rolling).
- Deployment status: a new deployment is ``SUCCESSFUL`` at once unless the test
  asked for another starting status (``POST /autopilot-api/ecs/new-deployment-status``).
  A deployment still ongoing when a newer one starts becomes ``STOPPED``;
  completed ones keep their status. Tests end a rollout with
  ``POST /autopilot-api/ecs/service-deployments/status`` (any status of the API's
  enum). ``ROLLBACK_*`` fills ``rollback`` (to the last completed revision) and
  ``deploymentCircuitBreaker``; ``ROLLBACK_SUCCESSFUL`` also puts the service's
  ``taskDefinition`` back, as ECS does.
- ``ListServiceDeployments`` filters by ``status`` and ``createdAt``
  (``before``/``after``), returns newest first, pages with ``maxResults``
  (default 20, at most 100) and ``nextToken``.
- ``UpdateService`` naming a task definition on a CODE_DEPLOY or EXTERNAL
  service is refused with ``InvalidParameterException``, as ECS does (the
  CODE_DEPLOY wording is ECS's; the EXTERNAL wording is ours). On ECS services
  the service's ``taskDefinition`` is stored as the full ARN (moto kept the
  string as given) and the PRIMARY entry of ``deployments`` names it.
- Tasks (``RunTask``, ``StartTask``, task sets) list one container per
  container definition (moto listed only the first), each with the
  ``imageDigest`` its image resolved to when the task started, as above.
- ``ListTaskDefinitions`` sorts by family then revision and honours
  ``sort=DESC``, and ``maxResults``/``nextToken`` when ``maxResults`` is given.

ECR
- ``GetDownloadUrlForLayer``: returns a URL on this same loopback server that
  serves the blob's bytes. moto stores no blob bytes, so blobs come from
  ``CompleteLayerUpload`` (captured here) or from the test-only
  ``PUT /autopilot-api/ecr/blobs``. An unknown digest gives
  ``LayersNotFoundException``. The URL is plain ``http://127.0.0.1:PORT/...``
  (real ECR returns a presigned HTTPS URL).
- ``ListImageReferrers``: images of the repository whose manifest's
  ``subject.digest`` is ``subjectId.imageDigest``; ``artifactType`` is the
  manifest's ``artifactType``, else its config's media type; ``size`` is the
  manifest's length; filters ``artifactTypes`` and ``artifactStatus`` (default
  ACTIVE, as AWS); pages of ``maxResults`` (default and at most 50).
- ``UpdateImageStorageClass``: ``ARCHIVE`` makes an image ARCHIVED
  (``lastArchivedAt``); ``STANDARD`` on an archived image makes it ACTIVATING,
  and ``POST /autopilot-api/ecr/image-status`` finishes that (ECR takes up to 20
  minutes). Asking for the class an image already has is accepted, no change.
- ``DescribeImages`` reports ``imageStatus`` (ACTIVE unless archived),
  ``lastArchivedAt``, ``lastActivatedAt``, ``artifactMediaType`` and
  ``subjectManifestDigest``, and applies ``filter.imageStatus`` (ACTIVE when not
  given, as AWS documents) and ``filter.tagStatus``; with ``imageIds`` the
  images are returned whatever their status. ``ListImages`` applies the same
  two filters. Paging (``maxResults``) is still ignored, as in moto.

Lambda
- ``GetFunction`` of an image function: ``Code.ResolvedImageUri`` is
  ``<repository uri>@sha256:<digest>`` of the image its ``ImageUri`` named when
  the code was set (moto built ``repo@sha256@sha256:...`` for digest URIs and a
  hash of the URI string for tags), and ``CodeSha256`` is that digest's hex.

Test-only endpoints (JSON in and out unless said otherwise)
- ``PUT /autopilot-api/ecr/blobs?repository=R[&region=us-east-1][&account=123456789012][&digest=sha256:...][&status=503]``
  body: the blob's raw bytes -> ``{"digest", "size", "repositoryName"}``. The
  digest is the bytes' sha256 unless ``digest`` says otherwise (a blob whose
  bytes do not match). ``status`` makes the download URL answer that HTTP status.
- ``GET /autopilot-api/ecr/blobs?account=&region=&repository=&digest=``: the
  download URL that ``GetDownloadUrlForLayer`` returns.
- ``POST /autopilot-api/ecs/service-deployments/status``
  ``{"serviceDeploymentArn": ARN | "region", "cluster", "service" (its latest deployment),
  "status": "SUCCESSFUL" | "ROLLBACK_SUCCESSFUL" | ..., "statusReason"?: str}``
  -> the deployment as ``DescribeServiceDeployments`` shows it.
- ``POST /autopilot-api/ecs/new-deployment-status`` ``{"status": "IN_PROGRESS"}``:
  the status new deployments start in (``SUCCESSFUL`` again after
  ``/moto-api/reset``).
- ``POST /autopilot-api/ecr/image-status``
  ``{"repositoryName", "imageDigest", "imageStatus", "region"?, "account"?}``.

- ``POST /autopilot-api/bench/world`` ``{"repositories", "imagesEach", "services",
  "clusters", "seed"?, "oldDays"?, "region"?}``: the benchmark's world, written straight into
  moto's backends (pushing 200,000 images through the API takes hours). See
  ``_bench_world`` for its shape; it is a pure function of the body, so two
  worlds built from the same body are the same, digests included.
- ``GET /autopilot-api/bench/stats[?region=us-east-1]``: ``{"repositories", "images", "logGroups"}``
  of the default account and that region, to compare what two runs left behind,
  ``cpuSeconds``, the CPU time the emulator's process has used so far, and
  ``cpuByOperation`` (``{"DescribeImages": {"requests", "cpuSeconds"}, …}``), the
  requests served per AWS operation and the CPU time of the threads serving them.

Start-up: the extensions are imported and applied in a background thread while
the server starts listening (moto itself imports its service modules on the
first request to each). Requests other than ``/moto-api/`` wait until they are
in place, so readiness polling on ``GET /moto-api/`` stays as fast as moto's.
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import json
import os
import re
import secrets
import signal
import string
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

DEFAULT_ACCOUNT = "123456789012"
DEFAULT_REGION = "us-east-1"

DEPLOYMENT_STATUSES = (
    "PENDING",
    "SUCCESSFUL",
    "STOPPED",
    "STOP_REQUESTED",
    "IN_PROGRESS",
    "ROLLBACK_REQUESTED",
    "ROLLBACK_IN_PROGRESS",
    "ROLLBACK_SUCCESSFUL",
    "ROLLBACK_FAILED",
)
ONGOING = ("PENDING", "IN_PROGRESS", "STOP_REQUESTED", "ROLLBACK_REQUESTED", "ROLLBACK_IN_PROGRESS")
FINISHED = ("SUCCESSFUL", "STOPPED", "ROLLBACK_SUCCESSFUL", "ROLLBACK_FAILED")
IMAGE_STATUSES = ("ACTIVE", "ARCHIVED", "ACTIVATING")

ECR_IMAGE = re.compile(r"^(\d{12})\.dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/(.+)$")
SHA256 = re.compile(r"^sha256:[a-f0-9]{64}$")

_LOCK = threading.RLock()
_READY = threading.Event()
_SETTINGS: dict[str, str] = {"new_deployment_status": "SUCCESSFUL"}
_RNG = secrets.SystemRandom()
_COUNTER = [0]


def _uuid() -> str:
    value = "%032x" % _RNG.getrandbits(128)
    return f"{value[:8]}-{value[8:12]}-4{value[13:16]}-a{value[17:20]}-{value[20:]}"


def _now() -> datetime:
    """Naive UTC, as moto keeps its ECS times (libfaketime moves it too)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.timestamp()
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    raise TypeError(f"not a time: {value!r}")


def _page(items: list[Any], next_token: str | None, max_results: int | None, default: int | None, limit: int | None):
    start = 0
    if next_token:
        try:
            start = int(base64.urlsafe_b64decode(next_token.encode()).decode())
        except (ValueError, UnicodeDecodeError):
            return None
    size = max_results or default
    if size is None:
        return items[start:], None
    if limit is not None:
        size = min(size, limit)
    chunk = items[start : start + size]
    end = start + size
    token = base64.urlsafe_b64encode(str(end).encode()).decode() if end < len(items) else None
    return chunk, token


# --------------------------------------------------------------------------- ECR


def _resolve_image_digest(image: str | None) -> str | None:
    """The digest an image reference runs right now, from moto's ECR."""
    if not image:
        return None
    if "@" in image:
        digest = image.split("@", 1)[1]
        return digest if SHA256.match(digest) else None
    match = ECR_IMAGE.match(image)
    if not match:
        return None
    account, region, rest = match.groups()
    name, tag = rest, "latest"
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = rest.rsplit(":", 1)
    from moto.ecr.models import ecr_backends

    try:
        repository = ecr_backends[account][region].repositories.get(name)
    except Exception:  # an unknown region: no such image
        return None
    if repository is None:
        return None
    for candidate in repository.images:
        if tag in candidate.image_tags:
            return candidate.get_image_digest()
    return None


def _manifest(image: Any) -> dict[str, Any]:
    try:
        parsed = json.loads(image.image_manifest)
    except (TypeError, ValueError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _image_status(image: Any) -> str:
    return image.__dict__.get("_ap_status", "ACTIVE")


def _blobs(repository: Any) -> dict[str, dict[str, Any]]:
    return repository.__dict__.setdefault("_ap_blobs", {})


def _install_ecr() -> None:
    from moto.core.exceptions import ServiceException
    from moto.core.responses import ActionResult
    from moto.ecr import models as ecr_models
    from moto.ecr.exceptions import InvalidParameterException
    from moto.ecr.responses import ECRResponse

    class LayersNotFoundException(ServiceException):
        code = "LayersNotFoundException"
        message = "The specified layers could not be found, or the specified layer is not valid for this repository."

    Image = ecr_models.Image

    # DescribeImages fields of the current API.
    Image.image_status = property(_image_status)
    Image.last_archived_at = property(lambda self: self.__dict__.get("_ap_last_archived_at"))
    Image.last_activated_at = property(lambda self: self.__dict__.get("_ap_last_activated_at"))

    def artifact_media_type(self: Any) -> str | None:
        manifest = _manifest(self)
        config = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
        return manifest.get("artifactType") or config.get("mediaType")

    def subject_manifest_digest(self: Any) -> str | None:
        subject = _manifest(self).get("subject")
        return subject.get("digest") if isinstance(subject, dict) else None

    Image.artifact_media_type = property(artifact_media_type)
    Image.subject_manifest_digest = property(subject_manifest_digest)

    # Keep the bytes of layers uploaded through the layer-upload API.
    backend_cls = ecr_models.ECRBackend
    original_complete = backend_cls.complete_layer_upload

    def complete_layer_upload(self: Any, repository_name: str, upload_id: str, layer_digests: list[str], registry_id: str | None = None):
        repository = self._get_repository(repository_name, registry_id)
        upload = repository.uploads.get(upload_id)
        data = bytes(upload.layer_parts) if upload is not None else None
        result = original_complete(self, repository_name, upload_id, layer_digests, registry_id=registry_id)
        if data is not None:
            with _LOCK:
                _blobs(repository)[result["layerDigest"]] = {"data": data, "status": 200}
        return result

    backend_cls.complete_layer_upload = complete_layer_upload

    def _filtered(images: list[Any], image_filter: dict[str, Any] | None) -> list[Any]:
        image_filter = image_filter or {}
        status = image_filter.get("imageStatus") or "ACTIVE"
        tags = image_filter.get("tagStatus") or "ANY"
        kept = []
        for image in images:
            if status != "ANY" and _image_status(image) != status:
                continue
            if tags == "TAGGED" and not image.image_tags:
                continue
            if tags == "UNTAGGED" and image.image_tags:
                continue
            kept.append(image)
        return kept

    def describe_images(self: Any) -> ActionResult:
        repository_name = self._get_param("repositoryName")
        registry_id = self._get_param("registryId")
        image_ids = self._get_param("imageIds")
        images = list(self.ecr_backend.describe_images(repository_name, registry_id, image_ids))
        if not image_ids:
            images = _filtered(images, self._get_param("filter"))
        details = []
        for image in images:
            detail = {
                "registryId": image.registry_id,
                "repositoryName": image.repository_name,
                "imageDigest": image.get_image_digest(),
                "imageSizeInBytes": image.get_image_size_in_bytes(),
                "imagePushedAt": datetime.fromtimestamp(image.image_pushed_at, timezone.utc).replace(tzinfo=None),
                "imageManifestMediaType": image.image_manifest_media_type,
                "artifactMediaType": image.artifact_media_type,
                "subjectManifestDigest": image.subject_manifest_digest,
                "imageStatus": _image_status(image),
                "lastArchivedAt": image.last_archived_at,
                "lastActivatedAt": image.last_activated_at,
            }
            if image.image_tags:
                detail["imageTags"] = list(image.image_tags)
            details.append({k: v for k, v in detail.items() if v is not None})
        return ActionResult({"imageDetails": details})

    def list_images(self: Any) -> ActionResult:
        repository_name = self._get_param("repositoryName")
        registry_id = self._get_param("registryId")
        images = self.ecr_backend.list_images(repository_name, registry_id)
        ids = []
        for image in _filtered(list(images), self._get_param("filter")):
            for tag in image.image_tags or [None]:
                entry = {"imageDigest": image.get_image_digest()}
                if tag is not None:
                    entry["imageTag"] = tag
                ids.append(entry)
        return ActionResult({"imageIds": ids})

    def get_download_url_for_layer(self: Any) -> ActionResult:
        repository_name = self._get_param("repositoryName")
        registry_id = self._get_param("registryId")
        digest = self._get_param("layerDigest") or ""
        repository = self.ecr_backend._get_repository(repository_name, registry_id)
        if not SHA256.match(digest):
            raise InvalidParameterException(
                f"Invalid parameter at 'layerDigest' failed to satisfy constraint: 'Invalid digest {digest}'"
            )
        with _LOCK:
            known = digest in _blobs(repository)
        if not known:
            raise LayersNotFoundException()
        host = self.headers.get("Host") or f"127.0.0.1:{os.environ.get('MOTO_PORT', '5000')}"
        query = urlencode(
            {"account": repository.registry_id, "region": repository.region_name, "repository": repository.name, "digest": digest}
        )
        return ActionResult({"downloadUrl": f"http://{host}/autopilot-api/ecr/blobs?{query}", "layerDigest": digest})

    def list_image_referrers(self: Any) -> ActionResult:
        repository_name = self._get_param("repositoryName")
        registry_id = self._get_param("registryId")
        subject = (self._get_param("subjectId") or {}).get("imageDigest")
        image_filter = self._get_param("filter") or {}
        wanted_types = image_filter.get("artifactTypes") or []
        wanted_status = image_filter.get("artifactStatus") or "ACTIVE"
        repository = self.ecr_backend._get_repository(repository_name, registry_id)
        referrers = []
        for image in list(repository.images):
            manifest = _manifest(image)
            subject_of = manifest.get("subject")
            if not isinstance(subject_of, dict) or subject_of.get("digest") != subject:
                continue
            artifact_type = image.artifact_media_type
            status = _image_status(image)
            if wanted_types and artifact_type not in wanted_types:
                continue
            if wanted_status != "ANY" and status != wanted_status:
                continue
            referrer = {
                "digest": image.get_image_digest(),
                "mediaType": manifest.get("mediaType") or image.image_manifest_media_type,
                "artifactType": artifact_type,
                "size": len(image.image_manifest.encode("utf-8")),
                "artifactStatus": status,
            }
            if isinstance(manifest.get("annotations"), dict):
                referrer["annotations"] = manifest["annotations"]
            referrers.append({k: v for k, v in referrer.items() if v is not None})
        paged = _page(referrers, self._get_param("nextToken"), self._get_param("maxResults"), 50, 50)
        if paged is None:
            raise InvalidParameterException("Invalid parameter at 'nextToken'")
        chunk, token = paged
        result: dict[str, Any] = {"referrers": chunk}
        if token:
            result["nextToken"] = token
        return ActionResult(result)

    def update_image_storage_class(self: Any) -> ActionResult:
        repository_name = self._get_param("repositoryName")
        registry_id = self._get_param("registryId")
        image_id = self._get_param("imageId") or {}
        target = self._get_param("targetStorageClass")
        if target not in ("STANDARD", "ARCHIVE"):
            raise InvalidParameterException(
                "Invalid parameter at 'targetStorageClass' failed to satisfy constraint: 'Member must satisfy enum value set: [STANDARD, ARCHIVE]'"
            )
        repository = self.ecr_backend._get_repository(repository_name, registry_id)
        image = repository._get_image(image_id.get("imageTag"), image_id.get("imageDigest"))
        with _LOCK:
            status = _image_status(image)
            if target == "ARCHIVE" and status == "ACTIVE":
                image.__dict__["_ap_status"] = "ARCHIVED"
                image.__dict__["_ap_last_archived_at"] = _now()
            elif target == "STANDARD" and status == "ARCHIVED":
                image.__dict__["_ap_status"] = "ACTIVATING"
            status = _image_status(image)
        returned_id = {"imageDigest": image.get_image_digest()}
        if image_id.get("imageTag"):
            returned_id["imageTag"] = image_id["imageTag"]
        return ActionResult(
            {
                "registryId": repository.registry_id,
                "repositoryName": repository.name,
                "imageId": returned_id,
                "imageStatus": status,
            }
        )

    ECRResponse.describe_images = describe_images
    ECRResponse.list_images = list_images
    ECRResponse.get_download_url_for_layer = get_download_url_for_layer
    ECRResponse.list_image_referrers = list_image_referrers
    ECRResponse.update_image_storage_class = update_image_storage_class


def _ecr_repository(account: str, region: str, name: str) -> Any:
    from moto.ecr.models import ecr_backends

    repository = ecr_backends[account][region].repositories.get(name)
    if repository is None:
        raise LookupError(f"repository {name} not found in {account}/{region}")
    return repository


# --------------------------------------------------------------------------- ECS


def _ecs_state(backend: Any) -> dict[str, Any]:
    state = backend.__dict__.get("_ap_state")
    if state is None:
        state = backend.__dict__.setdefault(
            "_ap_state", {"revisions": {}, "deployments": {}, "by_service": {}, "running": {}, "completed": {}}
        )
    return state


def _new_revision(backend: Any, service: Any, task_definition_arn: str) -> dict[str, Any]:
    td = backend.describe_task_definition(task_definition_arn)
    with _LOCK:
        _COUNTER[0] += 1
        number = 1_000_000_000_000_000_000 + int(_now().timestamp() * 1000) * 1000 + _COUNTER[0]
    images = []
    for container in td.container_definitions:
        entry = {"containerName": container.get("name"), "image": container.get("image")}
        digest = _resolve_image_digest(container.get("image"))
        if digest:
            entry["imageDigest"] = digest
        images.append(entry)
    revision = {
        "serviceRevisionArn": f"arn:aws:ecs:{backend.region_name}:{backend.account_id}:service-revision/{service.cluster_name}/{service.name}/{number}",
        "serviceArn": service.arn,
        "clusterArn": service.cluster_arn,
        "taskDefinition": td.arn,
        "launchType": service.launch_type,
        "containerImages": images,
        "createdAt": _now(),
        "loadBalancers": list(service.load_balancers or []),
        "serviceRegistries": list(service.service_registries or []),
    }
    if service.platform_version:
        revision["platformVersion"] = service.platform_version
    if service.network_configuration:
        revision["networkConfiguration"] = service.network_configuration
    return {k: v for k, v in revision.items() if v is not None}


def _summary(arn: str, requested: int, running: int) -> dict[str, Any]:
    return {"arn": arn, "requestedTaskCount": requested, "runningTaskCount": running, "pendingTaskCount": 0}


def _start_deployment(backend: Any, service: Any, reason: str) -> dict[str, Any]:
    """Records a revision of what the service now names and a deployment to it."""
    state = _ecs_state(backend)
    revision = _new_revision(backend, service, service.task_definition)
    with _LOCK:
        state["revisions"][revision["serviceRevisionArn"]] = revision
        history = state["by_service"].setdefault(service.arn, [])
        now = _now()
        for earlier in history:
            deployment = state["deployments"][earlier]
            if deployment["status"] in ONGOING:
                deployment["status"] = "STOPPED"
                deployment["statusReason"] = "Stopped by a newer service deployment."
                deployment["stoppedAt"] = deployment["finishedAt"] = deployment["updatedAt"] = now
        sources = list(dict.fromkeys(state["running"].get(service.arn, [])))
        completed = state["completed"].get(service.arn)
        ident = "".join(_RNG.choice(string.ascii_letters + string.digits + "-_") for _ in range(20))
        desired = int(service.desired_count or 0)
        deployment = {
            "serviceDeploymentArn": f"arn:aws:ecs:{backend.region_name}:{backend.account_id}:service-deployment/{service.cluster_name}/{service.name}/{ident}",
            "serviceArn": service.arn,
            "clusterArn": service.cluster_arn,
            "createdAt": now,
            "updatedAt": now,
            "sourceServiceRevisions": [_summary(arn, 0, 0) for arn in sources],
            "targetServiceRevision": _summary(revision["serviceRevisionArn"], desired, 0),
            "targetServiceRevisionArn": revision["serviceRevisionArn"],
            "status": "PENDING",
            "statusReason": reason,
            "deploymentConfiguration": {"maximumPercent": 200, "minimumHealthyPercent": 100},
            # Not part of the API shape: where a rollback goes (the last revision that completed).
            "_rollbackTo": completed,
        }
        state["deployments"][deployment["serviceDeploymentArn"]] = deployment
        history.append(deployment["serviceDeploymentArn"])
        _apply_status(backend, service, deployment, _SETTINGS["new_deployment_status"], None)
    return deployment


def _apply_status(backend: Any, service: Any, deployment: dict[str, Any], status: str, reason: str | None) -> None:
    state = _ecs_state(backend)
    now = _now()
    deployment["status"] = status
    deployment["updatedAt"] = now
    if reason:
        deployment["statusReason"] = reason
    target = deployment["targetServiceRevision"]["arn"]
    sources = [s["arn"] for s in deployment["sourceServiceRevisions"]]
    desired = int(service.desired_count or 0)
    if status != "PENDING":
        deployment.setdefault("startedAt", now)
    if status in FINISHED:
        deployment["finishedAt"] = now
    else:
        deployment.pop("finishedAt", None)
    if status == "STOPPED":
        deployment["stoppedAt"] = now
    if status.startswith("ROLLBACK"):
        deployment["rollback"] = {
            "reason": reason or "Service deployment rolled back because the circuit breaker threshold was exceeded.",
            "startedAt": deployment.get("rollback", {}).get("startedAt", now),
        }
        if deployment.get("_rollbackTo"):
            deployment["rollback"]["serviceRevisionArn"] = deployment["_rollbackTo"]
        deployment["deploymentCircuitBreaker"] = {"status": "TRIGGERED", "failureCount": 3, "threshold": 3}
    if status == "SUCCESSFUL":
        deployment["targetServiceRevision"]["runningTaskCount"] = desired
        state["running"][service.arn] = [target]
        state["completed"][service.arn] = target
        _moto_primary(service, state["revisions"][target]["taskDefinition"], "COMPLETED")
    elif status in ("IN_PROGRESS", "ROLLBACK_REQUESTED", "ROLLBACK_IN_PROGRESS", "STOP_REQUESTED"):
        state["running"][service.arn] = sources + [target]
        _moto_primary(service, state["revisions"][target]["taskDefinition"], "IN_PROGRESS")
    elif status == "ROLLBACK_SUCCESSFUL" and deployment.get("_rollbackTo"):
        back = deployment["_rollbackTo"]
        state["running"][service.arn] = [back]
        service.task_definition = state["revisions"][back]["taskDefinition"]
        _moto_primary(service, service.task_definition, "COMPLETED")
    elif status in ("ROLLBACK_FAILED", "STOPPED"):
        state["running"][service.arn] = sources + [target]
        _moto_primary(service, state["revisions"][target]["taskDefinition"], "FAILED")


def _moto_primary(service: Any, task_definition: str, rollout_state: str) -> None:
    """Keeps DescribeServices' PRIMARY deployment naming what ECS runs."""
    if not service.deployments:
        return
    primary = service.deployments[0]
    primary["taskDefinition"] = task_definition
    primary["rolloutState"] = rollout_state
    primary["updatedAt"] = _now()


def _public(deployment: dict[str, Any]) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if isinstance(value, datetime):
            return _epoch(value)
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items() if not k.startswith("_")}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    return plain(deployment)


def _install_ecs() -> None:
    from moto.core.responses import ActionResult
    from moto.ecs import models as ecs_models
    from moto.ecs.exceptions import InvalidParameterException
    from moto.ecs.responses import EC2ContainerServiceResponse

    backend_cls = ecs_models.EC2ContainerServiceBackend
    original_create = backend_cls.create_service
    original_update = backend_cls.update_service

    def create_service(self: Any, *args: Any, **kwargs: Any) -> Any:
        service = original_create(self, *args, **kwargs)
        with _LOCK:
            state = _ecs_state(self)
            for arn in state["by_service"].pop(service.arn, []):
                state["deployments"].pop(arn, None)
            state["running"].pop(service.arn, None)
            state["completed"].pop(service.arn, None)
        if service.deployment_controller.get("type", "ECS") == "ECS" and service.task_definition:
            _start_deployment(self, service, "Service created.")
        return service

    def update_service(self: Any, properties: dict[str, Any]) -> Any:
        cluster_str = properties.get("cluster") or "default"
        service = self._get_service(cluster_str, properties["service"].split("/")[-1])
        controller = service.deployment_controller.get("type", "ECS")
        requested = properties.get("task_definition")
        force = bool(properties.get("force_new_deployment"))
        if requested and controller == "CODE_DEPLOY":
            raise InvalidParameterException(
                "Unable to update task definition on services with a CODE_DEPLOY deployment controller. "
                "Use AWS CodeDeploy to trigger a new deployment."
            )
        if requested and controller == "EXTERNAL":
            raise InvalidParameterException(
                "Unable to update task definition on services with a EXTERNAL deployment controller. "
                "Use CreateTaskSet to deploy a new task definition."
            )
        before = service.task_definition
        new_arn = self.describe_task_definition(requested).arn if requested else None
        service = original_update(self, properties)
        if new_arn:
            service.task_definition = new_arn
        if controller == "ECS" and service.task_definition and ((new_arn and new_arn != before) or force):
            _start_deployment(self, service, "Service updated." if not force else "Forced new deployment.")
        return service

    backend_cls.create_service = create_service
    backend_cls.update_service = update_service

    # A task has one container per container definition, each with the digest
    # its image resolved to when the task started (moto kept only the first
    # container, without a digest). The extra containers take their ids from
    # our own random source, so moto's seeded stream is drawn as before.
    task_cls = ecs_models.Task
    original_task_init = task_cls.__init__

    def task_init(self: Any, cluster: Any, task_definition: Any, *args: Any, **kwargs: Any) -> None:
        original_task_init(self, cluster, task_definition, *args, **kwargs)
        first = self.containers[0]
        containers = []
        for index, definition in enumerate(task_definition.container_definitions):
            container = first if index == 0 else copy.copy(first)
            if index:
                container.__dict__.pop("image_digest", None)
                container.container_arn = f"{task_definition.arn}/{_uuid()}"
                container.name = definition.get("name")
                container.image = definition.get("image")
                container.cpu = definition.get("cpu", 0)
                container.memory = definition.get("memory")
                container.environment = definition.get("environment")
                container.command = definition.get("command")
            digest = _resolve_image_digest(container.image)
            if digest:
                container.image_digest = digest
            containers.append(container)
        self.containers = containers

    task_cls.__init__ = task_init

    def list_service_deployments(self: Any) -> ActionResult:
        cluster_str = self._get_param("cluster") or "default"
        service = self.ecs_backend._get_service(cluster_str, (self._get_param("service") or "").split("/")[-1])
        statuses = self._get_param("status") or []
        created = self._get_param("createdAt") or {}
        before, after = _epoch(created.get("before")), _epoch(created.get("after"))
        with _LOCK:
            state = _ecs_state(self.ecs_backend)
            found = [state["deployments"][arn] for arn in state["by_service"].get(service.arn, [])]
            rows = []
            for deployment in reversed(found):
                if statuses and deployment["status"] not in statuses:
                    continue
                at = _epoch(deployment["createdAt"])
                if before is not None and at > before:
                    continue
                if after is not None and at < after:
                    continue
                rows.append(
                    {
                        k: deployment.get(k)
                        for k in (
                            "serviceDeploymentArn",
                            "serviceArn",
                            "clusterArn",
                            "startedAt",
                            "createdAt",
                            "finishedAt",
                            "targetServiceRevisionArn",
                            "status",
                            "statusReason",
                        )
                        if deployment.get(k) is not None
                    }
                )
        paged = _page(rows, self._get_param("nextToken"), self._get_param("maxResults"), 20, 100)
        if paged is None:
            raise InvalidParameterException("Invalid nextToken.")
        chunk, token = paged
        result: dict[str, Any] = {"serviceDeployments": chunk}
        if token:
            result["nextToken"] = token
        return ActionResult(result)

    def _describe(self: Any, key: str, table: str, out: str) -> ActionResult:
        arns = self._get_param(key) or []
        if not arns:
            raise InvalidParameterException(f"{key} can not be empty.")
        if len(arns) > 20:
            raise InvalidParameterException(f"{key} can have at most 20 items.")
        found, failures = [], []
        with _LOCK:
            rows = _ecs_state(self.ecs_backend)[table]
            for arn in arns:
                if arn in rows:
                    found.append(copy.deepcopy(rows[arn]))
                else:
                    failures.append({"arn": arn, "reason": "MISSING"})
        return ActionResult({out: found, "failures": failures})

    def describe_service_deployments(self: Any) -> ActionResult:
        return _describe(self, "serviceDeploymentArns", "deployments", "serviceDeployments")

    def describe_service_revisions(self: Any) -> ActionResult:
        return _describe(self, "serviceRevisionArns", "revisions", "serviceRevisions")

    def list_task_definitions(self: Any) -> ActionResult:
        family = self._get_param("familyPrefix")
        status = self._get_param("status") or "ACTIVE"
        descending = (self._get_param("sort") or "ASC") == "DESC"
        rows = []
        for revisions in self.ecs_backend.task_definitions.values():
            for td in revisions.values():
                if (family is None or td.family == family) and td.status == status:
                    rows.append((td.family, td.revision, td.arn))
        rows.sort(reverse=descending)
        paged = _page([r[2] for r in rows], self._get_param("nextToken"), self._get_param("maxResults"), None, 100)
        if paged is None:
            raise InvalidParameterException("Invalid nextToken.")
        chunk, token = paged
        result: dict[str, Any] = {"taskDefinitionArns": chunk}
        if token:
            result["nextToken"] = token
        return ActionResult(result)

    EC2ContainerServiceResponse.list_service_deployments = list_service_deployments
    EC2ContainerServiceResponse.describe_service_deployments = describe_service_deployments
    EC2ContainerServiceResponse.describe_service_revisions = describe_service_revisions
    EC2ContainerServiceResponse.list_task_definitions = list_task_definitions


def _ecs_backend_for(account: str, region: str) -> Any:
    from moto.ecs.models import ecs_backends

    return ecs_backends[account][region]


def _set_deployment_status(body: dict[str, Any]) -> dict[str, Any]:
    status = body.get("status")
    if status not in DEPLOYMENT_STATUSES:
        raise ValueError(f"status must be one of {', '.join(DEPLOYMENT_STATUSES)}")
    arn = body.get("serviceDeploymentArn")
    if arn:
        parts = arn.split(":")
        if len(parts) < 6 or not parts[5].startswith("service-deployment/"):
            raise ValueError(f"not a service deployment ARN: {arn}")
        backend = _ecs_backend_for(parts[4], parts[3])
    else:
        backend = _ecs_backend_for(body.get("account") or DEFAULT_ACCOUNT, body.get("region") or DEFAULT_REGION)
    with _LOCK:
        state = _ecs_state(backend)
        if not arn:
            service = backend._get_service(body.get("cluster") or "default", str(body.get("service", "")).split("/")[-1])
            history = state["by_service"].get(service.arn) or []
            if not history:
                raise LookupError(f"service {service.arn} has no deployment")
            arn = history[-1]
        deployment = state["deployments"].get(arn)
        if deployment is None:
            raise LookupError(f"no service deployment {arn}")
        service = next(s for s in backend.services.values() if s.arn == deployment["serviceArn"])
        _apply_status(backend, service, deployment, status, body.get("statusReason"))
        return _public(deployment)


# ------------------------------------------------------------------------ Lambda


def _install_lambda() -> None:
    from moto.awslambda import models as lambda_models

    cls = lambda_models.LambdaFunction
    original_set = cls._set_function_code
    original_get = cls.get_code

    def _set_function_code(self: Any, updated_spec: dict[str, Any]) -> None:
        original_set(self, updated_spec)
        uri = updated_spec.get("ImageUri")
        if uri:
            digest = _resolve_image_digest(uri)
            self.__dict__["_ap_resolved_digest"] = digest
            if digest:
                self.code_sha_256 = digest.split(":", 1)[1]

    def get_code(self: Any) -> dict[str, Any]:
        response = original_get(self)
        code = response.get("Code") or {}
        uri = code.get("ImageUri")
        if uri:
            repository = uri.split("@", 1)[0]
            last = repository.rsplit("/", 1)[-1]
            if ":" in last:
                repository = repository.rsplit(":", 1)[0]
            digest = self.__dict__.get("_ap_resolved_digest") or f"sha256:{self.code_sha_256}"
            code["ResolvedImageUri"] = f"{repository}@{digest}"
        return response

    cls._set_function_code = _set_function_code
    cls.get_code = get_code


# -------------------------------------------------------------------- HTTP layer


# --------------------------------------------------------------------------- benchmark world


def _bench_world(body: dict[str, Any]) -> dict[str, Any]:
    """Builds the benchmark's world in moto's backends, in the default account
    and the default region (or ``region``).

    - ``repositories`` repositories ``repo-00000``...; each holds ``imagesEach``
      single-platform OCI images with layers of their own. The newest is tagged
      ``latest`` and the one before ``previous``, both pushed a minute ago; the
      others are untagged and were pushed ``oldDays`` (default 5) days ago, one
      second apart, oldest first. The digest is the sha256 of the manifest bytes,
      as ECR computes it.
    - ``clusters`` clusters ``cluster-00``...; ``services`` services
      ``svc-0000``... spread over them round robin, service ``s`` running
      repository ``s mod repositories``: even services by the tag ``latest``,
      odd ones pinned to the digest of that repository's oldest (untagged, old)
      image, which a prune must therefore keep. Each has its own task-definition
      family (arm64 Linux, Fargate, ``awslogs`` to ``/ecs/svc-NNNN``), is tagged
      ``autopilot:deploy=on``, and runs one task (a Fargate ``RunTask`` with the
      service's group), whose status stays put (manual task transitions).
    """
    from moto.ec2.models import ec2_backends
    from moto.ecr.models import Image, ecr_backends
    from moto.moto_api import state_manager

    def count(key: str, default: int | None = None) -> int:
        value = body.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{key} must be a whole number >= 0, got {value!r}")
        return value

    repositories, each = count("repositories"), count("imagesEach")
    services, clusters = count("services"), count("clusters")
    seed, old_days = count("seed", 0), count("oldDays", 5)
    if services and not (clusters and repositories):
        raise ValueError("services need at least one cluster and one repository")
    account, region = DEFAULT_ACCOUNT, body.get("region") or DEFAULT_REGION
    if not isinstance(region, str) or not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", region):
        raise ValueError(f"region must be an AWS region name, got {region!r}")
    ecr = ecr_backends[account][region]
    ecs = _ecs_backend_for(account, region)
    state_manager.set_transition(model_name="ecs::task", transition={"progression": "manual", "times": 1_000_000})
    now = int(_now().replace(tzinfo=timezone.utc).timestamp())
    old = now - old_days * 86_400
    oldest: list[str] = []
    for r in range(repositories):
        name = f"repo-{r:05d}"
        ecr.create_repository(name, None, {}, {"scanOnPush": False}, "MUTABLE", [])
        repository = ecr.repositories[name]
        for i in range(each):
            layer = hashlib.sha256(f"{seed}/{name}/{i}/layer".encode()).hexdigest()
            config = hashlib.sha256(f"{seed}/{name}/{i}/config".encode()).hexdigest()
            manifest = json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 1469, "digest": f"sha256:{config}"},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": 3_208_942, "digest": f"sha256:{layer}"}],
                },
                separators=(",", ":"),
            )
            digest = "sha256:" + hashlib.sha256(manifest.encode()).hexdigest()
            tag = "latest" if i == each - 1 else "previous" if i == each - 2 else None
            image = Image(account, tag, manifest, name, "application/vnd.oci.image.manifest.v1+json", digest)
            image.image_pushed_at = now - 60 if tag else old + i
            repository.images.append(image)
            if i == 0:
                oldest.append(digest)
    registry = f"{account}.dkr.ecr.{region}.amazonaws.com"
    # Fargate tasks are awsvpc: each gets a network interface in the default VPC.
    subnets = [s.id for s in ec2_backends[account][region].describe_subnets()][:1] if services else []
    network = {"awsvpcConfiguration": {"subnets": subnets, "securityGroups": [], "assignPublicIp": "DISABLED"}}
    for c in range(clusters):
        ecs.create_cluster(f"cluster-{c:02d}")
    for s in range(services):
        r = s % repositories
        family, cluster = f"svc-{s:04d}", f"cluster-{s % clusters:02d}"
        image = f"{registry}/repo-{r:05d}:latest" if s % 2 == 0 or not oldest else f"{registry}/repo-{r:05d}@{oldest[r]}"
        container = {
            "name": "app",
            "image": image,
            "essential": True,
            "cpu": 256,
            "memory": 512,
            "logConfiguration": {
                "logDriver": "awslogs",
                "options": {"awslogs-group": f"/ecs/{family}", "awslogs-region": region, "awslogs-stream-prefix": "ecs"},
            },
        }
        td = ecs.register_task_definition(
            family,
            [container],
            requires_compatibilities=["FARGATE"],
            cpu="256",
            memory="512",
            runtime_platform={"cpuArchitecture": "ARM64", "operatingSystemFamily": "LINUX"},
        )
        ecs.create_service(
            cluster,
            family,
            1,
            td.arn,
            launch_type="FARGATE",
            network_configuration=network,
            tags=[{"key": "autopilot:deploy", "value": "on"}],
        )
        ecs.run_task(cluster, td.arn, 1, None, f"ecs-svc/{family}", None, "FARGATE", network, group=f"service:{family}")
    return {"repositories": repositories, "images": repositories * each, "services": services, "clusters": clusters}


def _bench_stats(region: str) -> dict[str, Any]:
    from moto.ecr.models import ecr_backends
    from moto.logs.models import logs_backends

    ecr = ecr_backends[DEFAULT_ACCOUNT][region]
    logs = logs_backends[DEFAULT_ACCOUNT][region]
    return {
        "repositories": len(ecr.repositories),
        "images": sum(len(r.images) for r in ecr.repositories.values()),
        "logGroups": len(logs.groups),
        # The emulator's own CPU time so far, every thread: the bench reads
        # it before and after a run, for the share of wall time that was
        # moto serving the run's calls.
        "cpuSeconds": time.process_time(),
        "cpuByOperation": _cpu_by_operation(),
    }


# Operation → [requests, CPU seconds of the threads that served them].
_OPERATION_CPU: dict[str, list[float]] = {}
_OPERATION_CPU_LOCK = threading.Lock()


def _operation(environ: dict[str, Any]) -> str:
    """The AWS operation of a request: its ``X-Amz-Target`` (``AmazonEC2ContainerRegistry_V20150921.DescribeImages``
    → ``DescribeImages``), else its method and first two path segments (REST APIs: Lambda, Scheduler)."""
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        return target.rsplit(".", 1)[-1]
    segments = [s for s in environ.get("PATH_INFO", "").split("/") if s][:2]
    return f"{environ.get('REQUEST_METHOD', '')} /{'/'.join(segments)}"


def _count_cpu(operation: str, seconds: float) -> None:
    with _OPERATION_CPU_LOCK:
        entry = _OPERATION_CPU.setdefault(operation, [0, 0.0])
        entry[0] += 1
        entry[1] += seconds


def _cpu_by_operation() -> dict[str, dict[str, float]]:
    with _OPERATION_CPU_LOCK:
        return {op: {"requests": int(n), "cpuSeconds": cpu} for op, (n, cpu) in _OPERATION_CPU.items()}


_INSTALL_ERROR: list[str] = []


def _install() -> None:
    try:
        _install_ecr()
        _install_ecs()
        _install_lambda()
    except Exception as error:  # make it loud: every request reports it
        import traceback

        _INSTALL_ERROR.append("".join(traceback.format_exception(error)))
        print(_INSTALL_ERROR[0], file=sys.stderr, flush=True)
    finally:
        _READY.set()


def _json_response(start_response: Any, status: int, body: Any) -> list[bytes]:
    data = json.dumps(body).encode()
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}.get(status, "Error")
    start_response(f"{status} {reason}", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def _handle_autopilot(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    from werkzeug.wrappers import Request

    request = Request(environ)
    path, method = request.path.rstrip("/"), request.method
    try:
        if path == "/autopilot-api":
            return _json_response(start_response, 200, {"autopilot": True, "newDeploymentStatus": _SETTINGS["new_deployment_status"]})
        if path == "/autopilot-api/ecr/blobs" and method in ("PUT", "POST"):
            args = request.args
            account = args.get("account") or DEFAULT_ACCOUNT
            region = args.get("region") or DEFAULT_REGION
            repository = _ecr_repository(account, region, args.get("repository") or "")
            data = request.get_data()
            digest = args.get("digest") or "sha256:" + hashlib.sha256(data).hexdigest()
            if not SHA256.match(digest):
                raise ValueError(f"not a sha256 digest: {digest}")
            status = int(args.get("status") or 200)
            with _LOCK:
                _blobs(repository)[digest] = {"data": data, "status": status}
            return _json_response(start_response, 200, {"digest": digest, "size": len(data), "repositoryName": repository.name})
        if path == "/autopilot-api/ecr/blobs" and method == "GET":
            args = request.args
            repository = _ecr_repository(args.get("account") or DEFAULT_ACCOUNT, args.get("region") or DEFAULT_REGION, args.get("repository") or "")
            with _LOCK:
                blob = _blobs(repository).get(args.get("digest") or "")
            if blob is None:
                return _json_response(start_response, 404, {"error": "no such blob"})
            if blob["status"] != 200:
                return _json_response(start_response, blob["status"], {"error": "injected failure"})
            start_response(
                "200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(blob["data"])))]
            )
            return [blob["data"]]
        if path == "/autopilot-api/ecs/service-deployments/status" and method == "POST":
            return _json_response(start_response, 200, _set_deployment_status(request.get_json(force=True)))
        if path == "/autopilot-api/ecs/new-deployment-status" and method == "POST":
            status = request.get_json(force=True).get("status")
            if status not in DEPLOYMENT_STATUSES:
                raise ValueError(f"status must be one of {', '.join(DEPLOYMENT_STATUSES)}")
            _SETTINGS["new_deployment_status"] = status
            return _json_response(start_response, 200, {"status": status})
        if path == "/autopilot-api/ecr/image-status" and method == "POST":
            body = request.get_json(force=True)
            status = body.get("imageStatus")
            if status not in IMAGE_STATUSES:
                raise ValueError(f"imageStatus must be one of {', '.join(IMAGE_STATUSES)}")
            repository = _ecr_repository(body.get("account") or DEFAULT_ACCOUNT, body.get("region") or DEFAULT_REGION, body.get("repositoryName") or "")
            image = repository._get_image(None, body.get("imageDigest"))
            with _LOCK:
                if status == "ACTIVE" and _image_status(image) != "ACTIVE":
                    image.__dict__["_ap_last_activated_at"] = _now()
                if status == "ARCHIVED" and _image_status(image) != "ARCHIVED":
                    image.__dict__["_ap_last_archived_at"] = _now()
                image.__dict__["_ap_status"] = status
            return _json_response(start_response, 200, {"imageDigest": image.get_image_digest(), "imageStatus": status})
        if path == "/autopilot-api/bench/world" and method == "POST":
            return _json_response(start_response, 200, _bench_world(request.get_json(force=True)))
        if path == "/autopilot-api/bench/stats" and method == "GET":
            return _json_response(start_response, 200, _bench_stats(request.args.get("region") or DEFAULT_REGION))
        return _json_response(start_response, 404, {"error": f"no test endpoint {method} {path}"})
    except (ValueError, TypeError) as error:
        return _json_response(start_response, 400, {"error": str(error)})
    except LookupError as error:
        return _json_response(start_response, 404, {"error": str(error)})
    except Exception as error:  # moto's own not-found exceptions and the like
        return _json_response(start_response, 404, {"error": f"{type(error).__name__}: {error}"})


class AutopilotApp:
    """moto's WSGI app with the test endpoints in front of it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/moto-api"):
            if path.rstrip("/") == "/moto-api/reset" and environ.get("REQUEST_METHOD") == "POST":
                _SETTINGS["new_deployment_status"] = "SUCCESSFUL"
            return self.inner(environ, start_response)
        _READY.wait()
        if _INSTALL_ERROR:
            return _json_response(start_response, 500, {"error": "autopilot_moto extensions failed", "detail": _INSTALL_ERROR[0]})
        if path == "/autopilot-api" or path.startswith("/autopilot-api/"):
            return _handle_autopilot(environ, start_response)
        # moto answers inside this call (its response is built, not streamed),
        # so the serving thread's CPU time here is the request's cost.
        started = time.thread_time()
        try:
            return self.inner(environ, start_response)
        finally:
            _count_cpu(_operation(environ), time.thread_time() - started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the test emulator listens on loopback only")
    os.environ.setdefault("MOTO_PORT", str(args.port))

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    def stop(signum: int, frame: Any) -> None:
        sys.exit(0)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    inner = DomainDispatcherApplication(create_backend_app)
    inner.debug = True  # type: ignore[attr-defined]
    # As moto_server's run_simple(threaded=True), minus the reloader and banner.
    server = make_server(args.host, args.port, AutopilotApp(inner), threaded=True, request_handler=MotoRequestHandler)
    # Listening already: the extensions load while the first requests come in.
    threading.Thread(target=_install, name="autopilot-extensions", daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
