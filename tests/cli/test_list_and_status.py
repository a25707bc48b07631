"""`list` and `status` against a running three-layer hierarchy: what an operator reads at 3 a.m."""

from __future__ import annotations

import json

from tests.cli.conftest import FRESH_REPORTS
from tests.support.processes import run_cli, wait_until
from tests.sync.hierarchy import OPERATOR, READER, start_instance
from tests.sync.instance_api import operator_cli


def _listing(hierarchy, columns: int = 100):
    def complete():
        result = operator_cli(hierarchy.root, "list", env={"COLUMNS": str(columns)})
        assert result.returncode == 0, result.stderr
        return result if "line1-leaf" in result.stdout and "never reported" not in result.stdout else None

    return wait_until(complete, timeout=60, interval=0.5, what="the leaf's report at the root")


def test_list_draws_the_tree_with_each_registrys_state_within_the_terminal_width(hierarchy):
    result = _listing(hierarchy, columns=100)
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["NAME", "MODE", "ACTIVATION", "STATE"], result.stdout
    assert all(len(line) <= 100 for line in lines), result.stdout
    root, middle, leaf = (next(line for line in lines if name in line)
                          for name in ("factory-root", "line1-middle", "line1-leaf"))
    assert root.startswith("factory-root") and "ReadWrite" in root and "Active" in root
    assert middle.startswith("└─ line1-middle") and "ReadWrite" in middle and "Online" in middle
    assert leaf.startswith("   └─ line1-leaf") and "ReadOnly" in leaf and "Active" in leaf
    assert lines[-1] == "3 registries, 0 unhealthy, 0 stale", result.stdout


def test_list_fits_a_narrow_terminal_and_json_gives_the_document(hierarchy):
    _listing(hierarchy)
    narrow = operator_cli(hierarchy.root, "list", env={"COLUMNS": "60"})
    assert narrow.returncode == 0 and all(len(line) <= 60 for line in narrow.stdout.splitlines()), narrow.stdout
    as_json = operator_cli(hierarchy.root, "list", "--json")
    document = json.loads(as_json.stdout)
    middle = document["children"][0]
    assert document["name"] == "factory-root" and middle["name"] == "line1-middle"
    assert middle["children"][0]["name"] == "line1-leaf" and middle["children"][0]["report"]["mode"] == "ReadOnly"


def test_status_summarises_the_reported_document(hierarchy):
    _listing(hierarchy)
    leaf = operator_cli(hierarchy.leaf, "status")
    assert leaf.returncode == 0, leaf.stderr
    first, *rest = leaf.stdout.splitlines()
    assert first.split() == ["line1-leaf", "ReadOnly", "Active", "Online"], leaf.stdout
    summary = "\n".join(rest)
    assert f"parent       {hierarchy.middle.url} (connected)" in summary
    assert "last sync    20" in summary and "uploads      0 pending, 0 rejected" in summary
    assert "details      none: nothing is wrong" in summary
    root = operator_cli(hierarchy.root, "status")
    assert root.stdout.splitlines()[0].split() == ["factory-root", "ReadWrite", "(root)", "Active", "Online"]
    assert "parent       none: this is a root" in root.stdout
    document = json.loads(operator_cli(hierarchy.leaf, "status", "--json").stdout)
    assert document["name"] == "line1-leaf" and document["parent"]["kind"] == "connected"


def test_credentials_come_from_the_environment_and_are_never_printed(hierarchy):
    env = {"CONNECTED_REGISTRY_USERNAME": READER[0], "CONNECTED_REGISTRY_PASSWORD": READER[1]}
    good = run_cli("status", "--registry", hierarchy.root.url, env=env)
    assert good.returncode == 0 and "factory-root" in good.stdout, good.stderr
    wrong = "not-the-password-4711"
    refused = run_cli("list", "--registry", hierarchy.root.url, env={**env, "CONNECTED_REGISTRY_PASSWORD": wrong})
    assert refused.returncode == 1
    assert "(401)" in refused.stderr and "CONNECTED_REGISTRY_PASSWORD" in refused.stderr, refused.stderr
    flagged = run_cli("list", "--registry", hierarchy.root.url, "--username", OPERATOR[0], "--password", wrong)
    for result in (good, refused, flagged):
        assert wrong not in result.stdout + result.stderr and READER[1] not in result.stdout + result.stderr
    anonymous = run_cli("status", "--registry", hierarchy.root.url,
                        env={"CONNECTED_REGISTRY_USERNAME": None, "CONNECTED_REGISTRY_PASSWORD": None})
    assert anonymous.returncode == 1 and "--username and --password" in anonymous.stderr, anonymous.stderr
    unreachable = run_cli("status", "--registry", "http://127.0.0.1:9", env=env)
    assert unreachable.returncode != 0 and "cannot reach http://127.0.0.1:9" in unreachable.stderr


def test_list_marks_a_child_that_went_silent_as_stale(tmp_path):
    """A leaf that stops reporting (power cut, link gone) is marked STALE after three of the root's report
    intervals, with how long it has been silent, and counted in the footer."""
    root = start_instance(tmp_path, "factory-root", children=[("line1-leaf", "ReadOnly")], extra=FRESH_REPORTS)
    leaf = start_instance(tmp_path, "line1-leaf", parent=root, repositories=["factory/*"], extra=FRESH_REPORTS)
    try:
        def listing() -> str:
            result = operator_cli(root, "list", env={"COLUMNS": "120"})
            assert result.returncode == 0, result.stderr
            return result.stdout

        wait_until(lambda: "Online" in next((line for line in listing().splitlines() if "line1-leaf" in line), ""),
                   timeout=60, interval=0.5, what="the leaf Online in the listing")
        leaf.stop()
        def marked_stale() -> str | None:
            text = listing()
            return text if text.splitlines()[-1].endswith(", 1 stale") else None

        stale = wait_until(marked_stale, timeout=90, interval=1, what="the silent leaf marked stale")
        line = next(line for line in stale.splitlines() if "line1-leaf" in line)
        assert "STALE, silent" in line, stale
        assert stale.splitlines()[-1] == "2 registries, 0 unhealthy, 1 stale", stale
    finally:
        leaf.stop()
        root.stop()
