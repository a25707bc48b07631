#!/usr/bin/env python3
"""Side-by-side benchmark: this registry against CNCF distribution (Debian's `docker-registry`).

Starts both registries on free loopback ports, each with a fresh data directory under one temporary
directory, runs the same measurements against each (noisy ones repeated, alternating which registry
goes first, median reported), stops both by PID (also on Ctrl-C, SIGTERM and errors), prints a table
and writes it as JSON to benchmarks/results/latest.json.

    .venv/bin/python benchmarks/compare.py             # full run (1 GiB blob, 10x20 MiB image), ~4 min
    .venv/bin/python benchmarks/compare.py --quick     # smoke run with small sizes

Needs: curl, wrk, skopeo, docker-registry on PATH; Python 3.11 standard library only. See README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MKIMAGE = ROOT / "tests" / "support" / "mkimage.py"
DEFAULT_OURS = ROOT / ".venv" / "bin" / "connected-registry"
DEFAULT_JSON = HERE / "results" / "latest.json"

MIB = 1 << 20
MANIFEST_ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)
SUFFIX_BYTES = 32  # the tail of the random file rewritten per push, so each push is a new blob

_T0 = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


class Interrupted(KeyboardInterrupt):
    """Raised from the SIGTERM handler so the same cleanup runs as for Ctrl-C."""


def _on_sigterm(signum, frame):  # noqa: ARG001
    raise Interrupted(f"signal {signum}")


# --- processes ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_until(condition, timeout: float, what: str, interval: float = 0.05):
    """Poll `condition` until truthy or the deadline passes (no fixed sleeps for readiness)."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
        except (OSError, http.client.HTTPException) as error:
            last_error = error
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}" + (f": {last_error!r}" if last_error else ""))


class Children:
    """Every long-lived child we start, so all of them are stopped by PID whatever happens."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen] = []

    def spawn(self, argv: list[str], **kwargs) -> subprocess.Popen:
        process = subprocess.Popen(argv, **kwargs)
        self.processes.append(process)
        return process

    @staticmethod
    def stop(process: subprocess.Popen, grace: float = 15.0) -> None:
        if process.poll() is None:
            try:
                os.kill(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=grace)

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            try:
                self.stop(process)
            except Exception as error:  # noqa: BLE001 - keep stopping the others
                progress(f"could not stop PID {process.pid}: {error!r}")
        self.processes.clear()


CHILDREN = Children()


def run(argv: list[str], timeout: float, what: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """A short-lived command; subprocess.run kills it on timeout, Ctrl-C or SIGTERM."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({result.returncode}): {' '.join(argv)}\n{result.stdout}\n{result.stderr}")
    return result


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for PID {pid}")


# --- HTTP ------------------------------------------------------------------------------------------


def http_request(method: str, url: str, headers: dict | None = None, body: bytes | None = None,
                 timeout: float = 60) -> tuple[int, dict[str, str], bytes]:
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request(method, target, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        connection.close()


# --- the two registries ----------------------------------------------------------------------------


@dataclass
class Registry:
    key: str  # "ours" | "distribution"
    argv: list[str]
    data_dir: Path
    port: int
    log_path: Path
    process: subprocess.Popen | None = None
    notes: dict = field(default_factory=dict)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")
        try:
            self.process = CHILDREN.spawn(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True)  # Ctrl-C reaches us, we stop it by PID
        finally:
            log.close()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.key} exited with {self.process.returncode}:\n{self.log_tail()}")

    def ready(self) -> bool:
        self._check_alive()
        if self.key == "ours":
            return "serving http://" in self.log_path.read_text(errors="replace") and port_open(self.port)
        status, _, _ = http_request("GET", f"{self.url}/v2/", timeout=2)
        return status == 200

    def rss_mib(self) -> float:
        self._check_alive()
        return rss_kib(self.pid) / 1024

    def cpu(self) -> float:
        self._check_alive()
        return cpu_seconds(self.pid)

    def stop(self) -> None:
        if self.process is not None:
            CHILDREN.stop(self.process)


