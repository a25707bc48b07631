#!/usr/bin/env python3
"""Scale-out benchmark: manifest GET req/s and blob pull MB/s through nginx in front of 1, 2 and 3 replicas (one
PostgreSQL database, one Azurite container: tests/support/cluster.py), beside the embedded default (one `serve`,
SQLite and the filesystem, no proxy); and push MB/s of each, so Azurite's against the filesystem's.

    .venv/bin/python benchmarks/cluster.py             # 10 s per wrk run, 64 MiB pushes, 3 rounds
    .venv/bin/python benchmarks/cluster.py --quick     # 2 s per wrk run, 8 MiB pushes, 1 round

On this machine everything runs on the same 2 cores: wrk, nginx, the replicas, PostgreSQL and Azurite. The script
counts the CPU seconds each of them used during each measurement and says, from those counts, what limits the
curve (it does not hide it: replicas that share two cores with their load generator and their backends cannot add
cores, only processes that compete for them). Prints a table and writes benchmarks/results/cluster-latest.json.
Every process is stopped by PID at the end (also on Ctrl-C).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import aiohttp  # noqa: E402

from tests.support.azurite import Azurite  # noqa: E402
from tests.support.cluster import ReplicaSet  # noqa: E402
from tests.support.oci import image_manifest, sha256  # noqa: E402
from tests.support.postgres import PostgresServer  # noqa: E402
from tests.support.processes import RegistryProcess  # noqa: E402

DEFAULT_JSON = HERE / "results" / "cluster-latest.json"
ACCEPT = "application/vnd.oci.image.manifest.v1+json"
PULL_BLOB = 4 << 20  # the blob wrk pulls over and over
TICK = os.sysconf("SC_CLK_TCK")


# --- CPU accounting ------------------------------------------------------------------------------------------


def _process_table() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds used so far) for every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            table[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK)
    return table


def cpu_by_group(groups: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds used so far by each group: its processes and all their descendants."""
    table = _process_table()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    totals = {}
    for name, roots in groups.items():
        seen, stack = set(), list(roots)
        while stack:
            pid = stack.pop()
            if pid in table and pid not in seen:
                seen.add(pid)
                stack.extend(children.get(pid, []))
        totals[name] = sum(table[pid][1] for pid in seen)
    return totals


def machine_cpu() -> float:
    """CPU seconds every process of the machine used so far (/proc/stat: all but idle and iowait)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / TICK


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """CPU seconds per group over one measurement, wrk (a finished child of this process) and this process too."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups

    def __enter__(self):
        self.started = time.perf_counter()
        self.before = cpu_by_group(self.groups)
        self.before_children, self.before_self = children_cpu(), time.process_time()
        self.before_machine = machine_cpu()
        return self

    def __exit__(self, *exc) -> None:
        after = cpu_by_group(self.groups)
        self.seconds = time.perf_counter() - self.started
        self.used = {name: after[name] - self.before[name] for name in self.groups}
        self.used["client (wrk, this script)"] = (children_cpu() - self.before_children
                                                  + time.process_time() - self.before_self)
        # whatever else runs on the machine (other work sharing the cores) is part of the picture too
        self.used["other processes"] = max(machine_cpu() - self.before_machine - sum(self.used.values()), 0.0)

    def shares(self) -> dict[str, float]:
        """Cores each group kept busy on average (1.0: one core all the time)."""
        return {name: used / self.seconds for name, used in self.used.items()}


# --- load -------------------------------------------------------------------------------------------------------


def wrk(url: str, lua: Path, seconds: int, connections: int) -> dict:
    result = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(lua), url],
                            capture_output=True, text=True, timeout=seconds + 60, check=True)
    text = result.stdout
    total = re.search(r"(\d+) requests in ([\d.]+)s", text)
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if not total:
        raise RuntimeError(f"could not read wrk's output:\n{text}\n{result.stderr}")
    if errors or "Socket errors" in text:
        raise RuntimeError(f"wrk saw errors against {url}:\n{text}")
    return {"requests": int(total.group(1)), "seconds": float(total.group(2))}


async def _push_blob(session: aiohttp.ClientSession, url: str, data: bytes, chunked: bool) -> None:
    async with session.post(f"{url}/v2/bench/app/blobs/uploads/") as response:
        assert response.status == 202, await response.text()
        location = response.headers["Location"]
    body = data
    if chunked:  # 16 MiB PATCHes (through nginx they land on different replicas), then an empty PUT
        for offset in range(0, len(data), 16 << 20):
            part = data[offset:offset + (16 << 20)]
            async with session.patch(location, data=part, headers={
                    "Content-Range": f"{offset}-{offset + len(part) - 1}"}) as response:
                assert response.status == 202, await response.text()
                location = response.headers["Location"]
        body = b""
    async with session.put(location, params={"digest": sha256(data)}, data=body) as response:
        assert response.status == 201, await response.text()


async def push_rates(url: str, size: int, rounds: int) -> dict[str, float]:
    data = bytearray(os.urandom(size))
    samples: dict[str, list[float]] = {"push MB/s": [], "chunked push MB/s": []}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=900)) as session:
        for _ in range(rounds):
            for chunked, row in ((False, "push MB/s"), (True, "chunked push MB/s")):
                data[-8:] = os.urandom(8)  # a new blob each time
                started = time.perf_counter()
                await _push_blob(session, url, bytes(data), chunked)
                samples[row].append(size / (time.perf_counter() - started) / 1e6)
    return {row: statistics.median(values) for row, values in samples.items()}


