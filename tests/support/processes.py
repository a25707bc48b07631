"""Start and stop real processes for tests: by PID, on free loopback ports, with deadlines (no sleeps)."""

from __future__ import annotations

import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the test process dies, so nothing is left running."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], object], timeout: float = 20.0, what: str = "condition", interval: float = 0.02):
    """Poll `condition` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
        except Exception as error:  # noqa: BLE001 - keep polling, report the last error
            last_error = error
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}" + (f": {last_error!r}" if last_error else ""))


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def environment(changes: dict[str, str | None] | None = None) -> dict[str, str]:
    """This process's environment with `changes`: a None value removes the variable."""
    result = {**os.environ}
    for key, value in (changes or {}).items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def stop_process(process: subprocess.Popen, signum: int = signal.SIGTERM, grace: float = 15.0) -> bool:
    """Send `signum` to the PID and wait up to `grace` seconds, then SIGKILL; True if it took the SIGKILL."""
    if process.poll() is not None:
        return False
    try:
        os.kill(process.pid, signum)
        process.wait(timeout=grace)
        return False
    except ProcessLookupError:
        process.wait(timeout=grace)
        return False
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=grace)
        return True


class ManagedProcess:
    """A child process in its own session, stopped by PID. Its output is collected in memory (`output`), or
    written to `log_path` where it must outlive the run (a daemon's log, a benchmark's --keep)."""

    def __init__(self, argv: Sequence[str], env: dict[str, str | None] | None = None, cwd: str | Path | None = None,
                 log_path: Path | None = None) -> None:
        self.argv = [str(argument) for argument in argv]
        self.env = env
        self.cwd = cwd
        self.log_path = log_path
        self.output: list[str] = []
        if log_path is None:
            self.process = self._spawn(stdout=subprocess.PIPE, text=True)
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()
        else:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "ab") as log:
                self._log_start = log.tell()  # an earlier run's lines (a restart) are not this one's
                self.process = self._spawn(stdout=log)

    def _spawn(self, **output) -> subprocess.Popen:
        self.spawned_at = time.perf_counter()  # for a benchmark's clock: from the spawn on
        return subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                env=environment(self.env), cwd=self.cwd, start_new_session=True,
                                preexec_fn=die_with_parent, **output)

    def _read(self) -> None:
        for line in self.process.stdout:
            self.output.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def lines(self) -> list[str]:
        """What it wrote so far, line by line."""
        if self.log_path is None:
            return list(self.output)
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_start)
                return log.read().decode(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def log(self, tail: int | None = None) -> str:
        """What it wrote so far (the last `tail` lines)."""
        lines = self.lines()
        return "\n".join(lines[-tail:] if tail else lines)

    def kill(self, signum: int = signal.SIGKILL) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signum)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        stop_process(self.process)


class RegistryProcess(ManagedProcess):
    """`connected-registry serve` on a free loopback port, and its metrics listener on another (`metrics_url`;
    none with `metrics=False`). `command` runs the program (default: this interpreter's `-m connected_registry`;
    it may carry options before `serve`, such as `--log-level`, or a launcher before it, such as `ip netns exec`);
    `address`: where both listen (another namespace's address, see tests/support/netns.py)."""

    def __init__(self, data_dir: Path, port: int | None = None, extra_args: list[str] | None = None,
                 env: dict[str, str | None] | None = None, wait: bool = True, *,
                 command: Sequence[str] = (sys.executable, "-m", "connected_registry"), metrics: bool = True,
                 cwd: str | Path | None = None, log_path: Path | None = None, address: str = "127.0.0.1") -> None:
        self.port = port or free_port()
        self.address = address
        self.metrics_port = free_port() if metrics else None
        self.data_dir = data_dir
        self.url = f"http://{address}:{self.port}"
        self.metrics_url = f"http://{address}:{self.metrics_port}/metrics" if metrics else None
        metrics_listen = f"{address}:{self.metrics_port}" if metrics else "off"
        super().__init__(
            [*command, "serve", "--data", str(data_dir), "--listen", f"{address}:{self.port}",
             "--metrics-listen", metrics_listen, *(extra_args or [])],
            env=env, cwd=cwd, log_path=log_path,
        )
        if wait:  # else the caller waits with `wait_ready` (e.g. for an IoT Edge module whose edgeHub is not up yet)
            self.wait_ready()

    def wait_ready(self, timeout: float = 30) -> None:
        wait_until(self._ready, timeout=timeout, what=f"registry on port {self.port}")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"registry exited with {self.process.returncode}:\n{self.log()}")
        serving = any(("serving http://" in line or "serving https://" in line) for line in self.lines())
        return serving and port_open(self.port, self.address)

    @property
    def host(self) -> str:
        return f"{self.address}:{self.port}"

    def restart(self) -> None:
        """Stop (if running) and start again with the same arguments, environment, data and port."""
        self.stop()
        ManagedProcess.__init__(self, self.argv, env=self.env, cwd=self.cwd, log_path=self.log_path)
        wait_until(self._ready, timeout=30, what=f"registry on port {self.port} after a restart")


def ready_line(pattern: str, process: ManagedProcess) -> re.Match | None:
    for line in process.lines():
        match = re.search(pattern, line)
        if match:
            return match
    return None


def run_cli(*arguments: str, env: dict[str, str | None] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m connected_registry ARGUMENTS...` to its end; `env` adds to (or, with None values, removes from)
    the environment."""
    return subprocess.run([sys.executable, "-m", "connected_registry", *arguments], capture_output=True, text=True,
                          timeout=timeout, env=environment(env), stdin=subprocess.DEVNULL)