DISTRIBUTION_CONFIG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:{port}
"""


def make_registries(work: Path, ours_bin: str, distribution_bin: str) -> dict[str, Registry]:
    ours_port = free_port()
    dist_port = free_port()
    while dist_port == ours_port:
        dist_port = free_port()
    ours_data = work / "ours-data"
    dist_data = work / "distribution-data"
    config = work / "distribution.yml"
    config.write_text(DISTRIBUTION_CONFIG.format(root=dist_data, port=dist_port))
    return {
        "ours": Registry(
            "ours",
            [ours_bin, "serve", "--data", str(ours_data), "--listen", f"127.0.0.1:{ours_port}",
             "--metrics-listen", "off"],
            ours_data, ours_port, work / "ours.log",
        ),
        "distribution": Registry(
            "distribution", [distribution_bin, "serve", str(config)], dist_data, dist_port, work / "distribution.log",
        ),
    }


def orders(registries: dict[str, Registry], repeat: int):
    """(round, registry) pairs, alternating which registry goes first in each round."""
    both = [registries["ours"], registries["distribution"]]
    for round_number in range(repeat):
        for registry in (both if round_number % 2 == 0 else both[::-1]):
            yield round_number, registry


# --- test data -------------------------------------------------------------------------------------


class RandomBlob:
    """One file of random bytes, generated once. Each push rewrites its last 32 bytes (a new blob each
    time, so neither registry can skip work for content it already holds); the digest of the unchanged
    prefix is kept, so each new digest costs nothing."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        prefix = hashlib.sha256()
        left = size - SUFFIX_BYTES
        with open(path, "wb") as file:
            while left > 0:
                block = os.urandom(min(left, 8 * MIB))
                prefix.update(block)
                file.write(block)
                left -= len(block)
            file.write(b"\0" * SUFFIX_BYTES)
        self._prefix = prefix

    def next_variant(self, label: str) -> str:
        suffix = label.encode()[:SUFFIX_BYTES].ljust(SUFFIX_BYTES, b"\0")
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.pwrite(fd, suffix, self.size - SUFFIX_BYTES)
        finally:
            os.close(fd)
        hasher = self._prefix.copy()
        hasher.update(suffix)
        return "sha256:" + hasher.hexdigest()


def make_layout(layout: Path, tag: str, layers: int, size: str) -> None:
    run([sys.executable, str(MKIMAGE), str(layout), "--tag", tag, "--layers", str(layers), "--size", size],
        timeout=1800, what=f"mkimage {layout}")


def skopeo_copy(layout: Path, tag: str, registry: Registry, repository: str, timeout: float) -> float:
    started = time.perf_counter()
    run(["skopeo", "copy", "-q", "--preserve-digests", "--dest-tls-verify=false",
         f"oci:{layout}:{tag}", f"docker://{registry.host}/{repository}:{tag}"],
        timeout=timeout, what=f"skopeo copy to {registry.key}")
    return time.perf_counter() - started


# --- measurements ----------------------------------------------------------------------------------


def push_blob(registry: Registry, repository: str, blob: RandomBlob, digest: str) -> float:
    """Monolithic push: POST, then one PUT ?digest= carrying the whole body (curl -T). Returns seconds."""
    started = time.perf_counter()
    status, headers, body = http_request("POST", f"{registry.url}/v2/{repository}/blobs/uploads/")
    if status != 202 or "location" not in headers:
        raise RuntimeError(f"{registry.key}: POST upload answered {status}: {body[:300]!r}")
    location = urllib.parse.urljoin(registry.url + "/", headers["location"])
    put_url = location + ("&" if "?" in location else "?") + "digest=" + digest
    result = run(["curl", "-sS", "-X", "PUT", "-T", str(blob.path), "-H", "Expect:",
                  "-H", "Content-Type: application/octet-stream", "-o", "/dev/null",
                  "-w", "%{http_code}", put_url], timeout=1800, what=f"PUT to {registry.key}")
    elapsed = time.perf_counter() - started
    if result.stdout.strip() != "201":
        raise RuntimeError(f"{registry.key}: PUT upload answered {result.stdout.strip()}")
    return elapsed


