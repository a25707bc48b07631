#!/usr/bin/env python3
"""Pull-through benchmark: the first pull of an image through two cold layers, against a pull of the same
image straight from the root, in the same run; and the time to first byte of a cold blob at the leaf.

Real `connected-registry serve` processes on loopback (made by tests/sync/hierarchy.py's start_instance): a root
holding the image, and per round a fresh middle and leaf (new data directories) whose sync window is only
on 1 January, so everything they serve arrives on demand. The client is `skopeo copy` into an OCI layout.

    .venv/bin/python benchmarks/pull_through.py            # 200 MiB image (4 x 50 MiB), 3 rounds
    .venv/bin/python benchmarks/pull_through.py --quick    # 40 MiB image, 1 round

Prints progress to stderr and a table to stdout, and writes benchmarks/results/pull-through-latest.json.
Every process is stopped by PID at the end (also on Ctrl-C, SIGTERM and errors); the temporary directory
is removed unless --keep. See README.md.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import compare  # noqa: E402
from compare import RandomBlob, cpu_seconds, format_number, progress  # noqa: E402
from sync import DEFAULT_OURS, start_ours, stop, wait_ready  # noqa: E402
from sync import skopeo_push as push_image  # noqa: E402

from tests.support.clients import run  # noqa: E402
from tests.support.http import basic, request  # noqa: E402
from tests.support.layouts import make_image  # noqa: E402
from tests.sync.hierarchy import READER, WRITER  # noqa: E402

DEFAULT_JSON = HERE / "results" / "pull-through-latest.json"
REPOSITORY = "bench/app"
NO_SYNC_DURING_THE_RUN = {"schedule": "0 0 1 1 *", "syncWindow": "PT1H"}


def cold_child(arguments, work: Path, name: str, parent, children=()):
    """A ReadOnly child whose only sync window is on 1 January: what it serves arrives on demand."""
    return start_ours(arguments, work, name, parent=parent, repositories=["bench/*"], children=children,
                      parent_settings={"syncProperties": NO_SYNC_DURING_THE_RUN})


def skopeo_pull(registry, destination: Path) -> float:
    started = time.perf_counter()
    run(["skopeo", "copy", "-q", "--preserve-digests", "--src-tls-verify=false", "--src-creds",
         f"{READER[0]}:{READER[1]}", f"docker://{registry.host}/{REPOSITORY}:v1", f"oci:{destination}:v1"],
        timeout=900)
    return time.perf_counter() - started


def first_byte(registry, digest: str) -> tuple[float, float]:
    """(seconds to the first body byte, seconds to the last) of one blob GET, read to the end."""
    connection = http.client.HTTPConnection(registry.host, timeout=300)
    try:
        started = time.perf_counter()
        connection.request("GET", f"/v2/{REPOSITORY}/blobs/{digest}", headers=basic(*READER))
        response = connection.getresponse()
        if response.status != 200:
            raise RuntimeError(f"GET blob at {registry.host} answered {response.status}: {response.read()[:300]!r}")
        response.read(1)
        first = time.perf_counter() - started
        while response.read(1 << 20):
            pass
        return first, time.perf_counter() - started
    finally:
        connection.close()


def one_round(arguments, work: Path, root, number: int, size: int, blob_digest: str) -> dict:
    """A fresh cold middle below the root and a fresh cold leaf below it (each ready before the next starts), the
    round's measurements, and both stopped."""
    middle = cold_child(arguments, work, f"bench-middle-{number}", root,
                        children=[(f"bench-leaf-{number}", "ReadOnly")])
    leaf = None
    try:
        wait_ready(middle, "middle")
        leaf = cold_child(arguments, work, f"bench-leaf-{number}", middle)
        wait_ready(leaf, "leaf")
        return measure_round(work, root, middle, leaf, number, size, blob_digest)
    finally:
        for instance in (leaf, middle):
            if instance is not None:
                stop(instance)


