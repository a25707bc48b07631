"""The repository list (SPEC 7.1, 7.2): a repository leaving a ReadOnly child's scope is hidden at once and
deleted only after seven days; one coming (back) into scope syncs; listings that fail delete nothing."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.sync.hierarchy import BOTH_TOP_TIERS, READER, WRITER
from tests.sync.inprocess import (FakeClock, basic_header, digest_at, eventually, forward, push_small_image,
                                  serve_on_free_port, start_root_for_leaf, start_runtime, url)

pytestmark = BOTH_TOP_TIERS  # the parent's side on the embedded stores and as a scale-out replica


async def _root_and_leaf(tmp_path: Path, clock, monkeypatch, repositories, parent_url=None, kind="auto"):
    parent = {"kind": kind, **({"endpoint": parent_url} if parent_url else {})}
    return await start_root_for_leaf(tmp_path, clock, monkeypatch, repositories=repositories, parent=parent)


async def test_leaving_the_scope_hides_at_once_and_deletes_after_seven_days(tmp_path: Path, monkeypatch):
    clock = FakeClock()
    root, document = await _root_and_leaf(tmp_path, clock, monkeypatch, ["factory/a", "factory/b"])
    leaf = await start_runtime(tmp_path / "leaf", document, clock)
    writer, reader = basic_header(*WRITER), basic_header(*READER)
    try:
        async with aiohttp.ClientSession() as session:
            a = await push_small_image(session, root, "factory/a", "v1", writer)
            b = await push_small_image(session, root, "factory/b", "v1", writer)
            for repository, digest in (("factory/a", a), ("factory/b", b)):
                await eventually(lambda r=repository, d=digest: _has(session, leaf, r, d, reader), what=f"{repository}")

            document["repositories"] = ["factory/a"]
            (tmp_path / "leaf" / "desired.json").write_text(json.dumps(document))
            await eventually(lambda: _gone(session, leaf, "factory/b", reader), what="factory/b hidden")
            async def pending_removal():  # the clean-up task that reports it runs just after the change
                return {d["code"]: d for d in leaf.status_document()["statusDetails"]}.get("REPOSITORY_PENDING_REMOVAL")

            assert "factory/b" in (await eventually(pending_removal, what="REPOSITORY_PENDING_REMOVAL"))["description"]
            assert leaf.store.get_manifest("factory/b", b) is not None  # hidden, not deleted

            clock.advance(6 * 24 * 3600)
            assert await leaf.retention.remove_out_of_scope() == []
            clock.advance(2 * 24 * 3600)
            assert await leaf.retention.remove_out_of_scope() == ["factory/b"]
            assert leaf.store.get_manifest("factory/b", b) is None
            assert await digest_at(session, leaf, "factory/a", "v1", reader) == a
            assert "REPOSITORY_PENDING_REMOVAL" not in {d["code"] for d in leaf.status_document()["statusDetails"]}

            # back in scope: it syncs again from the parent
            document["repositories"] = ["factory/*"]
            (tmp_path / "leaf" / "desired.json").write_text(json.dumps(document))
            await eventually(lambda: _has(session, leaf, "factory/b", b, reader), timeout=40, what="factory/b back")
    finally:
        await leaf.stop()
        await root.stop()


async def test_failing_or_truncated_listings_delete_nothing(tmp_path: Path, monkeypatch):
    """A plain-kind leaf behind a proxy that can break the parent's tag listing in several ways."""
    clock = FakeClock()
    mode = {"value": "pass"}
    upstream: dict = {}

    async def proxy(request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/tags/list") and mode["value"] != "pass":
            if mode["value"] == "truncated" and "last=" not in request.query_string:
                return web.json_response({"name": "factory/app", "tags": ["a"]},
                                         headers={"Link": '</v2/factory/app/tags/list?n=1&last=a>; rel="next"'})
            status = {"401": 401, "403": 403, "500": 500, "truncated": 500}[mode["value"]]
            return web.json_response({"errors": [{"code": "UNKNOWN", "message": "injected"}]}, status=status)
        return await forward(request, f"{upstream['url']}{request.path_qs}")

    runner, proxy_port = await serve_on_free_port(proxy)

    root, document = await _root_and_leaf(tmp_path, clock, monkeypatch, ["factory/app"],
                                          parent_url=f"http://127.0.0.1:{proxy_port}", kind="plain")
    upstream["url"] = f"http://127.0.0.1:{root.port}"
    leaf = await start_runtime(tmp_path / "leaf", document, clock)
    writer, reader = basic_header(*WRITER), basic_header(*READER)
    try:
        async with aiohttp.ClientSession() as session:
            a = await push_small_image(session, root, "factory/app", "a", writer)
            b = await push_small_image(session, root, "factory/app", "b", writer)
            leaf.sync_now()
            await eventually(lambda: _has(session, leaf, "factory/app", b, reader, "b"), what="a and b at the leaf")
            async with session.delete(url(root, "/v2/factory/app/manifests/b"), headers=writer) as response:
                assert response.status == 202
            for failure in ("401", "403", "500", "truncated"):
                mode["value"] = failure
                errors_before = leaf.engine.state.errors
                leaf.sync_now()
                await eventually(lambda: _async_true(leaf.engine.state.errors > errors_before), what=f"{failure} seen")
                assert await digest_at(session, leaf, "factory/app", "b", reader) == b, failure
                assert await digest_at(session, leaf, "factory/app", "a", reader) == a, failure
            mode["value"] = "pass"  # a complete listing without b is a positive signal
            leaf.sync_now()
            await eventually(lambda: _gone(session, leaf, "factory/app", reader, "b"), what="b deleted after a full listing")
    finally:
        await leaf.stop()
        await root.stop()
        await runner.cleanup()


async def _async_true(value) -> bool:
    return value


async def _has(session, runtime, repository, digest, headers, tag="v1") -> bool:
    return await digest_at(session, runtime, repository, tag, headers) == digest


async def _gone(session, runtime, repository, headers, tag="v1") -> bool:
    return await digest_at(session, runtime, repository, tag, headers) is None
