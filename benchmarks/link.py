#!/usr/bin/env python3
"""Link benchmark: the initial sync over a slow link, bytes on the wire and seconds, side by side with
`skopeo sync --all`; and the accuracy of the parent link's byte budget.

The parent side runs in a network namespace of its own, joined to this one by a veth pair that `tc ... tbf`
shapes (tests/support/netns.py): our root and a CNCF distribution (skopeo's source) listen there, and each
child (ours, or the distribution skopeo copies into) runs here, so everything they fetch crosses the veth and is
counted on it (/sys/class/net/DEV/statistics: Ethernet frames, headers included).

  1. initial sync, all platforms: a fresh ReadOnly child from its spawn until every tag, index, platform
     manifest and blob is at the child; baseline: `skopeo sync --all` from the distribution into a fresh one;
  2. the same with `platforms` in the child's desired properties (--platforms; "n/a" rows without it);
  3. the budget: with `parent.bandwidth.maxBytesPerSecond` (--max-bytes-per-second, one or more values; "n/a"
     rows without it), a child syncs over the unshaped veth for --cap-seconds: the mean rate on the wire and the
     worst --cap-window against the cap.

Prints progress to stderr and a table to stdout, and writes benchmarks/results/link-latest.json. Needs root (for
the namespace), skopeo and docker-registry. Every process is stopped by PID, then the namespace and the veth pair
are removed, also on Ctrl-C, SIGTERM or an error; the work directory is removed unless --keep.

    .venv/bin/python benchmarks/link.py --quick        # 5 tags x 3 platforms x 3 x 1 MiB at 20 Mbit/s
    .venv/bin/python benchmarks/link.py --platforms linux/arm64 --max-bytes-per-second 1000000 5000000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (str(HERE), str(ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import compare  # noqa: E402 - the benchmarks' shared helpers (children by PID, numbers, the guarded run)
import sync  # noqa: E402 - the sync benchmark's instances, pushes and distribution
from compare import CHILDREN, align, format_number, git_head, progress, tool_versions  # noqa: E402

from tests.support import layouts  # noqa: E402
from tests.support.clients import Distribution, run  # noqa: E402
from tests.support.http import basic, request  # noqa: E402
from tests.support.netns import ShapedLink  # noqa: E402
from tests.sync.hierarchy import READER, WRITER, Instance, start_instance  # noqa: E402

DEFAULT_JSON = HERE / "results" / "link-latest.json"
REPOSITORY = "bench/app"
PLATFORMS = ("linux/amd64", "linux/arm64", "linux/arm/v7")
MB = 1_000_000


# --- content ---------------------------------------------------------------------------------------------


@dataclass
class Content:
    """The tags at the parent: each an index over one image per platform."""

    indexes: dict[str, str]  # tag -> index digest
    platform_blobs: dict[str, dict[str, int]]  # platform -> {digest: size} of its manifests, configs and layers
    manifests: set[str]  # which of those digests are platform manifests (asked for under /manifests/)

    def blobs(self, platforms: list[str] | None) -> dict[str, int]:
        """The manifests and blobs a child with `platforms` (None: all) must hold, with their sizes."""
        return {digest: size for platform, blobs in self.platform_blobs.items() if matches(platform, platforms)
                for digest, size in blobs.items()}

    def kind(self, digest: str) -> str:
        return "manifests" if digest in self.manifests else "blobs"


def matches(platform: str, wanted: list[str] | None) -> bool:
    """An OCI platform against a `platforms` list: "linux/arm" takes every variant of linux/arm."""
    return wanted is None or any(platform == entry or platform.startswith(entry + "/") for entry in wanted)


def make_content(arguments, layout: Path) -> Content:
    indexes, platform_blobs, manifests = {}, {platform: {} for platform in PLATFORMS}, set()
    for number in range(1, arguments.tags + 1):
        tag = f"t{number}"
        progress(f"making {tag}: {len(PLATFORMS)} platforms x {arguments.layers} x {arguments.layer_size}")
        indexes[tag] = layouts.make_multiplatform_index(layout, tag, PLATFORMS, arguments.layers, arguments.layer_size)
        for entry in json.loads(layouts.read_blob(layout, indexes[tag]))["manifests"]:
            platform = "/".join(filter(None, (entry["platform"]["os"], entry["platform"]["architecture"],
                                              entry["platform"].get("variant"))))
            manifest = json.loads(layouts.read_blob(layout, entry["digest"]))
            platform_blobs[platform][entry["digest"]] = entry["size"]
            manifests.add(entry["digest"])
            for blob in [manifest["config"], *manifest["layers"]]:
                platform_blobs[platform][blob["digest"]] = blob["size"]
    return Content(indexes, platform_blobs, manifests)


def push_index(layout: Path, tag: str, registry, creds: tuple[str, str] | None) -> None:
    argv = ["skopeo", "copy", "-q", "--all", "--preserve-digests", "--dest-tls-verify=false"]
    run([*argv, *(["--dest-creds", f"{creds[0]}:{creds[1]}"] if creds else []), f"oci:{layout}:{tag}",
         f"docker://{registry.host}/{REPOSITORY}:{tag}"], timeout=600)


# --- the parent side, in the link's namespace --------------------------------------------------------------


def start_root(arguments, work: Path, link: ShapedLink, children: list[str]) -> Instance:
    root = start_instance(work, "bench-root", children=[(child, "ReadOnly") for child in children],
                          env={variable: None for variable in sync.PROXY_ENV}, wait=False, metrics=False,
                          log_path=work / "bench-root" / "registry.log",
                          **link.registry_options([arguments.ours, "--log-level", arguments.log_level]))
    CHILDREN.track(link.adopt(root))
    sync.wait_ready(root, f"root (ours) in namespace {link.namespace}")
    return root


def start_source(arguments, work: Path, link: ShapedLink) -> Distribution:
    source = Distribution(work / "source", timeout=60, config=compare.DISTRIBUTION_CONFIG,
                          binary=arguments.distribution, address=link.parent_address, launcher=link.launcher)
    CHILDREN.track(link.adopt(source))
    progress(f"source distribution ready on {source.host}, PID {source.pid}")
    return source


# --- the rounds ------------------------------------------------------------------------------------------


def wait_whole(child: Instance, content: Content, platforms: list[str] | None, arguments) -> float:
    """Seconds from the child's spawn until it serves every tag with the right digest and holds every manifest
    and blob its platforms need (HEAD, one request per polling period: the child is busy)."""
    pending = [("manifests", tag, digest) for tag, digest in content.indexes.items()]
    pending += [(content.kind(digest), digest, digest) for digest in content.blobs(platforms)]
    deadline = time.monotonic() + arguments.deadline
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{child.name}: {len(pending)} manifests and blobs missing after {arguments.deadline} s")
        if not child.process.alive():
            raise RuntimeError(f"{child.name} exited:\n{child.process.log(30)}")
        kind, reference, digest = pending[0]
        if present(child, kind, reference, digest):
            pending.pop(0)
            continue
        time.sleep(arguments.poll_interval)  # the polling period
    return time.perf_counter() - child.process.spawned_at


def present(child: Instance, kind: str, reference: str, digest: str) -> bool:
    """`kind` "manifests" or "blobs": HEAD answers 200 (for a manifest, with the expected digest)."""
    try:
        reply = request(f"{child.url}/v2/{REPOSITORY}/{kind}/{reference}", "HEAD",
                        headers={**basic(*READER), "Accept": compare.MANIFEST_ACCEPT}, timeout=10)
    except OSError:
        return False  # not listening yet
    return reply.status == 200 and (kind == "blobs" or reply.headers.get("docker-content-digest") == digest)


def child_settings(platforms: list[str] | None, max_bytes: int | None) -> dict:
    """start_instance settings: the sync only (no fill on demand), and the options under measurement."""
    settings = {"repositories": ["bench/*"], "extra": {**sync.SYNC_ONLY, **({"platforms": platforms} if platforms
                                                                          else {})}}
    if max_bytes:
        settings["parent_settings"] = {"bandwidth": {"maxBytesPerSecond": max_bytes}}
    return settings


def ours_round(arguments, work: Path, link: ShapedLink, root: Instance, content: Content, name: str,
               platforms: list[str] | None) -> dict:
    os.sync()  # dirty pages of the previous step must not be flushed during this one
    before = link.counters()
    child = sync.start_ours(arguments, work, name, parent=root, **child_settings(platforms, None))
    try:
        seconds = wait_whole(child, content, platforms, arguments)
        crossed = link.counters() - before
        others = {digest for digest in content.blobs(None) if digest not in content.blobs(platforms)}
        copied_anyway = sum(present(child, content.kind(digest), digest, digest) for digest in others)
    finally:
        sync.stop(child)
    progress(f"{name} ({', '.join(platforms or ['all platforms'])}): {seconds:.2f} s, "
             f"{crossed.from_parent / MB:.1f} MB from the parent, {crossed.to_parent / MB:.2f} MB to it")
    if copied_anyway:
        progress(f"{name} holds {copied_anyway} blobs of platforms outside {platforms}: `platforms` was not applied")
    return {"seconds": seconds, "from_parent": crossed.from_parent, "to_parent": crossed.to_parent,
            "unlisted_blobs_copied": copied_anyway}


def skopeo_round(arguments, work: Path, link: ShapedLink, source: Distribution, content: Content,
                 number: int) -> dict:
    destination = sync.start_distribution(arguments, work, f"dest-{number}", f"destination distribution {number}")
    try:
        os.sync()
        before = link.counters()
        started = time.perf_counter()
        run(["skopeo", "sync", "--all", "--src", "docker", "--dest", "docker", "--src-tls-verify=false",
             "--dest-tls-verify=false", "--preserve-digests", f"{source.host}/{REPOSITORY}",
             f"{destination.host}/{REPOSITORY.rsplit('/', 1)[0]}"], timeout=arguments.deadline)
        seconds = time.perf_counter() - started
        crossed = link.counters() - before
        for tag, digest in content.indexes.items():
            got = sync.manifest_digest(destination, REPOSITORY, tag, {"Accept": compare.MANIFEST_ACCEPT})
            if got != digest:
                raise RuntimeError(f"skopeo sync left {REPOSITORY}:{tag} as {got}, expected {digest}")
    finally:
        sync.stop(destination)
    progress(f"skopeo sync --all {number}: {seconds:.2f} s, {crossed.from_parent / MB:.1f} MB from the parent")
    return {"seconds": seconds, "from_parent": crossed.from_parent, "to_parent": crossed.to_parent}


def cap_round(arguments, work: Path, link: ShapedLink, root: Instance, name: str, cap: int) -> dict:
    """A child with `maxBytesPerSecond: cap` syncs every platform over the unshaped veth for --cap-seconds (the
    whole content, not the `platforms` subset, so that the sync outlasts the watch); the bytes from the parent are
    sampled on the veth every SAMPLE_PERIOD."""
    link.shape(None)
    before = link.counters()
    child = sync.start_ours(arguments, work, name, parent=root, **child_settings(None, cap))
    samples: list[tuple[float, int]] = []  # (seconds since the spawn, bytes from the parent so far)
    try:
        end = time.monotonic() + arguments.cap_seconds
        while time.monotonic() < end:
            if not child.process.alive():  # a build without the setting refuses the configuration
                progress(f"{name} exited:\n{child.process.log(5)}")
                return {"cap": cap, "refused": child.process.log(5), "samples": samples}
            samples.append((time.perf_counter() - child.process.spawned_at, (link.counters() - before).from_parent))
            time.sleep(SAMPLE_PERIOD)  # the sampling period
    finally:
        sync.stop(child)
    accuracy = cap_accuracy(samples, cap, arguments.cap_window)
    progress(f"{name}: cap {cap / MB:g} MB/s, mean {format_number(accuracy['mean'] and accuracy['mean'] / MB)} MB/s "
             f"on the wire, worst {arguments.cap_window:g} s window {format_number(accuracy['worst_percent'])} % off "
             f"(flowing {accuracy['flowing_s']:.1f} s of {arguments.cap_seconds:g} s watched)")
    return {"cap": cap, **accuracy, "samples": samples}


SAMPLE_PERIOD = 0.1
FLOWING = 256 << 10  # bytes from the parent after which the sync is under way (activation, catalog and tokens done)
TRICKLE = 64 << 10  # a sample that grew less than this is control traffic (the feed, reports), not the sync


def cap_accuracy(samples: list[tuple[float, int]], cap: int, window: float) -> dict:
    """The mean rate while the sync flows (from FLOWING bytes to the last sample that grew by more than a TRICKLE:
    after the sync ends, the feed's polls and the reports still cross), and the window of `window` seconds within
    it whose rate is furthest from the cap."""
    start = next((i for i, (_, crossed) in enumerate(samples) if crossed >= FLOWING), None)
    end = max((i for i in range(1, len(samples)) if samples[i][1] - samples[i - 1][1] > TRICKLE), default=None)
    if start is None or end is None or samples[end][0] - samples[start][0] <= 0:
        return {"mean": None, "worst_percent": None, "windows": 0, "flowing_s": 0.0}
    def rate(i: int, j: int) -> float:
        return (samples[j][1] - samples[i][1]) / (samples[j][0] - samples[i][0])

    deviations = []
    for i in range(start, end + 1):
        j = next((j for j in range(i, end + 1) if samples[j][0] - samples[i][0] >= window), None)
        if j is not None:
            deviations.append(abs(rate(i, j) - cap) / cap * 100)
    return {"mean": rate(start, end), "worst_percent": max(deviations) if deviations else None,
            "windows": len(deviations), "flowing_s": samples[end][0] - samples[start][0]}


# --- the table -------------------------------------------------------------------------------------------

NOT_ASKED = "n/a"  # the option that measures this row was not given


@dataclass
class Row:
    name: str
    unit: str
    ours: float | str | None
    skopeo: float | None = None
    target: str = ""
    met: bool | None = None

    @property
    def ratio(self) -> float | None:
        return self.ours / self.skopeo if isinstance(self.ours, (int, float)) and self.skopeo else None


def format_table(rows: list[Row]) -> str:
    lines = [["measurement", "ours", "skopeo sync --all", "ours/skopeo", "target", "met"]]
    for row in rows:
        ours = row.ours if isinstance(row.ours, str) else (f"{row.ours:.0f}" if row.unit == "count" else
                                                          format_number(row.ours))
        lines.append([f"{row.name} ({row.unit})", ours,
                      format_number(row.skopeo), f"{row.ratio:.2f}x" if row.ratio is not None else "-",
                      row.target or "(info)", {True: "yes", False: "NO", None: ""}[row.met]])
    return align(lines)


def median_of(rounds: list[dict] | None, key: str, scale: float = 1) -> float | str:
    return statistics.median(r[key] for r in rounds) / scale if rounds else NOT_ASKED


def sync_rows(arguments, results: dict, content: Content) -> list[Row]:
    skopeo, everything, filtered = results["skopeo"], results["all_platforms"], results.get("platforms")
    skopeo_s, skopeo_mb = median_of(skopeo, "seconds"), median_of(skopeo, "from_parent", MB)
    fraction = sum(content.blobs(arguments.platforms or ["linux/arm64"]).values()) / sum(content.blobs(None).values())
    listed = ",".join(arguments.platforms or ["linux/arm64"]) + ("" if arguments.platforms else " (--platforms)")
    filtered_mb = median_of(filtered, "from_parent", MB)
    unlisted = median_of(filtered, "unlisted_blobs_copied")
    return [
        Row("initial sync, all platforms", "s", median_of(everything, "seconds"), skopeo_s),
        Row("  bytes from the parent on the wire", "MB", median_of(everything, "from_parent", MB), skopeo_mb),
        Row("  bytes to the parent on the wire", "MB", median_of(everything, "to_parent", MB),
            median_of(skopeo, "to_parent", MB)),
        Row(f"initial sync, platforms {listed}", "s", median_of(filtered, "seconds"), skopeo_s),
        Row("  bytes from the parent on the wire", "MB", filtered_mb, skopeo_mb,
            f"ours/skopeo <= {fraction * 1.1:.2f}",
            None if filtered is None else filtered_mb / skopeo_mb <= fraction * 1.1),
        Row("  blobs of unlisted platforms at the child", "count", unlisted, None, "0",
            None if filtered is None else unlisted == 0),
    ]


def cap_rows(arguments, caps: list[dict]) -> list[Row]:
    """Two rows per cap measured; without --max-bytes-per-second, n/a rows for the caps the issue names."""
    if not caps:
        return [Row(f"cap {value} MB/s (--max-bytes-per-second): {what}", unit, NOT_ASKED, None, target)
                for value in (1, 5) for what, unit, target in (
                    ("mean rate on the wire", "MB/s", "within 10 %"),
                    (f"worst {arguments.cap_window:g} s window", "% off", "<= 10"))]
    rows = []
    for cap in caps:
        if "refused" in cap:
            rows.append(Row(f"cap {cap['cap'] / MB:g} MB/s: the child exited (see above)", "-", "refused", None,
                            "within 10 %", False))
            continue
        mean, worst = cap["mean"], cap["worst_percent"]
        rows.append(Row(f"cap {cap['cap'] / MB:g} MB/s: mean rate on the wire", "MB/s", mean and mean / MB, None,
                        "within 10 %", mean is not None and abs(mean - cap["cap"]) <= 0.1 * cap["cap"]))
        rows.append(Row(f"cap {cap['cap'] / MB:g} MB/s: worst {arguments.cap_window:g} s window", "% off", worst,
                        None, "<= 10", worst is not None and worst <= 10))
    return rows


# --- the run ---------------------------------------------------------------------------------------------


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 MiB layers, 8 s per cap")
    parser.add_argument("--rate", type=float, default=20, help="the link's rate each way, in Mbit/s (default 20)")
    parser.add_argument("--tags", type=int, default=5, help="tags (different indexes) at the parent (default 5)")
    parser.add_argument("--layers", type=int, default=3, help="layers per platform image (default 3)")
    parser.add_argument("--layer-size", help="size of each layer (default 10M; 1M with --quick)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of each sync, median reported (default 1)")
    parser.add_argument("--platforms", nargs="+", metavar="OS/ARCH[/VARIANT]",
                        help="the child's `platforms` in the second sync (e.g. linux/arm64); without it: n/a rows")
    parser.add_argument("--max-bytes-per-second", type=int, nargs="+", default=[], metavar="N",
                        help="measure the child's parent.bandwidth.maxBytesPerSecond at each N (e.g. 1000000 "
                             "5000000), over the unshaped veth; without it: n/a rows")
    parser.add_argument("--cap-seconds", type=float, help="how long each capped sync is watched (default 40; 12 "
                                                          "with --quick)")
    parser.add_argument("--cap-window", type=float, help="the window the cap is held to (default 10 s; 5 with "
                                                         "--quick)")
    parser.add_argument("--poll-interval", type=float, default=0.05, help="seconds between polls (default 0.05)")
    parser.add_argument("--deadline", type=float, default=900, help="deadline of each sync, in seconds (default 900)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="--log-level of our instances (logs are in the work directory; see --keep)")
    parser.add_argument("--tmpdir", help="parent of the temporary work directory (default: the system's)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (data, logs) afterwards")
    parser.add_argument("--json", default=str(DEFAULT_JSON),
                        help=f"where to write the results (default {DEFAULT_JSON})")
    parser.add_argument("--ours", default=str(sync.DEFAULT_OURS), help="the connected-registry command")
    parser.add_argument("--distribution", default="docker-registry", help="the CNCF distribution binary")
    arguments = parser.parse_args()
    arguments.layer_size = arguments.layer_size or ("1M" if arguments.quick else "10M")
    arguments.cap_seconds = arguments.cap_seconds or (12.0 if arguments.quick else 40.0)
    arguments.cap_window = arguments.cap_window or (5.0 if arguments.quick else 10.0)
    return arguments


def sync_rounds(arguments, work: Path, link: ShapedLink, parties: tuple[Instance, Distribution],
                content: Content) -> dict:
    """Per round: ours over every platform, skopeo sync --all (alternating which goes first), then ours with
    `platforms` when asked, all over the shaped link."""
    root, source = parties
    link.shape(int(arguments.rate * MB))
    results: dict[str, list] = {"all_platforms": [], "skopeo": []}
    if arguments.platforms:
        results["platforms"] = []
    for number in range(1, arguments.rounds + 1):
        order = ("ours", "skopeo") if number % 2 else ("skopeo", "ours")
        for which in order:
            if which == "ours":
                results["all_platforms"].append(
                    ours_round(arguments, work, link, root, content, f"bench-child-all-{number}", None))
            else:
                results["skopeo"].append(skopeo_round(arguments, work, link, source, content, number))
        if arguments.platforms:
            results["platforms"].append(ours_round(arguments, work, link, root, content,
                                                   f"bench-child-platforms-{number}", arguments.platforms))
    return results


def benchmark(arguments, work: Path, link: ShapedLink) -> tuple[list[Row], dict]:
    layout = work / "images"
    content = make_content(arguments, layout)
    children = [f"bench-child-{kind}-{n}" for kind in ("all", "platforms") for n in range(1, arguments.rounds + 1)]
    children += [f"bench-child-cap-{n}" for n in range(1, len(arguments.max_bytes_per_second) + 1)]
    root = start_root(arguments, work, link, children)
    source = start_source(arguments, work, link)
    started = time.perf_counter()
    for tag in content.indexes:  # over the unshaped veth
        push_index(layout, tag, root, WRITER)
        push_index(layout, tag, source, None)
    progress(f"pre-filled both parents in {time.perf_counter() - started:.1f} s; the link is now "
             f"{arguments.rate:g} Mbit/s each way")
    results = sync_rounds(arguments, work, link, (root, source), content)
    caps = [cap_round(arguments, work, link, root, f"bench-child-cap-{n}", cap)
            for n, cap in enumerate(arguments.max_bytes_per_second, 1)]
    rows = sync_rows(arguments, results, content) + cap_rows(arguments, caps)
    image_bytes = sum(content.blobs(None).values())
    meta = {"content": f"{arguments.tags} tags x {len(PLATFORMS)} platforms x {arguments.layers} x "
                       f"{arguments.layer_size} ({image_bytes / (1 << 20):.0f} MiB)",
            "content_bytes": image_bytes, "rate_mbit_s": arguments.rate, "platforms": arguments.platforms,
            "rounds": results, "caps": caps, "quick": arguments.quick, "git_head": git_head(),
            "link": {"namespace": link.namespace, "device": link.host_device, "network": str(link.network)}}
    return rows, meta


def main() -> int:
    arguments = parse_arguments()
    if os.geteuid() != 0:
        progress("the link benchmark needs root (ip netns, ip link, tc): run it as root")
        return 2
    work = Path(tempfile.mkdtemp(prefix="cr-link-bench-", dir=arguments.tmpdir or None))

    def body() -> None:
        with ShapedLink() as link:
            progress(f"link: {link.host_address} (here) <-> {link.parent_address} (namespace {link.namespace})")
            rows, meta = benchmark(arguments, work, link)
        table = format_table(rows)
        print(table)
        compare.write_result(arguments.json, {"versions": tool_versions(arguments.distribution), "table": table,
                                              "rows": [row.__dict__ | {"ratio": row.ratio} for row in rows], **meta})

    return compare.run_guarded(work, arguments.keep, body, lambda: sorted(work.glob("bench-*/registry.log")))


if __name__ == "__main__":
    sys.exit(main())
