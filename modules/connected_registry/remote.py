"""The commands that talk to a running instance over its control API (SPEC 11, 13): the operator's token from
flags or the environment, never printed; errors that say which right is missing; every answer without control
characters before anything of it is printed."""

from __future__ import annotations

import argparse
import base64
import getpass
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request

from connected_registry.printable import printable
from connected_registry.views import format_bytes, gc_summary, render_hierarchy, render_registry_sync, render_status

POLL_SECONDS = 0.3


def credentials(arguments: argparse.Namespace) -> tuple[str | None, str | None]:
    """Flags, else the environment; a password missing at a terminal is asked for without echo. Never printed."""
    username = arguments.username or os.environ.get("CONNECTED_REGISTRY_USERNAME")
    password = arguments.password or os.environ.get("CONNECTED_REGISTRY_PASSWORD")
    if username and password is None and sys.stdin.isatty():
        password = getpass.getpass(f"password for {username}: ")
        arguments.password = password  # asked once, for every request of this command
    return username, password


def call(arguments: argparse.Namespace, method: str, path: str) -> tuple[int, dict]:
    """One request to a running instance with the operator's credentials (flags or environment); the answer comes
    back printable: an instance's documents carry text from its children and its parent."""
    username, password = credentials(arguments)
    request = urllib.request.Request(arguments.registry.rstrip("/") + path, method=method, data=b"" if method != "GET" else None)
    if username:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{username}:{password or ''}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        body, status = error.read(), error.code
    except (urllib.error.URLError, OSError) as error:
        raise SystemExit(f"error: cannot reach {arguments.registry}: {getattr(error, 'reason', error)}; is the instance "
                         "running there? (--registry URL)") from None
    try:
        document = json.loads(body) if body else {}
    except ValueError:
        document = {"raw": body[:500].decode("utf-8", "replace")}
    return status, printable(document if isinstance(document, dict) else {"value": document})


def fail(status: int, document: dict, what: str, rights: str | None = None) -> int:
    errors = document.get("errors") or [{}]
    message = errors[0].get("message") if isinstance(errors, list) and errors else None
    hint = ""
    if status == 401:
        hint = ("; give a token with --username and --password (or CONNECTED_REGISTRY_USERNAME and "
                "CONNECTED_REGISTRY_PASSWORD)")
    elif status == 403 and rights:
        hint = f"; the token needs {rights}"
    print(f"error: {what} failed ({status}): {message or document}{hint}", file=sys.stderr)
    return 1


def cmd_status(arguments: argparse.Namespace) -> int:
    status, document = call(arguments, "GET", "/acr/connected/v1/status")
    if status != 200:
        return fail(status, document, "status", "metadata/read on *")
    print(json.dumps(document, indent=2) if arguments.json else render_status(document))
    return 0


def terminal_width() -> int:
    return shutil.get_terminal_size((120, 24)).columns


def cmd_list(arguments: argparse.Namespace) -> int:
    status, document = call(arguments, "GET", "/acr/connected/v1/registries")
    if status != 200:
        return fail(status, document, "list", "metadata/read on *")
    print(json.dumps(document, indent=2) if arguments.json else render_hierarchy(document, terminal_width()))
    return 0


# What `sync-now` and `resync` say: (control API path, the command, what runs, the word for its end).
SYNC_NOW = ("/acr/connected/v1/sync", "sync-now", "sync", "sync")
RESYNC = ("/acr/connected/v1/resync", "resync", "resync (a registry sync from scratch)", "resync")


def cmd_sync_now(arguments: argparse.Namespace) -> int:
    return start_and_follow(arguments, SYNC_NOW)


def cmd_resync(arguments: argparse.Namespace) -> int:
    return start_and_follow(arguments, RESYNC)


def start_and_follow(arguments: argparse.Namespace, kind: tuple[str, str, str, str]) -> int:
    """Start a sync-now or a resync on the instance, then follow its operation until it ends (or --no-wait)."""
    path, command, what, word = kind
    status, before = call(arguments, "GET", "/acr/connected/v1/status")
    if status != 200:
        return fail(status, before, "reading the status", "metadata/read on *")
    if before.get("parent") is None:
        print(f"{before.get('name')} is a root: it has no parent to sync with")
        return 0
    status, document = call(arguments, "POST", path)
    if status != 202:
        return fail(status, document, command, f"gateway/{before.get('name')}/config/write")
    operation = document.get("operationId")
    print(f"{what} started (operation {operation})", flush=True)
    if arguments.no_wait:
        return 0
    return follow_operation(arguments, operation, before.get("sync") or {}, word)


