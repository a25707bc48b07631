#!/usr/bin/env python3
"""Sync benchmark: how fast content moves between connected-registry instances, on loopback.

Measures, in one run, against real `connected-registry serve` processes (and CNCF distribution plus
`skopeo sync` as the baseline for the first row):

  1. initial sync: a fresh ReadOnly child of a root holding 5 tags of 3-layer images, from the child's
     start until all 5 tags are pullable at the child; baseline: `skopeo sync` of the same 5 tags between
     two distribution instances (medians of --rounds, fresh child / destination each round);
  2. idle sync: with the child caught up, the requests it makes to its parent over a fixed interval,
     counted by a small HTTP proxy (aiohttp, in this process) between the two;
  3. latency through three layers: root -> middle -> leaf, continuous mode; a small image pushed at the
     root, time until the leaf serves its manifest (--pushes different tags).

Prints progress to stderr and a table to stdout, and writes benchmarks/results/sync-latest.json. Every
process is stopped by PID at the end (also on Ctrl-C, SIGTERM and errors); the temporary directory is
removed unless --keep.

    .venv/bin/python benchmarks/sync.py            # full run: 5 x 3 x 10 MiB, 3 rounds, 10 pushes (~70 s)
    .venv/bin/python benchmarks/sync.py --quick    # smoke run: 5 x 3 x 1 MiB, 1 round, 3 pushes

Needs: skopeo and docker-registry on PATH, and the project's .venv (aiohttp, connected_registry).
See README.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (str(HERE), str(ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import compare  # noqa: E402 - the side-by-side benchmark's helpers (children, CPU, table numbers, result file)
from compare import (  # noqa: E402
    CHILDREN,
    MANIFEST_ACCEPT,
    align,
    cpu_seconds,
    format_number,
    git_head,
    progress,
    tool_versions,
)

from tests.support import layouts  # noqa: E402
from tests.support.clients import Distribution, run  # noqa: E402
from tests.support.http import basic, request  # noqa: E402
from tests.support.processes import free_port, wait_until  # noqa: E402
from tests.support.threaded import ThreadedApp  # noqa: E402
from tests.sync.hierarchy import READER, WRITER, Instance, start_instance  # noqa: E402

DEFAULT_OURS = ROOT / ".venv" / "bin" / "connected-registry"
DEFAULT_JSON = HERE / "results" / "sync-latest.json"
REPOSITORY = "bench/app"
LATENCY_REPOSITORY = "latency/app"
PROXY_ENV = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
SYNC_ONLY = {"onDemand": False}  # this measures the sync: the polls for the tags must not fill them on demand

READER_HEADERS = {**basic(*READER), "Accept": MANIFEST_ACCEPT}
WRITER_HEADERS = basic(*WRITER)


# --- the instances ---------------------------------------------------------------------------------------


def start_ours(arguments, work: Path, name: str, **settings) -> Instance:
    """An instance as tests/sync/hierarchy.py's start_instance makes it (the client tokens, an operator token, a
    sync token per child, its own sync token in the connection string; `settings` go to start_instance), run as
    `--ours --log-level LEVEL serve` without a metrics listener, its log in work/NAME/registry.log and no proxy
    from our environment. Not waited for: `wait_ready` waits, the initial-sync round polls from the spawn on."""
    instance = start_instance(work, name, env={variable: None for variable in PROXY_ENV}, wait=False,
                              command=[arguments.ours, "--log-level", arguments.log_level], metrics=False,
                              log_path=work / name / "registry.log", **settings)
    return CHILDREN.track(instance)


def wait_ready(instance: Instance, what: str) -> None:
    instance.process.wait_ready(timeout=60)
    progress(f"{what} ready on {instance.host}, PID {instance.pid}")


def start_distribution(arguments, work: Path, name: str, what: str) -> Distribution:
    distribution = compare.start_distribution(work, arguments.distribution, name)
    progress(f"{what} ready on {distribution.host}, PID {distribution.pid}")
    return distribution


def stop(instance: Instance | Distribution) -> None:
    CHILDREN.stop(instance)


# --- content -------------------------------------------------------------------------------------------


def skopeo_push(layout: Path, tag: str, registry, reference: str, creds: tuple[str, str] | None) -> float:
    argv = ["skopeo", "copy", "-q", "--preserve-digests", "--dest-tls-verify=false"]
    if creds:
        argv += ["--dest-creds", f"{creds[0]}:{creds[1]}"]
    started = time.perf_counter()
    run([*argv, f"oci:{layout}:{tag}", f"docker://{registry.host}/{reference}"], timeout=600)
    return time.perf_counter() - started


def layout_manifest(layout: Path, tag: str) -> tuple[str, str, bytes]:
    """(digest, media type, bytes) of the manifest tagged `tag` in an OCI layout."""
    digest = layouts.manifest_digest(layout, tag)
    body = layouts.read_blob(layout, digest)
    return digest, json.loads(body)["mediaType"], body


def http_push(layout: Path, tag: str, registry, repository: str) -> float:
    """Push one image by plain HTTP (monolithic blob uploads, then the manifest); returns time.perf_counter()
    when the manifest PUT answered 201, i.e. when the tag exists at `registry`."""
    digest, media_type, body = layout_manifest(layout, tag)
    manifest = json.loads(body)
    for blob in [manifest["config"], *manifest["layers"]]:
        reply = request(f"{registry.url}/v2/{repository}/blobs/uploads/", "POST", headers=WRITER_HEADERS, timeout=60)
        if reply.status != 202:
            raise RuntimeError(f"upload POST answered {reply.status}: {reply.body[:300]!r}")
        location = urllib.parse.urljoin(registry.url + "/", reply.headers["location"])
        data = layouts.read_blob(layout, blob["digest"])
        reply = request(location + ("&" if "?" in location else "?") + "digest=" + blob["digest"], "PUT", data,
                        {**WRITER_HEADERS, "Content-Type": "application/octet-stream"}, timeout=60)
        if reply.status != 201:
            raise RuntimeError(f"blob PUT answered {reply.status}: {reply.body[:300]!r}")
    reply = request(f"{registry.url}/v2/{repository}/manifests/{tag}", "PUT", body,
                    {**WRITER_HEADERS, "Content-Type": media_type}, timeout=60)
    done = time.perf_counter()
    if reply.status != 201 or reply.headers.get("docker-content-digest") != digest:
        raise RuntimeError(f"manifest PUT answered {reply.status} {reply.headers.get('docker-content-digest')}: "
                           f"{reply.body[:300]!r}")
    return done


def manifest_digest(registry, repository: str, reference: str, headers: dict | None = None,
                    timeout: float = 5) -> str | None:
    reply = request(f"{registry.url}/v2/{repository}/manifests/{reference}",
                    headers=headers if headers is not None else READER_HEADERS, timeout=timeout)
    return reply.headers.get("docker-content-digest") if reply.status == 200 else None


def poll_tags(registry: Instance, repository: str, expected: dict[str, str], timeout: float,
              interval: float) -> dict:
    """Poll `registry` until every tag answers 200 with the expected digest. Times are seconds since the
    process was spawned (registry.process.spawned_at). Each polling period asks for the first pending tag only, and
    moves on to the next one in the same period as soon as one answers, so the child (busy syncing) gets
    one request per period. "all" is exact to one period; a tag that arrives before an earlier one is
    recorded when the poll reaches it. Connection errors (not listening yet) and 404s count as "not yet";
    the deadline raises."""
    deadline = time.monotonic() + timeout
    pending = list(expected)
    seen: dict[str, float] = {}
    first_answer = None
    polls = 0
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{registry.name}: tags {pending} not pullable after {timeout:.0f}s")
        if not registry.process.alive():
            raise RuntimeError(f"{registry.name} exited with {registry.process.process.returncode}:\n"
                               f"{registry.process.log(30)}")
        while pending:
            tag = pending[0]
            polls += 1
            try:
                digest = manifest_digest(registry, repository, tag, timeout=10)
            except (OSError, http.client.HTTPException):
                break  # not listening yet
            now = time.perf_counter() - registry.process.spawned_at
            if first_answer is None:
                first_answer = now
            if digest is None:
                break
            if digest != expected[tag]:
                raise RuntimeError(f"{registry.name} serves {repository}:{tag} as {digest}, expected {expected[tag]}")
            seen[tag] = now
            pending.pop(0)
        if pending:
            time.sleep(interval)  # the polling period
    return {"all": max(seen.values()), "tags": seen, "first_answer": first_answer, "polls": polls}


# --- the counting proxy --------------------------------------------------------------------------------

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
               "transfer-encoding", "upgrade", "content-length"}


class CountingProxy(ThreadedApp):
    """A reverse proxy in a thread of this process (its own asyncio loop): every request from the child to
    `target` goes through it and is recorded (start, end, method, path, status, bytes). The Host header is
    passed on unchanged, so the parent's token realm and Locations point back at the proxy."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.port = free_port()
        self.records: list[dict] = []
        self.lock = threading.Lock()
        super().__init__()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.serve(self.port, timeout=30)
        progress(f"counting proxy on {self.url} -> {self.target}")

    async def make_app(self):
        import aiohttp
        from aiohttp import web

        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
                                              auto_decompress=False, trust_env=False)
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def close(self) -> None:
        await self._session.close()  # in-flight requests (a long poll) end at once with a 502

    async def _handle(self, request):
        import aiohttp
        from aiohttp import web

        record = {"start": time.perf_counter(), "end": None, "method": request.method, "path": request.path_qs,
                  "status": None, "bytes": 0}
        with self.lock:
            self.records.append(record)
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        response = None
        try:
            async with self._session.request(request.method, self.target + request.path_qs, headers=headers,
                                             data=body or None, allow_redirects=False) as upstream:
                record["status"] = upstream.status
                response = web.StreamResponse(status=upstream.status, headers={
                    k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP})
                if upstream.content_length is not None:
                    response.content_length = upstream.content_length
                await response.prepare(request)
                async for chunk in upstream.content.iter_chunked(1 << 20):
                    record["bytes"] += len(chunk)
                    await response.write(chunk)
                await response.write_eof()
                return response
        except (aiohttp.ClientError, OSError) as error:  # the parent went away, or we are shutting down
            record["error"] = repr(error)
            if response is None:
                record["status"] = 502
                return web.Response(status=502, text=f"counting proxy: {error}")
            raise
        finally:
            record["end"] = time.perf_counter()

    def snapshot(self) -> list[dict]:
        with self.lock:
            return [dict(r) for r in self.records]


