"""Pure logic of the IoT Edge module: desired-patch bookkeeping (SPEC 3) and the reporting cadence (SPEC 4)."""

from __future__ import annotations

import asyncio

from connected_registry.edge.reporter import SYNCING_AFTER_SECONDS, Reporter, merge_diff
from connected_registry.edge.twin_source import DesiredDocument, merge_patch


def test_merge_patch_merges_objects_replaces_the_rest_and_null_deletes():
    document = {"a": {"b": 1, "c": 2}, "list": [1, 2], "gone": True}
    merged = merge_patch(document, {"a": {"b": 5, "c": None}, "list": [3], "gone": None, "new": {"x": 1}})
    assert merged == {"a": {"b": 5}, "list": [3], "new": {"x": 1}}
    assert document == {"a": {"b": 1, "c": 2}, "list": [1, 2], "gone": True}  # a copy, the original kept


def test_patches_apply_in_version_order_and_old_or_repeated_ones_are_skipped():
    desired = DesiredDocument()
    assert desired.offer({"mode": "ReadWrite", "$version": 2}) == "refetch"  # nothing read yet
    assert desired.replace({"mode": "ReadOnly", "repositories": ["a"], "$version": 4})
    assert desired.offer({"repositories": ["b"], "$version": 5}) == "merged"
    assert desired.document == {"mode": "ReadOnly", "repositories": ["b"], "$version": 5} and desired.version == 5
    assert desired.offer({"mode": "ReadWrite", "$version": 5}) == "skip"  # a full redelivery of what we have
    assert desired.offer({"mode": "ReadWrite", "$version": 3}) == "skip"  # late
    assert desired.offer({"mode": "ReadWrite", "$version": 7}) == "refetch"  # 6 was missed: read the whole twin
    assert desired.offer({"mode": "ReadWrite"}) == "refetch"  # no $version: the SDK would drop it; we read again
    assert desired.document["mode"] == "ReadOnly"


def test_a_full_document_replaces_the_raw_one_so_keys_deleted_meanwhile_go():
    desired = DesiredDocument()
    desired.replace({"mode": "ReadOnly", "anonymousPull": True, "$version": 2})
    assert desired.replace({"mode": "ReadOnly", "$version": 4})
    assert "anonymousPull" not in desired.document
    assert not desired.replace({"mode": "ReadOnly", "$version": 4})  # the same again: nothing to do


def test_merge_diff_is_the_merge_patch_between_two_documents():
    old = {"a": 1, "b": {"c": 2, "d": 3}, "e": [1], "gone": "x", "none": None}
    new = {"a": 1, "b": {"c": 2, "d": 4}, "e": [1, 2], "added": None, "none": None}
    patch = merge_diff(old, new)
    assert patch == {"b": {"d": 4}, "e": [1, 2], "gone": None}
    assert merge_patch(old, patch) == {k: v for k, v in new.items() if v is not None} | {"none": None}


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _reporter(state: dict, interval: float = 300.0):
    clock, written = _Clock(), []

    async def write(patch: dict, document: dict) -> None:
        written.append(patch)

    def document() -> dict:
        return {"activation": {"status": state["activation"]}, "connectionState": state["connection"],
                "statusDetails": state.get("details", []), "appliedDesiredVersion": state.get("version", 1),
                "lastActivityTime": f"t{clock.now}", "sync": {"bytesDownloaded": state.get("bytes", 0),
                                                              "nextWindowStart": state.get("window")}}

    return Reporter(document, write, lambda: interval, clock=clock), clock, written


async def test_state_changes_are_reported_at_once_and_counters_at_most_once_per_interval():
    state = {"activation": "Inactive", "connection": "Offline"}
    reporter, clock, written = _reporter(state)
    assert await reporter.report_once()  # the first report is the whole document
    assert written[0]["activation"] == {"status": "Inactive"} and written[0]["sync"]["bytesDownloaded"] == 0
    clock.now += 1
    state["bytes"] = 500
    assert not await reporter.report_once()  # a counter (and lastActivityTime) alone waits for reportInterval
    state["activation"], state["window"] = "Active", "2026-12-01T09:00:00Z"
    assert await reporter.report_once()
    assert written[-1] == {"activation": {"status": "Active"}, "sync": {"nextWindowStart": "2026-12-01T09:00:00Z"}}
    state["details"] = [{"code": "PARENT_UNREACHABLE"}]
    clock.now += 1
    assert await reporter.report_once() and written[-1] == {"statusDetails": [{"code": "PARENT_UNREACHABLE"}]}
    clock.now += 300
    assert await reporter.report_once()  # now the counters go
    assert written[-1]["sync"] == {"bytesDownloaded": 500} and "lastActivityTime" in written[-1]
    assert not await reporter.report_once()


async def test_syncing_is_reported_only_once_a_transfer_lasted_thirty_seconds():
    state = {"activation": "Active", "connection": "Online"}
    reporter, clock, written = _reporter(state)
    await reporter.report_once()
    state["connection"] = "Syncing"
    clock.now += 1
    assert not await reporter.report_once()
    clock.now += SYNCING_AFTER_SECONDS - 2
    assert not await reporter.report_once()
    clock.now += 2
    assert await reporter.report_once() and written[-1] == {"connectionState": "Syncing"}
    state["connection"] = "Online"
    clock.now += 1
    assert await reporter.report_once() and written[-1] == {"connectionState": "Online"}
    state["connection"] = "Syncing"  # a new transfer: its 30 s count from its start
    clock.now += 1
    assert not await reporter.report_once()


async def test_a_failed_write_is_sent_again_and_a_poke_reports_without_waiting():
    state = {"activation": "Inactive", "connection": "Offline"}
    clock, attempts = _Clock(), []

    async def flaky_write(patch: dict, document: dict) -> None:
        attempts.append(patch)
        if len(attempts) == 1:
            raise TimeoutError("edgeHub did not answer")

    reporter = Reporter(lambda: {"activation": {"status": state["activation"]}}, flaky_write, lambda: 300, clock=clock)
    task = asyncio.create_task(reporter.run())
    try:
        for _ in range(200):  # the retry after the failure comes after a 1 s backoff
            if len(attempts) >= 2:
                break
            await asyncio.sleep(0.02)
        assert attempts[0] == attempts[1] == {"activation": {"status": "Inactive"}}
        state["activation"] = "Active"
        reporter.poke()
        for _ in range(50):  # well under the 1 s poll
            if len(attempts) >= 3:
                break
            await asyncio.sleep(0.01)
        assert attempts[2] == {"activation": {"status": "Active"}}
    finally:
        task.cancel()
