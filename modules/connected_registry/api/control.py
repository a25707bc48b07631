"""The control API under /acr/connected/v1 (SPEC 11): activation, children's status, the event feed."""

from __future__ import annotations

import json
import re

from aiohttp import web

from connected_registry import __version__
from connected_registry.api import bundles
from connected_registry.api.bodies import read_body
from connected_registry.api.context import context, query_int
from connected_registry.durations import duration_seconds
from connected_registry.oci.errors import OciError
from connected_registry.identity import INSTANCE_NAME_RE
from connected_registry.printable import CONTROL_CHARACTERS
from connected_registry.storage.records import Child
from connected_registry.timefmt import utc_timestamp

API_VERSION = "1"
MAX_EVENTS = 1000
MAX_WAIT_SECONDS = 60
_MAX_BODY = 1 << 20
MIN_MESSAGE_TTL, MAX_MESSAGE_TTL = 24 * 3600, 90 * 24 * 3600  # P1D to P90D, as the settings allow (SPEC 3)


def _child_name(request: web.Request) -> str:
    name = request.match_info["child"]
    if not INSTANCE_NAME_RE.match(name):
        raise OciError("NAME_INVALID", "a connected registry name is 5 to 40 letters, digits, '_' or '-', "
                                       "starting with a letter")
    return name


async def _json_body(request: web.Request) -> dict:
    body = await read_body(request, _MAX_BODY, "body", too_large="BODY_TOO_LARGE", stalled="SIZE_INVALID")
    try:
        document = json.loads(body or b"{}")
    except (ValueError, RecursionError):  # RecursionError: nested too deep to be a real document
        raise OciError("REQUEST_INVALID", "the body must be a JSON object") from None
    if not isinstance(document, dict):
        raise OciError("REQUEST_INVALID", "the body must be a JSON object")
    return document


def _require_active_instance(request: web.Request, child: Child | None) -> None:
    """The feed and the status report answer only the active instance of a child (SPEC 6): a deactivated or
    replaced one is refused, and so is a call that does not say which instance it is."""
    instance_id = request.headers.get("X-Instance-Id", "")
    if not instance_id:
        raise OciError("REQUEST_INVALID", "the X-Instance-Id header is missing: a child sends its instanceId with "
                                          "every call of its event feed and status report")
    if child is not None and instance_id in child.revoked:
        raise OciError("DEACTIVATED", "this instance was deactivated: run `connected-registry reset-identity` "
                                      "on its data volume to start over")
    if child is None or child.status != "Active":
        raise OciError("NOT_ACTIVE", f"{request.match_info['child']} is not active here: activate it first")
    if child.instance_id != instance_id:
        raise OciError("ALREADY_ACTIVE", f"{child.name} is active as another instance than the X-Instance-Id "
                                         "header names")


async def info(request: web.Request) -> web.Response:
    ctx = context(request)
    return web.json_response({"kind": "connected-registry", "apiVersion": API_VERSION, "version": __version__,
                              "name": ctx.name, "mode": ctx.mode, "bundleKey": _bundle_key(ctx)})


def _bundle_key(ctx) -> str | None:
    """The public key this instance signs its bundles with: a child keeps it to trust them (issue 17)."""
    return ctx.bundles.public_key_pem() if ctx.bundles is not None else None


async def activate(request: web.Request) -> web.Response:
    ctx = context(request)
    name = _child_name(request)
    await ctx.access.require_gateway(request, name, "config_write")
    document = await _json_body(request)
    _check_activation(document)
    if ctx.mode == "ReadOnly" and document.get("mode") == "ReadWrite":
        raise OciError("MODE_INCOMPATIBLE", f"{name} is ReadWrite but this parent, {ctx.name}, is ReadOnly: "
                                            "a ReadOnly parent may only have ReadOnly children; make the child ReadOnly")
    outcome = await ctx.store.control.activate(name, document, utc_timestamp(ctx.store.clock()))
    if outcome == "ALREADY_ACTIVE":
        raise OciError("ALREADY_ACTIVE", f"{name} is already active on another device or data volume: deactivate it "
                                         f"first (connected-registry deactivate {name} --registry <this parent>)")
    if outcome == "DEACTIVATED":
        raise OciError("DEACTIVATED", f"this instance of {name} was deactivated: run `connected-registry "
                                      "reset-identity --data <its data volume>` to activate it again")
    if document.get("bundleKey"):  # the key its outbox bundles are signed with (issue 17)
        await ctx.store.control.remember_child_key(name, document["bundleKey"])
    ctx.on_children_changed()
    return web.json_response({"status": "Active", "messageTtl": document.get("messageTtl"), "parentMode": ctx.mode,
                              "bundleKey": _bundle_key(ctx)})


