"""The footprint part of benchmarks/edge.py: a root `serve` from exec to /v2/'s first answer (wall clock, and the CPU
time it used meanwhile, which the machine's other work hardly changes), and its VmRSS idle and after its 20 tokens
logged in, with the embedded default and with 20 tokens, beside a baseline checkout's."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support.footprint import (TOKEN_PASSWORD, idle_rss_mib, rss_mib, start_serve, token_names,
                                     twenty_tokens_config)
from tests.support.http import basic, request
from tests.support.processes import REPO_ROOT

ROWS = [("exec -> /v2/ answers, embedded default", "default", "ready", "s"),
        ("exec -> /v2/ answers, 20 tokens", "tokens", "ready", "s"),
        ("CPU until /v2/ answers, embedded default", "default", "cpu", "s"),
        ("CPU until /v2/ answers, 20 tokens", "tokens", "cpu", "s"),
        ("idle VmRSS, embedded default", "default", "idle", "MiB"),
        ("idle VmRSS, 20 tokens", "tokens", "idle", "MiB"),
        ("VmRSS after 20 logins, 20 tokens", "tokens", "logins", "MiB")]


def add_footprint_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--footprint-runs", type=int, default=5, help="runs of each footprint measurement (0: none)")
    parser.add_argument("--baseline", type=Path, help="another checkout's modules folder, measured beside this one")


def _commit(modules: Path) -> str:
    found = subprocess.run(["git", "-C", str(modules), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return found.stdout.strip() or modules.name


def _measure_once(base: Path, modules: Path, config: Path | None, env: dict) -> dict[str, float]:
    process, ready, cpu = start_serve(Path(tempfile.mkdtemp(dir=base)), config, env={**env, "PYTHONPATH": str(modules)})
    try:
        figures = {"ready": ready, "cpu": cpu, "idle": idle_rss_mib(process.pid)}
        if config is not None:
            for name in token_names():  # each a scrypt check
                assert request(f"{process.url}/v2/", headers=basic(name, TOKEN_PASSWORD)).status == 200
            figures["logins"] = rss_mib(process.pid)
        return figures
    finally:
        process.stop()


def report_footprint(arguments: argparse.Namespace) -> None:
    if arguments.footprint_runs <= 0:
        return
    trees = {"this checkout": REPO_ROOT / "modules"}
    if arguments.baseline is not None:
        trees[f"baseline {_commit(arguments.baseline)}"] = arguments.baseline.resolve()
    with tempfile.TemporaryDirectory(prefix="footprint-bench-") as directory:
        base = Path(directory)
        configs = {"default": None, "tokens": twenty_tokens_config(base / "desired.json")}
        # compiled once, in a folder of the run's own (the checkouts stay clean), as pip install compiles them
        env = {"PYTHONPYCACHEPREFIX": str(base / "pycache"), "PYTHONDONTWRITEBYTECODE": None}
        results: dict[tuple[str, str], list[dict]] = {(tree, kind): [] for tree in trees for kind in configs}
        for tree, modules in trees.items():
            _measure_once(base, modules, configs["tokens"], env)  # a warm-up: writes the bytecode
        for run in range(arguments.footprint_runs):
            order = list(trees.items()) if run % 2 == 0 else list(reversed(trees.items()))  # alternate who goes first
            for tree, modules in order:
                for kind, config in configs.items():
                    results[(tree, kind)].append(_measure_once(base, modules, config, env))
            print(f"footprint run {run + 1} of {arguments.footprint_runs}", file=sys.stderr)
    print(f"{'footprint (median of %d runs)' % arguments.footprint_runs:40s}" +
          "".join(f"{tree:>22s}" for tree in trees))
    for label, kind, figure, unit in ROWS:
        medians = [statistics.median(result[figure] for result in results[(tree, kind)]) for tree in trees]
        print(f"{label:40s}" + "".join(f"{value:18.2f} {unit:>3s}" for value in medians))
