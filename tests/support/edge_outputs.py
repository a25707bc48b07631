"""edgeHub's side of a module's output messages, on the simulated runtime's broker (edge_runtime.py): azure-iot-device
publishes `send_message_to_output` at QoS 1 to `devices/<device>/modules/<module>/messages/events/` followed by the
message's properties, URL-encoded (`%24.on=<output>`, `%24.ct`, `%24.ce`, `%24.mid`); edgeHub's routes match on the
output. A persistent session, as edgeHub keeps its own: messages published while this client reconnects after a
broker restart wait for it."""

from __future__ import annotations

import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

from tests.support.edge_runtime import MQTT_PORT


@dataclass(frozen=True)
class OutputMessage:
    received: float  # time.monotonic() at arrival
    topic: str
    properties: dict[str, str]  # system properties by their name on the wire ($.on, $.ct, ...)
    payload: bytes


class ModuleOutputs:
    def __init__(self, address: str, ca_file: Path, device_id: str, module_id: str) -> None:
        import paho.mqtt.client as mqtt

        self.prefix = f"devices/{device_id}/modules/{module_id}/messages/events/"
        self.messages: list[OutputMessage] = []
        self._condition = threading.Condition()
        subscribed = threading.Event()
        self._client = mqtt.Client(client_id=f"edgehub-outputs-{uuid.uuid4().hex[:8]}", clean_session=False,
                                   protocol=mqtt.MQTTv311)
        self._client.reconnect_delay_set(min_delay=0.1, max_delay=1)
        self._client.tls_set(ca_certs=str(ca_file), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self._client.on_connect = lambda client, *_: (
            client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
            client.subscribe(self.prefix + "#", qos=1))
        self._client.on_subscribe = lambda *arguments: subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(address, MQTT_PORT, keepalive=60)
        self._client.loop_start()
        if not subscribed.wait(20):
            raise RuntimeError(f"could not subscribe to {self.prefix}# at {address}:{MQTT_PORT}")

    def _on_message(self, client, userdata, message) -> None:
        properties = dict(parse_qsl(message.topic[len(self.prefix):], keep_blank_values=True))
        with self._condition:
            self.messages.append(OutputMessage(time.monotonic(), message.topic, properties, message.payload))
            self._condition.notify_all()

    def on_output(self, output: str) -> list[OutputMessage]:
        with self._condition:
            return [message for message in self.messages if message.properties.get("$.on") == output]

    def wait(self, predicate, timeout: float, what: str):
        """Wait until `predicate(messages)` is truthy; returns its value."""
        with self._condition:
            result = self._condition.wait_for(lambda: predicate(list(self.messages)), timeout)
            if not result:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}; {len(self.messages)} messages")
            return result

    def stop(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()
