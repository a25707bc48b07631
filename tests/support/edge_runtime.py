"""A simulated IoT Edge runtime for one module, on loopback, speaking the real protocols
(../shared/reference/iot-edge-runtime.md):

    Workload(socket_path, module_keys, ca_pem)   the security daemon's workload API: aiohttp on a unix socket, in its
                                                 own thread; GET /trust-bundle and POST /modules/{m}/genid/{g}/sign
    Mosquitto(workdir, address, pki)             Debian's mosquitto as edgeHub's MQTT broker: TLS 1.2 on ADDRESS:8883
                                                 (the SDK hard-codes the port), sessions kept across restarts, TCP_NODELAY
    TwinHub(address, ca_file)                    IoT Hub's side of the twin and direct methods, over MQTT (paho): answers
                                                 $iothub/twin/GET and reported PATCHes, publishes desired patches, invokes
                                                 methods on $iothub/methods/POST and waits for $iothub/methods/res
    EdgeRuntime(workdir, pki, module_id)         all three for one module, on a loopback address of its own (one broker
                                                 per module: a shared broker broadcasts every twin answer to every
                                                 module); `module_env()` is the IOTEDGE_* environment edgeAgent would set

Every process is started and stopped by PID; the broker dies with the test process (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import base64
import copy
import datetime
import hashlib
import hmac
import ipaddress
import json
import os
import random
import socket
import ssl
import threading
import time
import uuid
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.clients import Daemon, require
from tests.support.pki import TestPki
from tests.support.processes import port_open, wait_until
from tests.support.threaded import ThreadedApp

MQTT_PORT = 8883  # azure-iot-device dials IOTEDGE_GATEWAYHOSTNAME:8883, always
API_VERSION = "2019-01-30"
IOTHUB_HOSTNAME = "simhub.azure-devices.net"  # never dialled: only in the SAS token and the MQTT username


def merge_patch(target: dict, patch: dict) -> dict:
    """RFC 7386 JSON merge patch, in place: null deletes, objects merge, anything else replaces."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge_patch(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


def free_loopback_address() -> str:
    """A 127.x.y.z address whose port 8883 is free (each simulated edgeHub needs its own)."""
    for _ in range(200):
        address = f"127.{random.randint(1, 254)}.{random.randint(0, 254)}.{random.randint(2, 254)}"
        with socket.socket() as probe:
            try:
                probe.bind((address, MQTT_PORT))
                return address
            except OSError:
                continue
    raise RuntimeError("no free loopback address with port 8883 free")


def server_certificate(pki: TestPki, directory: Path, addresses: list[str]) -> tuple[Path, Path]:
    """A server certificate signed by the test CA for these IP addresses (and localhost): (cert, key)."""
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, addresses[0])]))
        .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")] + [
            x509.IPAddress(ipaddress.ip_address(address)) for address in addresses]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class Workload(ThreadedApp):
    """The workload API on a unix socket, served from its own thread and loop. `requests` logs every call."""

    name = "workload API"

    def __init__(self, socket_path: Path, module_keys: dict[str, str], ca_pem: str, generation_id: str = "gen1") -> None:
        self.socket_path = socket_path
        self.module_keys = module_keys
        self.trust_bundle = ca_pem  # a test may change it: the module must pick the new one up
        self.generation_id = generation_id
        self.requests: list[tuple[str, str]] = []
        super().__init__()
        self.serve(socket_path)

    async def make_app(self):
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/trust-bundle", self._trust_bundle)
        app.router.add_post("/modules/{module}/genid/{generation}/sign", self._sign)
        return app

    async def _trust_bundle(self, request):
        from aiohttp import web

        self.requests.append(("GET", request.path_qs))
        return web.json_response({"certificate": self.trust_bundle})

    async def _sign(self, request):
        from aiohttp import web

        self.requests.append(("POST", request.path_qs))
        module, generation = request.match_info["module"], request.match_info["generation"]
        body = json.loads(await request.text())  # the SDK sends no JSON content type
        key = self.module_keys.get(module)
        if key is None or generation != self.generation_id:
            return web.json_response({"message": f"module {module} generation {generation} not found"}, status=404)
        if body.get("keyId") != "primary" or body.get("algo") != "HMACSHA256":
            return web.json_response({"message": "unsupported key or algorithm"}, status=400)
        digest = hmac.new(base64.b64decode(key), base64.b64decode(body["data"]), hashlib.sha256).digest()
        return web.json_response({"digest": base64.b64encode(digest).decode()})