def is_feed(record: dict) -> bool:
    return "/events" in record["path"] and "wait=" in record["path"]


# --- the measurements ----------------------------------------------------------------------------------


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def initial_sync(arguments, work: Path, parent: Instance, source: Distribution, expected: dict[str, str]) -> dict:
    """Item 1: per round, a fresh ReadOnly child from spawn to all tags pullable, and `skopeo sync` into a
    fresh distribution; alternating which goes first."""
    ours_rounds, skopeo_rounds = [], []
    for number in range(1, arguments.rounds + 1):
        order = ("ours", "skopeo") if number % 2 == 1 else ("skopeo", "ours")
        for which in order:
            os.sync()  # dirty pages of the previous step must not be flushed during this one
            if which == "ours":
                parent_cpu = cpu_seconds(parent.pid)
                child = start_ours(arguments, work, f"bench-child-{number}", parent=parent, repositories=["bench/*"],
                                   extra=SYNC_ONLY)
                try:
                    result = poll_tags(child, REPOSITORY, expected, timeout=arguments.deadline,
                                       interval=arguments.poll_interval)
                    result["child_cpu_s"] = cpu_seconds(child.pid)
                    result["parent_cpu_s"] = cpu_seconds(parent.pid) - parent_cpu
                    result["child_ready_s"] = _serving_after(child)
                    verify_blobs(child, parent, expected)
                finally:
                    stop(child)
                ours_rounds.append(result)
                progress(f"initial sync round {number}/{arguments.rounds} ours:   {result['all']:6.2f} s "
                         f"(answering after {result['first_answer']:.2f} s; child CPU {result['child_cpu_s']:.2f} s, "
                         f"parent CPU {result['parent_cpu_s']:.2f} s)")
            else:
                destination = start_distribution(arguments, work, f"dest-{number}",
                                                 f"destination distribution {number}")
                try:
                    cpu = {"source": cpu_seconds(source.pid), "destination": cpu_seconds(destination.pid),
                           "skopeo": children_cpu()}
                    started = time.perf_counter()
                    run(["skopeo", "sync", "--src", "docker", "--dest", "docker", "--src-tls-verify=false",
                         "--dest-tls-verify=false", "--preserve-digests", f"{source.host}/{REPOSITORY}",
                         f"{destination.host}/{REPOSITORY.rsplit('/', 1)[0]}"], timeout=arguments.deadline)
                    seconds = time.perf_counter() - started
                    result = {"all": seconds, "skopeo_cpu_s": children_cpu() - cpu["skopeo"],
                              "source_cpu_s": cpu_seconds(source.pid) - cpu["source"],
                              "destination_cpu_s": cpu_seconds(destination.pid) - cpu["destination"]}
                    for tag, digest in expected.items():
                        got = manifest_digest(destination, REPOSITORY, tag, {"Accept": MANIFEST_ACCEPT})
                        if got != digest:
                            raise RuntimeError(f"skopeo sync left {REPOSITORY}:{tag} as {got}, expected {digest}")
                finally:
                    stop(destination)
                skopeo_rounds.append(result)
                progress(f"initial sync round {number}/{arguments.rounds} skopeo: {seconds:6.2f} s "
                         f"(skopeo CPU {result['skopeo_cpu_s']:.2f} s)")
    return {"ours": ours_rounds, "skopeo": skopeo_rounds}