def measure_round(work: Path, root, middle, leaf, number: int, size: int, blob_digest: str) -> dict:
    result = {}
    order = ("root", "leaf") if number % 2 else ("leaf", "root")  # alternate who goes first
    for which in order:
        run(["sync"], timeout=120)
        cpu_before = {instance.name: cpu_seconds(instance.pid) for instance in (root, middle, leaf)}
        seconds = skopeo_pull(root if which == "root" else leaf, work / f"pulled-{which}-{number}")
        cpu = {name: round(cpu_seconds(instance.pid) - cpu_before[name], 2)
               for name, instance in ((i.name, i) for i in (root, middle, leaf))}
        result[which], result[f"cpu_{which}"] = seconds, cpu
        progress(f"round {number}: {which} {seconds:.2f}s ({size / seconds / 1e6:.0f} MB/s), CPU s {cpu}")
    result["ttfb_leaf"], result["whole_leaf"] = first_byte(leaf, blob_digest)  # cold at both layers
    result["ttfb_root"], result["whole_root"] = first_byte(root, blob_digest)
    progress(f"round {number}: cold blob at the leaf: first byte {result['ttfb_leaf'] * 1000:.0f} ms, "
             f"root (stored) {result['ttfb_root'] * 1000:.1f} ms")
    for instance in (leaf, middle):
        status = request(f"{instance.url}/acr/connected/v1/status", headers=basic(*READER), timeout=60)
        result[f"cache_{instance.name}"] = status.json()["cache"]
    return result


def benchmark(arguments, work: Path) -> dict:
    layers, layer_size = (4, "10M") if arguments.quick else (arguments.layers, arguments.layer_size)
    rounds = 1 if arguments.quick else arguments.rounds
    layout = work / "layout"
    progress(f"making a {layers} x {layer_size} image")
    make_image(layout, "v1", layers, layer_size)
    size = sum(path.stat().st_size for path in (layout / "blobs" / "sha256").iterdir())
    root = start_ours(arguments, work, "bench-root",
                      children=[(f"bench-middle-{n}", "ReadOnly") for n in range(1, rounds + 1)])
    wait_ready(root, "root")
    push_image(layout, "v1", root, f"{REPOSITORY}:v1", WRITER)
    blob = RandomBlob(work / "blob", arguments.blob_mib << 20)
    digest = blob.next_variant("ttfb")
    reply = request(f"{root.url}/v2/{REPOSITORY}/blobs/uploads/?digest={digest}", "POST", blob.path.read_bytes(),
                    basic(*WRITER), timeout=60)
    if reply.status != 201:
        raise RuntimeError(f"blob push answered {reply.status}: {reply.body[:300]!r}")
    results = [one_round(arguments, work, root, number, size, digest) for number in range(1, rounds + 1)]
    root_seconds = statistics.median(r["root"] for r in results)
    leaf_seconds = statistics.median(r["leaf"] for r in results)
    return {"image_bytes": size, "layers": layers, "layer_size": layer_size, "rounds": results,
            "root_seconds": root_seconds, "leaf_seconds": leaf_seconds, "ratio": root_seconds / leaf_seconds,
            "ttfb_leaf_ms": statistics.median(r["ttfb_leaf"] for r in results) * 1000,
            "ttfb_root_ms": statistics.median(r["ttfb_root"] for r in results) * 1000,
            "blob_mib": arguments.blob_mib}


def format_table(result: dict) -> str:
    size = result["image_bytes"]
    rows = [
        ("first pull, straight from the root (MB/s)", size / result["root_seconds"] / 1e6, ""),
        ("first pull through two cold layers (MB/s)", size / result["leaf_seconds"] / 1e6, ""),
        ("through the layers / from the root (ratio)", result["ratio"], ">= 0.6 " + (
            "met" if result["ratio"] >= 0.6 else "NOT met")),
        (f"cold {result['blob_mib']} MiB blob at the leaf: first byte (ms)", result["ttfb_leaf_ms"], ""),
        (f"the same blob stored at the root: first byte (ms)", result["ttfb_root_ms"], ""),
    ]
    lines = ["| measurement | value | target |", "|---|---|---|"]
    lines += [f"| {name} | {format_number(value)} | {target} |" for name, value, target in rows]
    return "\n".join(lines)


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="40 MiB image, one round")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--layer-size", default="50M", help="mkimage size of each layer (default 50M: 200 MiB)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--blob-mib", type=int, default=64, help="size of the blob for the first-byte row")
    parser.add_argument("--ours", default=str(DEFAULT_OURS))
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--json", default=str(DEFAULT_JSON))
    parser.add_argument("--tmpdir", default="")
    parser.add_argument("--keep", action="store_true")
    return parser.parse_args()


def main() -> int:
    arguments = parse_arguments()
    work = Path(tempfile.mkdtemp(prefix="cr-pull-through-bench-", dir=arguments.tmpdir or None))

    def body() -> None:
        result = benchmark(arguments, work)
        table = format_table(result)
        print(table)
        compare.write_result(arguments.json, {"table": table, **result})

    return compare.run_guarded(work, arguments.keep, body, lambda: sorted(work.glob("*/registry.log")))


if __name__ == "__main__":
    sys.exit(main())
