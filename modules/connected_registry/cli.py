"""The `connected-registry` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
from contextlib import closing

from connected_registry import __version__, child_settings
from connected_registry.bundle_commands import add_commands as add_bundle_commands
from connected_registry.cluster_commands import add_commands as add_cluster_commands
from connected_registry.edge.module_client import in_iot_edge
from connected_registry.errors import ConfigInvalid
from connected_registry.identity import INSTANCE_NAME_RE
from connected_registry.logs import configure
from connected_registry.remote import (cmd_deactivate, cmd_list, cmd_outbox, cmd_resync, cmd_status, cmd_sync_now,
                                       gc_on_instance)
from connected_registry.storage import RegistryStore, StorageError
from connected_registry.storage.gc import collect_garbage
from connected_registry.views import gc_summary

# Imported in the commands that need them, so that the others start quickly: the server (runtime: aiohttp and every
# part), the settings model (pydantic) and password hashing (the auth package loads aiohttp).

METRICS_PORT = 9600  # IoT Edge's convention for a module's metrics


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _metrics_listen(value: str) -> tuple[str, int] | str:
    return value if value == "off" else _listen(value)


def _run(coroutine) -> None:
    # The standard loop, not uvloop: uvloop has no loop.sendfile, and aiohttp would then copy every
    # blob through user space (slower, and memory grows with concurrent pulls).
    asyncio.run(coroutine)


def cmd_serve(arguments: argparse.Namespace) -> int:
    from connected_registry.runtime import InstanceOptions, Runtime, default_data_dir

    configured = bool(arguments.config) or in_iot_edge()  # the module twin configures it inside IoT Edge
    host, port = arguments.listen or (("0.0.0.0" if configured else "127.0.0.1"), 8080)
    metrics = arguments.metrics_listen or (host, METRICS_PORT)
    options = InstanceOptions(data_dir=arguments.data or default_data_dir(), host=host, port=port,
                              config_path=arguments.config, metrics_listen=None if metrics == "off" else metrics,
                              metadata=arguments.metadata,
                              blob_store=arguments.blob_store or os.environ.get("ACR_REGISTRY_BLOB_STORE") or None)
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
    if arguments.data is None:
        return gc_on_instance(arguments)
    async def collect() -> dict:
        blob_store = os.environ.get("ACR_REGISTRY_BLOB_STORE") or None  # the store the instance keeps its blobs in
        async with RegistryStore(arguments.data, blob_store=blob_store) as store:
            return vars(await collect_garbage(store, read_only=arguments.read_only))

    result = asyncio.run(collect())
    if arguments.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"garbage collection of {arguments.data}: {gc_summary(result)}")
    return 0


def cmd_get_settings(arguments: argparse.Namespace) -> int:
    from connected_registry.settings import validate_desired

    child = arguments.child
    if not INSTANCE_NAME_RE.match(child):
        raise SystemExit(f"error: {child!r} is not a connected registry name: 5 to 40 letters, digits, '_' or '-', "
                         "starting with a letter")
    try:
        child_settings.parent_gateway(arguments.parent_endpoint)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    token_name = arguments.sync_token or child_settings.default_sync_token_name(child)
    password, entry = None, None
    if arguments.generate_password:
        from connected_registry.auth.passwords import hash_password, new_password

        repositories = arguments.repository or []
        if not repositories:
            raise SystemExit("error: --generate-password makes the sync token, which needs the repositories the child "
                             "syncs: add --repository REPO... (names, prefix/* or *)")
        password = new_password()
        entry = {"passwordHashes": [hash_password(password)],
                 "actions": child_settings.sync_token_actions(child, arguments.mode, repositories), "status": "enabled"}
        try:
            validate_desired({"tokens": {token_name: entry}})
        except ConfigInvalid as invalid:
            raise SystemExit("error: " + "; ".join(invalid.problems)) from None
    values = child_settings.settings(child, arguments.parent_endpoint, token_name, password)
    if arguments.manifest:
        values = child_settings.manifest_env(values)
    if arguments.json:
        print(json.dumps({"settings": values, "tokens": {token_name: entry} if entry else {}}, indent=2))
        return 0
    print(json.dumps(values, indent=2, sort_keys=True))
    if entry is not None:
        print(f"\nThe password is shown only this once. Add this entry to the \"tokens\" of the parent's desired "
              f"properties (module twin or --config file), so {child} can sync:\n")
        print(json.dumps({token_name: entry}, indent=2))
    return 0


def cmd_demo(arguments: argparse.Namespace) -> int:
    from connected_registry.demo import run_demo  # tarfile, gzip, urllib.request: memory a `serve` would keep

    return run_demo(headless=arguments.headless, base_directory=arguments.data)


def cmd_reset_identity(arguments: argparse.Namespace) -> int:
    from connected_registry.runtime import default_data_dir

    with closing(RegistryStore(arguments.data or default_data_dir())) as store:
        old = store.control.state().instance_id
        new = store.control.reset_identity()
    print(f"instanceId {old} -> {new}: this instance activates as new at its next start "
          "(the name must be Inactive at the parent)")
    return 0


def _add_remote(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--registry", metavar="URL", default="http://127.0.0.1:8080",
                        help="the instance to talk to (default http://127.0.0.1:8080)")
    parser.add_argument("--username", metavar="TOKEN", help="token name (or CONNECTED_REGISTRY_USERNAME)")
    parser.add_argument("--password", metavar="PASSWORD",
                        help="token password (or CONNECTED_REGISTRY_PASSWORD; asked for at a terminal when missing)")


def _add_wait(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--no-wait", action="store_true", help=f"start {what} and return at once")
    parser.add_argument("--timeout", type=float, default=600, metavar="SECONDS",
                        help=f"how long to follow {what} (default 600)")


_REPOSITORY_ACTIONS = ("content/read", "content/write", "content/delete", "metadata/read", "metadata/write")
_GATEWAY_ACTIONS = ("config/read", "config/write", "message/read", "message/write")


def cmd_token_create(arguments: argparse.Namespace) -> int:
    from connected_registry.auth.passwords import hash_password, new_password
    from connected_registry.settings import validate_desired

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
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="log level before a configuration sets logging.logLevel (default INFO)")
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
    serve.add_argument("--metadata", metavar="DSN",
                       help="where the metadata lives: sqlite (in --data) or postgresql://USER@HOST:PORT/DATABASE, a "
                       "database several replicas may share (default: $ACR_REGISTRY_METADATA_DSN, else sqlite)")
    serve.add_argument("--listen", metavar="HOST:PORT", type=_listen,
                       help="address to listen on (default 127.0.0.1:8080; 0.0.0.0:8080 with --config)")
    serve.add_argument("--metrics-listen", metavar="HOST:PORT", type=_metrics_listen,
                       help=f"where GET /metrics is served, apart from the registry (default: the --listen host, port "
                       f"{METRICS_PORT}, IoT Edge's port for module metrics); off: nowhere")
    serve.add_argument("--blob-store", metavar="STORE",
                       help="where blobs live: filesystem (the default, in --data) or azure://CONTAINER[/PREFIX] "
                       "(Azure Blob Storage, credentials from ACR_REGISTRY_BLOB_CONNECTION_STRING, or "
                       "ACR_REGISTRY_BLOB_ACCOUNT_URL with ..._ACCOUNT_KEY or ..._SAS); default $ACR_REGISTRY_BLOB_STORE")
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

    sync_now = commands.add_parser(
        "sync-now", help="sync a running instance with its parent now, showing repositories and bytes as they move",
        description="Start a full sync now, in or outside a sync window: every repository in scope is compared with "
        "the parent and what differs is copied; a ReadWrite instance also sends its outbox up. Progress is shown "
        "until it ends. The token needs gateway/<the instance's name>/config/write and metadata/read on *. "
        "Example:  connected-registry sync-now --registry http://127.0.0.1:8081 --username ops")
    _add_remote(sync_now)
    _add_wait(sync_now, "the sync")
    sync_now.set_defaults(handler=cmd_sync_now)

    resync = commands.add_parser(
        "resync", help="sync a running instance with its parent from scratch, keeping what it has",
        description="Start a registry sync from scratch now (Azure's resync), in or outside a sync window: every tag "
        "in scope at the parent is walked again as at the initial sync, and what is missing here is copied; nothing "
        "here is deleted first, and the event feed goes on from the parent's head. Progress is shown until it ends, "
        "then the instance's registrySyncResult. The token needs gateway/<the instance's name>/config/write and "
        "metadata/read on *. Example:  connected-registry resync --registry http://127.0.0.1:8081 --username ops")
    _add_remote(resync)
    _add_wait(resync, "the resync")
    resync.set_defaults(handler=cmd_resync)

    listing = commands.add_parser(
        "list", help="the hierarchy below an instance at a glance: state, last sync, uploads, what is wrong",
        description="The registries below --registry as a tree: name, mode, activation, connection state (a child "
        "silent for three report intervals is marked STALE, and what is below it too), last sync, pending and rejected "
        "uploads, and the worst status detail. Fits the terminal width (COLUMNS). The token needs metadata/read on * "
        "or the gateway rights on the instance's own name.")
    listing.add_argument("--json", action="store_true", help="print the hierarchy document (SPEC 11) as JSON")
    _add_remote(listing)
    listing.set_defaults(handler=cmd_list)

    status = commands.add_parser(
        "status", help="an instance's reported properties as a readable summary",
        description="The reported document (SPEC 4) of --registry: activation, connection state, parent and "
        "schedule, last sync, bytes moved, uploads, the last sync-now and gc, and every status detail with what to do. "
        "The token needs metadata/read on * or the gateway rights on the instance's own name.")
    status.add_argument("--json", action="store_true", help="print the reported document as JSON")
    _add_remote(status)
    status.set_defaults(handler=cmd_status)

    get_settings = commands.add_parser(
        "get-settings", help="the environment block for a child's deployment manifest (as az acr connected-registry "
        "get-settings)",
        description="Print ACR_REGISTRY_CONNECTION_STRING and the rest of a child's environment, keyed as "
        "`az acr connected-registry get-settings` prints them. With --generate-password also a new sync token: its "
        "password goes into the connection string (shown once), its entry (a hash) into the parent's \"tokens\". "
        "Example:  connected-registry get-settings line1-leaf --parent-endpoint http://10.0.0.4:8000 "
        "--generate-password --repository 'factory/*'")
    get_settings.add_argument("child", help="the child's connected registry name")
    get_settings.add_argument("--parent-endpoint", required=True, metavar="URL",
                              help="how the child reaches its parent: https://host:port, http://host:port, host:port "
                              "(https), or $IOTEDGE_PARENTHOSTNAME:8000 for a nested IoT Edge device")
    get_settings.add_argument("--generate-password", action="store_true",
                              help="make a new sync token password and print the token entry for the parent")
    get_settings.add_argument("--mode", choices=["ReadOnly", "ReadWrite"], default="ReadOnly",
                              help="the child's mode: what its sync token may do on the repositories (default ReadOnly)")
    get_settings.add_argument("--repository", nargs="+", metavar="REPO",
                              help="repositories the child syncs (names, prefix/* or *): the sync token's scope")
    get_settings.add_argument("--sync-token", metavar="NAME", help="the sync token's name (default <child>-sync-token)")
    get_settings.add_argument("--manifest", action="store_true",
                              help='print the values as a deployment manifest\'s env section ({"NAME": {"value": ...}})')
    get_settings.add_argument("--json", action="store_true", help='print {"settings", "tokens"} as one JSON document')
    get_settings.set_defaults(handler=cmd_get_settings)

    demo = commands.add_parser(
        "demo", help="a three-layer hierarchy on this machine: push at the top, watch it arrive at the bottom",
        description="Start a root, a ReadWrite middle and a ReadOnly leaf on free local ports with their tokens and "
        "data in a temporary folder, push a small sample image at the root, show it arrive at the leaf, and print "
        "commands to try next. Ctrl-C stops everything and removes the folder.")
    demo.add_argument("--headless", "--once", action="store_true",
                      help="stop as soon as the image has arrived and the commands are printed (for scripts and tests)")
    demo.add_argument("--data", metavar="DIR", help="keep the three instances' configuration and data under DIR "
                      "instead of a temporary folder (not removed at the end)")
    demo.set_defaults(handler=cmd_demo)

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
        help="garbage collection now: on a running instance, or on --data DIR when none runs on it",
        description="Remove blobs no manifest references, upload sessions abandoned for 24 hours (empty ones after "
        "an hour) and, on a ReadOnly instance, untagged manifests. Without --data it asks the running instance at "
        "--registry (the token needs gateway/<its name>/config/write) and waits for the result; with --data it works "
        "on that directory, which no instance may be using.",
    )
    gc.add_argument("--data", metavar="DIR", help="collect in this data directory directly (stop the instance first)")
    gc.add_argument("--read-only", action="store_true",
                    help="with --data: also remove untagged manifests, as a ReadOnly instance does")
    gc.add_argument("--json", action="store_true", help="print the result as JSON")
    _add_remote(gc)
    _add_wait(gc, "the collection")
    gc.set_defaults(handler=cmd_gc)
    add_bundle_commands(commands, _add_remote)
    add_cluster_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    configure(arguments.log_level)
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
                "cannot listen: %s; another process has the port: stop it or pass --listen HOST:PORT "
                "(--metrics-listen HOST:PORT for the metrics port)", error
            )
            return 1
        raise