def _serving_after(instance: Instance) -> float | None:
    """Seconds from spawn to the "serving" log line, from the log's own timestamp (informational)."""
    for line in instance.process.lines():
        if "serving http://" in line:
            try:
                stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            except ValueError:
                return None
            spawned_wall = time.time() - (time.perf_counter() - instance.process.spawned_at)
            return stamp - spawned_wall
    return None


def verify_blobs(child: Instance, parent: Instance, expected: dict[str, str]) -> None:
    """Outside the timing: every layer of every tag is served by the child with the parent's size."""
    for tag in expected:
        manifest = request(f"{parent.url}/v2/{REPOSITORY}/manifests/{tag}", headers=READER_HEADERS, timeout=60)
        for layer in json.loads(manifest.body)["layers"]:
            reply = request(f"{child.url}/v2/{REPOSITORY}/blobs/{layer['digest']}", "HEAD", headers=basic(*READER),
                            timeout=60)
            if reply.status != 200 or int(reply.headers.get("content-length", -1)) != layer["size"]:
                raise RuntimeError(f"{child.name}: layer {layer['digest']} answered {reply.status}")


def idle_requests(arguments, work: Path, parent: Instance, expected: dict[str, str]) -> dict:
    """Item 2: a child behind the counting proxy, caught up; the requests it makes over a fixed interval."""
    proxy = CountingProxy(parent.url)
    proxy.start()
    child = None
    try:
        child = start_ours(arguments, work, "bench-idle", parent=proxy, repositories=["bench/*"], extra=SYNC_ONLY)
        caught = poll_tags(child, REPOSITORY, expected, timeout=arguments.deadline, interval=0.05)
        progress(f"idle: child behind the proxy has all tags after {caught['all']:.2f} s "
                 f"({len(proxy.snapshot())} requests so far)")

        def settled():
            """Only the long poll open, and nothing else for 3 s: the report of the first sync to the parent
            (SPEC 11: sent about 2 s after it, to coalesce bursts) belongs to catching up, not to idling."""
            records = proxy.snapshot()
            in_flight = [r for r in records if r["end"] is None]
            last_other = max((r["end"] for r in records if not is_feed(r) and r["end"] is not None), default=0)
            return len(in_flight) == 1 and is_feed(in_flight[0]) and time.perf_counter() - last_other >= 3

        wait_until(settled, timeout=60, what="the child idle (only its long poll open)", interval=0.02)
        window_start = time.perf_counter()
        progress(f"idle: observing the child's requests to its parent for {arguments.idle_seconds:.0f} s")
        time.sleep(arguments.idle_seconds)  # the fixed observation interval itself
        window_end = time.perf_counter()
        records = proxy.snapshot()
    finally:
        if child is not None:
            stop(child)
        proxy.stop()
    setup = [r for r in records if r["start"] < window_start]
    inside = [r for r in records if window_start <= r["start"] < window_end]
    # The long-poll cycle: from the poll open when the window began to each next poll's start.
    open_at_start = max(r["start"] for r in setup if is_feed(r))
    idle_feed_starts = [r["start"] for r in records if is_feed(r) and r["start"] >= open_at_start]
    cycles = [b - a for a, b in zip(idle_feed_starts, idle_feed_starts[1:])]
    paths: dict[str, int] = {}
    for record in inside:
        key = f"{record['method']} {record['path']}"
        paths[key] = paths.get(key, 0) + 1
    feeds_inside = sum(1 for r in inside if is_feed(r))
    return {
        "window_s": window_end - window_start,
        "requests": len(inside),
        "feed_polls": feeds_inside,
        "other_requests": len(inside) - feeds_inside,
        "per_cycle": (len(inside) / feeds_inside) if feeds_inside else None,
        "cycles_s": cycles,
        "paths": paths,
        "inside": [_relative(r, window_start) for r in inside],
        "after_window": [_relative(r, window_start) for r in records if r["start"] >= window_end],
        "initial_sync_requests": _summary(setup),
        "initial_sync_trace": [_relative(r, setup[0]["start"]) for r in setup] if setup else [],
    }


