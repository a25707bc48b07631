"""The bundle commands (issue 17): `export`, `inventory` and `import`, on a stopped data directory (`--data DIR`,
with its `--config FILE` for its name, scope and platforms) or on a running instance (`--registry URL` and a
token, as the other remote commands: bundle_remote.py). Import shows a progress bar on a terminal, a line per image
otherwise."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys

from connected_registry import bundle_remote
from connected_registry.bundle_remote import Progress
from connected_registry.bundles.service import Bundles
from connected_registry.oci.errors import OciError
from connected_registry.printable import printable
from connected_registry.remote import fail
from connected_registry.storage import RegistryStore
from connected_registry.views import format_bytes

# What writes and reads bundles (bundles.document, .export, .layout) is imported in the commands: it loads PyJWT and
# cryptography, which the other commands never need (they start quickly).


# --- a stopped data directory -----------------------------------------------------------------------------------


def _local(arguments: argparse.Namespace, store: RegistryStore) -> Bundles:
    """The instance of --data as its --config describes it (name, scope, platforms); without one, an instance named
    connected-registry that takes every repository."""
    settings = None
    if getattr(arguments, "config", None):
        from connected_registry.settings import validate_desired  # pydantic: only with a configuration

        with open(arguments.config, encoding="utf-8") as file:
            settings = validate_desired(json.load(file))
    name = (settings.name if settings else None) or "connected-registry"
    store.origin = name
    child = settings is not None and settings.parent is not None and settings.parent.endpoint is not None
    return Bundles(store, arguments.data, lambda: {"name": name, "instanceId": store.control.instance_id()},
                   scope=lambda: list(settings.repositories) if child else ["*"],
                   platforms=lambda: settings.wanted_platforms if settings else None,
                   mode=lambda: settings.mode if child else "ReadWrite")


def _run_local(arguments: argparse.Namespace, work) -> dict:
    async def run() -> dict:
        async with RegistryStore(arguments.data) as store:
            return await work(_local(arguments, store))

    return asyncio.run(run())


async def _export_local(bundles: Bundles, arguments: argparse.Namespace) -> dict:
    from connected_registry.bundles.export import DirectoryOutput, TarOutput  # deferred: see the top

    patterns = bundles.export_patterns(arguments.repository, arguments.for_child)
    have = bundle_remote.read_json(arguments.have)
    if not arguments.output.endswith(".tar"):
        return await bundles.export(patterns, have, DirectoryOutput(arguments.output), arguments.outbox,
                                    arguments.platform)
    loop = asyncio.get_running_loop()
    partial = arguments.output + ".partial"
    with open(partial, "wb") as file:
        summary = await bundles.export(patterns, have, TarOutput(lambda data: loop.run_in_executor(None, file.write,
                                                                                                     data)),
                                       arguments.outbox, arguments.platform)
    os.replace(partial, arguments.output)
    return summary


# --- commands ---------------------------------------------------------------------------------------------------


def cmd_export(arguments: argparse.Namespace) -> int:
    if arguments.data:
        summary = _run_local(arguments, lambda bundles: _export_local(bundles, arguments))
        if arguments.public_key:
            _write_public_key(arguments)
    else:
        summary = bundle_remote.export_remote(arguments)
        if summary is None:
            return 1
    print(f"exported {summary.get('images', '?')} images of {summary.get('repositories', '?')} repositories "
          f"({format_bytes(summary.get('bytes'))}) to {arguments.output}")
    return 0


def _write_public_key(arguments: argparse.Namespace) -> None:
    async def key(bundles: Bundles) -> str:
        return bundles.public_key_pem()

    pem = _run_local(arguments, key)
    with open(arguments.public_key, "w", encoding="utf-8") as file:
        file.write(pem)


def cmd_inventory(arguments: argparse.Namespace) -> int:
    if arguments.data:
        async def take(bundles: Bundles) -> dict:
            return bundles.inventory(arguments.repository)

        document = _run_local(arguments, take)
    else:
        query = "".join(f"&repository={pattern}" for pattern in arguments.repository or [])
        status, document = bundle_remote.call(arguments, "GET", f"/acr/connected/v1/bundles/inventory?{query[1:]}")
        if status != 200:
            return fail(status, document, "inventory", "metadata/read on *")
    with open(arguments.output, "w", encoding="utf-8") as file:
        json.dump(document, file)
    print(f"inventory of {sum(len(m) for m in document['repositories'].values())} manifests and "
          f"{len(document['blobs'])} blobs in {len(document['repositories'])} repositories written to "
          f"{arguments.output}")
    return 0


def cmd_import(arguments: argparse.Namespace) -> int:
    trust_key = open(arguments.trust_key, encoding="utf-8").read() if arguments.trust_key else None
    if arguments.receipt:
        return _import_receipt(arguments, trust_key)
    progress = Progress(_size_of(arguments.bundle))
    try:
        if arguments.data:
            summary = _import_local(arguments, trust_key, progress)
        else:
            summary = bundle_remote.import_remote(arguments, trust_key, progress)
    except OciError as error:
        progress.finish()
        print(f"error: the import was refused ({error.code}): {error.message}", file=sys.stderr)
        return 1
    progress.finish()
    if summary is None:
        return 1
    receipt = summary.pop("receipt", None)
    if receipt:
        path = arguments.write_receipt or f"{arguments.bundle.rstrip('/')}.receipt.jws"
        with open(path, "w", encoding="utf-8") as file:
            file.write(receipt)
        print(f"the receipt is in {path}: carry it back to the child and run `connected-registry import --receipt "
              f"{os.path.basename(path)}` there")
    return _report(summary)


def _import_receipt(arguments: argparse.Namespace, trust_key: str | None) -> int:
    with open(arguments.bundle, "rb") as file:
        signed = file.read()
    if arguments.data:
        async def work(bundles: Bundles) -> dict:
            return await bundles.import_receipt(signed, trust_key)

        try:
            result = _run_local(arguments, work)
        except OciError as error:
            print(f"error: the receipt was refused ({error.code}): {error.message}", file=sys.stderr)
            return 1
    else:
        headers = {"X-Bundle-Trust-Key": base64.b64encode(trust_key.encode()).decode()} if trust_key else {}
        path = "/acr/connected/v1/bundles/receipt"
        with bundle_remote.open_request(arguments, "POST", path, signed, headers) as answer:
            body, status = answer.read(), answer.status
        result = printable(json.loads(body)) if body.startswith(b"{") else {"raw": body[:300]}
        if status != 200:
            return fail(status, result, "import --receipt", "gateway/<the instance's name>/config/write")
    print(f"{result['delivered']} outbox entries are delivered (receipt of {result.get('from')})")
    return 0


def _report(summary: dict) -> int:
    if summary.get("replay"):
        print(summary.get("message"))
        return 0
    print(f"imported {summary['images']} images of {summary['repositories']} repositories from "
          f"{summary.get('from')} ({format_bytes(summary.get('bytes'))} new)")
    if summary.get("delivered"):
        print(f"{summary['delivered']} outbox entries are delivered: the parent's bundle shows their content there")
    if summary.get("outOfScope"):
        print(f"not in this registry's scope, left out: {', '.join(summary['outOfScope'])}")
    for failure in summary.get("failures") or []:
        print(f"error: {failure}", file=sys.stderr)
    return 1 if summary.get("failures") else 0


def _import_local(arguments: argparse.Namespace, trust_key: str | None, progress: Progress) -> dict:
    from connected_registry.bundles.layout import bundle_members  # deferred: see the top

    async def work(bundles: Bundles) -> dict:
        members, close = bundle_members(arguments.bundle, progress.bytes)

        async def on_image(repository: str, tag: str, digest: str) -> None:
            progress.image(f"{repository}:{tag}", digest)

        try:
            return await bundles.import_members(members, unsigned=arguments.unsigned,
                                                repository=arguments.repository, trust_key=trust_key,
                                                on_image=on_image)
        finally:
            close()

    return _run_local(arguments, work)


def _size_of(path: str) -> int:
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)
    return os.path.getsize(path)