def _check_activation(document: dict) -> None:
    """What a child sends at activation is kept and used later (its messageTtl sets event retention): refuse
    anything malformed at the door (SPEC 6)."""
    problems = []
    for key in ("instanceId", "deviceId"):
        if not isinstance(document.get(key), str) or not 0 < len(document[key]) <= 200 \
                or CONTROL_CHARACTERS.search(document[key]):
            problems.append(f"{key} must be a string of 1 to 200 characters without control characters")
    if document.get("mode") not in (None, "ReadWrite", "ReadOnly"):
        problems.append("mode must be ReadWrite or ReadOnly")
    version = document.get("version")
    if not isinstance(version, (str, type(None))) or (version and CONTROL_CHARACTERS.search(version)):
        problems.append("version must be a string without control characters")
    ttl = document.get("messageTtl")
    if ttl is not None:
        try:
            seconds = duration_seconds(ttl) if isinstance(ttl, str) else -1
        except ValueError:
            seconds = -1
        if not MIN_MESSAGE_TTL <= seconds <= MAX_MESSAGE_TTL:
            problems.append("messageTtl must be an ISO 8601 duration from P1D to P90D")
    key = document.get("bundleKey")
    if key is not None and not (isinstance(key, str) and key.startswith("-----BEGIN PUBLIC KEY-----")
                                and len(key) < 4096):
        problems.append("bundleKey must be a PEM public key")
    repositories = document.get("repositories")
    if repositories is not None and not (isinstance(repositories, list) and all(
            isinstance(item, str) and not CONTROL_CHARACTERS.search(item) for item in repositories)):
        problems.append("repositories must be a list of names or patterns")
    if problems:
        raise OciError("REQUEST_INVALID", f"malformed activation: {'; '.join(problems)}")


def _check_report(document: dict) -> None:
    """A child's report is shown to operators as it came: refuse one that does not fit its schema (SPEC 11)."""
    from connected_registry.child_report import report_problems  # pydantic: loaded at the first child's report

    problems = report_problems(document)
    if problems:
        raise OciError("REQUEST_INVALID", f"malformed report: {'; '.join(problems[:5])}")


async def deactivate(request: web.Request) -> web.Response:
    ctx = context(request)
    name = _child_name(request)
    await ctx.access.require_gateway(request, name, "config_write")
    if not await ctx.store.control.deactivate(name):
        raise OciError("NAME_UNKNOWN", f"{name} has never activated here")
    ctx.store.after_change()  # the old instance's long poll returns, and its next call learns it is DEACTIVATED
    return web.json_response({"status": "Inactive"})


async def child_status(request: web.Request) -> web.Response:
    ctx = context(request)
    name = _child_name(request)
    await ctx.access.require_gateway(request, name, "config_write")
    _require_active_instance(request, ctx.store.control.child(name))
    document = await _json_body(request)
    _check_report(document)
    await ctx.store.control.record_report(name, document, utc_timestamp(ctx.store.clock()))
    ctx.on_children_changed()
    return web.Response(status=204)


async def events(request: web.Request) -> web.Response:
    ctx = context(request)
    name = _child_name(request)
    caller = await ctx.access.require_gateway(request, name, "message_read")
    _require_active_instance(request, ctx.store.control.child(name))
    oldest, head = ctx.store.control.event_bounds()
    cursor = query_int(request, "cursor")
    if cursor is None:
        return web.json_response({"events": [], "next": head, "oldest": oldest})
    if cursor < oldest or cursor > head:
        raise OciError("CURSOR_EXPIRED", f"cursor {cursor} is outside the events kept here ({oldest} to {head}): "
                                         "reconcile fully and continue from the returned head",
                       detail={"oldest": oldest, "next": head})
    limit = min(query_int(request, "limit") or MAX_EVENTS, MAX_EVENTS)
    wait = min(query_int(request, "wait") or 0, MAX_WAIT_SECONDS)
    if wait:
        await ctx.store.wait_for_events(cursor - 1, wait)
    batch = ctx.store.events(after=cursor - 1, limit=limit)
    visible = [event for event in batch if caller.can(event["repository"], "pull")]
    next_cursor = batch[-1]["seq"] + 1 if batch else cursor
    return web.json_response({"events": visible, "next": next_cursor, "oldest": oldest})