def _relative(record: dict, origin: float) -> dict:
    return {"start_s": round(record["start"] - origin, 4),
            "duration_s": round(record["end"] - record["start"], 4) if record["end"] else None,
            "method": record["method"], "path": record["path"], "status": record["status"], "bytes": record["bytes"]}


def _summary(records: list[dict]) -> dict:
    kinds: dict[str, dict] = {}
    for record in records:
        path = record["path"].split("?")[0]
        kind = ("blob" if "/blobs/" in path else "manifest" if "/manifests/" in path else
                "referrers" if "/referrers/" in path else "tags" if "/tags/" in path else
                "token" if "oauth2" in path else path.rsplit("/", 1)[-1])
        entry = kinds.setdefault(kind, {"count": 0, "seconds": 0.0, "bytes": 0})
        entry["count"] += 1
        entry["seconds"] += (record["end"] or record["start"]) - record["start"]
        entry["bytes"] += record["bytes"]
    return kinds


def three_layers(arguments, work: Path, root: Instance, layout: Path, tags: list[str]) -> dict:
    """Item 3: root -> middle -> leaf; a push at the root, then the time until the middle and the leaf serve it."""
    middle = start_ours(arguments, work, "bench-middle", parent=root, mode=arguments.middle_mode,
                        repositories=["latency/*"], children=[("bench-leaf", "ReadOnly")], extra=SYNC_ONLY)
    wait_ready(middle, f"middle ({arguments.middle_mode})")
    leaf = start_ours(arguments, work, "bench-leaf", parent=middle, repositories=["latency/*"], extra=SYNC_ONLY)
    wait_ready(leaf, "leaf (ReadOnly)")
    try:
        # Warm-up push, not timed: the whole chain is activated, reconciled and long-polling afterwards.
        http_push(layout, "warmup", root, LATENCY_REPOSITORY)
        warm_digest = layout_manifest(layout, "warmup")[0]
        wait_until(lambda: manifest_digest(leaf, LATENCY_REPOSITORY, "warmup") == warm_digest, timeout=120,
                   what="the warm-up push at the leaf", interval=0.05)
        progress("three layers: warm-up push reached the leaf")
        samples = []
        for number, tag in enumerate(tags, 1):
            digest = layout_manifest(layout, tag)[0]
            started = time.perf_counter()
            at_root = http_push(layout, tag, root, LATENCY_REPOSITORY)
            at = {}
            deadline = time.monotonic() + 60
            while "leaf" not in at:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{LATENCY_REPOSITORY}:{tag} did not reach the leaf within 60 s")
                for key, instance in (("middle", middle), ("leaf", leaf)):
                    if key not in at and manifest_digest(instance, LATENCY_REPOSITORY, tag) == digest:
                        at[key] = time.perf_counter() - at_root
                if "leaf" not in at:
                    time.sleep(arguments.poll_interval)  # the polling period
            at.setdefault("middle", at["leaf"])  # the leaf cannot have it before the middle
            sample = {"tag": tag, "push_s": at_root - started, "middle_s": at["middle"], "leaf_s": at["leaf"]}
            samples.append(sample)
            progress(f"three layers {number}/{len(tags)}: pushed in {sample['push_s']:.3f} s; middle after "
                     f"{sample['middle_s']:.3f} s, leaf after {sample['leaf_s']:.3f} s")
    finally:
        stop(leaf)
        stop(middle)
    return {"middle_mode": arguments.middle_mode, "samples": samples}


