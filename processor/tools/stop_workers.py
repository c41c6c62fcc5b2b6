"""`savepoint create --stop-workers`: stop every running worker of an application, so that the
offline create can take its savepoint.

Kafka cannot ask a group member to leave. The members come from DescribeConsumerGroups and are
matched by member id to the worker directory (`<name>-workers`, where each worker with an HTTP
port publishes its URL and member id); each is sent POST /stop, on which it does what SIGTERM
does (final checkpoint, leaves the group, exits 0). Every worker is first asked whether it
would accept (`?check=true`), so that a refusal stops none of them; then all are asked at once —
one at a time, the group would hand each stopped worker's partitions to the others, which would
restore them only to stop in turn — and the group is watched until it is empty.
"""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TextIO

import orjson
from confluent_kafka.admin import AdminClient

from processor.runtime.config import WorkerConfig
from processor.runtime.kafka.clients import admin_config
from processor.runtime.kafka.topics import TopicError, partition_counts
from processor.runtime.serving.directory import directory_topic, read_entries
from processor.tools.consumer_group import describe_member, members_now
from processor.tools.savepoint_format import SavepointError

JOIN_GRACE_S = 10.0  # a member that just joined publishes its directory entry after its assignment
HTTP_TIMEOUT_S = 10.0
YOURSELF = "stop it yourself, then run create without --stop-workers"


@dataclass(frozen=True)
class Target:
    """A running worker: its directory entry matched to its group member."""
    worker_id: str
    url: str
    member_id: str

    def __str__(self) -> str:
        return f"worker {self.worker_id} ({self.url})"


def match_members(members: list[Any], entries: dict[str, dict[str, Any]]
                  ) -> tuple[list[Target], list[Any]]:
    """The workers behind the members (by the member id in their directory entry), and the
    members no entry names."""
    by_member = {e.get("member_id"): (worker, e["url"]) for worker, e in entries.items()
                 if e.get("member_id")}
    targets, unknown = [], []
    for m in members:
        if m.member_id in by_member:
            worker, url = by_member[m.member_id]
            targets.append(Target(worker, url, m.member_id))
        else:
            unknown.append(m)
    return targets, unknown


def unknown_members_error(app: str, unknown: list[Any]) -> str:
    names = "; ".join(describe_member(m) for m in unknown)
    return (f"application {app!r}: {len(unknown)} group member(s) without an entry in the worker "
            f"directory {directory_topic(app)!r} (a worker started without an HTTP port, "
            f"metrics_port, cannot be asked to stop): {names}; {YOURSELF}; nothing was stopped")


def refusal(target: Target, status: int | None, body: dict[str, Any], has_token: bool) -> str:
    """Why a worker would not stop, as part of one error line."""
    if status is None:
        return (f"{target}: unreachable ({body['error']}; is its advertised_url reachable from "
                "here?)")
    if status == 403 and body.get("reason") == "off":
        return (f"{target} does not allow remote stop: set remote_stop_token on the workers "
                "(PROCESSOR_REMOTE_STOP_TOKEN) and the same token here")
    if status == 403 and body.get("reason") == "token":
        return f"{target} refused the token: " + (
            "remote_stop_token here differs from the workers'" if has_token else
            "set remote_stop_token here (PROCESSOR_REMOTE_STOP_TOKEN) to the workers' token")
    if status == 404:
        return f"{target} has no POST /stop (a processor version without remote stop?)"
    return f"{target} answered HTTP {status}: {body.get('error', body)}"


def post_stop(url: str, token: str | None, *, check: bool) -> tuple[int | None, dict[str, Any]]:
    """POST {url}/stop: the HTTP status (None when unreachable) and the JSON answer."""
    req = urllib.request.Request(url.rstrip("/") + "/stop" + ("?check=true" if check else ""),
                                 data=b"", method="POST")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, orjson.loads(exc.read())
        except orjson.JSONDecodeError:
            return exc.code, {"error": exc.reason}
    except (OSError, orjson.JSONDecodeError) as exc:  # refused, timed out, not our server
        reason = getattr(exc, "reason", exc)
        return None, {"error": str(reason)}