def pull_blob(registry: Registry, repository: str, digest: str, size: int) -> float:
    started = time.perf_counter()
    result = run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                  f"{registry.url}/v2/{repository}/blobs/{digest}"], timeout=1800, what=f"GET from {registry.key}")
    elapsed = time.perf_counter() - started
    code, downloaded = result.stdout.split()
    if code != "200" or int(downloaded) != size:
        raise RuntimeError(f"{registry.key}: blob GET answered {code} with {downloaded} of {size} bytes")
    return elapsed


def run_wrk(registry: Registry, path: str, lua: Path, threads: int, connections: int, duration: int) -> dict:
    result = run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(lua),
                  registry.url + path], timeout=duration + 60, what=f"wrk against {registry.key}")
    text = result.stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not rps:
        raise RuntimeError(f"could not read wrk output:\n{text}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    socket_errors = re.search(r"Socket errors:(.*)", text)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.MULTILINE)
    total = re.search(r"(\d+) requests in", text)
    return {
        "rps": float(rps.group(1)),
        "requests": int(total.group(1)) if total else 0,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": socket_errors.group(1).strip() if socket_errors else "",
        "p99": p99.group(1) if p99 else "",
    }


def concurrent_pulls(registry: Registry, repository: str, digest: str, size: int, clients: int,
                     timeout: float) -> dict:
    """`clients` curl processes pull the same blob at once; RSS sampled every 100 ms. Returns peak etc."""
    before = registry.rss_mib()
    url = f"{registry.url}/v2/{repository}/blobs/{digest}"
    pulls = [CHILDREN.spawn(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(clients)]
    started = time.perf_counter()
    peak = before
    samples = 0
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in pulls):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{clients} concurrent pulls from {registry.key} took over {timeout:.0f}s")
            peak = max(peak, registry.rss_mib())
            samples += 1
            time.sleep(0.1)  # the sampling period, not a readiness wait
        elapsed = time.perf_counter() - started
        peak = max(peak, registry.rss_mib())
    finally:
        for p in pulls:
            CHILDREN.stop(p, grace=5)
            if p in CHILDREN.processes:
                CHILDREN.processes.remove(p)
    failures = []
    for p in pulls:
        out, err = p.communicate()
        fields = out.split()
        if p.returncode != 0 or fields[:1] != ["200"] or int(fields[1]) != size:
            failures.append(f"rc={p.returncode} out={out.strip()!r} err={err.strip()[:200]!r}")
    if failures:
        raise RuntimeError(f"{registry.key}: {len(failures)} of {clients} concurrent pulls failed: {failures[:3]}")
    return {"before": before, "peak": peak, "seconds": elapsed, "samples": samples,
            "aggregate_mb_s": clients * size / 1e6 / elapsed}


# --- table -----------------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    unit: str
    ours: float
    distribution: float
    ratio_label: str  # how the ratio is computed
    target: str
    met: bool | None
    samples: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.ratio_label == "ours/dist":
            return self.ours / self.distribution if self.distribution else None
        if self.ratio_label == "dist/ours":
            return self.distribution / self.ours if self.ours else None
        if self.ratio_label == "ours-dist":
            return self.ours - self.distribution
        raise ValueError(self.ratio_label)


def ratio_row(name: str, unit: str, ours: list[float], dist: list[float], label: str, minimum: float | None = None,
              maximum: float | None = None, details: dict | None = None) -> Row:
    row = Row(name, unit, statistics.median(ours), statistics.median(dist), label, "", None,
              samples={"ours": ours, "distribution": dist}, details=details or {})
    ratio = row.ratio
    if minimum is not None:
        row.target = f"{label} >= {minimum:g}"
        row.met = ratio is not None and ratio >= minimum
    elif maximum is not None:
        row.target = f"{label} <= {maximum:g}"
        row.met = ratio is not None and ratio <= maximum
    return row


def format_number(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def format_table(rows: list[Row]) -> str:
    header = ["measurement", "ours", "distribution", "ratio", "ratio is", "target", "met"]
    lines = [header]
    for row in rows:
        ratio = row.ratio
        lines.append([
            f"{row.name} ({row.unit})",
            format_number(row.ours),
            format_number(row.distribution),
            (f"{ratio:.2f}x" if row.ratio_label != "ours-dist" else format_number(ratio)) if ratio is not None else "-",
            row.ratio_label,
            row.target or "(info)",
            {True: "yes", False: "NO", None: ""}[row.met],
        ])
    return align(lines)


def align(lines: list[list[str]]) -> str:
    """A text table of `lines` (the first is the header, ruled off): the name column and the last columns
    left-aligned, the three number columns right-aligned."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = []
    for index, line in enumerate(lines):
        cells = [line[0].ljust(widths[0])] + [cell.rjust(widths[i]) if i < 4 else cell.ljust(widths[i])
                                              for i, cell in enumerate(line) if i > 0]
        out.append("  ".join(cells).rstrip())
        if index == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def git_head() -> str:
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=20).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "modules"],
                               capture_output=True, text=True, timeout=20).stdout.strip()
        return head + (" (modules/ has uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


def tool_versions(distribution_bin: str) -> dict:
    def first_line(argv):
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=20)
            return (result.stdout or result.stderr).strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            return "?"

    return {
        "distribution": first_line([distribution_bin, "--version"]),
        "skopeo": first_line(["skopeo", "--version"]),
        "wrk": first_line(["wrk", "--version"]),
        "curl": first_line(["curl", "--version"]),
        "python": sys.version.split()[0],
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
    }


# --- the run ---------------------------------------------------------------------------------------


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, help="rounds of each noisy measurement (default 3; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run (64 MiB blob, 10x1 MiB image, 3 s wrk)")
    parser.add_argument("--blob-size", help="blob for push/pull/memory, e.g. 1G (default 1G; 64M with --quick)")
    parser.add_argument("--layers", type=int, default=10, help="layers of the skopeo image (default 10)")
    parser.add_argument("--layer-size", help="size of each layer (default 20M; 1M with --quick)")
    parser.add_argument("--clients", type=int, default=20, help="concurrent pulls in the memory test (default 20)")
    parser.add_argument("--wrk-duration", type=int, help="seconds per wrk run (default 10; 3 with --quick)")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--wrk-connections", type=int, default=32)
    parser.add_argument("--tmpdir", help="parent of the temporary work directory (default: the system's)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (data, logs) afterwards")
    parser.add_argument("--json", default=str(DEFAULT_JSON), help=f"where to write the results (default {DEFAULT_JSON})")
    parser.add_argument("--ours", default=str(DEFAULT_OURS), help="the connected-registry command")
    parser.add_argument("--distribution", default=shutil.which("docker-registry") or "docker-registry",
                        help="the CNCF distribution binary")
    arguments = parser.parse_args()
    arguments.repeat = arguments.repeat or (1 if arguments.quick else 3)
    arguments.blob_size = arguments.blob_size or ("64M" if arguments.quick else "1G")
    arguments.layer_size = arguments.layer_size or ("1M" if arguments.quick else "20M")
    arguments.wrk_duration = arguments.wrk_duration or (3 if arguments.quick else 10)
    return arguments


def parse_size(text: str) -> int:
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    multiplier = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    return int(float(text.rstrip("KMG")) * multiplier)


def benchmark(arguments: argparse.Namespace, work: Path) -> tuple[list[Row], dict]:
    for tool in ("curl", "wrk", "skopeo"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not on PATH (scripts/setup.sh --test installs it)")
    for binary in (arguments.ours, arguments.distribution):
        if shutil.which(binary) is None:
            raise RuntimeError(f"{binary} not found (run scripts/setup.sh --test)")

    blob_size = parse_size(arguments.blob_size)
    repeat = arguments.repeat
    registries = make_registries(work, arguments.ours, arguments.distribution)
    ours, dist = registries["ours"], registries["distribution"]

    progress(f"starting ours on {ours.host} and distribution on {dist.host} (work dir {work})")
    for registry in registries.values():
        registry.start()
    for registry in registries.values():
        wait_until(registry.ready, timeout=60, what=f"{registry.key} on {registry.host}")
        progress(f"{registry.key} ready, PID {registry.pid}")

    # Idle RSS right after start, before any request: the highest of ten samples over one second.
    idle = {key: 0.0 for key in registries}
    for _ in range(10):
        for key, registry in registries.items():
            idle[key] = max(idle[key], registry.rss_mib())
        time.sleep(0.1)  # sampling period
    progress(f"idle RSS after start: ours {idle['ours']:.1f} MiB, distribution {idle['distribution']:.1f} MiB")

    # Test data, made once before any timing.
    progress(f"generating {blob_size / MIB:.0f} MiB of random data")
    blob = RandomBlob(work / "random.bin", blob_size)
    small_layout = work / "small-layout"
    make_layout(small_layout, "v1", 2, "64K")
    layouts = []
    for round_number in range(repeat):
        layout = work / f"image-{round_number}"
        progress(f"making image layout {round_number + 1}/{repeat}: {arguments.layers} x {arguments.layer_size}")
        make_layout(layout, "v1", arguments.layers, arguments.layer_size)
        layouts.append(layout)
    image_bytes = sum(f.stat().st_size for f in (layouts[0] / "blobs" / "sha256").iterdir())

    rows: list[Row] = []

    # 1. Monolithic push.
    push_times: dict[str, list[float]] = {"ours": [], "distribution": []}
    cpu_used: dict[str, dict[str, list[float]]] = {k: {"ours": [], "distribution": []} for k in ("push", "pull", "wrk", "skopeo")}
    last_blob: dict[str, str] = {}
    for round_number, registry in orders(registries, repeat):
        digest = blob.next_variant(f"{registry.key}-{round_number}-{time.time_ns()}")
        os.sync()  # leftover writeback from the previous step must not land in this measurement
        cpu_before = registry.cpu()
        seconds = push_blob(registry, "bench/push", blob, digest)
        cpu_used["push"][registry.key].append(registry.cpu() - cpu_before)
        push_times[registry.key].append(seconds)
        last_blob[registry.key] = digest
        progress(f"push   round {round_number + 1}/{repeat} {registry.key:12s} {blob_size / 1e6 / seconds:8.1f} MB/s")
    os.sync()
    rows.append(ratio_row(f"push {arguments.blob_size} monolithic", "MB/s",
                          [blob_size / 1e6 / t for t in push_times["ours"]],
                          [blob_size / 1e6 / t for t in push_times["distribution"]], "ours/dist", minimum=2.0))

    # 2. Pull.
    pull_rates: dict[str, list[float]] = {"ours": [], "distribution": []}
    for round_number, registry in orders(registries, repeat):
        cpu_before = registry.cpu()
        seconds = pull_blob(registry, "bench/push", last_blob[registry.key], blob_size)
        cpu_used["pull"][registry.key].append(registry.cpu() - cpu_before)
        pull_rates[registry.key].append(blob_size / 1e6 / seconds)
        progress(f"pull   round {round_number + 1}/{repeat} {registry.key:12s} {pull_rates[registry.key][-1]:8.1f} MB/s")
    rows.append(ratio_row(f"pull {arguments.blob_size}", "MB/s", pull_rates["ours"], pull_rates["distribution"],
                          "ours/dist", minimum=0.9))

    # 3. Manifest GET by tag under wrk.
    lua = work / "accept.lua"
    lua.write_text(f'wrk.method = "GET"\nwrk.headers["Accept"] = "{MANIFEST_ACCEPT}"\n')
    manifest_path = "/v2/bench/img/manifests/v1"
    for registry in registries.values():
        skopeo_copy(small_layout, "v1", registry, "bench/img", timeout=300)
        status, headers, body = http_request("GET", registry.url + manifest_path, {"Accept": MANIFEST_ACCEPT})
        if status != 200:
            raise RuntimeError(f"{registry.key}: manifest GET answered {status}: {body[:300]!r}")
        progress(f"{registry.key}: small image pushed; manifest {headers.get('docker-content-digest')} "
                 f"({headers.get('content-type')}, {len(body)} bytes)")
    wrk_results: dict[str, list[dict]] = {"ours": [], "distribution": []}
    for round_number, registry in orders(registries, repeat):
        cpu_before = registry.cpu()
        result = run_wrk(registry, manifest_path, lua, arguments.wrk_threads, arguments.wrk_connections,
                         arguments.wrk_duration)
        cpu_used["wrk"][registry.key].append((registry.cpu() - cpu_before) / max(result["requests"], 1) * 1e6)
        wrk_results[registry.key].append(result)
        progress(f"wrk    round {round_number + 1}/{repeat} {registry.key:12s} {result['rps']:8.0f} req/s "
                 f"p99 {result['p99']} non-2xx {result['non_2xx']} {result['socket_errors']}")
        if result["non_2xx"]:
            progress(f"WARNING: {registry.key} answered {result['non_2xx']} manifest GETs with an error status")
    rows.append(ratio_row(
        "manifest GET by tag, wrk -t{} -c{} -d{}s".format(arguments.wrk_threads, arguments.wrk_connections,
                                                          arguments.wrk_duration),
        "req/s", [r["rps"] for r in wrk_results["ours"]], [r["rps"] for r in wrk_results["distribution"]],
        "ours/dist", minimum=1.5, details=wrk_results))

    # 4. skopeo copy of a multi-layer image (a new image each round, so nothing can be skipped or mounted).
    copy_times: dict[str, list[float]] = {"ours": [], "distribution": []}
    for round_number, registry in orders(registries, repeat):
        os.sync()
        cpu_before = registry.cpu()
        seconds = skopeo_copy(layouts[round_number], "v1", registry, f"bench/copy{round_number}", timeout=1800)
        cpu_used["skopeo"][registry.key].append(registry.cpu() - cpu_before)
        copy_times[registry.key].append(seconds)
        progress(f"skopeo round {round_number + 1}/{repeat} {registry.key:12s} {seconds:8.2f} s")
    os.sync()
    rows.append(ratio_row(f"skopeo copy {arguments.layers}x{arguments.layer_size} image ({image_bytes / MIB:.0f} MiB)",
                          "s", copy_times["ours"], copy_times["distribution"], "ours/dist", maximum=1.0))

    # 5. Memory: idle after start, and peak while N clients pull the same blob (one registry at a time).
    loads = {}
    for registry in (ours, dist):
        progress(f"memory: {arguments.clients} concurrent pulls of {arguments.blob_size} from {registry.key}")
        loads[registry.key] = concurrent_pulls(registry, "bench/push", last_blob[registry.key], blob_size,
                                               arguments.clients, timeout=1800)
        load = loads[registry.key]
        progress(f"memory: {registry.key:12s} before {load['before']:.1f} MiB, peak {load['peak']:.1f} MiB, "
                 f"{load['aggregate_mb_s']:.0f} MB/s aggregate over {load['seconds']:.1f} s")
    after = {key: registry.rss_mib() for key, registry in registries.items()}

    def memory_row(name, ours_value, dist_value, target=None, met=None):
        row = Row(name, "MiB", ours_value, dist_value, "ours/dist", target or "", met)
        return row

    rows.append(memory_row("RSS idle after start", idle["ours"], idle["distribution"], "ours <= 60 MiB",
                           idle["ours"] <= 60))
    rows.append(memory_row(f"RSS before {arguments.clients} pulls", loads["ours"]["before"],
                           loads["distribution"]["before"]))
    rows.append(memory_row(f"RSS peak during {arguments.clients} pulls", loads["ours"]["peak"],
                           loads["distribution"]["peak"]))
    growth = {key: loads[key]["peak"] - loads[key]["before"] for key in loads}
    grow_row = Row(f"RSS growth under {arguments.clients} pulls (peak - before)", "MiB", growth["ours"],
                   growth["distribution"], "ours-dist", "ours <= 10 MiB", growth["ours"] <= 10)
    rows.append(grow_row)
    rows.append(Row("RSS peak - idle after start", "MiB", loads["ours"]["peak"] - idle["ours"],
                    loads["distribution"]["peak"] - idle["distribution"], "ours-dist", "", None))
    rows.append(Row(f"{arguments.clients}-client pull aggregate", "MB/s", loads["ours"]["aggregate_mb_s"],
                    loads["distribution"]["aggregate_mb_s"], "ours/dist", "", None))

    # Registry CPU time per operation (user + system, all threads): how much of the 2-core box each one needs.
    for key, name, unit in (("push", f"CPU per {arguments.blob_size} push", "CPU s"),
                            ("pull", f"CPU per {arguments.blob_size} pull", "CPU s"),
                            ("wrk", "CPU per manifest GET", "CPU us"),
                            ("skopeo", "CPU per skopeo copy", "CPU s")):
        rows.append(ratio_row(name, unit, cpu_used[key]["ours"], cpu_used[key]["distribution"], "ours/dist"))

    meta = {
        "blob_bytes": blob_size,
        "image_bytes": image_bytes,
        "repeat": repeat,
        "quick": arguments.quick,
        "git_head": git_head(),
        "ports": {key: registry.port for key, registry in registries.items()},
        "idle_rss_mib": idle,
        "loads": loads,
        "rss_after_all_mib": after,
        "distribution_config": (work / "distribution.yml").read_text(),
    }
    return rows, meta


def run_guarded(work: Path, keep: bool, body, logs) -> int:
    """Runs a benchmark's `body()` in `work`; returns the exit status. Ctrl-C, SIGTERM or a failure stops every
    child process and removes `work` (unless `keep`); a failure shows the tail of each log in `logs()`."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        body()
        return 0
    except KeyboardInterrupt as interrupt:
        progress(f"interrupted ({str(interrupt) or 'Ctrl-C'}); stopping everything")
        return 130
    except Exception as error:  # noqa: BLE001 - report, then clean up
        progress(f"FAILED: {error!r}")
        for log in logs():
            if log.exists() and log.stat().st_size:
                progress(f"--- tail of {log} ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:]))
        return 1
    finally:
        # Ignore further Ctrl-C/SIGTERM while stopping, so the stop itself is not cut short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        CHILDREN.stop_all()
        if keep:
            progress(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def write_result(path: str, document: dict) -> None:
    """The run's JSON document (when, command and commit added) at `path`."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                  "command": " ".join([sys.executable, *sys.argv]), "commit": git_head(),
                                  **document}, indent=2) + "\n")
    progress(f"wrote {target}")


def main() -> int:
    arguments = parse_arguments()
    work = Path(tempfile.mkdtemp(prefix="cr-bench-", dir=arguments.tmpdir or None))

    def body() -> None:
        rows, meta = benchmark(arguments, work)
        table = format_table(rows)
        print(table)
        write_result(arguments.json, {
            "versions": tool_versions(arguments.distribution),
            "medians_of": arguments.repeat,
            "rows": [
                {
                    "measurement": row.name, "unit": row.unit, "ours": row.ours, "distribution": row.distribution,
                    "ratio": row.ratio, "ratio_is": row.ratio_label, "target": row.target or None, "met": row.met,
                    "samples": row.samples or None, "details": row.details or None,
                }
                for row in rows
            ],
            "table": table,
            **meta,
        })

    return run_guarded(work, arguments.keep, body, lambda: [work / "ours.log", work / "distribution.log"])


if __name__ == "__main__":
    sys.exit(main())
