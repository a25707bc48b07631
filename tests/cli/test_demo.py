"""`connected-registry demo`: three real instances, a push at the root that arrives at the leaf, and nothing left
running afterwards, whether it ends by itself (headless) or by Ctrl-C / SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path

import pytest

from tests.support.processes import ManagedProcess, run_cli, wait_until


def _pids(output: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"\(pid (\d+)\)", output)]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") >= 0  # exited, not yet reaped by init


def _folder(output: str) -> Path:
    return Path(re.search(r"Starting a three-layer hierarchy in (\S+) \.\.\.", output).group(1))


def test_the_demo_runs_to_the_end_headless_and_leaves_nothing_behind():
    result = run_cli("demo", "--headless", env={"COLUMNS": "100"}, timeout=180)
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    pids = _pids(output)
    assert len(pids) == 3, output
    assert re.search(r"arrived at the leaf\s+demo-leaf\s+after [\d.]+ s", output), output
    table = output[output.index("NAME "):]
    assert re.search(r"^demo-root\s+ReadWrite\s+Active\s+Online", table, re.M), table
    assert re.search(r"^└─ demo-middle\s+ReadWrite\s+Active\s+Online", table, re.M), table
    assert re.search(r"^   └─ demo-leaf\s+ReadOnly\s+Active\s+Online\s+\d+s ago", table, re.M), table
    assert "3 registries, 0 unhealthy, 0 stale" in table
    for command in ("skopeo copy", "connected-registry list --registry", "connected-registry sync-now", "/metrics"):
        assert command in output
    assert "stopped; nothing is left running" in output
    assert all(_gone(pid) for pid in pids), output
    assert not _folder(output).exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_the_demo_stops_every_instance_on_a_signal(signum):
    # Started as a script's background job would start it: with SIGINT inherited as ignored.
    demo = ManagedProcess(["sh", "-c", f'trap "" INT; exec "{sys.executable}" -m connected_registry demo'])
    try:
        wait_until(lambda: "Press Ctrl-C to stop them." in demo.log() or demo.process.poll() is not None,
                   timeout=120, what="the demo to be up")
        pids = _pids(demo.log())
        assert len(pids) == 3 and not any(_gone(pid) for pid in pids), demo.log()
        demo.process.send_signal(signum)
        assert demo.process.wait(timeout=60) == 0, demo.log()
        wait_until(lambda: "stopped; nothing is left running" in demo.log(), timeout=10, what="the last line")
        assert all(_gone(pid) for pid in pids), demo.log()
        assert not _folder(demo.log()).exists()
    finally:
        demo.stop()