def _ask_all(targets: list[Target], token: str | None, check: bool
             ) -> list[tuple[Target, int | None, dict[str, Any]]]:
    with ThreadPoolExecutor(max_workers=min(32, len(targets))) as pool:
        answers = pool.map(lambda t: post_stop(t.url, token, check=check), targets)
        return [(t, *a) for t, a in zip(targets, answers, strict=True)]


def find_targets(admin: AdminClient, config: WorkerConfig, app: str, *,
                 grace_s: float = JOIN_GRACE_S) -> list[Target]:
    """The application's running workers; SavepointError naming any member that cannot be
    asked to stop (looked at again for `grace_s`: a new member publishes after its assignment)."""
    deadline = time.monotonic() + grace_s
    while True:
        members = members_now(admin, app)
        try:
            entries = read_entries(admin_config(config), directory_topic(app))
        except TopicError:
            entries = {}  # no worker ever had an HTTP port
        targets, unknown = match_members(members, entries)
        if not unknown or time.monotonic() > deadline:
            break
        time.sleep(1)
    if unknown:
        raise SavepointError(unknown_members_error(app, unknown))
    return targets


def wait_until_gone(members: Callable[[], list[Any]], app: str, targets: list[Target],
                    timeout_s: float, progress: TextIO) -> None:
    """Until the group (`members()`) is empty; SavepointError naming who is still in at the
    deadline, or at once a member that was not asked to stop (one restarted by an orchestrator)."""
    asked = {t.member_id: t for t in targets}
    deadline, told = time.monotonic() + timeout_s, time.monotonic()
    while True:
        now_in = members()
        if not now_in:
            return
        joined = [m for m in now_in if m.member_id not in asked]
        if joined:
            raise SavepointError(
                f"application {app!r}: {'; '.join(describe_member(m) for m in joined)} joined the "
                "group while its workers were stopping (restarted by an orchestrator? scale it to "
                "zero instead); nothing written")
        still = [asked[m.member_id] for m in now_in]
        if time.monotonic() > deadline:
            raise SavepointError(
                f"application {app!r}: {len(still)} worker(s) did not leave the group within "
                f"{timeout_s:g}s: {'; '.join(map(str, still))} (still in their final checkpoint? "
                "see their logs; a worker may take up to its transaction timeout); nothing written")
        if time.monotonic() - told > 2:
            told = time.monotonic()
            print(f"savepoint: waiting for {len(still)} of {len(targets)} worker(s) to leave the "
                  f"group: {', '.join(t.worker_id for t in still)}", file=progress, flush=True)
        time.sleep(0.5)


def stop_workers(config: WorkerConfig, app: str, *, timeout_s: float,
                 progress: TextIO = sys.stderr) -> list[Target]:
    """Stop every worker of `app` and wait until its group is empty; returns those stopped."""
    admin = AdminClient(admin_config(config))
    partition_counts(admin)  # an unreachable broker: the error names the setting, as create's
    targets = find_targets(admin, config, app)
    if not targets:
        print(f"savepoint: no worker of {app!r} is running", file=progress, flush=True)
        return []
    token = config.remote_stop_token
    secret = token.get_secret_value() if token is not None else None
    refused = [refusal(t, status, body, secret is not None)
               for t, status, body in _ask_all(targets, secret, check=True) if status != 200]
    if refused:
        raise SavepointError("; ".join(refused) + "; nothing was stopped")
    print(f"savepoint: asking {len(targets)} worker(s) to stop: "
          f"{', '.join(t.worker_id for t in targets)}", file=progress, flush=True)
    for t, status, body in _ask_all(targets, secret, check=False):
        if status != 202:  # e.g. stopped by someone else since the check: the group decides
            print(f"savepoint: {refusal(t, status, body, True)}; waiting for it to leave the "
                  "group all the same", file=progress, flush=True)
    wait_until_gone(lambda: members_now(admin, app), app, targets, timeout_s, progress)
    return targets