async def hierarchy(request: web.Request) -> web.Response:
    ctx = context(request)
    await ctx.access.require_instance_reader(request, ctx.name)
    return web.json_response(ctx.hierarchy())


async def own_status(request: web.Request) -> web.Response:
    ctx = context(request)
    await ctx.access.require_instance_reader(request, ctx.name)
    return web.json_response(ctx.status_document())


async def sync_now(request: web.Request) -> web.Response:
    ctx = context(request)
    await ctx.access.require_gateway(request, ctx.name, "config_write")
    operation = ctx.on_sync_now()
    return web.json_response({"status": 202, "operationId": operation}, status=202)


async def resync(request: web.Request) -> web.Response:
    """A registry sync from scratch (ManualResync) at once; the status document's sync.operation shows its progress
    and registrySyncResult its end."""
    ctx = context(request)
    await ctx.access.require_gateway(request, ctx.name, "config_write")
    operation = await ctx.on_resync()
    if operation is None:
        raise OciError("REQUEST_INVALID", f"{ctx.name} is a root (no parent in its configuration or environment): "
                                          "there is nothing to resync with; resync one of its children")
    return web.json_response({"status": 202, "operationId": operation}, status=202)


async def gc_now(request: web.Request) -> web.Response:
    ctx = context(request)
    await ctx.access.require_gateway(request, ctx.name, "config_write")
    return web.json_response({"status": 202, "operationId": ctx.on_gc()}, status=202)


async def outbox_list(request: web.Request) -> web.Response:
    ctx = context(request)
    await ctx.access.require_gateway(request, ctx.name, "config_read")
    return web.json_response({"entries": ctx.store.outbox()})


async def outbox_retry(request: web.Request) -> web.Response:
    ctx = context(request)
    await ctx.access.require_gateway(request, ctx.name, "config_write")
    if not await ctx.store.retry_outbox_entry(_entry_id(request)):
        raise OciError("NAME_UNKNOWN", "no parked outbox entry with that id")
    ctx.on_sync_now()
    return web.json_response({"status": "pending"})


async def outbox_drop(request: web.Request) -> web.Response:
    ctx = context(request)
    await ctx.access.require_gateway(request, ctx.name, "config_write")
    if not await ctx.store.drop_outbox_entry(_entry_id(request)):
        raise OciError("NAME_UNKNOWN", "no outbox entry with that id")
    ctx.on_sync_now()
    return web.Response(status=204)


def _entry_id(request: web.Request) -> int:
    raw = request.match_info["entry"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise OciError("NAME_INVALID", "an outbox entry id is a number (see `connected-registry outbox list`)")
    return int(raw)


def add_routes(app: web.Application) -> None:
    base = "/acr/connected/v1"
    app.router.add_get(f"{base}/info", info)
    app.router.add_post(f"{base}/registries/{{child}}/activate", activate)
    app.router.add_post(f"{base}/registries/{{child}}/deactivate", deactivate)
    app.router.add_post(f"{base}/registries/{{child}}/status", child_status)
    app.router.add_get(f"{base}/registries/{{child}}/events", events)
    app.router.add_get(f"{base}/registries", hierarchy)
    app.router.add_get(f"{base}/status", own_status)
    app.router.add_post(f"{base}/sync", sync_now)
    app.router.add_post(f"{base}/resync", resync)
    app.router.add_post(f"{base}/gc", gc_now)
    app.router.add_get(f"{base}/outbox", outbox_list)
    app.router.add_post(f"{base}/outbox/{{entry}}/retry", outbox_retry)
    app.router.add_delete(f"{base}/outbox/{{entry}}", outbox_drop)
    bundles.add_routes(app, base)
