"""`savepoint create --stop-workers` without a broker: group members matched to directory
entries by member id, the errors naming who cannot be asked or did not stop, and the wait for
an empty group (progress lines, deadline, a member that was not asked joining meanwhile)."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka.admin import MemberDescription

from processor.tools.savepoint_format import SavepointError
from processor.tools.stop_workers import (
    Target,
    match_members,
    refusal,
    unknown_members_error,
    wait_until_gone,
)


def member(member_id: str) -> MemberDescription:
    return MemberDescription(member_id, "rdkafka", "/10.0.0.7", None)


def entry(member_id: str | None, port: int) -> dict[str, Any]:
    return {"url": f"http://w:{port}", "assignment": {"orders": [0]}, "time": 1.0,
            "member_id": member_id}


def test_members_match_entries_by_member_id() -> None:
    entries = {"w-a": entry("m-a", 1), "w-b": entry("m-b", 2),
               "w-gone": entry("m-gone", 3),  # a crashed worker's entry: not a member, not asked
               "w-old": entry(None, 4)}  # an entry written before member ids were published
    targets, unknown = match_members([member("m-b"), member("m-a"), member("m-x")], entries)
    assert targets == [Target("w-b", "http://w:2", "m-b"), Target("w-a", "http://w:1", "m-a")]
    assert [m.member_id for m in unknown] == ["m-x"]


def test_unknown_member_error_names_it_and_what_to_do() -> None:
    text = unknown_members_error("rev", [member("m-x")])
    assert text == ("application 'rev': 1 group member(s) without an entry in the worker "
                    "directory 'rev-workers' (a worker started without an HTTP port, "
                    "metrics_port, cannot be asked to stop): member m-x (client rdkafka on "
                    "10.0.0.7); stop it yourself, then run create without --stop-workers; "
                    "nothing was stopped")
    assert "\n" not in text


@pytest.mark.parametrize(("status", "body", "has_token", "says"), [
    (403, {"reason": "off"}, True, "does not allow remote stop: set remote_stop_token on the "
                                   "workers (PROCESSOR_REMOTE_STOP_TOKEN) and the same token here"),
    (403, {"reason": "token"}, False, "refused the token: set remote_stop_token here"),
    (403, {"reason": "token"}, True, "remote_stop_token here differs from the workers'"),
    (404, {}, True, "has no POST /stop"),
    (None, {"error": "Connection refused"}, True, "unreachable (Connection refused; is its "
                                                  "advertised_url reachable from here?)"),
    (500, {"error": "boom"}, True, "answered HTTP 500: boom"),
])
def test_refusals_name_the_worker_and_the_setting(status: int | None, body: dict[str, Any],
                                                   has_token: bool, says: str) -> None:
    text = refusal(Target("w-a", "http://w:1", "m-a"), status, body, has_token)
    assert text.startswith("worker w-a (http://w:1)") and says in text, text


def scripted(*rounds: list[str]) -> Callable[[], list[MemberDescription]]:
    """The group's members, one list per look; the last list repeats."""
    looks = list(rounds)

    def members() -> list[MemberDescription]:
        ids = looks.pop(0) if len(looks) > 1 else looks[0]
        return [member(i) for i in ids]
    return members


TARGETS = [Target("w-a", "http://w:1", "m-a"), Target("w-b", "http://w:2", "m-b")]


def test_wait_returns_once_the_group_is_empty() -> None:
    progress = io.StringIO()
    wait_until_gone(scripted(["m-a", "m-b"], ["m-b"], []), "rev", TARGETS, 30, progress)


def test_wait_names_the_workers_still_in_at_the_deadline() -> None:
    progress = io.StringIO()
    with pytest.raises(SavepointError) as got:
        wait_until_gone(scripted(["m-a", "m-b"], ["m-b"]), "rev", TARGETS, 2.5, progress)
    assert str(got.value).startswith("application 'rev': 1 worker(s) did not leave the group "
                                     "within 2.5s: worker w-b (http://w:2) (still in their")
    assert str(got.value).endswith("; nothing written")
    assert "savepoint: waiting for 1 of 2 worker(s) to leave the group: w-b" in progress.getvalue()


def test_wait_fails_at_once_when_a_member_that_was_not_asked_joins() -> None:
    with pytest.raises(SavepointError) as got:
        wait_until_gone(scripted(["m-a", "m-b"], ["m-new"]), "rev", TARGETS, 60, io.StringIO())
    assert "member m-new (client rdkafka on 10.0.0.7) joined the group while its workers " \
           "were stopping (restarted by an orchestrator? scale it to zero instead)" in str(got.value)
