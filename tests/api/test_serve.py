"""`connected-registry serve` as a process: its defaults, clean stop, and clear start-up errors."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.support.processes import ManagedProcess, RegistryProcess, free_port, wait_until


def test_serve_with_no_configuration_is_an_anonymous_read_write_root(tmp_path: Path):
    registry = RegistryProcess(tmp_path / "data")
    try:
        with urllib.request.urlopen(f"{registry.url}/v2/", timeout=5) as response:
            assert response.status == 200
            assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
        request = urllib.request.Request(f"{registry.url}/v2/try/it/blobs/uploads/", method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 202
        assert any("anonymous pull and push" in line for line in registry.output)
    finally:
        registry.stop()


def test_serve_stops_cleanly_on_sigterm_and_sigint(tmp_path: Path):
    for signum in (signal.SIGTERM, signal.SIGINT):
        registry = RegistryProcess(tmp_path / "data")
        registry.kill(signum)
        assert registry.process.returncode == 0, registry.log()
        assert any("stopped" in line for line in registry.output)


def test_serve_takes_the_data_volume_from_the_environment(tmp_path: Path):
    volume = tmp_path / "volume"
    port = free_port()
    process = ManagedProcess(
        [sys.executable, "-m", "connected_registry", "serve", "--listen", f"127.0.0.1:{port}",
         "--metrics-listen", "off"],
        env={"ACR_REGISTRY_DATA_VOLUME": str(volume)},
    )
    try:
        wait_until(lambda: any("serving http://" in line for line in process.output), what="serve to start")
        assert (volume / "metadata.db").exists()
    finally:
        process.stop()


def test_a_data_volume_from_a_newer_version_is_refused_with_a_clear_error(tmp_path: Path):
    RegistryProcess(tmp_path / "data").stop()
    with sqlite3.connect(tmp_path / "data" / "metadata.db") as connection:
        connection.execute("PRAGMA user_version = 999")
    result = subprocess.run(
        [sys.executable, "-m", "connected_registry", "serve", "--data", str(tmp_path / "data"),
         "--listen", f"127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert "DISK_SCHEMA_NEWER" in result.stdout and "Traceback" not in result.stdout + result.stderr


def test_a_damaged_token_signing_key_is_refused_at_start_with_a_clear_error(tmp_path: Path):
    """The key is read at the first JWT (footprint), but a damaged one still fails the start, not a token request."""
    key = tmp_path / "data" / "auth" / "token-signing-key.pem"
    key.parent.mkdir(parents=True)
    key.write_bytes(b"-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49\n")  # cut short
    (tmp_path / "desired.json").write_text(json.dumps({"name": "factory-root", "tokens": {}}))
    result = subprocess.run(
        [sys.executable, "-m", "connected_registry", "serve", "--data", str(tmp_path / "data"),
         "--config", str(tmp_path / "desired.json"), "--listen", f"127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert "DISK_ERROR" in result.stdout + result.stderr and "Traceback" not in result.stdout + result.stderr
    assert f"the token-signing key {key} is damaged" in result.stdout + result.stderr


def test_a_busy_port_is_a_clear_error(tmp_path: Path):
    registry = RegistryProcess(tmp_path / "one")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "connected_registry", "serve", "--data", str(tmp_path / "two"),
             "--listen", f"127.0.0.1:{registry.port}"],
            capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 1
        assert "another process has the port" in result.stdout
    finally:
        registry.stop()


def test_a_busy_metrics_port_is_a_clear_error(tmp_path: Path):
    registry = RegistryProcess(tmp_path / "one")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "connected_registry", "serve", "--data", str(tmp_path / "two"),
             "--listen", f"127.0.0.1:{free_port()}", "--metrics-listen", f"127.0.0.1:{registry.metrics_port}"],
            capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 1
        assert "another process has the port" in result.stdout and "--metrics-listen" in result.stdout
        assert "Traceback" not in result.stdout + result.stderr
    finally:
        registry.stop()


def test_gc_command_reports_what_it_removed(tmp_path: Path):
    RegistryProcess(tmp_path / "data").stop()
    result = subprocess.run(
        [sys.executable, "-m", "connected_registry", "gc", "--data", str(tmp_path / "data"), "--json"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert report["blobs_removed"] == 0 and "uploads_removed" in report
