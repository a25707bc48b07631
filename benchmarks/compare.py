#!/usr/bin/env python3
"""Side-by-side benchmark: this registry against CNCF distribution (Debian's `docker-registry`).

Starts both registries on free loopback ports, each with a fresh data directory under one temporary
directory, runs the same measurements against each (noisy ones repeated, alternating which registry
goes first, median reported), stops both by PID (also on Ctrl-C, SIGTERM and errors), prints a table
and writes it as JSON to benchmarks/results/latest.json.

    .venv/bin/python benchmarks/compare.py             # full run (1 GiB blob, 10x20 MiB image), ~4 min
    .venv/bin/python benchmarks/compare.py --quick     # smoke run with small sizes

Needs: curl, wrk, skopeo, docker-registry on PATH, and the project's .venv: the registries are started and stopped
with tests/support's process helpers (tests/support/processes.py, clients.py). See README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import signal
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
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.clients import Distribution, run  # noqa: E402 - after the repository root is on the path
from tests.support.http import request  # noqa: E402
from tests.support.layouts import make_image  # noqa: E402
from tests.support.processes import RegistryProcess, stop_process  # noqa: E402

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


class Children:
    """Every long-lived child we start (anything with `stop()`), so all of them are stopped by PID whatever
    happens."""

    def __init__(self) -> None:
        self.running: list = []

    def track(self, child):
        self.running.append(child)
        return child

    def stop(self, child) -> None:
        child.stop()
        if child in self.running:
            self.running.remove(child)

    def stop_all(self) -> None:
        for child in reversed(self.running):
            try:
                child.stop()
            except Exception as error:  # noqa: BLE001 - keep stopping the others
                progress(f"could not stop {child!r}: {error!r}")
        self.running.clear()


CHILDREN = Children()

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
    raise RuntimeError(f"no VmRSS for PID {pid}: it has exited (its log is shown below)")


# --- the two registries ----------------------------------------------------------------------------


@dataclass
class Registry:
    """One registry under measurement: its column in the table, and its process's CPU time and memory, read by PID."""

    key: str  # "ours" | "distribution"
    server: RegistryProcess | Distribution

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def pid(self) -> int:
        return self.server.pid

    def rss_mib(self) -> float:
        return rss_kib(self.pid) / 1024

    def cpu(self) -> float:
        return cpu_seconds(self.pid)


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
  addr: {addr}
