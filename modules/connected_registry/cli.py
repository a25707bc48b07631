"""The `connected-registry` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys

from connected_registry import __version__

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _run(coroutine) -> None:
    # The standard loop, not uvloop: uvloop has no loop.sendfile, and aiohttp would then copy every
    # blob through user space (slower, and memory grows with concurrent pulls).
    asyncio.run(coroutine)


def cmd_serve(arguments: argparse.Namespace) -> int:
    from connected_registry.edge.module_client import in_iot_edge
    from connected_registry.runtime import InstanceOptions, Runtime, default_data_dir

    configured = bool(arguments.config) or in_iot_edge()  # the module twin configures it inside IoT Edge
    host, port = arguments.listen or (("0.0.0.0" if configured else "127.0.0.1"), 8080)
    options = InstanceOptions(data_dir=arguments.data or default_data_dir(), host=host, port=port,
                              config_path=arguments.config)
    if not configured:
        logging.getLogger("connected_registry").warning(
            "no configuration given: running a root registry with anonymous pull and push on %s:%d "
            "(for trying it out; give --config for anything else)",
            host,
            port,
        )
    _run(Runtime(options).run_until_signalled())
    return 0


def cmd_gc(arguments: argparse.Namespace) -> int:
    from connected_registry.runtime import default_data_dir
    from connected_registry.storage import RegistryStore
    from connected_registry.storage.gc import collect_garbage

    async def collect() -> dict:
        store = RegistryStore(arguments.data or default_data_dir())
        try:
            return vars(await collect_garbage(store, read_only=arguments.read_only))
        finally:
            store.close()

    result = asyncio.run(collect())
    print(json.dumps(result, indent=2))
    return 0


def _call(arguments: argparse.Namespace, method: str, path: str) -> tuple[int, dict]:
    """One request to a running instance with the operator's credentials (flags or environment)."""
    import base64
    import os
    import urllib.error
    import urllib.request

    username = arguments.username or os.environ.get("CONNECTED_REGISTRY_USERNAME")
    password = arguments.password or os.environ.get("CONNECTED_REGISTRY_PASSWORD")
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
        raise SystemExit(f"error: cannot reach {arguments.registry}: {getattr(error, 'reason', error)}") from None
    try:
        document = json.loads(body) if body else {}
    except ValueError:
        document = {"raw": body[:500].decode("utf-8", "replace")}
    return status, document if isinstance(document, dict) else {"value": document}


def _fail(status: int, document: dict, what: str) -> int:
    errors = document.get("errors") or [{}]
    message = errors[0].get("message") if isinstance(errors, list) and errors else None
    print(f"error: {what} failed ({status}): {message or document}", file=sys.stderr)
    return 1


def cmd_deactivate(arguments: argparse.Namespace) -> int:
    status, document = _call(arguments, "POST", f"/acr/connected/v1/registries/{arguments.name}/deactivate")
    if status != 200:
        return _fail(status, document, f"deactivating {arguments.name}")
    print(f"{arguments.name} is Inactive at {arguments.registry}; a new deployment of it can now activate. "
          "The old instance stops syncing at its next call.")
    return 0


def cmd_sync_now(arguments: argparse.Namespace) -> int:
    status, document = _call(arguments, "POST", "/acr/connected/v1/sync")
    if status != 202:
        return _fail(status, document, "sync-now")
    print(f"sync started (operation {document.get('operationId')})")
    return 0


def cmd_outbox(arguments: argparse.Namespace) -> int:
    if arguments.action == "list":
        status, document = _call(arguments, "GET", "/acr/connected/v1/outbox")
        if status != 200:
            return _fail(status, document, "outbox list")
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
    status, document = _call(arguments, method, path)
    if status not in (200, 204):
        return _fail(status, document, f"outbox {arguments.action}")
    print(f"entry {arguments.entry}: {'queued again' if arguments.action == 'retry' else 'dropped'}")
    return 0


