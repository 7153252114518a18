"""A fault-injecting HTTP proxy for ecr-autopilot's tests (loopback only).

Run with the tool virtualenv's python (standard library only)::

    python tests/emulator/fault_proxy.py --port PORT --upstream http://127.0.0.1:MOTO_PORT

It sits between the function binaries (``AWS_ENDPOINT_URL`` points at it) and
the local AWS (``autopilot_moto.py``), forwards every request unchanged (the
``Host`` header too, so URLs the local AWS builds from it, like
``GetDownloadUrlForLayer``'s, lead back through the proxy), and counts calls per
operation. An operation is the ``X-Amz-Target`` header (JSON protocols: ECS,
ECR, CloudWatch Logs, EventBridge), else ``METHOD /path`` (REST protocols:
Lambda, EventBridge Scheduler, blob downloads).

Control endpoints (JSON in and out), answered by the proxy itself:

- ``POST /fault-proxy/plan`` ``{"faults": [{"operation": OP, "calls": [1, 3] | "all",
  "kind": KIND, "latencyMs": 300}]}`` replaces the plan and clears the counters.
  KIND is ``throttle`` (the protocol's throttling error: HTTP 400
  ``ThrottlingException`` for JSON protocols, HTTP 429 ``TooManyRequestsException``
  for Lambda, HTTP 429 ``ThrottlingException`` for other REST APIs), ``500``,
  ``503``, ``reset`` (the request is read, then the connection is closed with a
  TCP RST and no response; the local AWS never sees it), ``reset-after`` (the
  request is forwarded and done, then the connection is reset: a lost answer)
  or ``latency`` (``latencyMs`` of delay, then the
  real answer). Call numbers count from 1 per operation.
- ``GET /fault-proxy/calls`` -> ``{"calls": {OP: n}, "injected": {OP: n}}``.
- ``POST /fault-proxy/reset`` clears the plan and the counters.

With ``--deadline-ms N`` it stands in front of a Lambda Runtime API instead
(cargo-lambda's, whose ``Lambda-Runtime-Deadline-Ms`` is a fixed ``600000``
rather than a wall-clock time) and rewrites that header of every next
invocation to now + N ms, as Lambda does with the function's timeout: the
tests' way to give a function a short deadline.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import struct
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.plan: list[dict[str, Any]] = []
        self.calls: dict[str, int] = {}
        self.injected: dict[str, int] = {}

    def clear(self, plan: list[dict[str, Any]] | None = None) -> None:
        with self.lock:
            self.plan = plan or []
            self.calls = {}
            self.injected = {}

    def count(self, operation: str) -> dict[str, Any] | None:
        """Counts one call of ``operation``; returns the fault planned for it."""
        with self.lock:
            n = self.calls.get(operation, 0) + 1
            self.calls[operation] = n
            for fault in self.plan:
                if fault.get("operation") != operation:
                    continue
                calls = fault.get("calls", "all")
                if calls == "all" or n in calls:
                    self.injected[operation] = self.injected.get(operation, 0) + 1
                    return fault
            return None


STATE = State()


def operation_of(method: str, path: str, headers: Any) -> str:
    target = headers.get("X-Amz-Target")
    if target:
        return target
    return f"{method} {urllib.parse.urlsplit(path).path}"


def throttle_shape(operation: str, has_target: bool) -> tuple[int, str]:
    if has_target:
        return 400, "ThrottlingException"
    if operation.split(" ", 1)[-1].startswith("/2015-03-31/") or "/functions/" in operation:
        return 429, "TooManyRequestsException"
    return 429, "ThrottlingException"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream: urllib.parse.SplitResult
    deadline_ms: int | None = None

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reply(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, value: Any) -> None:
        self._reply(status, json.dumps(value).encode(), [("Content-Type", "application/json")])

    def _control(self, body: bytes) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path == "/fault-proxy/plan" and self.command == "POST":
            plan = json.loads(body or b"{}").get("faults") or []
            STATE.clear(plan)
            self._json(200, {"faults": plan})
        elif path == "/fault-proxy/reset" and self.command == "POST":
            STATE.clear()
            self._json(200, {})
        elif path == "/fault-proxy/calls":
            with STATE.lock:
                self._json(200, {"calls": dict(STATE.calls), "injected": dict(STATE.injected)})
        else:
            self._json(404, {"message": f"no control endpoint {self.command} {path}"})

    def _reset_connection(self) -> None:
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def _handle(self) -> None:
        body = self._body()
        if self.path.startswith("/fault-proxy/"):
            self._control(body)
            return
        has_target = bool(self.headers.get("X-Amz-Target"))
        operation = operation_of(self.command, self.path, self.headers)
        fault = STATE.count(operation)
        kind = fault.get("kind") if fault else None
        if kind == "reset":
            self._reset_connection()
            return
        if kind == "throttle":
            status, code = throttle_shape(operation, has_target)
            payload = {"__type": code, "message": "Rate exceeded (injected by the fault proxy)"}
            content_type = "application/x-amz-json-1.1" if has_target else "application/json"
            self._reply(
                status, json.dumps(payload).encode(), [("Content-Type", content_type), ("x-amzn-ErrorType", code)]
            )
            return
        if kind in ("500", "503"):
            status = int(kind)
            code = "InternalFailure" if status == 500 else "ServiceUnavailableException"
            payload = {"__type": code, "message": f"injected {status} by the fault proxy"}
            self._reply(
                status, json.dumps(payload).encode(), [("Content-Type", "application/json"), ("x-amzn-ErrorType", code)]
            )
            return
        if kind == "latency":
            time.sleep(float(fault.get("latencyMs", 300)) / 1000.0)
        if kind == "reset-after":
            # The local AWS does the work; its answer is lost.
            self._forward(body, lose_response=True)
            return
        self._forward(body)

    def _forward(self, body: bytes, lose_response: bool = False) -> None:
        # The Runtime API's next-invocation request waits for an invocation.
        timeout = None if self.deadline_ms is not None else 120
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=timeout)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            if lose_response:
                self._reset_connection()
                return
            out = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP | {"content-length"}]
            if self.deadline_ms is not None:
                deadline = str(int(time.time() * 1000) + self.deadline_ms)
                out = [(k, deadline if k.lower() == "lambda-runtime-deadline-ms" else v) for k, v in out]
            self._reply(response.status, data, out)
        finally:
            conn.close()

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _handle


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:5000")
    parser.add_argument("--deadline-ms", type=int, default=None, help="rewrite Lambda-Runtime-Deadline-Ms to now + N")
    args = parser.parse_args(argv)
    Handler.upstream = urllib.parse.urlsplit(args.upstream)
    Handler.deadline_ms = args.deadline_ms
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
