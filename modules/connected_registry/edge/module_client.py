"""The module's connection to edgeHub through azure-iot-device (the only import of the SDK, ARCHITECTURE).

What the SDK does not do for us (../shared/reference/iot-edge-runtime.md):
- a first connection that fails is not retried: we retry with backoff (edgeHub may start after us);
- twin calls have no timeout: every call here has one;
- handlers run on SDK threads: they only hand the event over to our loop with `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import warnings
from collections.abc import Awaitable, Callable

from connected_registry.waits import within

log = logging.getLogger("connected_registry.edge")

TWIN_CALL_TIMEOUT = 10.0
MAX_CONNECT_BACKOFF = 30.0


def in_iot_edge() -> bool:
    """edgeAgent sets IOTEDGE_MODULEID (and the rest); IoT Edge's dev tools set EdgeHubConnectionString."""
    return bool(os.environ.get("IOTEDGE_MODULEID") or os.environ.get("EdgeHubConnectionString"))


class ModuleConnection:
    """One IoTHubModuleClient (asyncio flavour), created from the IoT Edge environment."""

    def __init__(self) -> None:
        self._client = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.events: asyncio.Queue = asyncio.Queue()  # ("patch", dict) | ("connected", bool)
        self._method_handler: Callable[[str, object], Awaitable[tuple[int, object]]] | None = None

    async def connect(self) -> None:
        """Create the client and connect, retrying with backoff (1 s doubling to 30 s) until it works."""
        self._loop = asyncio.get_running_loop()
        backoff = 1.0
        while True:
            try:
                if self._client is None:
                    self._client = await asyncio.to_thread(self._create)  # blocking HTTP to the workload API
                await within(self._client.connect(), TWIN_CALL_TIMEOUT * 3)
                break
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - every failure here is retried
                log.warning("cannot reach edgeHub (%s: %s); retrying in %.0f s. Check that edgeHub runs and that "
                            "IOTEDGE_GATEWAYHOSTNAME (%s) resolves", type(error).__name__, error, backoff,
                            os.environ.get("IOTEDGE_GATEWAYHOSTNAME"))
                if self._client is not None and not isinstance(error, asyncio.TimeoutError):
                    await self._shutdown_quietly()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_CONNECT_BACKOFF)
        # Handlers after connect: set before it, the SDK sends a twin GET before it has subscribed to the answers.
        self._client.on_twin_desired_properties_patch_received = self._on_patch
        self._client.on_method_request_received = self._on_method
        self._client.on_connection_state_change = self._on_connection_state
        log.info("connected to edgeHub at %s as %s/%s", os.environ.get("IOTEDGE_GATEWAYHOSTNAME"),
                 os.environ.get("IOTEDGE_DEVICEID"), os.environ.get("IOTEDGE_MODULEID"))

    @staticmethod
    def _create():
        with warnings.catch_warnings():  # the SDK builds an ssl.PROTOCOL_TLSv1_2 context (deprecated in 3.10)
            warnings.simplefilter("ignore", DeprecationWarning)
            from azure.iot.device.aio import IoTHubModuleClient  # the SDK is heavy: loaded only inside IoT Edge

            return IoTHubModuleClient.create_from_edge_environment(keep_alive=60, connection_retry_interval=5)

    async def _shutdown_quietly(self) -> None:
        client, self._client = self._client, None
        try:
            await within(client.shutdown(), 5)
        except Exception:  # noqa: BLE001 - a half-made client; a new one is created
            pass

    # --- SDK threads -> our loop ---------------------------------------------------------------------

    def _on_patch(self, patch: dict) -> None:
        self._loop.call_soon_threadsafe(self.events.put_nowait, ("patch", patch))

    def _on_connection_state(self) -> None:
        client = self._client
        connected = bool(client and client.connected)
        self._loop.call_soon_threadsafe(self.events.put_nowait, ("connected", connected))

    def _on_method(self, request) -> None:
        self._loop.call_soon_threadsafe(self._start_method, request)

    def _start_method(self, request) -> None:
        self._loop.create_task(self._answer_method(request), name=f"method-{request.name}")

    # --- calls, each with a timeout --------------------------------------------------------------------

    def serve_methods(self, handler: Callable[[str, object], Awaitable[tuple[int, object]]]) -> None:
        self._method_handler = handler

    async def _answer_method(self, request) -> None:
        from azure.iot.device import MethodResponse  # the SDK is heavy: loaded only inside IoT Edge

        try:
            if self._method_handler is None:
                status, payload = 503, {"message": "the module is still starting; call again in a few seconds"}
            else:
                status, payload = await within(self._method_handler(request.name, request.payload), 4.5)
        except asyncio.TimeoutError:
            status, payload = 504, {"message": f"{request.name} did not finish within 5 s"}
        except Exception as error:  # noqa: BLE001 - answered, and logged
            log.exception("direct method %s failed", request.name)
            status, payload = 500, {"message": f"{request.name} failed: {error}"}
        try:
            await self._call(self._client.send_method_response(
                MethodResponse.create_from_method_request(request, status, payload)))
        except Exception as error:  # noqa: BLE001 - the caller times out at IoT Hub
            log.warning("could not answer direct method %s: %s", request.name, error)

    @staticmethod
    async def _call(coroutine):
        """With a timeout; shielded, because the SDK completes its future from its own thread and logs an asyncio
        error when we have cancelled it meanwhile (a timeout, or shutdown)."""
        return await within(asyncio.shield(coroutine), TWIN_CALL_TIMEOUT)

    async def get_twin(self) -> dict:
        return await self._call(self._client.get_twin())

    async def patch_reported(self, patch: dict) -> None:
        await self._call(self._client.patch_twin_reported_properties(patch))

    @property
    def connected(self) -> bool:
        return bool(self._client is not None and self._client.connected)

    async def send_output(self, output: str, body: bytes, message_id: str) -> None:
        """A JSON message on one of the module's outputs (edgeHub's routes say where it goes)."""
        from azure.iot.device import Message  # the SDK is heavy: loaded only inside IoT Edge

        message = Message(body.decode("utf-8"), message_id=message_id, content_encoding="utf-8",
                          content_type="application/json")
        await self._call(self._client.send_message_to_output(message, output))

    async def close(self) -> None:
        if self._client is not None:
            await self._shutdown_quietly()
