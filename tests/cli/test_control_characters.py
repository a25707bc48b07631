"""`list` and `status` print what instances say without control characters (issue 14 finding 8): text from a parent
gone wrong, or a child's report kept from before reports were checked, cannot retitle the terminal, move the cursor
or draw a registry that is not there."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

from aiohttp import web

from tests.support.processes import free_port, wait_until
from tests.support.threaded import ThreadedApp
from tests.sync.hierarchy import start_instance
from tests.sync.instance_api import CONTROL, activate, operator_cli, status_of

ESCAPES = "\x1b]0;pwned\x07\x1b[2J\x1b[H\x9b31mforged\rline9-fake  ReadOnly  Active  Online\n\x08\x7f"


class HostileParent(ThreadedApp):
    """A connected parent whose refusal of the activation carries terminal escape sequences."""

    name = "hostile parent"

    async def make_app(self):
        app = web.Application()
        app.router.add_get("/acr/connected/v1/info", self._info)
        app.router.add_post("/acr/connected/v1/registries/{child}/activate", self._refuse)
        return app

    async def _info(self, request):
        return web.json_response({"kind": "connected-registry", "apiVersion": "1"})

    async def _refuse(self, request):
        return web.json_response({"errors": [{"code": "ALREADY_ACTIVE", "message": ESCAPES}]}, status=409)


def assert_printable(result) -> None:
    assert result.returncode == 0, result.stderr
    assert not CONTROL.search(result.stdout), f"control characters printed: {result.stdout!r}"
    assert "pwned" in result.stdout and "forged" in result.stdout, result.stdout  # the text stays, readable
    assert not any(line.startswith("line9-fake") for line in result.stdout.splitlines()), result.stdout


def test_status_and_list_print_a_parents_message_without_control_characters(tmp_path: Path):
    port = free_port()
    parent = HostileParent()
    parent.serve(port)
    address = type("Address", (), {"url": f"http://127.0.0.1:{port}", "host": f"127.0.0.1:{port}"})()
    leaf = start_instance(tmp_path, "line1-leaf", parent=address, repositories=["factory/*"])
    try:
        def refused() -> bool:
            details = status_of(leaf)["statusDetails"]
            return any(detail["code"] == "ALREADY_ACTIVE" and "pwned" in detail["description"] for detail in details)

        wait_until(refused, what="the parent's refusal in the leaf's status details")
        assert_printable(operator_cli(leaf, "status"))
        assert_printable(operator_cli(leaf, "list", env={"COLUMNS": "400"}))
    finally:
        leaf.stop()
        parent.stop()


def test_list_prints_a_report_kept_from_before_reports_were_checked_without_control_characters(tmp_path: Path):
    from connected_registry.storage import RegistryStore

    root = start_instance(tmp_path, "factory-root", children=[("line1-leaf", "ReadOnly")])
    try:
        activate(root, "line1-leaf", str(uuid.uuid4()))
        root.process.stop()
        report = {"name": "line1-leaf", "mode": "ReadOnly", "connectionState": "\x1b]0;pwned\x07Online",
                  "statusDetails": [{"type": "Sync", "severity": "Error", "code": "DISK_ERROR",
                                     "description": ESCAPES}],
                  "children": [{"name": "line9-\x1b[2Kforged", "mode": "ReadOnly", "activation": {"status": "Active"},
                                "connectionState": "Online", "report": {"connectionState": "Online"}}]}

        async def keep_report() -> None:  # as a version that took any report stored it
            async with RegistryStore(str(root.process.data_dir)) as store:
                await store.control.record_report("line1-leaf", report, "2026-01-01T00:00:00Z")

        asyncio.run(keep_report())
        root.process.restart()
        listing = operator_cli(root, "list", env={"COLUMNS": "400"})
        assert_printable(listing)
        assert "line9-[2Kforged" in listing.stdout, listing.stdout
        as_json = operator_cli(root, "list", "--json")
        assert_printable(as_json)
        assert json.loads(as_json.stdout)["children"][0]["children"][0]["name"] == "line9-[2Kforged"
    finally:
        root.stop()