async def seed(url: str) -> tuple[str, str]:
    """A tagged image whose layer is the pull blob; returns (manifest path, blob path)."""
    layer, config = os.urandom(PULL_BLOB), b'{"architecture": "amd64", "os": "linux"}'
    async with aiohttp.ClientSession() as session:
        for blob in (layer, config):
            await _push_blob(session, url, blob, chunked=False)
        async with session.put(f"{url}/v2/bench/app/manifests/v1", data=image_manifest(config, [layer]),
                               headers={"Content-Type": ACCEPT}) as response:
            assert response.status == 201, await response.text()
    return "/v2/bench/app/manifests/v1", f"/v2/bench/app/blobs/{sha256(layer)}"


# --- one configuration --------------------------------------------------------------------------------------------


def measure(name: str, url: str, groups: dict[str, list[int]], arguments, work: Path) -> dict:
    manifest_path, blob_path = asyncio.run(seed(url))
    lua = work / "accept.lua"
    lua.write_text(f'wrk.headers["Accept"] = "{ACCEPT}"\n')
    result: dict = {}
    with CpuMeter(groups) as meter:
        run = wrk(url + manifest_path, lua, arguments.seconds, connections=32)
    result["manifest GET req/s"] = run["requests"] / run["seconds"]
    result["cores during manifest GETs"] = meter.shares()
    with CpuMeter(groups) as meter:
        run = wrk(url + blob_path, lua, arguments.seconds, connections=4)
    result["blob pull MB/s"] = run["requests"] * PULL_BLOB / run["seconds"] / 1e6
    result["cores during blob pulls"] = meter.shares()
    result.update(asyncio.run(push_rates(url, arguments.push_mib << 20, arguments.rounds)))
    print(f"  {name}: " + ", ".join(f"{key} {value:.0f}" for key, value in result.items()
                                     if not key.startswith("cores")), file=sys.stderr)
    return result


def replica_groups(cluster: ReplicaSet, postgres: PostgresServer, azurite: Azurite) -> dict[str, list[int]]:
    return {"replicas": [replica.pid for replica in cluster.replicas], "nginx": [cluster.balancer.pid],
            "postgresql": [postgres.pid], "azurite": [azurite.pid]}


def run_all(arguments, work: Path) -> dict[str, dict]:
    results: dict[str, dict] = {}
    postgres, azurite = PostgresServer(), Azurite(work / "azurite")
    try:
        single = RegistryProcess(work / "sqlite", metrics=False)
        try:
            print("embedded default (SQLite, filesystem, no proxy):", file=sys.stderr)
            results["sqlite, 1 instance"] = measure("sqlite", single.url, {"replicas": [single.pid]}, arguments, work)
        finally:
            single.stop()
        for count in (1, 2, 3):
            print(f"{count} replica(s) behind nginx (PostgreSQL, Azurite):", file=sys.stderr)
            cluster = ReplicaSet(work / f"replicas-{count}", postgres.new_database(), azurite.new_store(),
                                 azurite.environment(), count=count)
            try:
                results[f"{count} replica{'s' if count > 1 else ''}"] = measure(
                    f"{count} replicas", cluster.url, replica_groups(cluster, postgres, azurite), arguments, work)
            finally:
                cluster.stop()
    finally:
        azurite.stop()
        postgres.stop()
    return results


def limits(results: dict[str, dict]) -> list[str]:
    """What limits the curve, read from the CPU counts of the three-replica runs."""
    cores = os.cpu_count()
    lines = []
    for phase in ("manifest GETs", "blob pulls"):
        shares = results["3 replicas"][f"cores during {phase}"]
        total = sum(shares.values())
        ranked = ", ".join(f"{name} {share:.2f}" for name, share in sorted(shares.items(), key=lambda kv: -kv[1]))
        if total > 0.85 * cores:
            verdict = (f"CPU: the {cores} cores are saturated, so another replica only adds a process competing "
                       "for them with the others, nginx and the backends")
        else:
            verdict = ("latency, not CPU: each request waits on round trips (PostgreSQL for the manifest, Azurite "
                       "for the bytes) more than it computes")
        lines.append(f"{phase}, 3 replicas: {total:.2f} of {cores} cores busy ({ranked}); the limit is {verdict}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="2 s per wrk run, 8 MiB pushes, 1 round")
    parser.add_argument("--seconds", type=int, default=10, help="seconds per wrk run (default 10)")
    parser.add_argument("--push-mib", type=int, default=64, help="pushed blob size in MiB (default 64)")
    parser.add_argument("--rounds", type=int, default=3, help="push rounds, median reported (default 3)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.seconds, arguments.push_mib, arguments.rounds = 2, 8, 1
    with tempfile.TemporaryDirectory(prefix="cluster-bench-") as work_dir:
        results = run_all(arguments, Path(work_dir))
    rows = ("manifest GET req/s", "blob pull MB/s", "push MB/s", "chunked push MB/s")
    print(f"{'':<22}" + "".join(f"{row:>20}" for row in rows))
    for name, result in results.items():
        print(f"{name:<22}" + "".join(f"{result[row]:>20.0f}" for row in rows))
    print("\nBlob stores: the sqlite row pushes to the filesystem, the replica rows to Azurite (one Node.js process on "
          "the same cores).\nWhat limits the curve on this machine:")
    explanation = limits(results)
    for line in explanation:
        print(f"- {line}")
    arguments.json.parent.mkdir(parents=True, exist_ok=True)
    arguments.json.write_text(json.dumps({"quick": arguments.quick, "cores": os.cpu_count(), "results": results,
                                          "limits": explanation}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
