"""`connected-registry demo`: a root, a ReadWrite middle and a ReadOnly leaf on free local ports, each a real
`serve` process with its own tokens and data; a small image pushed at the root travels down to the leaf.
Ctrl-C (or SIGTERM) stops all three and removes the temporary folder; nothing is left running."""

from __future__ import annotations

import base64
import ctypes
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from connected_registry import child_settings
from connected_registry.views import render_hierarchy

ADMIN = "demo-admin"
REPOSITORY, TAG = "demo/hello-world", "1.0"
START_SECONDS = 30
REPORT_INTERVAL = "PT10S"  # children report every 10 s (default PT5M), so `list` is fresh and a stopped one is STALE in 30 s
ARRIVAL_SECONDS = 60
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@dataclass
class Layer:
    """One instance of the demo: its place in the hierarchy, its process and where it logs."""

    role: str
    name: str
    mode: str
    port: int
    metrics_port: int
    directory: Path
    parent: "Layer | None" = None
    process: subprocess.Popen | None = None
    env: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "registry.log"


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _die_with_parent() -> None:
    """In the child: receive SIGTERM if the demo itself dies (even by SIGKILL), so no instance outlives it."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _request(method: str, url: str, password: str, body: bytes | None = None, content_type: str | None = None,
             timeout: float = 10) -> tuple[int, bytes, dict]:
    request = urllib.request.Request(url, data=body, method=method)
    request.add_header("Authorization", "Basic " + base64.b64encode(f"{ADMIN}:{password}".encode()).decode())
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)


def sample_image() -> tuple[list[bytes], bytes]:
    """A tiny but complete OCI image (config, one gzipped tar layer, manifest), made here without any network."""
    text = b"Hello from the top of the hierarchy: this file came down layer by layer.\n"
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mode, info.mtime = len(text), 0o644, 0
        tar.addfile(info, io.BytesIO(text))
    layer_tar = archive.getvalue()
    layer = gzip.compress(layer_tar, mtime=0)
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["cat", "/hello.txt"]},
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer_tar).hexdigest()]}},
                        sort_keys=True).encode()

    def descriptor(media_type: str, data: bytes) -> dict:
        return {"mediaType": media_type, "digest": "sha256:" + hashlib.sha256(data).hexdigest(), "size": len(data)}

    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": descriptor("application/vnd.oci.image.config.v1+json", config),
                           "layers": [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", layer)]}).encode()
    return [config, layer], manifest


class Demo:
    def __init__(self, folder: Path) -> None:
        # Imported here: the auth package loads aiohttp, which the demo's own process otherwise never needs.
        from connected_registry.auth.passwords import hash_password, new_password

        self.folder = folder
        self.password = new_password()
        admin_hash = hash_password(self.password)
        ports = _free_ports(6)  # each layer's registry and metrics ports
        self.root = Layer("root", "demo-root", "ReadWrite", ports[0], ports[1], folder / "root")
        self.middle = Layer("middle", "demo-middle", "ReadWrite", ports[2], ports[3], folder / "middle",
                            parent=self.root)
        self.leaf = Layer("leaf", "demo-leaf", "ReadOnly", ports[4], ports[5], folder / "leaf", parent=self.middle)
        self.layers = [self.root, self.middle, self.leaf]
        tokens: dict[str, dict] = {layer.name: {} for layer in self.layers}
        for layer in self.layers:
            tokens[layer.name][ADMIN] = {"passwordHashes": [admin_hash], "actions": [
                *(f"repositories/*/{action}" for action in ("content/read", "content/write", "content/delete",
                                                             "metadata/read")),
                f"gateway/{layer.name}/config/read", f"gateway/{layer.name}/config/write"]}
            if layer.parent is not None:  # its sync token lives at its parent, its password in its own environment
                token_name, sync_password = child_settings.default_sync_token_name(layer.name), new_password()
                tokens[layer.parent.name][token_name] = {
                    "passwordHashes": [hash_password(sync_password)],
                    "actions": child_settings.sync_token_actions(layer.name, layer.mode, ["demo/*"])}
                layer.env["ACR_REGISTRY_CONNECTION_STRING"] = child_settings.connection_string(
                    layer.name, token_name, sync_password, layer.parent.url)
        for layer in self.layers:
            document: dict = {"name": layer.name, "tokens": tokens[layer.name], "reportInterval": REPORT_INTERVAL}
            if layer.parent is not None:
                document.update(mode=layer.mode, repositories=["demo/*"],
                                parent={"endpoint": layer.parent.url, "syncToken": {
                                    "name": child_settings.default_sync_token_name(layer.name)}})
            layer.directory.mkdir(parents=True, exist_ok=True)
            (layer.directory / "desired.json").write_text(json.dumps(document, indent=2))

    # --- processes ----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Top down, each once the one above answers: a child that finds its parent down backs off for a while."""
        deadline = time.monotonic() + START_SECONDS
        for layer in self.layers:
            log = open(layer.log_path, "ab")  # noqa: SIM115 - the child holds it; closed with the process
            env = {key: value for key, value in os.environ.items()
                   if key not in ("ACR_REGISTRY_CONNECTION_STRING", "ACR_PARENT_GATEWAY_ENDPOINT",
                                  "ACR_REGISTRY_LOGIN_SERVER", "SYNC_TOKEN_PASSWORD_FILE")}
            layer.process = subprocess.Popen(
                [sys.executable, "-m", "connected_registry", "serve", "--config", str(layer.directory / "desired.json"),
                 "--data", str(layer.directory / "data"), "--listen", f"127.0.0.1:{layer.port}",
                 "--metrics-listen", f"127.0.0.1:{layer.metrics_port}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={**env, **layer.env},
                start_new_session=True, preexec_fn=_die_with_parent)
            log.close()
            while not self._healthy(layer):
                if layer.process.poll() is not None:
                    raise RuntimeError(f"the {layer.role} ({layer.name}) exited with {layer.process.returncode}:\n"
                                       + layer.log_path.read_text(errors="replace")[-2000:])
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the {layer.role} did not answer within {START_SECONDS} s; see {layer.log_path}")
                time.sleep(0.02)

    def wait_active(self) -> None:
        """The children activate at their parents (a first attempt may have come before the parent listened)."""
        deadline = time.monotonic() + START_SECONDS
        for layer in (self.middle, self.leaf):
            while True:
                status, body, _ = _request("GET", f"{layer.url}/acr/connected/v1/status", self.password)
                if status == 200 and json.loads(body)["activation"]["status"] == "Active":
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the {layer.role} did not activate within {START_SECONDS} s; see {layer.log_path}")
                time.sleep(0.05)

    @staticmethod
    def _healthy(layer: Layer) -> bool:
        try:
            with urllib.request.urlopen(layer.url + "/healthz", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM to every instance (bottom first), then wait; SIGKILL whatever has not stopped in 15 s."""
        running = [layer for layer in reversed(self.layers) if layer.process and layer.process.poll() is None]
        for layer in running:
            layer.process.send_signal(signal.SIGTERM)
        for layer in running:
            try:
                layer.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                layer.process.kill()
                layer.process.wait(timeout=15)

    # --- the story ----------------------------------------------------------------------------------------

    def push_sample(self) -> str:
        blobs, manifest = sample_image()
        for blob in blobs:
            digest = "sha256:" + hashlib.sha256(blob).hexdigest()
            status, body, _ = _request("POST", f"{self.root.url}/v2/{REPOSITORY}/blobs/uploads/?digest={digest}",
                                       self.password, blob, "application/octet-stream")
            if status != 201:
                raise RuntimeError(f"pushing a blob to the root answered {status}: {body[:300]!r}")
        status, body, headers = _request("PUT", f"{self.root.url}/v2/{REPOSITORY}/manifests/{TAG}", self.password,
                                         manifest, OCI_MANIFEST)
        if status != 201:
            raise RuntimeError(f"pushing the manifest to the root answered {status}: {body[:300]!r}")
        return headers.get("Docker-Content-Digest", "")

    def has_image(self, layer: Layer, digest: str) -> bool:
        status, _, headers = _request("HEAD", f"{layer.url}/v2/{REPOSITORY}/manifests/{TAG}", self.password)
        return status == 200 and headers.get("Docker-Content-Digest") == digest

    def follow_image(self, digest: str, pushed_at: float) -> None:
        waiting = [self.middle, self.leaf]
        deadline = time.monotonic() + ARRIVAL_SECONDS
        while waiting:
            for layer in list(waiting):
                if self.has_image(layer, digest):
                    print(f"  arrived at the {layer.role:6} {layer.name:12} after {time.monotonic() - pushed_at:.1f} s",
                          flush=True)
                    waiting.remove(layer)
            if waiting and time.monotonic() > deadline:
                raise RuntimeError(f"the image did not reach the {waiting[0].role} within {ARRIVAL_SECONDS} s; "
                                   f"see {waiting[0].log_path}")
            time.sleep(0.05)

    def hierarchy(self) -> dict:
        """The root's view, once the leaf's report of its first sync has come up through the middle."""
        deadline, document = time.monotonic() + 30, {}
        while time.monotonic() < deadline:
            status, body, _ = _request("GET", f"{self.root.url}/acr/connected/v1/registries", self.password)
            document = json.loads(body) if status == 200 else {}
            middle = (document.get("children") or [{}])[0]
            leaf = (middle.get("children") or [{}])[0]
            if (leaf.get("report") or {}).get("lastSyncTime"):
                break
            time.sleep(0.2)
        return document

    def print_next_steps(self) -> None:
        root, middle, leaf = self.root, self.middle, self.leaf
        print(f"""
Try next (in another terminal):

  export CONNECTED_REGISTRY_USERNAME={ADMIN} CONNECTED_REGISTRY_PASSWORD='{self.password}'

  # pull the image from the leaf (skopeo; docker and containerd work too)
  skopeo copy --src-tls-verify=false --src-creds "$CONNECTED_REGISTRY_USERNAME:$CONNECTED_REGISTRY_PASSWORD" \\
      docker://127.0.0.1:{leaf.port}/{REPOSITORY}:{TAG} oci:/tmp/hello-world:{TAG}

  # push at the middle (ReadWrite): it goes up to the root and down to the leaf
  skopeo copy --dest-tls-verify=false --dest-creds "$CONNECTED_REGISTRY_USERNAME:$CONNECTED_REGISTRY_PASSWORD" \\
      oci:/tmp/hello-world:{TAG} docker://127.0.0.1:{middle.port}/demo/from-the-middle:1.0

  # a push at the leaf is refused: it is ReadOnly
  skopeo copy --dest-tls-verify=false --dest-creds "$CONNECTED_REGISTRY_USERNAME:$CONNECTED_REGISTRY_PASSWORD" \\
      oci:/tmp/hello-world:{TAG} docker://127.0.0.1:{leaf.port}/demo/refused:1.0

  connected-registry list --registry {root.url}           # the hierarchy at a glance
  connected-registry status --registry {leaf.url}         # one instance in detail
  connected-registry sync-now --registry {leaf.url}       # a full sync now, with progress
  kill {leaf.process.pid}; connected-registry list --registry {root.url}   # 30 s later the leaf shows STALE
  curl -s http://127.0.0.1:{root.metrics_port}/metrics | grep ^connected_registry_http_requests

Logs: {root.log_path}, {middle.log_path}, {leaf.log_path}""", flush=True)


def _terminate(signum, frame) -> None:  # SIGTERM ends the demo as Ctrl-C does
    raise KeyboardInterrupt


def run_demo(headless: bool = False, base_directory: str | None = None) -> int:
    previous = signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background of a script
    folder = Path(base_directory) if base_directory else Path(tempfile.mkdtemp(prefix="connected-registry-demo-"))
    demo = None
    started = time.monotonic()
    try:
        demo = Demo(folder)
        print(f"Starting a three-layer hierarchy in {folder} ...", flush=True)
        demo.start()
        demo.wait_active()
        for layer in demo.layers:
            print(f"  {layer.role:6}  {layer.name:12} {layer.mode:9}  {layer.url}  (pid {layer.process.pid})", flush=True)
        print(f"ready in {time.monotonic() - started:.1f} s", flush=True)
        pushed_at = time.monotonic()
        digest = demo.push_sample()
        print(f"\nPushed {REPOSITORY}:{TAG} ({digest[:19]}…) to the root; watching it travel down:", flush=True)
        demo.follow_image(digest, pushed_at)
        print(f"\nThe hierarchy, as the root sees it once the leaf's next report has come up (every "
              f"{REPORT_INTERVAL[2:].lower()}; connected-registry list):\n", flush=True)
        print(render_hierarchy(demo.hierarchy(), shutil.get_terminal_size((120, 24)).columns), flush=True)
        demo.print_next_steps()
        if not headless:
            print("\nThe three registries keep running. Press Ctrl-C to stop them.", flush=True)
            while True:
                signal.pause()
        return 0
    except KeyboardInterrupt:
        return 0
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):  # a second Ctrl-C must not cut the clean-up short
            signal.signal(signum, signal.SIG_IGN)
        if demo is not None:
            print("\nStopping the leaf, the middle and the root ...", flush=True)
            demo.stop()
        if base_directory is None:
            shutil.rmtree(folder, ignore_errors=True)
        print("stopped; nothing is left running" + ("" if base_directory else f", and {folder} is removed"),
              flush=True)
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, signal.default_int_handler)
