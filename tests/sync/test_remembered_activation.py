"""A child that was Active and restarts while no endpoint of its parent answers is still deployed: it reports its
last known activation (`Active`, with PARENT_UNREACHABLE), in its status and in its reported properties, not
`Inactive`; and it asks the parent again once the link returns, which has the last word (issue 16)."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.support.relay import TcpRelay
from tests.sync.hierarchy import BOTH_TOP_TIERS, sync_token_for
from tests.sync.inprocess import (FakeClock, basic_header, eventually, reported_properties, start_root_for_leaf,
                                  start_runtime, url)

pytestmark = BOTH_TOP_TIERS  # the parent's side on the embedded stores and as a scale-out replica

ACTIVATE = b"POST /acr/connected/v1/registries/line1-leaf/activate"


async def _async(value):
    return value


def codes(document: dict) -> set[str]:
    return {detail["code"] for detail in document["statusDetails"]}


async def active_and_online(leaf) -> dict:
    await eventually(lambda: _async(leaf.status_document()["activation"]["status"] == "Active"
                                    and leaf.status_document()["connectionState"] == "Online"),
                     timeout=30, what="the leaf Active and Online")
    return leaf.status_document()["activation"]


async def test_an_active_child_restarted_while_no_parent_endpoint_answers_reports_active_then_confirms(
        tmp_path: Path, monkeypatch):
    clock = FakeClock()
    root, document = await start_root_for_leaf(tmp_path, clock, monkeypatch)
    first, second = await TcpRelay(root.port).start(), await TcpRelay(root.port).start()
    document["parent"].update(endpoint=first.url, alternateEndpoints=[second.url], connectTimeout="PT1S")
    leaf = await start_runtime(tmp_path / "leaf", document, clock)
    try:
        activation = await active_and_online(leaf)
        await leaf.stop()
        await first.set("refuse")
        await second.set("silent")
        leaf = await start_runtime(tmp_path / "leaf", document, clock)
        assert leaf.status_document()["activation"] == activation  # from the first moment, not Inactive

        def unreachable_and_active(document: dict) -> bool:
            return document.get("activation") == activation and "PARENT_UNREACHABLE" in codes(document)

        await eventually(lambda: _async(unreachable_and_active(leaf.status_document())
                                        and unreachable_and_active(reported_properties(tmp_path / "leaf"))),
                         timeout=30, what="Active with PARENT_UNREACHABLE, in the status and the reported properties")
        assert leaf.status_document()["connectionState"] == "Offline"
        asked_before = bytes(first.requests).count(ACTIVATE)
        await first.set("forward")
        assert await active_and_online(leaf) == activation
        assert bytes(first.requests).count(ACTIVATE) == asked_before + 1, "not confirmed at the parent"
        assert "PARENT_UNREACHABLE" not in codes(leaf.status_document())
    finally:
        await leaf.stop()
        await root.stop()
        await first.close()
        await second.close()


async def test_a_child_deactivated_while_it_was_away_learns_it_when_the_link_returns_and_stays_inactive(
        tmp_path: Path, monkeypatch):
    clock = FakeClock()
    root, document = await start_root_for_leaf(tmp_path, clock, monkeypatch)
    first = await TcpRelay(root.port).start()
    document["parent"].update(endpoint=first.url, connectTimeout="PT1S")
    leaf = await start_runtime(tmp_path / "leaf", document, clock)
    try:
        activation = await active_and_online(leaf)
        await leaf.stop()
        await first.set("refuse")
        name, password, _ = sync_token_for("line1-leaf")
        async with aiohttp.ClientSession() as session:
            async with session.post(url(root, "/acr/connected/v1/registries/line1-leaf/deactivate"),
                                    headers=basic_header(name, password)) as response:
                assert response.status == 200, await response.text()
        leaf = await start_runtime(tmp_path / "leaf", document, clock)
        await eventually(lambda: _async("PARENT_UNREACHABLE" in codes(leaf.status_document())), timeout=30,
                         what="PARENT_UNREACHABLE")
        assert leaf.status_document()["activation"] == activation  # it cannot know yet
        await first.set("forward")
        await eventually(lambda: _async(leaf.status_document()["activation"]["status"] == "Inactive"
                                        and "DEACTIVATED" in codes(leaf.status_document())),
                         timeout=30, what="the parent's word: Inactive, DEACTIVATED")
        await leaf.stop()
        leaf = await start_runtime(tmp_path / "leaf", document, clock)
        assert leaf.status_document()["activation"]["status"] == "Inactive"  # kept: never Active again by itself
    finally:
        await leaf.stop()
        await root.stop()
        await first.close()
