"""The module image IoT Edge deploys, built by the tests from the checkout's Dockerfile.amd64, offline apart from
Debian's and PyPI's registries: its base is made here rather than pulled from Docker Hub.

    base_rootfs()                 Debian bookworm by `debootstrap --variant=minbase` with python3.11, pip and venv,
                                  trimmed as Debian's slim images are, with `python` and `pip` on PATH as in the
                                  official python:3.11-slim-bookworm; a tar kept in a cache folder keyed by its recipe
                                  (~/.cache/connected-registry-tests/), so a machine makes it once (about 70 s)
    build_module_image(dockerd)   imports that base into `dockerd` as BASE_TAG and runs `docker build` of the module
                                  image from the checkout with `--build-arg BASE_IMAGE=BASE_TAG` (pip reaches PyPI
                                  from the build, as it does from any build); returns a ModuleImage

The base stands in for python:3.11-slim-bookworm: same Debian release, same Python minor version, pip installing
into the system (no PEP 668 marker, as in the official image), no compiler. It also trusts the certificate authorities
this machine adds to Debian's (/usr/local/share/ca-certificates, e.g. an egress proxy's that re-signs TLS), as a
base built behind such a proxy must for pip to reach PyPI from the build; they are part of the cache key.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.clients import DOCKER_CLI, Dockerd, run
from tests.support.processes import REPO_ROOT

SUITE, MIRROR = "bookworm", "http://deb.debian.org/debian"
PACKAGES = ("python3", "python3-pip", "python3-venv")
# What Debian's slim images leave out, and what only the bootstrap needed (the .debs, the package lists).
TRIMMED = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "var/cache/apt/archives",
           "var/lib/apt/lists", "var/log")
REMOVED = ("usr/lib/python3.11/EXTERNALLY-MANAGED",)  # pip installs into the system, as in the official image
LINKS = {"usr/local/bin/python": "/usr/bin/python3", "usr/local/bin/pip": "/usr/bin/pip3"}
LOCAL_CAS = Path("/usr/local/share/ca-certificates")  # Debian's place for a machine's own authorities
RECIPE = {"suite": SUITE, "mirror": MIRROR, "variant": "minbase", "packages": PACKAGES, "trimmed": TRIMMED,
          "removed": REMOVED, "links": LINKS}
# The official image's environment (its PATH puts /usr/local/bin first; its default command is python3).
IMPORT_CHANGES = ("ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "ENV LANG=C.UTF-8",
                  'CMD ["python3"]')
BASE_TAG = "connected-registry-tests/python:3.11-slim-bookworm"
MODULE_TAG = "connected-registry-tests/module:amd64"


@dataclass
class ModuleImage:
    """The built module image in the dockerd that built it."""

    engine: Dockerd
    tag: str
    id: str
    size: int               # bytes, as `docker image inspect` reports them
    base_size: int          # bytes of the base (BASE_TAG) in it
    base_seconds: float     # making the base (0 when it came from the cache)
    build_seconds: float    # `docker build` of the module image


def cache_root() -> Path:
    """~/.cache/connected-registry-tests (XDG_CACHE_HOME honoured)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "connected-registry-tests"


def local_authorities() -> list[Path]:
    return sorted(LOCAL_CAS.rglob("*.crt")) if LOCAL_CAS.is_dir() else []


def recipe_key() -> str:
    authorities = {str(path.relative_to(LOCAL_CAS)): hashlib.sha256(path.read_bytes()).hexdigest()
                   for path in local_authorities()}
    return hashlib.sha256(json.dumps([RECIPE, authorities], sort_keys=True).encode()).hexdigest()[:16]


def base_rootfs(cache: Path | None = None) -> tuple[Path, float]:
    """(the base's root filesystem as a tar, seconds spent making it: 0 when it was in the cache). Concurrent
    sessions wait for each other on a lock instead of bootstrapping twice."""
    cache = cache or cache_root()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:  # no writable home: made for this session only
        cache = Path(tempfile.mkdtemp(prefix="connected-registry-base-"))
    tar_path = cache / f"python3.11-{SUITE}-{recipe_key()}.tar"
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tar_path.exists():
            return tar_path, 0.0
        started = time.monotonic()
        _bootstrap_into(tar_path)
        return tar_path, time.monotonic() - started


def _debootstrap() -> str:
    found = shutil.which("debootstrap", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if found is None:
        raise RuntimeError("debootstrap is not installed: run `scripts/setup.sh --test` (it installs it)")
    if os.geteuid() != 0:
        raise RuntimeError("debootstrap needs root (it chroots and makes device files): run the tests as root, "
                           "as CI does")
    return found


def _bootstrap_into(tar_path: Path) -> None:
    """debootstrap into a folder beside `tar_path`, trim it, and tar it up; the tar appears whole or not at all."""
    work = Path(tempfile.mkdtemp(prefix="bootstrap-", dir=tar_path.parent))
    try:
        root = work / "root"
        run([_debootstrap(), "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(root), MIRROR],
            timeout=900)
        for folder in TRIMMED:
            for entry in (root / folder).iterdir():
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        for removed in REMOVED:
            (root / removed).unlink()
        for link, target in LINKS.items():
            (root / link).symlink_to(target)
        _trust_local_authorities(root)
        partial = work / "rootfs.tar"
        # /dev, /proc and /sys come from the engine at run time; keep the folders, not what debootstrap put there
        run(["tar", "-C", str(root), "--numeric-owner", "--exclude=./dev/*", "--exclude=./proc/*",
             "--exclude=./sys/*", "-cf", str(partial), "."], timeout=300)
        partial.replace(tar_path)
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(work)], check=False)


def _trust_local_authorities(root: Path) -> None:
    """The machine's own authorities into the base's store, the way Debian adds them (update-ca-certificates)."""
    authorities = local_authorities()
    if not authorities:
        return
    for path in authorities:
        target = root / "usr/local/share/ca-certificates" / path.relative_to(LOCAL_CAS)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    run(["chroot", str(root), "update-ca-certificates"], timeout=120)


def build_module_image(engine: Dockerd, dockerfile: str = "Dockerfile.amd64") -> ModuleImage:
    """The base imported into `engine` as BASE_TAG, then the module image built from the checkout on it."""
    tar_path, base_seconds = base_rootfs()
    changes = [argument for change in IMPORT_CHANGES for argument in ("--change", change)]
    engine.docker("import", *changes, str(tar_path), BASE_TAG, timeout=300)
    started = time.monotonic()
    # the classic builder (BuildKit is not in Debian's 20.10); the engine has no bridge, so RUN steps use the host's
    # network to reach PyPI
    run([DOCKER_CLI, "build", "--network", "host", "--build-arg", f"BASE_IMAGE={BASE_TAG}", "-f",
         str(REPO_ROOT / dockerfile), "-t", MODULE_TAG, str(REPO_ROOT)],
        env={**engine.env, "DOCKER_BUILDKIT": "0"}, timeout=900)
    build_seconds = time.monotonic() - started
    (image_id, size), (_, base_size) = (line.split() for line in engine.docker(
        "image", "inspect", "--format", "{{.Id}} {{.Size}}", MODULE_TAG, BASE_TAG).stdout.splitlines())
    return ModuleImage(engine, MODULE_TAG, image_id, int(size), int(base_size), base_seconds, build_seconds)
