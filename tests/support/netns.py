"""A shaped link of the test's own: the parent's network namespace, joined to this one by a veth pair whose two
directions are rate-limited with `tc qdisc ... tbf` (the kernel here has tbf and htb, not netem).

The shape: the parent side (a `serve` process, a distribution) runs inside a namespace made for the test, listening
on the namespace's end of the veth; the child, the clients and the test itself stay in this namespace and reach the
parent at `parent_address` through the veth, so every byte between them crosses the shaped link and is counted on
it. Nothing else is ever a target: the namespace, the two interfaces and the /30 between them are made by the test
and removed at its end (the processes inside first, by PID), also when it fails; the loopback is not touched.
Needs root (`ip netns`, `ip link`, `tc`), as `.ci/run` has.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


PREFIX = "crlink"  # every namespace made here is crlink-<PID of the test process>-<n>
POOL = ipaddress.ip_network("10.213.0.0/16")  # where the /30s come from, never one already routed here
QUEUE_SECONDS = 0.2  # how much the tbf queue holds at the rate before it drops, as a router's buffer would


def _run(*arguments: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(list(arguments), capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"`{' '.join(arguments)}` failed ({result.returncode}): {result.stderr.strip()}")
    return result


def _routed_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 destination this namespace routes (all tables; the default route aside)."""
    routes = json.loads(_run("ip", "-j", "-4", "route", "show", "table", "all").stdout or "[]")
    return [ipaddress.ip_network(route["dst"], strict=False) for route in routes if route["dst"] != "default"]


