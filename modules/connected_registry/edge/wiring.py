"""How the runtime plugs in its configuration source, the reporter, the direct methods and IoT Edge's trust bundle:
kept here so that runtime.py only calls these."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from connected_registry.edge.module_client import in_iot_edge
from connected_registry.waits import within

if TYPE_CHECKING:
    from connected_registry.runtime import Runtime
    from connected_registry.status import StatusBoard

log = logging.getLogger("connected_registry")


def config_source(config_path: str | None, status: "StatusBoard", apply: Callable):
    """The module twin inside IoT Edge, else the --config file, else None (the embedded default)."""
    if in_iot_edge():
        from connected_registry.edge.twin_source import TwinConfigSource

        if config_path:
            log.warning("inside IoT Edge the module twin configures the instance: --config %s is ignored", config_path)
        return TwinConfigSource(status, apply)
    if config_path:
        from connected_registry.edge.file_source import FileConfigSource

        return FileConfigSource(config_path, status, apply)
    return None


def start_reporting(runtime: "Runtime") -> None:
    """Reported properties at SPEC 4's cadence (the twin, or reported.json), and the direct methods."""
    from connected_registry.durations import duration_seconds
    from connected_registry.edge.reporter import Reporter

    source = runtime.config_source
    runtime.reporter = Reporter(runtime.status_document, source.write_reported,
                                lambda: duration_seconds(runtime.settings.reportInterval))
    source.on_applied = runtime.reporter.poke
    runtime.status.on_change = runtime.reporter.poke
    if runtime.engine is not None:
        runtime.engine.on_change = runtime.reporter.poke
        if runtime.trust_bundle is not None:  # a refused parent certificate: the edge CA may have been renewed
            runtime.engine.parent.on_certificate_error = runtime.trust_bundle.refresh_soon
    runtime._tasks.append(asyncio.create_task(runtime.reporter.run(), name="reporter"))  # noqa: SLF001 - owned there
    connection = getattr(source, "connection", None)
    if connection is not None:
        from connected_registry.edge.methods import answer_direct_method

        connection.serve_methods(lambda name, payload: answer_direct_method(runtime, name, payload))


async def parent_trust(runtime: "Runtime"):
    """Inside IoT Edge: an SSLContext trusting the edge CA's trust bundle (how a lower layer trusts its parent's API
    proxy), watched for changes; else None (the system's CAs)."""
    if runtime.config_source is None or getattr(runtime.config_source, "connection", None) is None:
        return None
    from connected_registry.tls import TrustBundle

    runtime.trust_bundle = TrustBundle(on_change=lambda context: runtime.engine.parent.set_ssl_context(context))
    context = await runtime.trust_bundle.refresh()
    runtime._tasks.append(asyncio.create_task(runtime.trust_bundle.watch(), name="trust-bundle"))  # noqa: SLF001
    return context


async def report_before_exit(runtime: "Runtime", code: str, **fields: object) -> None:
    """A fatal problem at start (e.g. the data volume): the operator sees it in the twin, not only in the log."""
    runtime.status.set(code, **fields)
    source = runtime.config_source
    if source is None:
        return
    document = {"name": runtime.name, "connectionState": "Unhealthy", "activation": {"status": "Inactive"},
                "statusDetails": runtime.status.details()}
    try:
        await within(source.write_reported(document, document), 10)
    except Exception as error:  # noqa: BLE001 - the log has the cause already
        log.warning("could not report %s before exiting: %s", code, error)
    finally:
        await source.close()


async def report_stopped(runtime: "Runtime") -> None:
    """On SIGTERM: the last report says Offline, so IoT Hub does not show a stopped module as Online."""
    if runtime.reporter is None or runtime.reporter.last_sent is None:
        return
    document = dict(runtime.reporter.last_sent, connectionState="Offline")
    try:
        await within(runtime.config_source.write_reported({"connectionState": "Offline"}, document), 2)
    except Exception as error:  # noqa: BLE001 - stopping anyway
        log.info("could not report Offline while stopping: %s", error)
