"""The download-failure ledger (sync/ledger.py), as zot's content_test.go tests its filters: table-driven steps
of record failure / due / success / forced retry against the backoff of 5 s doubling to 30 minutes, and the
ledger kept across a restart as plain data."""

from __future__ import annotations

import pytest

from connected_registry.sync.ledger import RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS, DownloadFailures

BROKEN = ["factory/app:v1: parent answered 404 for blob sha256:aa"]


def apply(ledger: DownloadFailures, step: tuple) -> object:
    """One step of a case: (action, time, argument...) -> what the ledger answered."""
    action, now, *rest = step
    if action == "fail":
        return ledger.record(rest[0], BROKEN, now)
    if action == "whole":
        return ledger.record(rest[0], [], now)
    if action == "due":
        return ledger.due(now)
    if action == "forced":
        return ledger.due(now, force=True)
    if action == "retried":
        return ledger.retried(now)
    if action == "tried":
        return ledger.tried(now)
    raise AssertionError(action)


CASES = {
    "an empty ledger is never due, not even forced": (
        [("due", 0), ("forced", 0)], [False, False], {}),
    "a new failure is due after the first wait, not before": (
        [("fail", 100, "a"), ("due", 104.9), ("due", 105)], [True, False, True], {"a": BROKEN[0]}),
    "a forced retry (sync-now) is due at once": (
        [("fail", 100, "a"), ("forced", 100)], [True, True], {"a": BROKEN[0]}),
    "each failed retry doubles the wait": (
        [("fail", 0, "a"), ("retried", 5), ("due", 9.9), ("due", 10), ("retried", 10), ("due", 19.9), ("due", 20)],
        [True, None, False, True, None, False, True], {"a": BROKEN[0]}),
    "success empties the ledger and answers that it changed": (
        [("fail", 0, "a"), ("whole", 1, "a"), ("due", 1000)], [True, True, False], {}),
    "success of a repository that never failed changes nothing": (
        [("whole", 0, "a")], [False], {}),
    "the same failure again changes nothing and keeps the wait": (
        [("fail", 0, "a"), ("retried", 5), ("fail", 6, "a"), ("due", 9.9), ("due", 10)],
        [True, None, False, False, True], {"a": BROKEN[0]}),
    "another repository failing newly is asked again soon": (
        [("fail", 0, "a"), ("retried", 5), ("retried", 10), ("fail", 11, "b"), ("due", 16)],
        [True, None, None, True, True], {"a": BROKEN[0], "b": BROKEN[0]}),
    "a reconcile counts as a try: the next retry waits the current wait from then": (
        [("fail", 0, "a"), ("tried", 3), ("due", 7.9), ("due", 8)], [True, None, False, True], {"a": BROKEN[0]}),
    "a reconcile after failed retries puts the next one the current (doubled) wait away": (
        [("fail", 0, "a"), ("retried", 5), ("retried", 10), ("tried", 11), ("due", 30.9), ("due", 31)],
        [True, None, None, None, False, True], {"a": BROKEN[0]}),
    "a reconcile never brings a retry forward": (
        [("fail", 100, "a"), ("tried", 90), ("due", 104.9), ("due", 105)], [True, None, False, True], {"a": BROKEN[0]}),
}


@pytest.mark.parametrize("steps,answers,left", CASES.values(), ids=CASES.keys())
def test_download_failure_ledger(steps, answers, left):
    ledger = DownloadFailures()
    assert [apply(ledger, step) for step in steps] == answers
    assert ledger.to_data() == left


def test_the_wait_doubles_up_to_thirty_minutes_and_starts_again_once_all_is_whole():
    ledger = DownloadFailures()
    ledger.record("a", BROKEN, 0)
    waits, now = [], 0.0
    for _ in range(12):
        ledger.retried(now)
        waits.append(ledger.retry_at - now)
        now = ledger.retry_at
    assert waits == [5, 10, 20, 40, 80, 160, 320, 640, 1280, 1800, 1800, 1800]
    assert RETRY_FIRST_SECONDS == 5 and RETRY_MAX_SECONDS == 30 * 60
    ledger.record("a", [], now)
    ledger.record("b", BROKEN, now)
    assert ledger.retry_at == now + RETRY_FIRST_SECONDS and ledger.retry_delay == RETRY_FIRST_SECONDS


def test_a_success_that_empties_the_ledger_resets_the_wait():
    ledger = DownloadFailures()
    ledger.record("a", BROKEN, 0)
    for now in (5, 10, 20):
        ledger.retried(now)
    assert ledger.retry_delay == 40
    assert ledger.record("a", [], 21) is True
    assert ledger.retry_delay == RETRY_FIRST_SECONDS and not ledger


def test_many_failures_of_one_repository_keep_the_first_two_and_count_the_rest():
    ledger = DownloadFailures()
    ledger.record("a", ["one", "two", "three", "four"], 0)
    assert ledger.reasons["a"] == "one; two (and 2 more)"
    ledger.record("b", ["one", "two"], 0)
    assert ledger.reasons["b"] == "one; two"


def test_the_ledger_survives_a_restart_as_plain_data_and_is_asked_again_at_once():
    before = DownloadFailures()
    before.record("a", BROKEN, 1000)
    data = before.to_data()
    assert data == {"a": BROKEN[0]} and isinstance(data, dict)
    after = DownloadFailures.from_data(data)
    assert "a" in after and after.due(0)  # the backoff starts afresh: monotonic time began again
    data["b"] = "changed outside"
    assert "b" not in after, "the ledger holds its own copy"


@pytest.mark.parametrize("retry_at,now,poll", [(None, 0, 20), (100, 0, 20), (100, 90, 10), (100, 99.8, 1),
                                               (100, 150, 1)])
def test_a_long_poll_waits_no_longer_than_the_next_retry(retry_at, now, poll):
    ledger = DownloadFailures()
    if retry_at is not None:
        ledger.record("a", BROKEN, 0)
        ledger.retry_at = retry_at
    assert ledger.poll_seconds(now, 20) == poll
