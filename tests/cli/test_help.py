"""Every command's --help says what it does and how to give it what it needs."""

from __future__ import annotations

import pytest

from tests.support.processes import run_cli

REMOTE = ["list", "status", "sync-now", "resync", "gc", "deactivate", "outbox"]
LOCAL = ["serve", "reset-identity", "get-settings", "demo", "token create"]


@pytest.mark.parametrize("command", REMOTE + LOCAL)
def test_help_describes_the_command(command):
    result = run_cli(*command.split(), "--help")
    assert result.returncode == 0, result.stderr
    usage, _, rest = result.stdout.partition("\n\n")
    assert usage.startswith(f"usage: connected-registry {command}")
    description = rest.split("\n\n")[0]
    assert len(description.split()) >= 8, f"{command} --help has no real description:\n{result.stdout}"
    if command in REMOTE:
        for option in ("--registry URL", "--username TOKEN", "--password PASSWORD", "CONNECTED_REGISTRY_PASSWORD"):
            assert option in result.stdout, f"{command} --help lacks {option}"


def test_the_top_level_help_lists_every_command():
    result = run_cli("--help")
    for command in REMOTE + LOCAL:
        assert f"    {command.split()[0]} " in result.stdout, command
