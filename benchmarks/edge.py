#!/usr/bin/env python3
"""IoT Edge module benchmark: how fast the module comes up and follows its twin, with the real azure-iot-device SDK
against the simulated IoT Edge runtime of tests/support/edge_runtime.py (workload API, mosquitto with TLS, a twin
responder), below a root instance, on loopback.

  1. start to Active: from spawning `connected-registry serve` (IoT Edge environment, twin-configured, below a root)
     to the reported properties showing activation Active with the next sync window (--starts times: the first on
     a fresh data volume, the others restarts on it, as a redeployed module);
  2. desired patch to reported change: a schedule patch published by the twin hub until the reported properties
     carry the new sync.nextWindowStart and appliedDesiredVersion (--patches times, one module);
  3. the footprint on a small device (first): a root `serve`, from exec until /v2/ answers, its idle VmRSS (the
     highest of 10 samples over a second) and its VmRSS after each of its 20 tokens logged in, with the embedded
     default and with a configuration of 20 tokens; the median of --footprint-runs runs, with the bytecode compiled
     (as `pip install` leaves it) in a temporary folder. With --baseline MODULES (the modules folder of another
     checkout, e.g. `git clone /work/main /tmp/fp-base && git -C /tmp/fp-base checkout dbccbf9`, then
     `--baseline /tmp/fp-base/modules`) the same runs of that checkout alternate with these, side by side.

    .venv/bin/python benchmarks/edge.py                 # 5 footprint runs, 5 starts, 20 patches (~100 s)
    .venv/bin/python benchmarks/edge.py --starts 1 --patches 3
    .venv/bin/python benchmarks/edge.py --image         # and the module image's size (builds it: ~20 s, root)
    .venv/bin/python benchmarks/edge.py --starts 0 --footprint-runs 9 --baseline /tmp/fp-base/modules

Needs mosquitto (/usr/sbin/mosquitto, scripts/setup.sh --test installs it) and the project's .venv. `--image` builds
the image as the tests do (tests/support/module_image.py: a dockerd of its own, the debootstrap'd base from the cache,
made once a machine in about 70 s) and reports `docker image inspect`'s size.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.footprint import add_footprint_arguments, report_footprint  # noqa: E402
from tests.edge.modules import MODULE_NAME, QUIET_HOUR, QUIET_START, module_desired, start_module  # noqa: E402
from tests.support.clients import Dockerd  # noqa: E402
from tests.support.edge_runtime import EdgeRuntime  # noqa: E402
from tests.support.module_image import build_module_image  # noqa: E402
from tests.support.pki import make_pki  # noqa: E402
from tests.sync.hierarchy import start_instance  # noqa: E402


def _window(start: str):
    return lambda r: ((r.get("sync") or {}).get("nextWindowStart") or "").endswith(start)


def _summary(name: str, values: list[float], unit: str = "ms") -> str:
    scale = 1000 if unit == "ms" else 1
    values = sorted(v * scale for v in values)
    return (f"{name:38s} n={len(values):3d}  median {statistics.median(values):8.1f} {unit}  "
            f"min {values[0]:8.1f}  max {values[-1]:8.1f}")


def _image_sizes() -> str:
    """The module image built from the checkout in a dockerd of its own, and its size and its base's."""
    with tempfile.TemporaryDirectory(prefix="edge-image-") as directory:
        engine = Dockerd(Path(directory) / "dockerd")
        try:
            image = build_module_image(engine)
        finally:
            engine.stop()
    layers = image.size - image.base_size
    return (f"{'module image (docker image inspect)':38s} {image.size / 1e6:8.1f} MB  "
            f"(the base {image.base_size / 1e6:.1f} MB, the module's layers {layers / 1e6:.1f} MB)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--patches", type=int, default=20)
    parser.add_argument("--image", action="store_true", help="also build the module image and report its size")
    add_footprint_arguments(parser)
    arguments = parser.parse_args()
    report_footprint(arguments)
    if not arguments.starts:
        return 0
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as directory:
        base = Path(directory)
        pki = make_pki(base / "pki")
        root = start_instance(base, "factory-root", children=[(MODULE_NAME, "ReadOnly")])
        starts, patches = [], []
        try:
            for round_ in range(arguments.starts):
                runtime = EdgeRuntime(base / f"edge{round_}", pki, desired=module_desired())
                process = None
                try:
                    process, started = start_module(base / "module", runtime, root, wait=False)  # restarts: same volume
                    runtime.hub.wait_reported(lambda r: (r.get("activation") or {}).get("status") == "Active"
                                              and _window(QUIET_START)(r), timeout=60, what="Active")
                    starts.append(runtime.hub.reported_patches[-1][0] - started)
                    print(f"start {round_ + 1}: Active after {starts[-1]:.2f} s", file=sys.stderr)
                    if round_ == arguments.starts - 1:
                        for number in range(arguments.patches):
                            # windows 1 to 10 hours after the quiet one: never the current hour, so no sync starts
                            hour = (QUIET_HOUR + 1 + number % 10) % 24
                            target = f"T{hour:02d}:00:00Z"
                            sent = time.monotonic()
                            version = runtime.hub.patch_desired({"parent": {"syncProperties": {
                                "schedule": f"0 {hour} * * *", "syncWindow": "PT1H"}}})
                            runtime.hub.wait_reported(lambda r: r.get("appliedDesiredVersion") == version
                                                      and _window(target)(r), timeout=30, what="the new window")
                            patches.append(runtime.hub.reported_patches[-1][0] - sent)
                finally:
                    if process is not None:
                        process.stop()
                    runtime.stop()
        finally:
            root.stop()
    print(_summary("module start -> reported Active", starts, "s"))
    if patches:
        print(_summary("desired patch -> reported change", patches))
    if arguments.image:
        print(_image_sizes())
    return 0


if __name__ == "__main__":
    sys.exit(main())