# --- the table -----------------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    unit: str
    ours: float | None
    baseline: float | None = None
    target: str = ""
    met: bool | None = None
    integer: bool = False  # a count: printed without decimals

    @property
    def ratio(self) -> float | None:
        return self.ours / self.baseline if self.ours is not None and self.baseline else None


def format_table(rows: list[Row]) -> str:
    header = ["measurement", "ours", "skopeo sync", "ours/base", "target", "met"]
    lines = [header]
    for row in rows:
        number = (lambda v: "-" if v is None else f"{v:.0f}") if row.integer else format_number
        lines.append([f"{row.name} ({row.unit})", number(row.ours), number(row.baseline),
                      f"{row.ratio:.2f}x" if row.ratio is not None else "-", row.target or "(info)",
                      {True: "yes", False: "NO", None: ""}[row.met]])
    return align(lines)


def build_rows(arguments, initial: dict, idle: dict, latency: dict, image: str) -> list[Row]:
    ours = [r["all"] for r in initial["ours"]]
    skopeo = [r["all"] for r in initial["skopeo"]]
    med = statistics.median
    rows = [Row(f"initial sync, {image}, median of {arguments.rounds}", "s", med(ours), med(skopeo),
                "ours/skopeo <= 1", med(ours) <= med(skopeo))]
    answering = [r["first_answer"] for r in initial["ours"] if r["first_answer"] is not None]
    if answering:
        rows.append(Row("  of which: child spawn -> first HTTP answer", "s", med(answering)))
    rows.append(Row("  after the first answer -> all tags pullable", "s",
                    med([r["all"] - (r["first_answer"] or 0) for r in initial["ours"]])))
    rows.append(Row("  CPU: child + parent | skopeo + source + dest", "CPU s",
                    med([r["child_cpu_s"] + r["parent_cpu_s"] for r in initial["ours"]]),
                    med([r["skopeo_cpu_s"] + r["source_cpu_s"] + r["destination_cpu_s"] for r in initial["skopeo"]])))
    rows.append(Row(f"idle: requests to the parent in {idle['window_s']:.0f} s", "count", idle["requests"], None,
                    f"<= {int(idle['window_s'] // 20) + 1}, long polls only",
                    idle["other_requests"] == 0 and idle["requests"] <= int(idle["window_s"] // 20) + 1, integer=True))
    rows.append(Row("idle: requests per long-poll cycle", "req", idle["per_cycle"], None, "1",
                    idle["per_cycle"] == 1))
    if idle["cycles_s"]:
        rows.append(Row("idle: long-poll cycle", "s", med(idle["cycles_s"])))
    leaf = [s["leaf_s"] for s in latency["samples"]]
    middle = [s["middle_s"] for s in latency["samples"]]
    layers = f"root -> {latency['middle_mode']} middle -> leaf"
    rows.append(Row(f"3 layers: {layers}, median of {len(leaf)}", "s", med(leaf), None, "<= 2 s", med(leaf) <= 2))
    rows.append(Row(f"3 layers: {layers}, max", "s", max(leaf)))
    rows.append(Row("3 layers: root -> middle, median", "s", med(middle)))
    return rows


# --- the run -------------------------------------------------------------------------------------------


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 MiB layers, 1 round, 3 pushes, 22 s idle")
    parser.add_argument("--rounds", type=int, help="initial-sync rounds, median reported (default 3; 1 with --quick)")
    parser.add_argument("--tags", type=int, default=5, help="tags (different images) at the parent (default 5)")
    parser.add_argument("--layers", type=int, default=3, help="layers per image (default 3)")
    parser.add_argument("--layer-size", help="size of each layer (default 10M; 1M with --quick)")
    parser.add_argument("--pushes", type=int, help="three-layer latency pushes (default 10; 3 with --quick)")
    parser.add_argument("--idle-seconds", type=float, help="idle observation interval (default 25; 22 with --quick)")
    parser.add_argument("--middle-mode", choices=["ReadWrite", "ReadOnly"], default="ReadWrite",
                        help="mode of the middle layer (default ReadWrite)")
    parser.add_argument("--poll-interval", type=float, default=0.01, help="seconds between polls (default 0.01)")
    parser.add_argument("--deadline", type=float, default=600, help="deadline of each sync, in seconds (default 600)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="--log-level of our instances (logs are in the work directory; see --keep)")
    parser.add_argument("--tmpdir", help="parent of the temporary work directory (default: the system's)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (data, logs) afterwards")
    parser.add_argument("--json", default=str(DEFAULT_JSON), help=f"where to write the results (default {DEFAULT_JSON})")
    parser.add_argument("--ours", default=str(DEFAULT_OURS), help="the connected-registry command")
    parser.add_argument("--distribution", default=shutil.which("docker-registry") or "docker-registry",
                        help="the CNCF distribution binary")
    arguments = parser.parse_args()
    arguments.rounds = arguments.rounds or (1 if arguments.quick else 3)
    arguments.layer_size = arguments.layer_size or ("1M" if arguments.quick else "10M")
    arguments.pushes = arguments.pushes or (3 if arguments.quick else 10)
    arguments.idle_seconds = arguments.idle_seconds or (22.0 if arguments.quick else 25.0)
    return arguments


def benchmark(arguments, work: Path) -> tuple[list[Row], dict]:
    for tool in ("skopeo",):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not on PATH (scripts/setup.sh --test installs it)")
    for binary in (arguments.ours, arguments.distribution):
        if shutil.which(binary) is None:
            raise RuntimeError(f"{binary} not found (run scripts/setup.sh --test)")

    tags = [f"t{i}" for i in range(1, arguments.tags + 1)]
    layout = work / "images"
    for tag in tags:
        progress(f"making image {tag}: {arguments.layers} x {arguments.layer_size}")
        layouts.make_image(layout, tag, arguments.layers, arguments.layer_size)
    small = work / "small"
    latency_tags = [f"p{i}" for i in range(1, arguments.pushes + 1)]
    for tag in ["warmup", *latency_tags]:
        layouts.make_image(small, tag, 2, "64K")
    expected = {tag: layout_manifest(layout, tag)[0] for tag in tags}
    image_bytes = sum(f.stat().st_size for f in (layout / "blobs" / "sha256").iterdir() if f.stat().st_size > 4096)
    image = f"{arguments.tags} tags x {arguments.layers}x{arguments.layer_size} ({image_bytes / (1 << 20):.0f} MiB)"

    children = [(f"bench-child-{n}", "ReadOnly") for n in range(1, arguments.rounds + 1)]
    children += [("bench-idle", "ReadOnly"), ("bench-middle", arguments.middle_mode)]
    parent = start_ours(arguments, work, "bench-root", children=children)
    wait_ready(parent, "root (ours)")
    source = start_distribution(arguments, work, "source", "source distribution")

    prefill = {"ours": [], "distribution": []}
    for tag in tags:
        prefill["ours"].append(skopeo_push(layout, tag, parent, f"{REPOSITORY}:{tag}", WRITER))
        prefill["distribution"].append(skopeo_push(layout, tag, source, f"{REPOSITORY}:{tag}", None))
    progress(f"pre-filled {REPOSITORY} with {image}: ours {sum(prefill['ours']):.2f} s, "
             f"distribution {sum(prefill['distribution']):.2f} s")
    for tag, digest in expected.items():
        for registry in (parent, source):
            got = manifest_digest(registry, REPOSITORY, tag)
            if got != digest:
                raise RuntimeError(f"{registry.host} holds {REPOSITORY}:{tag} as {got}, expected {digest}")

    initial = initial_sync(arguments, work, parent, source, expected)
    stop(source)
    idle = idle_requests(arguments, work, parent, expected)
    progress(f"idle: {idle['requests']} requests in {idle['window_s']:.1f} s: {idle['paths']}")
    latency = three_layers(arguments, work, parent, small, latency_tags)

    rows = build_rows(arguments, initial, idle, latency, image)
    meta = {
        "image": image,
        "image_bytes": image_bytes,
        "rounds": arguments.rounds,
        "quick": arguments.quick,
        "git_head": git_head(),
        "prefill_s": prefill,
        "initial_sync": initial,
        "idle": idle,
        "three_layers": latency,
        "log_level": arguments.log_level,
    }
    return rows, meta


def main() -> int:
    arguments = parse_arguments()
    work = Path(tempfile.mkdtemp(prefix="cr-sync-bench-", dir=arguments.tmpdir or None))

    def body() -> None:
        rows, meta = benchmark(arguments, work)
        table = format_table(rows)
        print(table)
        print(f"\nidle window: {meta['idle']['requests']} requests: "
              + (", ".join(f"{count} x {path}" for path, count in meta["idle"]["paths"].items()) or "none"))
        compare.write_result(arguments.json, {
            "versions": tool_versions(arguments.distribution),
            "rows": [{"measurement": r.name, "unit": r.unit, "ours": r.ours, "skopeo_sync": r.baseline,
                      "ratio": r.ratio, "target": r.target or None, "met": r.met} for r in rows],
            "table": table,
            **meta,
        })

    return compare.run_guarded(work, arguments.keep, body, lambda: sorted(work.glob("*/registry.log")))


if __name__ == "__main__":
    sys.exit(main())
