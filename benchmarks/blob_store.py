#!/usr/bin/env python3
"""Blob store benchmark: push and pull MB/s of one `serve` process on the filesystem store against one on the azure
store (Azurite on loopback, the emulator the tests use), in the same run.

    .venv/bin/python benchmarks/blob_store.py             # 256 MiB blob, 3 rounds
    .venv/bin/python benchmarks/blob_store.py --quick     # 32 MiB blob, 1 round

Rows: a monolithic push (POST, then one PUT with the whole body), a chunked push (PATCHes of 16 MiB, then PUT), a
pull streamed through the registry, and (azure) a pull through blobRedirect's 307 straight from Azurite. Each push
is a new blob (its last bytes change). MB/s is 10^6 bytes/s, the median of the rounds. Azurite keeps its data in
files without fsync and runs on the same two cores as the registry, so the azure row says what the registry's side
costs (staging blocks, the server-side copy), not what Azure's network would give. Prints a table to stdout and
writes benchmarks/results/blob-store-latest.json. Every process is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import aiohttp  # noqa: E402

from tests.support.azurite import Azurite  # noqa: E402
from tests.support.processes import RegistryProcess  # noqa: E402

DEFAULT_JSON = HERE / "results" / "blob-store-latest.json"
CHUNK = 16 << 20


async def push(session: aiohttp.ClientSession, url: str, data: bytes, chunked: bool) -> float:
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    started = time.perf_counter()
    async with session.post(f"{url}/v2/bench/app/blobs/uploads/") as response:
        assert response.status == 202, await response.text()
        location = response.headers["Location"]
    if chunked:
        for offset in range(0, len(data), CHUNK):
            part = data[offset:offset + CHUNK]
            async with session.patch(location, data=part, headers={
                    "Content-Range": f"{offset}-{offset + len(part) - 1}"}) as response:
                assert response.status == 202, await response.text()
                location = response.headers["Location"]
        body = b""
    else:
        body = data
    async with session.put(location, params={"digest": digest}, data=body) as response:
        assert response.status == 201, await response.text()
    return len(data) / (time.perf_counter() - started) / 1e6


async def pull(session: aiohttp.ClientSession, url: str, digest: str, size: int) -> float:
    started = time.perf_counter()
    received = 0
    async with session.get(f"{url}/v2/bench/app/blobs/{digest}") as response:
        assert response.status == 200, await response.text()
        async for chunk in response.content.iter_chunked(1 << 20):
            received += len(chunk)
    assert received == size
    return size / (time.perf_counter() - started) / 1e6


async def measure(url: str, size: int, rounds: int) -> dict[str, float]:
    data = bytearray(os.urandom(size))
    samples: dict[str, list[float]] = {"push monolithic": [], "push chunked": [], "pull": []}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        for round_number in range(rounds):
            for chunked in (False, True):
                data[-8:] = os.urandom(8)  # a new blob each time
                samples["push chunked" if chunked else "push monolithic"].append(
                    await push(session, url, bytes(data), chunked))
            digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
            samples["pull"].append(await pull(session, url, digest, size))
            print(f"  round {round_number + 1}: " + ", ".join(f"{row} {values[-1]:.0f}"
                                                             for row, values in samples.items()), file=sys.stderr)
    return {row: statistics.median(values) for row, values in samples.items()}


def start(work: Path, name: str, extra: list[str], env: dict | None = None, config: dict | None = None):
    if config is not None:
        (work / f"{name}.json").write_text(json.dumps(config))
        extra = [*extra, "--config", str(work / f"{name}.json")]
    return RegistryProcess(work / name, extra_args=extra, env=env, metrics=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--size", type=int, default=256, help="blob size in MiB (default 256)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="32 MiB, 1 round")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    arguments = parser.parse_args()
    size, rounds = (32 << 20, 1) if arguments.quick else (arguments.size << 20, arguments.rounds)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="blob-store-bench-") as work_dir:
        work = Path(work_dir)
        azurite = Azurite(work / "azurite")
        processes = []
        try:
            print("filesystem store:", file=sys.stderr)
            processes.append(start(work, "filesystem", []))
            results["filesystem"] = asyncio.run(measure(processes[-1].url, size, rounds))
            print("azure store (Azurite):", file=sys.stderr)
            processes.append(start(work, "azure", ["--blob-store", azurite.new_store()], azurite.environment()))
            results["azure"] = asyncio.run(measure(processes[-1].url, size, rounds))
        finally:
            for process in processes:
                process.stop()
            azurite.stop()
    rows = list(results["filesystem"])
    print(f"{'MB/s, ' + str(size >> 20) + ' MiB blob':<28}{'filesystem':>12}{'azure':>12}{'azure/fs':>10}")
    for row in rows:
        fs, az = results["filesystem"][row], results["azure"][row]
        print(f"{row:<28}{fs:>12.0f}{az:>12.0f}{az / fs:>10.2f}")
    arguments.json.parent.mkdir(parents=True, exist_ok=True)
    arguments.json.write_text(json.dumps({"size": size, "rounds": rounds, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