"""


def start_distribution(work: Path, binary: str, name: str = "distribution") -> Distribution:
    """CNCF distribution as the baseline: its stock configuration (DISTRIBUTION_CONFIG), in `work/name`."""
    return CHILDREN.track(Distribution(work / name, timeout=60, config=DISTRIBUTION_CONFIG, binary=binary))


def start_registries(work: Path, ours_bin: str, distribution_bin: str) -> dict[str, Registry]:
    ours = CHILDREN.track(RegistryProcess(work / "ours-data", command=[ours_bin], metrics=False,
                                          log_path=work / "ours.log", wait=False))
    distribution = start_distribution(work, distribution_bin)
    ours.wait_ready(timeout=60)
    return {"ours": Registry("ours", ours), "distribution": Registry("distribution", distribution)}


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


def skopeo_copy(layout: Path, tag: str, registry: Registry, repository: str, timeout: float) -> float:
    started = time.perf_counter()
    run(["skopeo", "copy", "-q", "--preserve-digests", "--dest-tls-verify=false",
         f"oci:{layout}:{tag}", f"docker://{registry.host}/{repository}:{tag}"], timeout=timeout)
    return time.perf_counter() - started


# --- measurements ----------------------------------------------------------------------------------


def push_blob(registry: Registry, repository: str, blob: RandomBlob, digest: str) -> float:
    """Monolithic push: POST, then one PUT ?digest= carrying the whole body (curl -T). Returns seconds."""
    started = time.perf_counter()
    reply = request(f"{registry.url}/v2/{repository}/blobs/uploads/", "POST", timeout=60)
    if reply.status != 202 or "location" not in reply.headers:
        raise RuntimeError(f"{registry.key}: POST upload answered {reply.status}: {reply.body[:300]!r}")
    location = urllib.parse.urljoin(registry.url + "/", reply.headers["location"])
    put_url = location + ("&" if "?" in location else "?") + "digest=" + digest
    result = run(["curl", "-sS", "-X", "PUT", "-T", str(blob.path), "-H", "Expect:",
                  "-H", "Content-Type: application/octet-stream", "-o", "/dev/null",
                  "-w", "%{http_code}", put_url], timeout=1800)
    elapsed = time.perf_counter() - started
    if result.stdout.strip() != "201":
        raise RuntimeError(f"{registry.key}: PUT upload answered {result.stdout.strip()}")
    return elapsed


def pull_blob(registry: Registry, repository: str, digest: str, size: int) -> float:
    started = time.perf_counter()
    result = run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                  f"{registry.url}/v2/{repository}/blobs/{digest}"], timeout=1800)
    elapsed = time.perf_counter() - started
    code, downloaded = result.stdout.split()
    if code != "200" or int(downloaded) != size:
        raise RuntimeError(f"{registry.key}: blob GET answered {code} with {downloaded} of {size} bytes")
    return elapsed


def run_wrk(registry: Registry, path: str, lua: Path, threads: int, connections: int, duration: int) -> dict:
    result = run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(lua),
                  registry.url + path], timeout=duration + 60)
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
    pulls = [subprocess.Popen(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", url],
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
            stop_process(p, grace=5)
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


@dataclass
class Session:
    """One run's registries and settings, and what the measurements pass on: the CPU each registry used per
    operation, and the last blob pushed to each (pulled in the pull and memory steps)."""

    arguments: argparse.Namespace
    registries: dict[str, Registry]
    blob_size: int
    cpu_used: dict[str, dict[str, list[float]]] = field(default_factory=lambda: {
        step: {"ours": [], "distribution": []} for step in ("push", "pull", "wrk", "skopeo")})
    last_blob: dict[str, str] = field(default_factory=dict)

    def rounds(self):
        return orders(self.registries, self.arguments.repeat)

    def progress_round(self, step: str, round_number: int, registry: Registry, text: str) -> None:
        progress(f"{step:6s} round {round_number + 1}/{self.arguments.repeat} {registry.key:12s} {text}")


def check_tools(arguments: argparse.Namespace) -> None:
    for tool in ("curl", "wrk", "skopeo"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not on PATH (scripts/setup.sh --test installs it)")
    for binary in (arguments.ours, arguments.distribution):
        if shutil.which(binary) is None:
            raise RuntimeError(f"{binary} not found (run scripts/setup.sh --test)")


def idle_rss(registries: dict[str, Registry]) -> dict[str, float]:
    """Idle RSS right after start, before any request: the highest of ten samples over one second."""
    idle = {key: 0.0 for key in registries}
    for _ in range(10):
        for key, registry in registries.items():
            idle[key] = max(idle[key], registry.rss_mib())
        time.sleep(0.1)  # sampling period
    progress(f"idle RSS after start: ours {idle['ours']:.1f} MiB, distribution {idle['distribution']:.1f} MiB")
    return idle


def make_images(arguments: argparse.Namespace, work: Path) -> tuple[Path, list[Path], int]:
    """The small image for the manifest GETs, a new multi-layer image per skopeo round, and the size of one."""
    small_layout = work / "small-layout"
    make_image(small_layout, "v1", 2, "64K")
    layouts = []
    for round_number in range(arguments.repeat):
        layout = work / f"image-{round_number}"
        progress(f"making image layout {round_number + 1}/{arguments.repeat}: {arguments.layers} x "
                 f"{arguments.layer_size}")
        make_image(layout, "v1", arguments.layers, arguments.layer_size)
        layouts.append(layout)
    image_bytes = sum(f.stat().st_size for f in (layouts[0] / "blobs" / "sha256").iterdir())
    return small_layout, layouts, image_bytes


def measure_pushes(session: Session, blob: RandomBlob) -> Row:
    """1. Monolithic push."""
    push_times: dict[str, list[float]] = {"ours": [], "distribution": []}
    for round_number, registry in session.rounds():
        digest = blob.next_variant(f"{registry.key}-{round_number}-{time.time_ns()}")
        os.sync()  # leftover writeback from the previous step must not land in this measurement
        cpu_before = registry.cpu()
        seconds = push_blob(registry, "bench/push", blob, digest)
        session.cpu_used["push"][registry.key].append(registry.cpu() - cpu_before)
        push_times[registry.key].append(seconds)
        session.last_blob[registry.key] = digest
        session.progress_round("push", round_number, registry, f"{session.blob_size / 1e6 / seconds:8.1f} MB/s")
    os.sync()
    return ratio_row(f"push {session.arguments.blob_size} monolithic", "MB/s",
                     [session.blob_size / 1e6 / t for t in push_times["ours"]],
                     [session.blob_size / 1e6 / t for t in push_times["distribution"]], "ours/dist", minimum=2.0)


def measure_pulls(session: Session) -> Row:
    """2. Pull."""
    pull_rates: dict[str, list[float]] = {"ours": [], "distribution": []}
    for round_number, registry in session.rounds():
        cpu_before = registry.cpu()
        seconds = pull_blob(registry, "bench/push", session.last_blob[registry.key], session.blob_size)
        session.cpu_used["pull"][registry.key].append(registry.cpu() - cpu_before)
        pull_rates[registry.key].append(session.blob_size / 1e6 / seconds)
        session.progress_round("pull", round_number, registry, f"{pull_rates[registry.key][-1]:8.1f} MB/s")
    return ratio_row(f"pull {session.arguments.blob_size}", "MB/s", pull_rates["ours"], pull_rates["distribution"],
                     "ours/dist", minimum=0.9)


def push_small_image(session: Session, small_layout: Path, manifest_path: str) -> None:
    for registry in session.registries.values():
        skopeo_copy(small_layout, "v1", registry, "bench/img", timeout=300)
        reply = request(registry.url + manifest_path, headers={"Accept": MANIFEST_ACCEPT})
        if reply.status != 200:
            raise RuntimeError(f"{registry.key}: manifest GET answered {reply.status}: {reply.body[:300]!r}")
        progress(f"{registry.key}: small image pushed; manifest {reply.headers.get('docker-content-digest')} "
                 f"({reply.headers.get('content-type')}, {len(reply.body)} bytes)")


def measure_manifest_gets(session: Session, work: Path, small_layout: Path) -> Row:
    """3. Manifest GET by tag under wrk."""
    arguments = session.arguments
    lua = work / "accept.lua"
    lua.write_text(f'wrk.method = "GET"\nwrk.headers["Accept"] = "{MANIFEST_ACCEPT}"\n')
    manifest_path = "/v2/bench/img/manifests/v1"
    push_small_image(session, small_layout, manifest_path)
    wrk_results: dict[str, list[dict]] = {"ours": [], "distribution": []}
    for round_number, registry in session.rounds():
        cpu_before = registry.cpu()
        result = run_wrk(registry, manifest_path, lua, arguments.wrk_threads, arguments.wrk_connections,
                         arguments.wrk_duration)
        session.cpu_used["wrk"][registry.key].append((registry.cpu() - cpu_before) / max(result["requests"], 1) * 1e6)
        wrk_results[registry.key].append(result)
        session.progress_round("wrk", round_number, registry, f"{result['rps']:8.0f} req/s p99 {result['p99']} "
                               f"non-2xx {result['non_2xx']} {result['socket_errors']}")
        if result["non_2xx"]:
            progress(f"WARNING: {registry.key} answered {result['non_2xx']} manifest GETs with an error status")
    return ratio_row(
        "manifest GET by tag, wrk -t{} -c{} -d{}s".format(arguments.wrk_threads, arguments.wrk_connections,
                                                          arguments.wrk_duration),
        "req/s", [r["rps"] for r in wrk_results["ours"]], [r["rps"] for r in wrk_results["distribution"]],
        "ours/dist", minimum=1.5, details=wrk_results)


def measure_skopeo_copies(session: Session, layouts: list[Path], image_bytes: int) -> Row:
    """4. skopeo copy of a multi-layer image (a new image each round, so nothing can be skipped or mounted)."""
    copy_times: dict[str, list[float]] = {"ours": [], "distribution": []}
    for round_number, registry in session.rounds():
        os.sync()
        cpu_before = registry.cpu()
        seconds = skopeo_copy(layouts[round_number], "v1", registry, f"bench/copy{round_number}", timeout=1800)
        session.cpu_used["skopeo"][registry.key].append(registry.cpu() - cpu_before)
        copy_times[registry.key].append(seconds)
        session.progress_round("skopeo", round_number, registry, f"{seconds:8.2f} s")
    os.sync()
    arguments = session.arguments
    return ratio_row(f"skopeo copy {arguments.layers}x{arguments.layer_size} image ({image_bytes / MIB:.0f} MiB)",
                     "s", copy_times["ours"], copy_times["distribution"], "ours/dist", maximum=1.0)


def measure_memory(session: Session) -> dict[str, dict]:
    """5. Memory: peak while N clients pull the same blob (one registry at a time)."""
    arguments, loads = session.arguments, {}
    for registry in session.registries.values():
        progress(f"memory: {arguments.clients} concurrent pulls of {arguments.blob_size} from {registry.key}")
        loads[registry.key] = concurrent_pulls(registry, "bench/push", session.last_blob[registry.key],
                                               session.blob_size, arguments.clients, timeout=1800)
        load = loads[registry.key]
        progress(f"memory: {registry.key:12s} before {load['before']:.1f} MiB, peak {load['peak']:.1f} MiB, "
                 f"{load['aggregate_mb_s']:.0f} MB/s aggregate over {load['seconds']:.1f} s")
    return loads


def memory_rows(clients: int, idle: dict[str, float], loads: dict[str, dict]) -> list[Row]:
    def memory_row(name, ours_value, dist_value, target=None, met=None):
        return Row(name, "MiB", ours_value, dist_value, "ours/dist", target or "", met)

    growth = {key: loads[key]["peak"] - loads[key]["before"] for key in loads}
    return [
        memory_row("RSS idle after start", idle["ours"], idle["distribution"], "ours <= 60 MiB", idle["ours"] <= 60),
        memory_row(f"RSS before {clients} pulls", loads["ours"]["before"], loads["distribution"]["before"]),
        memory_row(f"RSS peak during {clients} pulls", loads["ours"]["peak"], loads["distribution"]["peak"]),
        Row(f"RSS growth under {clients} pulls (peak - before)", "MiB", growth["ours"], growth["distribution"],
            "ours-dist", "ours <= 10 MiB", growth["ours"] <= 10),
        Row("RSS peak - idle after start", "MiB", loads["ours"]["peak"] - idle["ours"],
            loads["distribution"]["peak"] - idle["distribution"], "ours-dist", "", None),
        Row(f"{clients}-client pull aggregate", "MB/s", loads["ours"]["aggregate_mb_s"],
            loads["distribution"]["aggregate_mb_s"], "ours/dist", "", None),
    ]


def cpu_rows(session: Session) -> list[Row]:
    """Registry CPU time per operation (user + system, all threads): how much of the 2-core box each one needs."""
    blob_size = session.arguments.blob_size
    return [ratio_row(name, unit, session.cpu_used[step]["ours"], session.cpu_used[step]["distribution"], "ours/dist")
            for step, name, unit in (("push", f"CPU per {blob_size} push", "CPU s"),
                                     ("pull", f"CPU per {blob_size} pull", "CPU s"),
                                     ("wrk", "CPU per manifest GET", "CPU us"),
                                     ("skopeo", "CPU per skopeo copy", "CPU s"))]


def benchmark(arguments: argparse.Namespace, work: Path) -> tuple[list[Row], dict]:
    check_tools(arguments)
    progress(f"starting ours and distribution (work dir {work})")
    registries = start_registries(work, arguments.ours, arguments.distribution)
    for registry in registries.values():
        progress(f"{registry.key} ready on {registry.host}, PID {registry.pid}")
    idle = idle_rss(registries)

    # Test data, made once before any timing.
    session = Session(arguments, registries, parse_size(arguments.blob_size))
    progress(f"generating {session.blob_size / MIB:.0f} MiB of random data")
    blob = RandomBlob(work / "random.bin", session.blob_size)
    small_layout, layouts, image_bytes = make_images(arguments, work)

    rows = [measure_pushes(session, blob), measure_pulls(session), measure_manifest_gets(session, work, small_layout),
            measure_skopeo_copies(session, layouts, image_bytes)]
    loads = measure_memory(session)
    after = {key: registry.rss_mib() for key, registry in registries.items()}
    rows += memory_rows(arguments.clients, idle, loads) + cpu_rows(session)
    meta = {
        "blob_bytes": session.blob_size,
        "image_bytes": image_bytes,
        "repeat": arguments.repeat,
        "quick": arguments.quick,
        "git_head": git_head(),
        "ports": {key: registry.port for key, registry in registries.items()},
        "idle_rss_mib": idle,
        "loads": loads,
        "rss_after_all_mib": after,
        "distribution_config": registries["distribution"].server.config.read_text(),
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

    return run_guarded(work, arguments.keep, body, lambda: [work / "ours.log", work / "distribution" / "registry.log"])


if __name__ == "__main__":
    sys.exit(main())