def cmd_reset_identity(arguments: argparse.Namespace) -> int:
    from connected_registry.runtime import default_data_dir
    from connected_registry.storage import RegistryStore

    store = RegistryStore(arguments.data or default_data_dir())
    try:
        old = store.control.get("instanceId")
        new = store.control.reset_identity()
        store.metadata.transaction(lambda db: db.execute("DELETE FROM state WHERE key = 'cursor'"))
    finally:
        store.close()
    print(f"instanceId {old} -> {new}: this instance activates as new at its next start "
          "(the name must be Inactive at the parent)")
    return 0


def _add_remote(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--registry", default="http://127.0.0.1:8080", help="the instance (default http://127.0.0.1:8080)")
    parser.add_argument("--username", help="token name (or CONNECTED_REGISTRY_USERNAME)")
    parser.add_argument("--password", help="token password (or CONNECTED_REGISTRY_PASSWORD)")


_REPOSITORY_ACTIONS = ("content/read", "content/write", "content/delete", "metadata/read", "metadata/write")
_GATEWAY_ACTIONS = ("config/read", "config/write", "message/read", "message/write")


def cmd_token_create(arguments: argparse.Namespace) -> int:
    from connected_registry.auth.passwords import hash_password, new_password
    from connected_registry.settings import ConfigInvalid, validate_desired

    actions: list[str] = []
    for kind, groups, allowed in (("repositories", arguments.repository, _REPOSITORY_ACTIONS),
                                  ("gateway", arguments.gateway, _GATEWAY_ACTIONS)):
        for resource, *verbs in groups or []:
            if not verbs:
                raise SystemExit(f"error: --{'repository' if kind == 'repositories' else 'gateway'} {resource} "
                                 f"needs at least one action: {', '.join(allowed)}")
            for verb in verbs:
                if verb not in allowed:
                    raise SystemExit(f"error: {verb!r} is not an action for {kind}; use {', '.join(allowed)}")
                actions.append(f"{kind}/{resource.lower() if kind == 'repositories' else resource}/{verb}")
    if not actions:
        raise SystemExit("error: give at least one --repository REPO ACTION... or --gateway NAME ACTION...")
    password = new_password()
    token = {"passwordHashes": [hash_password(password)], "actions": actions, "status": "enabled"}
    try:
        validate_desired({"tokens": {arguments.name: token}})
    except ConfigInvalid as invalid:
        raise SystemExit("error: " + "; ".join(invalid.problems)) from None
    if arguments.json:
        print(json.dumps({"name": arguments.name, "password": password, "token": token}, indent=2))
    else:
        print(f"Password for token {arguments.name!r} (shown only this once; store it now):\n\n  {password}\n")
        print("Add this entry to the \"tokens\" of the desired properties (module twin or --config file):\n")
        print(json.dumps({arguments.name: token}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="connected-registry",
        description="Open connected registry for Azure IoT Edge: an OCI registry that syncs with its parent.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run one registry instance",
        description="Run one instance. With no configuration: a root registry with anonymous pull and push "
        "on 127.0.0.1:8080, for trying it out.",
    )
    serve.add_argument("--config", metavar="FILE",
                       help="JSON file with the desired properties (SPEC 3), re-read when it changes")
    serve.add_argument("--data", metavar="DIR", help="data directory (default: $ACR_REGISTRY_DATA_VOLUME or /var/acr/data)")
    serve.add_argument("--listen", metavar="HOST:PORT", type=_listen,
                       help="address to listen on (default 127.0.0.1:8080; 0.0.0.0:8080 with --config)")
    serve.set_defaults(handler=cmd_serve)

    token = commands.add_parser("token", help="client and sync tokens").add_subparsers(
        dest="token_command", required=True, metavar="SUBCOMMAND")
    create = token.add_parser(
        "create",
        help="make a token: a new password (printed once) and its entry for the desired properties",
        description="Make a token as Azure's scope maps spell it. Example:  connected-registry token create "
        "line1-reader --repository factory/* content/read metadata/read",
    )
    create.add_argument("name", help="token name: 5 to 50 letters, digits or '-'")
    create.add_argument("--repository", nargs="+", action="append", metavar=("REPO", "ACTION"),
                        help=f"a repository (name, prefix/* or *) and its actions: {', '.join(_REPOSITORY_ACTIONS)}")
    create.add_argument("--gateway", nargs="+", action="append", metavar=("NAME", "ACTION"),
                        help=f"a connected registry's name and its actions: {', '.join(_GATEWAY_ACTIONS)}")
    create.add_argument("--json", action="store_true", help='print {"name", "password", "token"} as JSON')
    create.set_defaults(handler=cmd_token_create)

    deactivate = commands.add_parser(
        "deactivate", help="deactivate child NAME at the parent given by --registry",
        description="Make a child's name Inactive at its parent and revoke its instance, so a new deployment "
        "can activate. The token needs gateway/NAME/config/write (the child's sync token has it).")
    deactivate.add_argument("name", help="the child's connected registry name")
    _add_remote(deactivate)
    deactivate.set_defaults(handler=cmd_deactivate)

    reset = commands.add_parser(
        "reset-identity", help="give a deactivated instance a new instanceId (it must not be running)",
        description="Give the instance whose data is in --data DIR a new instanceId, so it can activate again "
        "after `deactivate`. Stop the instance first.")
    reset.add_argument("--data", metavar="DIR", help="data directory (default: $ACR_REGISTRY_DATA_VOLUME or /var/acr/data)")
    reset.set_defaults(handler=cmd_reset_identity)

    sync_now = commands.add_parser("sync-now", help="start a sync at once on a running instance",
                                   description="Start a sync now, outside any window. The token needs "
                                   "gateway/<the instance's name>/config/write.")
    _add_remote(sync_now)
    sync_now.set_defaults(handler=cmd_sync_now)

    outbox = commands.add_parser(
        "outbox", help="the upload queue of a ReadWrite instance: list, retry or drop entries",
        description="Local pushes and deletes waiting to go to the parent. An entry the parent refused is "
        "parked and holds back later entries of its repository: retry it once fixed, or drop it.")
    outbox.add_argument("action", choices=["list", "retry", "drop"])
    outbox.add_argument("entry", nargs="?", type=int, help="entry id, for retry and drop")
    outbox.add_argument("--json", action="store_true", help="list as JSON")
    _add_remote(outbox)
    outbox.set_defaults(handler=cmd_outbox)

    gc = commands.add_parser(
        "gc",
        help="garbage-collect a data directory no instance is running on",
        description="Remove unreferenced blobs and abandoned uploads older than 24 hours from --data DIR.",
    )
    gc.add_argument("--data", metavar="DIR", help="data directory (default: $ACR_REGISTRY_DATA_VOLUME or /var/acr/data)")
    gc.add_argument("--read-only", action="store_true", help="also remove untagged manifests, as a ReadOnly instance does")
    gc.set_defaults(handler=cmd_gc)
    return parser


def main(argv: list[str] | None = None) -> int:
    from connected_registry.errors import ConfigInvalid
    from connected_registry.storage import StorageError

    arguments = build_parser().parse_args(argv)
    logging.basicConfig(level=arguments.log_level, format=LOG_FORMAT, stream=sys.stdout)
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
    logging.getLogger("azure.iot.device").setLevel(logging.WARNING)  # several lines per twin call at INFO
    try:
        return arguments.handler(arguments)
    except StorageError as error:
        logging.getLogger("connected_registry").error("%s: %s", error.code, error)
        return 1
    except ConfigInvalid as invalid:
        logging.getLogger("connected_registry").error(
            "CONFIG_INVALID: the configuration was not accepted:\n  %s", "\n  ".join(invalid.problems)
        )
        return 1
    except OSError as error:
        if arguments.command == "serve" and error.errno == 98:  # EADDRINUSE
            logging.getLogger("connected_registry").error(
                "cannot listen: %s; another process has the port: stop it or pass --listen HOST:PORT", error
            )
            return 1
        raise
