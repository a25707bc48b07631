"""The registry sync result's rules, on a real data volume (sync/registry_sync.py): which trigger a registry sync
gets, which full reconciles are one, what stays owed, and that all of it is read back after a restart. The
behaviour end to end is in tests/edge/test_resync.py, tests/cli/test_resync.py and test_window_end.py."""

from __future__ import annotations

from pathlib import Path

from connected_registry.storage import RegistryStore
from connected_registry.sync.registry_sync import RegistrySync, token_fingerprint

NOW = 1_796_000_000.0


def reopened(path: Path, changes: list) -> RegistrySync:
    store = RegistryStore(str(path))
    return RegistrySync(store, lambda: NOW, lambda: changes.append(1))


async def test_a_new_volume_owes_its_initial_sync_and_a_success_is_kept_across_a_restart(tmp_path: Path):
    changes: list = []
    registry = reopened(tmp_path, changes)
    assert registry.owed and registry.document()["syncTrigger"] == "InitialSync"
    assert registry.document()["syncState"] == "Pending"
    await registry.check_sync_token(token_fingerprint("id", "sync", "one"))
    await registry.begin()
    assert registry.document()["syncState"] == "Syncing"
    await registry.finish(content_failed=False)
    assert not registry.owed and changes  # each change is reported at once
    kept = registry.document()
    assert kept["syncState"] == "Succeeded" and kept["lastSuccessfulSyncEndTime"] == kept["lastSyncEndTime"]
    registry.store.close()

    again = reopened(tmp_path, [])
    assert again.document() == kept and not again.owed
    await again.check_sync_token(token_fingerprint("id", "sync", "one"))  # the same token: nothing owed
    await again.begin()  # a daily reconcile, a sync-now: no registry sync
    await again.finish(content_failed=True)
    assert again.document() == kept
    again.store.close()


async def test_a_changed_sync_token_owes_a_sync_token_update(tmp_path: Path):
    registry = reopened(tmp_path, [])
    await registry.check_sync_token(token_fingerprint("id", "sync", "one"))
    await registry.begin()
    await registry.finish(content_failed=False)
    registry.store.close()
    assert token_fingerprint("id", "sync", "one") != token_fingerprint("id", "sync", "two")
    assert "one" not in token_fingerprint("id", "sync", "one")

    restarted = reopened(tmp_path, [])
    await restarted.check_sync_token(token_fingerprint("id", "sync", "two"))
    assert restarted.owed and restarted.document()["syncTrigger"] == "SyncTokenUpdate"
    restarted.store.close()


async def test_a_failed_or_timed_out_registry_sync_stays_owed_and_comes_back_as_recovery(tmp_path: Path):
    registry = reopened(tmp_path, [])
    await registry.want("ManualResync")
    await registry.stopped()  # the parent away before it could start
    assert registry.document()["syncState"] == "Failed" and registry.owed
    await registry.begin()
    assert registry.document()["syncTrigger"] == "RecoveryService"
    await registry.stopped(timed_out=True)
    assert registry.document()["syncState"] == "TimedOut" and registry.owed
    await registry.stopped(timed_out=True)  # nothing ran since: it stays as it was
    assert registry.document()["syncState"] == "TimedOut"
    await registry.begin()
    await registry.finish(content_failed=True)  # content the parent could not give: its own backoff retries it
    assert registry.document()["syncState"] == "Failed" and not registry.owed
    assert registry.document()["lastSuccessfulSyncEndTime"] is None
    registry.store.close()


async def test_a_resync_asked_while_one_runs_joins_it(tmp_path: Path):
    registry = reopened(tmp_path, [])
    await registry.begin()  # the initial sync
    await registry.want("ManualResync")
    assert registry.document()["syncTrigger"] == "InitialSync" and registry.document()["syncState"] == "Syncing"
    await registry.finish(content_failed=False)
    assert not registry.owed
    registry.store.close()


async def test_a_registry_sync_that_outlasts_the_message_ttl_timed_out_and_stays_owed(tmp_path: Path):
    clock = [NOW]
    registry = RegistrySync(RegistryStore(str(tmp_path)), lambda: clock[0], lambda: None, lambda: 2 * 86400)
    await registry.begin()
    clock[0] += 2 * 86400 + 1  # the parent dropped the events after the head it would go on from
    await registry.finish(content_failed=False)
    assert registry.document()["syncState"] == "TimedOut" and registry.owed
    assert registry.document()["lastSuccessfulSyncEndTime"] is None
    await registry.begin()
    assert registry.document()["syncTrigger"] == "RecoveryService"
    await registry.finish(content_failed=False)
    assert registry.document()["syncState"] == "Succeeded" and not registry.owed
    registry.store.close()
