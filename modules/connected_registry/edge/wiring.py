"""How an instance plugs into IoT Edge (or into the --config file outside it): its configuration source, the
reporter at SPEC 4's cadence and the direct methods. They reach the instance only through its core and the
`InstanceControl` protocol."""

from __future__ import annotations

import logging
from collections.abc import Callable

from connected_registry.audit import AuditTrail
from connected_registry.durations import duration_seconds
from connected_registry.edge.audit_output import AuditForwarder
from connected_registry.edge.methods import answer_direct_method
from connected_registry.edge.module_client import in_iot_edge
from connected_registry.edge.reporter import Reporter
from connected_registry.instance import Instance, InstanceControl
from connected_registry.status import StatusBoard
from connected_registry.waits import within

log = logging.getLogger("connected_registry")


def config_source(config_path: str | None, status: StatusBoard, apply: Callable):
    """The module twin inside IoT Edge, else the --config file, else None (the embedded default)."""
    # Imported here: both sources validate with pydantic, which the embedded default never loads (idle memory).
    if in_iot_edge():
        from connected_registry.edge.twin_source import TwinConfigSource

        if config_path:
            log.warning("inside IoT Edge the module twin configures the instance: --config %s is ignored", config_path)
        return TwinConfigSource(status, apply)
    if config_path:
        from connected_registry.edge.file_source import FileConfigSource

        return FileConfigSource(config_path, status, apply)
    return None


def trusts_edge_ca(source) -> bool:
    """Configured by the module twin: inside IoT Edge, where the parent's API proxy has a certificate of the edge CA
    (trusted through the workload API's trust bundle)."""
    return getattr(source, "connection", None) is not None


def start_reporting(core: Instance, control: InstanceControl, source) -> Reporter:
    """Reported properties at SPEC 4's cadence (the twin, or reported.json), and the direct methods."""
    reporter = Reporter(control.status_document, source.write_reported,
                        lambda: duration_seconds(core.settings.reportInterval))
    source.on_applied = reporter.poke
    core.state_changed.subscribe(reporter.poke)
    control.spawn_once("twin-reporter", reporter.run, "reporter")
    connection = getattr(source, "connection", None)
    if connection is not None:
        connection.serve_methods(lambda name, payload: answer_direct_method(core, control, name, payload))
    return reporter


async def report_before_exit(core: Instance, source, code: str, **fields: object) -> None:
    """A fatal problem at start (e.g. the data volume): the operator sees it in the twin, not only in the log."""
    core.status.set(code, **fields)
    if source is None:
        return
    document = {"name": core.name, "connectionState": "Unhealthy", "activation": {"status": "Inactive"},
                "statusDetails": core.status.details()}
    try:
        await within(source.write_reported(document, document), 10)
    except Exception as error:  # noqa: BLE001 - the log has the cause already
        log.warning("could not report %s before exiting: %s", code, error)
    finally:
        await source.close()


async def report_stopped(source, reporter: Reporter | None) -> None:
    """On SIGTERM: the last report says Offline, so IoT Hub does not show a stopped module as Online."""
    if reporter is None or reporter.last_sent is None:
        return
    document = dict(reporter.last_sent, connectionState="Offline")
    try:
        await within(source.write_reported({"connectionState": "Offline"}, document), 2)
    except Exception as error:  # noqa: BLE001 - stopping anyway
        log.info("could not report Offline while stopping: %s", error)


def forward_audit(control: InstanceControl, source, trail: AuditTrail) -> None:
    """Inside IoT Edge, the audit records go to edgeHub as messages on the output `auditLogs` (audit_output.py)."""
    connection = getattr(source, "connection", None)
    if connection is not None:
        control.spawn(AuditForwarder(trail, connection).run(), "audit-output")