def follow_operation(arguments: argparse.Namespace, operation: str, start: dict, word: str) -> int:
    """Repositories and bytes as they move, then a summary; 1 when the operation failed or outlasts --timeout."""
    started, shown, live = time.monotonic(), None, sys.stdout.isatty()
    while time.monotonic() - started < arguments.timeout:
        status, report = call(arguments, "GET", "/acr/connected/v1/status")
        if status != 200:
            return fail(status, report, "reading the status", "metadata/read on *")
        sync = report.get("sync") or {}
        current = sync.get("operation") or {}
        down = format_bytes((sync.get("bytesDownloaded") or 0) - (start.get("bytesDownloaded") or 0))
        up = format_bytes((sync.get("bytesUploaded") or 0) - (start.get("bytesUploaded") or 0))
        if current.get("id") != operation:
            current = {"state": "Queued"}
        total = current.get("repositoriesTotal")
        counted = f"{current.get('repositoriesDone', 0)}/{total} repositories" if total is not None else "listing"
        line = f"  {current.get('state', 'Queued'):9} {counted}  {down} down  {up} up  {current.get('repository') or ''}"
        if live:
            print("\r" + line.ljust(shutil.get_terminal_size().columns - 1)[: shutil.get_terminal_size().columns - 1],
                  end="", flush=True)
        elif (current.get("state"), current.get("repository"), current.get("repositoriesDone")) != shown:
            print(line.rstrip(), flush=True)
        shown = (current.get("state"), current.get("repository"), current.get("repositoriesDone"))
        if current.get("state") in ("Succeeded", "Failed"):
            if live:
                print()
            elapsed = time.monotonic() - started
            if current["state"] == "Failed":
                print(f"error: the {word} failed after {elapsed:.1f} s: {current.get('error')} "
                      "(`connected-registry status` shows what the instance does next)", file=sys.stderr)
            else:
                print(f"{word} finished in {elapsed:.1f} s: {total or 0} repositories checked, {down} downloaded, "
                      f"{up} uploaded; {sync.get('pendingUploads', 0)} uploads pending, "
                      f"{sync.get('rejectedUploads', 0)} rejected")
            if word == "resync":
                print(f"registry sync: {render_registry_sync(report.get('registrySyncResult'))}")
            return 0 if current["state"] == "Succeeded" else 1
        time.sleep(POLL_SECONDS)
    if live:
        print()
    print(f"the {word} still runs after {arguments.timeout:.0f} s; `connected-registry status` shows how it goes",
          file=sys.stderr)
    return 1


def gc_on_instance(arguments: argparse.Namespace) -> int:
    try:
        status, document = call(arguments, "POST", "/acr/connected/v1/gc")
    except SystemExit as unreachable:
        raise SystemExit(f"{unreachable}; with no instance running, give --data DIR to collect there") from None
    if status != 202:
        return fail(status, document, "gc", "gateway/<the instance's name>/config/write")
    operation = document.get("operationId")
    if arguments.no_wait:
        print(f"garbage collection started (operation {operation})")
        return 0
    deadline = time.monotonic() + arguments.timeout
    while time.monotonic() < deadline:
        status, report = call(arguments, "GET", "/acr/connected/v1/status")
        if status != 200:
            return fail(status, report, "reading the status", "metadata/read on *")
        run = (report.get("garbageCollection") or {}).get("lastRun") or {}
        if run.get("operationId") == operation and run.get("state") != "Running":
            if arguments.json:
                print(json.dumps(run, indent=2))
            elif run.get("state") == "Succeeded":
                print(f"garbage collection on {report.get('name')}: {gc_summary(run)}")
            else:
                print(f"error: garbage collection on {report.get('name')} failed: {run.get('error')}; "
                      "see the registry log", file=sys.stderr)
            return 0 if run.get("state") == "Succeeded" else 1
        time.sleep(POLL_SECONDS)
    print(f"garbage collection {operation} still runs after {arguments.timeout:.0f} s; "
          "`connected-registry status` shows when it ends", file=sys.stderr)
    return 1


def cmd_deactivate(arguments: argparse.Namespace) -> int:
    status, document = call(arguments, "POST", f"/acr/connected/v1/registries/{arguments.name}/deactivate")
    if status != 200:
        return fail(status, document, f"deactivating {arguments.name}")
    print(f"{arguments.name} is Inactive at {arguments.registry}; a new deployment of it can now activate. "
          "The old instance stops syncing at its next call.")
    return 0


def cmd_outbox(arguments: argparse.Namespace) -> int:
    if arguments.action == "list":
        status, document = call(arguments, "GET", "/acr/connected/v1/outbox")
        if status != 200:
            return fail(status, document, "outbox list")
        entries = document.get("entries", [])
        if arguments.json:
            print(json.dumps(entries, indent=2))
        elif not entries:
            print("the outbox is empty: every local push and delete reached the parent")
        else:
            print(f"{'ID':>6}  {'STATE':8}  {'OPERATION':14}  REFERENCE")
            for entry in entries:
                reference = f"{entry['repository']}:{entry['tag']}" if entry["tag"] else f"{entry['repository']}@{entry['digest']}"
                print(f"{entry['id']:>6}  {entry['state']:8}  {entry['operation']:14}  {reference}")
                if entry.get("lastError"):
                    print(f"{'':>6}  {'':8}  refused: {entry['lastError']}")
        return 0
    if arguments.entry is None:
        raise SystemExit(f"error: outbox {arguments.action} needs an entry id (see `outbox list`)")
    method, path = ("POST", f"/acr/connected/v1/outbox/{arguments.entry}/retry") if arguments.action == "retry" \
        else ("DELETE", f"/acr/connected/v1/outbox/{arguments.entry}")
    status, document = call(arguments, method, path)
    if status not in (200, 204):
        return fail(status, document, f"outbox {arguments.action}")
    print(f"entry {arguments.entry}: {'queued again' if arguments.action == 'retry' else 'dropped'}")
    return 0