class Mosquitto:
    """Debian's mosquitto as edgeHub's MQTT endpoint: TLS on ADDRESS:8883, anonymous (the SAS token is not checked).
    Sessions persist across `restart()` (the SDK relies on its persistent session and never subscribes again)."""

    def __init__(self, workdir: Path, address: str, pki: TestPki) -> None:
        require("/usr/sbin/mosquitto")
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.address = address
        cert, key = server_certificate(pki, workdir / "certs", [address, "127.0.0.1"])
        self.log_path = workdir / "mosquitto.log"
        config = workdir / "mosquitto.conf"
        lines = [
            "per_listener_settings false", "allow_anonymous true", "persistence true",
            f"persistence_location {workdir}/", "autosave_interval 0",
            f"log_dest file {self.log_path}", "log_type error", "log_type warning", "log_type notice",
            "log_type information", "connection_messages true", "max_keepalive 1740", "set_tcp_nodelay true",
            f"listener {MQTT_PORT} {address}", f"cafile {pki.ca_cert}", f"certfile {cert}", f"keyfile {key}",
            "require_certificate false",
        ]
        if os.geteuid() == 0:
            lines.insert(0, "user root")  # else it drops to 'mosquitto', which cannot read the 0700 temp dirs
        config.write_text("\n".join(lines) + "\n")
        self.config = config
        self.start()

    def start(self) -> None:
        self.daemon = Daemon("mosquitto", ["/usr/sbin/mosquitto", "-c", self.config], self.workdir / "mosquitto.out")
        self.daemon.wait_ready(lambda: port_open(MQTT_PORT, self.address), timeout=20)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        self.daemon.stop()


