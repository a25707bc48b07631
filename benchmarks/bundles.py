#!/usr/bin/env python3
"""Offline bundles benchmark (issue 17): export and import of a 20-image set as one signed bundle, side by side with
`skopeo copy` of the same images to and from `oci-archive:` (one archive per image: skopeo writes one image per
archive), in the same run, against real `connected-registry serve` processes on loopback.

  export:  `connected-registry export --registry ROOT --output bundle.tar`  vs  20 x `skopeo copy docker://ROOT/...
           oci-archive:...`
  import:  `connected-registry import bundle.tar --registry TARGET`  vs  20 x `skopeo copy oci-archive:...
           docker://TARGET/...`, each into a fresh instance

Prints a table with the ratio (skopeo's time / ours: above 1 we are faster) and writes
benchmarks/results/bundles-latest.json. Every process is stopped by PID at the end; the temporary directory is
removed unless --keep.

    .venv/bin/python benchmarks/bundles.py            # full run: 20 images of ~51 MiB (1 GiB); not on a shared host
    .venv/bin/python benchmarks/bundles.py --quick    # smoke run: 20 images of ~256 KiB
    .venv/bin/python benchmarks/bundles.py --image-mib 5   # 100 MiB: a middle size for a shared host

Needs: skopeo on PATH and the project's .venv.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (str(ROOT / "modules"), str(ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)
# The instances and commands this run starts use this checkout too.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "modules"), str(ROOT),
                                                         os.environ.get("PYTHONPATH")]))

from tests.support.http import request  # noqa: E402
from tests.support.oci import image_manifest  # noqa: E402
from tests.sync.hierarchy import OPERATOR, READER, WRITER, start_instance  # noqa: E402
from tests.sync.instance_api import push_blob, put_manifest  # noqa: E402

IMAGES = 20
CLI = [sys.executable, "-m", "connected_registry"]


def push_set(root, layer_size: int) -> list[str]:
    """20 images of two layers each, in bench/app-<n>:1.0."""
    references = []
    for number in range(IMAGES):
        repository = f"bench/app-{number:02d}"
        config = json.dumps({"architecture": "amd64", "os": "linux", "n": number}).encode()
        layers = [os.urandom(layer_size // 2) for _ in range(2)]
        for blob in (config, *layers):
            push_blob(root, repository, blob)
        put_manifest(root, repository, "1.0", image_manifest(config, layers))
        references.append(f"{repository}:1.0")
    return references


def timed(argv: list[str], env: dict | None = None) -> float:
    started = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=3600)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])}... failed:\n{result.stdout}\n{result.stderr}")
    return time.monotonic() - started


def skopeo_copy(source: str, destination: str, creds: tuple[str, str], side: str) -> list[str]:
    return ["skopeo", "copy", "--preserve-digests", f"--{side}-tls-verify=false", f"--{side}-creds",
            f"{creds[0]}:{creds[1]}", source, destination]


def run(arguments, work: Path) -> dict:
    layer_size = int(arguments.image_mib * (1 << 20)) if arguments.image_mib else (256 << 10) if arguments.quick \
        else (51 << 20)
    env = None
    instances = []
    try:
        root = start_instance(work, "bench-root", mode="ReadWrite")
        instances.append(root)
        print(f"pushing {IMAGES} images of {layer_size >> 10} KiB ...", file=sys.stderr)
        references = push_set(root, layer_size)
        key = work / "root.pem"
        key.write_text(request(f"{root.url}/acr/connected/v1/info").json()["bundleKey"])
        archives = work / "archives"
        archives.mkdir()
        ours_export = timed([*CLI, "export", "--registry", root.url, "--username", READER[0], "--password",
                             READER[1], "--repository", "bench/*", "--output", str(work / "bundle.tar")], env)
        skopeo_export = sum(timed(skopeo_copy(f"docker://{root.host}/{reference}",
                                              f"oci-archive:{archives / reference.replace('/', '-')}.tar", READER,
                                              "src")) for reference in references)
        ours_target = start_instance(work, "bench-ours", mode="ReadWrite")
        skopeo_target = start_instance(work, "bench-skopeo", mode="ReadWrite")
        instances += [ours_target, skopeo_target]
        ours_import = timed([*CLI, "import", str(work / "bundle.tar"), "--registry", ours_target.url, "--username",
                             OPERATOR[0], "--password", OPERATOR[1], "--trust-key", str(key)], env)
        skopeo_import = sum(timed(skopeo_copy(f"oci-archive:{archives / reference.replace('/', '-')}.tar",
                                              f"docker://{skopeo_target.host}/{reference}", WRITER, "dest"))
                            for reference in references)
    finally:
        for instance in instances:
            instance.stop()
    size = (work / "bundle.tar").stat().st_size
    return {"images": IMAGES, "bundleBytes": size,
            "export": {"ours": ours_export, "skopeo": skopeo_export, "ratio": skopeo_export / ours_export},
            "import": {"ours": ours_import, "skopeo": skopeo_import, "ratio": skopeo_import / ours_import}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 images of ~256 KiB")
    parser.add_argument("--image-mib", type=float, help="each image's two layers together, in MiB (default 51)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    arguments = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bundles-bench-"))
    try:
        result = run(arguments, work)
    finally:
        if not arguments.keep:
            shutil.rmtree(work, ignore_errors=True)
    mib = result["bundleBytes"] / (1 << 20)
    print(f"{IMAGES} images, bundle {mib:.1f} MiB{' (quick)' if arguments.quick else ''}")
    print(f"{'':8}{'ours (s)':>10}{'skopeo (s)':>12}{'skopeo/ours':>13}{'ours MiB/s':>12}")
    for step in ("export", "import"):
        row = result[step]
        print(f"{step:8}{row['ours']:>10.2f}{row['skopeo']:>12.2f}{row['ratio']:>13.2f}{mib / row['ours']:>12.1f}")
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / "bundles-latest.json").write_text(json.dumps({**result, "quick": arguments.quick}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
