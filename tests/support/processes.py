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
from collections.abc import Callable
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


class ManagedProcess:
    """A child process whose output is collected in memory and which is stopped by PID."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None, cwd: str | None = None) -> None:
        self.argv = argv
        self.env = env
        self.output: list[str] = []
        self.process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            text=True,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.output.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return "\n".join(self.output)

    def kill(self, signum: int = signal.SIGKILL) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signum)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=15)


class RegistryProcess(ManagedProcess):
    """`connected-registry serve` on a free loopback port, and its metrics listener on another (`metrics_url`)."""

    def __init__(self, data_dir: Path, port: int | None = None, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None, wait: bool = True) -> None:
        self.port = port or free_port()
        self.metrics_port = free_port()
        self.data_dir = data_dir
        self.url = f"http://127.0.0.1:{self.port}"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        super().__init__(
            [sys.executable, "-m", "connected_registry", "serve", "--data", str(data_dir),
             "--listen", f"127.0.0.1:{self.port}", "--metrics-listen", f"127.0.0.1:{self.metrics_port}",
             *(extra_args or [])],
            env=env,
        )
        if wait:  # else the caller waits with `wait_ready` (e.g. for an IoT Edge module whose edgeHub is not up yet)
            self.wait_ready()

    def wait_ready(self, timeout: float = 30) -> None:
        wait_until(self._ready, timeout=timeout, what=f"registry on port {self.port}")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"registry exited with {self.process.returncode}:\n{self.log()}")
        return any(("serving http://" in line or "serving https://" in line) for line in self.output) and port_open(self.port)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def restart(self) -> None:
        """Stop (if running) and start again with the same arguments, environment, data and port."""
        self.stop()
        ManagedProcess.__init__(self, self.argv, env=self.env)
        wait_until(self._ready, timeout=30, what=f"registry on port {self.port} after a restart")


def ready_line(pattern: str, process: ManagedProcess) -> re.Match | None:
    for line in process.output:
        match = re.search(pattern, line)
        if match:
            return match
    return None


def run_cli(*arguments: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m connected_registry ARGUMENTS...` to its end; `env` adds to (or, with None values, removes from)
    the environment."""
    environment = {**os.environ}
    for key, value in (env or {}).items():
        if value is None:
            environment.pop(key, None)
        else:
            environment[key] = value
    return subprocess.run([sys.executable, "-m", "connected_registry", *arguments], capture_output=True, text=True,
                          timeout=timeout, env=environment, stdin=subprocess.DEVNULL)