class TwinHub:
    """IoT Hub's side of one module's twin and direct methods, as an MQTT client of the module's broker.

    `desired` and `reported` are the twin's sections (with `$version`); `reported_patches` records every reported
    patch as (monotonic time, patch)."""

    def __init__(self, address: str, ca_file: Path, desired: dict | None = None) -> None:
        import paho.mqtt.client as mqtt

        self.desired: dict = {**copy.deepcopy(desired or {}), "$version": 1}
        self.reported: dict = {"$version": 1}
        self.reported_patches: list[tuple[float, dict]] = []
        self.twin_gets = 0
        self._condition = threading.Condition()
        self._method_answers: dict[str, tuple[int, object]] = {}
        self._subscribed = threading.Event()
        # A persistent session, like the module's: requests sent while the hub reconnects after a broker restart wait.
        self._client = mqtt.Client(client_id=f"twinhub-{uuid.uuid4().hex[:8]}", clean_session=False,
                                   protocol=mqtt.MQTTv311)
        self._client.reconnect_delay_set(min_delay=0.1, max_delay=1)
        self._client.tls_set(ca_certs=str(ca_file), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *arguments: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(address, MQTT_PORT, keepalive=60)
        self._client.loop_start()
        if not self._subscribed.wait(20):
            raise RuntimeError(f"the twin hub could not subscribe at {address}:{MQTT_PORT}")

    def _on_connect(self, client, userdata, flags, result_code) -> None:
        client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # '#' does not match topics starting with '$' (MQTT 4.7.2): subscribe to each explicitly
        client.subscribe([("$iothub/twin/GET/#", 1), ("$iothub/twin/PATCH/properties/reported/#", 1),
                          ("$iothub/methods/res/#", 1)])

    @staticmethod
    def _query(topic: str) -> dict[str, str]:
        return dict(part.partition("=")[::2] for part in topic.split("?", 1)[1].split("&") if part)

    def _on_message(self, client, userdata, message) -> None:
        topic = message.topic
        query = self._query(topic)
        if topic.startswith("$iothub/twin/GET/"):
            with self._condition:
                self.twin_gets += 1
                twin = json.dumps({"desired": self.desired, "reported": self.reported})
            client.publish(f"$iothub/twin/res/200/?$rid={query['$rid']}", twin, qos=1)
        elif topic.startswith("$iothub/twin/PATCH/properties/reported/"):
            patch = json.loads(message.payload)
            with self._condition:
                merge_patch(self.reported, patch)
                self.reported["$version"] += 1
                self.reported_patches.append((time.monotonic(), patch))
                version = self.reported["$version"]
                self._condition.notify_all()
            client.publish(f"$iothub/twin/res/204/?$rid={query['$rid']}&$version={version}", b"", qos=1)
        elif topic.startswith("$iothub/methods/res/"):
            status = int(topic.split("/")[3])
            payload = json.loads(message.payload) if message.payload else None
            with self._condition:
                self._method_answers[query["$rid"]] = (status, payload)
                self._condition.notify_all()

    # --- what an operator does in IoT Hub -----------------------------------------------------------

    def patch_desired_while_away(self, patch: dict) -> int:
        """A desired update made while the module is disconnected: IoT Hub queues no notification for it, the module
        must find it by reading the twin when it is back."""
        with self._condition:
            merge_patch(self.desired, patch)
            self.desired["$version"] += 1
            return self.desired["$version"]

    def patch_desired(self, patch: dict) -> int:
        """A desired-properties update: merged into the twin and sent as IoT Hub sends it. Returns the new $version."""
        with self._condition:
            merge_patch(self.desired, patch)
            self.desired["$version"] += 1
            version = self.desired["$version"]
        self._client.publish(f"$iothub/twin/PATCH/properties/desired/?$version={version}",
                             json.dumps({**patch, "$version": version}), qos=1)
        return version

    def redeliver_desired(self) -> int:
        """The whole desired document as a patch, as the SDK hands it over after a reconnect."""
        with self._condition:
            document = copy.deepcopy(self.desired)
        self._client.publish(f"$iothub/twin/PATCH/properties/desired/?$version={document['$version']}",
                             json.dumps(document), qos=1)
        return document["$version"]

    def invoke_method(self, name: str, payload: object = None, timeout: float = 10.0) -> tuple[int, object]:
        """A direct method call: (status, payload) of the module's answer, or TimeoutError."""
        request_id = str(uuid.uuid4())
        self._client.publish(f"$iothub/methods/POST/{name}/?$rid={request_id}", json.dumps(payload), qos=1)
        with self._condition:
            if not self._condition.wait_for(lambda: request_id in self._method_answers, timeout):
                raise TimeoutError(f"method {name} not answered within {timeout}s")
            return self._method_answers.pop(request_id)

    def wait_reported(self, predicate, timeout: float = 30.0, what: str = "reported properties"):
        """Wait until `predicate(reported)` is truthy; returns its value."""
        with self._condition:
            result = self._condition.wait_for(lambda: predicate(self.reported), timeout)
            if not result:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}; reported: "
                                   + json.dumps(self.reported, indent=1)[:3000])
            return result

    def stop(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


class EdgeRuntime:
    """The simulated IoT Edge runtime of one device with one module: workload API, edgeHub's broker, IoT Hub's twin."""

    def __init__(self, workdir: Path, pki: TestPki, module_id: str = "connected-registry",
                 device_id: str = "sim-device", desired: dict | None = None, parent_hostname: str | None = None,
                 start_broker: bool = True) -> None:
        require("/usr/sbin/mosquitto")
        self.workdir = workdir
        self.module_id, self.device_id = module_id, device_id
        self.parent_hostname = parent_hostname
        self.address = free_loopback_address()
        workdir.mkdir(parents=True, exist_ok=True)
        self.socket_dir = Path(os.path.join("/tmp", f"edge-{uuid.uuid4().hex[:10]}"))  # short: unix path limit
        self.socket_dir.mkdir(mode=0o700)
        self.socket_path = self.socket_dir / "workload.sock"
        module_key = base64.b64encode(os.urandom(32)).decode()
        self.workload = Workload(self.socket_path, {module_id: module_key}, pki.ca_cert.read_text())
        self.pki, self.desired = pki, desired
        self.broker = None
        self.hub = None
        if start_broker:
            self.start_broker()

    def start_broker(self) -> None:
        """edgeHub comes up (a test may start the module before it, as IoT Edge sometimes does)."""
        try:
            self.broker = Mosquitto(self.workdir / "mosquitto", self.address, self.pki)
            self.hub = TwinHub(self.address, self.pki.ca_cert, self.desired)
        except BaseException:
            self.stop()
            raise

    def module_env(self) -> dict[str, str]:
        env = {
            "IOTEDGE_IOTHUBHOSTNAME": IOTHUB_HOSTNAME, "IOTEDGE_DEVICEID": self.device_id,
            "IOTEDGE_MODULEID": self.module_id, "IOTEDGE_GATEWAYHOSTNAME": self.address,
            "IOTEDGE_MODULEGENERATIONID": self.workload.generation_id,
            "IOTEDGE_WORKLOADURI": f"unix://{self.socket_path}", "IOTEDGE_APIVERSION": API_VERSION,
            "IOTEDGE_AUTHSCHEME": "sasToken",
        }
        if self.parent_hostname:
            env["IOTEDGE_PARENTHOSTNAME"] = self.parent_hostname
        return env

    def stop(self) -> None:
        for part in (self.hub, self.broker):
            if part is not None:
                part.stop()
        self.workload.stop()
        for path in (self.socket_path,):
            path.unlink(missing_ok=True)
        try:
            self.socket_dir.rmdir()
        except OSError:
            pass


def wait_for_module_exit(process, timeout: float) -> float:
    """Seconds until `process` (a ManagedProcess) exited; TimeoutError past `timeout`."""
    started = time.monotonic()
    wait_until(lambda: process.process.poll() is not None, timeout=timeout, what="the module to exit")
    return time.monotonic() - started
