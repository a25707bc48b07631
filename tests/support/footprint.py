"""A `serve` measured as a small device would run it: from exec to the first answer of /v2/, its idle VmRSS, and
what it has imported (`-X importtime`). Shared by tests/api/test_footprint.py and benchmarks/edge.py."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from connected_registry.auth.passwords import hash_password
from tests.support.processes import RegistryProcess, wait_until

TOKENS = 20  # the most a configuration may hold without gateway actions
TOKEN_PASSWORD = "a-footprint-password"
RSS_SAMPLES, RSS_SAMPLE_SECONDS = 10, 0.1  # idle: the highest of 10 samples over a second, as compare.py takes it


def token_names() -> list[str]:
    return [f"device-{number:02d}" for number in range(TOKENS)]


def twenty_tokens_config(path: Path, name: str = "footprint-root") -> Path:
    """A root's configuration with 20 client tokens, each with its own hash (scrypt: about a second to make)."""
    tokens = {token: {"passwordHashes": [hash_password(TOKEN_PASSWORD)],
                      "actions": [f"repositories/{token}/*/content/read", f"repositories/{token}/*/metadata/read"]}
              for token in token_names()}
    path.write_text(json.dumps({"name": name, "tokens": tokens, "anonymousPull": False}))
    return path


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def idle_rss_mib(pid: int) -> float:
    """The highest VmRSS of RSS_SAMPLES samples, RSS_SAMPLE_SECONDS apart."""
    samples: list[float] = []

    def sampled_enough() -> bool:
        samples.append(rss_mib(pid))
        return len(samples) >= RSS_SAMPLES

    wait_until(sampled_enough, timeout=RSS_SAMPLES * RSS_SAMPLE_SECONDS * 10, what="RSS samples",
               interval=RSS_SAMPLE_SECONDS)
    return max(samples)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time the process has used so far (all its threads): unlike the wall clock, hardly
    changed by the other work of a shared machine."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _answers(host: str, port: int) -> bool:
    """True once an HTTP request to /v2/ gets a status line back (401 with a configuration counts)."""
    try:
        with socket.create_connection((host, port), timeout=1) as connection:
            connection.sendall(b"GET /v2/ HTTP/1.1\r\nHost: footprint\r\nConnection: close\r\n\r\n")
            return connection.recv(16).startswith(b"HTTP/1.1 ")
    except OSError:
        return False


def start_serve(data_dir: Path, config: Path | None, *,
                command: Sequence[str] = (sys.executable, "-m", "connected_registry"),
                env: dict[str, str | None] | None = None) -> tuple[RegistryProcess, float, float]:
    """A `serve` (with `config`, else the embedded default), the seconds from its exec to /v2/'s first answer, and
    the CPU seconds it used until then."""
    process = RegistryProcess(data_dir, extra_args=["--config", str(config)] if config else [], env=env,
                              command=command, wait=False)
    try:
        wait_until(lambda: process.alive() and _answers(process.address, process.port), timeout=60,
                   what=f"/v2/ answering on port {process.port}", interval=0.002)
        ready, cpu = time.perf_counter() - process.spawned_at, cpu_seconds(process.pid)
        process.wait_ready()  # and its start logged
    except BaseException:
        process.stop()
        raise
    return process, ready, cpu


def imported_modules(process: RegistryProcess) -> set[str]:
    """What a process started with `python -X importtime` has imported so far, from its output."""
    return {line.rsplit("|", 1)[1].strip() for line in process.lines() if line.startswith("import time:")
            and line.count("|") == 2 and "cumulative" not in line}