def _free_slash30() -> ipaddress.IPv4Network:
    taken = _routed_networks()
    candidates = list(POOL.subnets(new_prefix=30))
    random.shuffle(candidates)
    for network in candidates:
        if not any(network.overlaps(other) for other in taken):
            return network
    raise RuntimeError(f"no free /30 left in {POOL}: remove the stale {PREFIX}-* namespaces (`ip netns list`)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def remove_stale_links() -> None:
    """Namespaces this module made for a test process that has died (killed before its clean-up ran): removing
    the namespace removes its veth pair, its end here and its route."""
    for line in _run("ip", "netns", "list").stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        parts = name.split("-")
        if len(parts) == 3 and parts[0] == PREFIX and parts[1].isdigit() and not _alive(int(parts[1])):
            _run("ip", "netns", "delete", name, check=False)


def tbf_parameters(bits_per_second: int) -> list[str]:
    """`tc ... tbf` arguments for a rate: a burst of 10 ms at the rate (at least a few full frames, so GSO
    segments pass), and a queue of QUEUE_SECONDS."""
    bytes_per_second = bits_per_second // 8
    burst = max(bytes_per_second // 100, 16 * 1514)
    limit = max(int(bytes_per_second * QUEUE_SECONDS), 2 * burst)
    return ["rate", f"{bits_per_second}bit", "burst", str(burst), "limit", str(limit)]


@dataclass
class Counters:
    """Bytes that crossed the veth (Ethernet frames, headers included), read at this namespace's end."""

    to_parent: int
    from_parent: int

    def __sub__(self, earlier: "Counters") -> "Counters":
        return Counters(self.to_parent - earlier.to_parent, self.from_parent - earlier.from_parent)


class ShapedLink:
    """One namespace for the parent side and the veth pair to it. `shape(rate)` limits both directions (or each
    with `shape(down=..., up=...)`); `shape()` lifts the limit (to fill the parent quickly before a measurement).
    `registry_options()` and `launcher` run a registry inside the namespace; `adopt` hands it to the link, whose
    `close()` stops it (by PID) before it removes the namespace. Use it as a context manager (or the `shaped_link`
    fixture of tests/conftest.py)."""

    _made = 0

    def __init__(self) -> None:
        ShapedLink._made += 1
        tag = f"{os.getpid()}-{ShapedLink._made}"
        self.namespace = f"{PREFIX}-{tag}"
        short = f"{os.getpid() % 100000:05d}{ShapedLink._made % 100:02d}"
        self.host_device, self.parent_device = f"crl{short}h", f"crl{short}p"  # 11 characters: under IFNAMSIZ
        self.network: ipaddress.IPv4Network | None = None
        self.processes: list = []

    @property
    def host_address(self) -> str:
        """This namespace's end of the veth: where the parent sees the child (and the test) come from."""
        return str(self.network[1])

    @property
    def parent_address(self) -> str:
        """The namespace's end: where the parent side listens."""
        return str(self.network[2])

    def open(self) -> "ShapedLink":
        remove_stale_links()
        self.network = _free_slash30()
        _run("ip", "netns", "add", self.namespace)
        try:
            _run("ip", "link", "add", self.host_device, "type", "veth", "peer", "name", self.parent_device,
                "netns", self.namespace)
            _run("ip", "addr", "add", f"{self.host_address}/30", "dev", self.host_device)
            _run("ip", "-n", self.namespace, "addr", "add", f"{self.parent_address}/30", "dev", self.parent_device)
            for namespace_arguments, device in ((), self.host_device), (("-n", self.namespace), self.parent_device):
                _run("ip", *namespace_arguments, "link", "set", device, "up")
            _run("ip", "-n", self.namespace, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop what runs inside (by PID), then remove the veth pair and the namespace; safe to call twice."""
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
        _run("ip", "link", "delete", self.host_device, check=False)  # both ends, and the route to the /30
        _run("ip", "netns", "delete", self.namespace, check=False)

    def leftovers(self) -> list[str]:
        """What of this link is still there (after close(): nothing)."""
        namespaces = _run("ip", "netns", "list").stdout.split()
        return ([f"namespace {self.namespace}"] if self.namespace in namespaces else []) + (
            [f"interface {self.host_device}"] if (Path("/sys/class/net") / self.host_device).exists() else [])

    def __enter__(self) -> "ShapedLink":
        return self.open()

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- the rate -------------------------------------------------------------------------------------------

    def shape(self, bits_per_second: int | None = None, *, down: int | None = None, up: int | None = None) -> None:
        """Limit parent -> child (`down`) and child -> parent (`up`) to so many bits per second; `bits_per_second`
        sets both; None lifts a direction's limit. Applies at once, also to connections in flight."""
        if bits_per_second is not None:
            down = up = bits_per_second
        self._set_rate((("-n", self.namespace), self.parent_device), down)
        self._set_rate(((), self.host_device), up)

    def _set_rate(self, where: tuple[tuple[str, ...], str], bits_per_second: int | None) -> None:
        namespace_arguments, device = where
        if bits_per_second is None:
            _run("tc", *namespace_arguments, "qdisc", "delete", "dev", device, "root", check=False)
        else:
            _run("tc", *namespace_arguments, "qdisc", "replace", "dev", device, "root", "tbf",
                *tbf_parameters(bits_per_second))

    def counters(self) -> Counters:
        statistics = Path("/sys/class/net") / self.host_device / "statistics"
        return Counters(to_parent=int((statistics / "tx_bytes").read_text()),
                        from_parent=int((statistics / "rx_bytes").read_text()))

    @contextmanager
    def counting(self) -> Iterator[list[Counters]]:
        """`with link.counting() as crossed:` ... then `crossed[0]` holds the bytes of the block."""
        crossed: list[Counters] = []
        before = self.counters()
        try:
            yield crossed
        finally:
            crossed.append(self.counters() - before)

    # --- what runs inside -----------------------------------------------------------------------------------

    @property
    def launcher(self) -> list[str]:
        """What runs a program inside the namespace: `ip netns exec` execs it, so the PID is the program's own."""
        return ["ip", "netns", "exec", self.namespace]

    def registry_options(self, command: Sequence[str] = (sys.executable, "-m", "connected_registry")) -> dict:
        """RegistryProcess (or start_instance) options for a `serve` inside the namespace, listening (metrics
        too) on `parent_address`; `command` as RegistryProcess takes it."""
        return {"command": [*self.launcher, *command], "address": self.parent_address}

    def adopt(self, process):
        """A process started inside the namespace (anything with `stop()`): close() stops it first. Returns it."""
        self.processes.append(process)
        return process
