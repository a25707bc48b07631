"""Certificates: IoT Edge's trust bundle (from the workload API) trusted for the parent's HTTPS, and the listener's
certificate from ACR_REGISTRY_CERTIFICATE_VOLUME; both re-read when they change."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import urllib.request
import uuid
from pathlib import Path

from connected_registry.sync.parent_client import ParentClient
from connected_registry.tls import TrustBundle
from tests.support.edge_runtime import Workload
from tests.support.pki import TestPki, make_pki
from tests.support.processes import RegistryProcess, wait_until


def _subjects(context: ssl.SSLContext) -> list[str]:
    return [dict(part[0] for part in cert["subject"]).get("commonName", "") for cert in context.get_ca_certs()]


async def test_the_trust_bundle_is_trusted_for_the_parent_and_read_again_when_it_changes(tmp_path: Path,
                                                                                        edge_pki: TestPki,
                                                                                        monkeypatch):
    socket_path = Path("/tmp") / f"wl-{uuid.uuid4().hex[:8]}.sock"
    workload = Workload(socket_path, {}, edge_pki.ca_cert.read_text())
    try:
        monkeypatch.setenv("IOTEDGE_WORKLOADURI", f"unix://{socket_path}")
        monkeypatch.setenv("IOTEDGE_APIVERSION", "2019-01-30")
        changes: list[ssl.SSLContext] = []
        bundle = TrustBundle(on_change=changes.append)
        first = await bundle.refresh()
        assert "simulated IoT Edge root CA" in _subjects(first)
        assert await bundle.refresh() is None  # unchanged: nothing to do
        assert workload.requests[0] == ("GET", "/trust-bundle?api-version=2019-01-30")

        rotated = make_pki(tmp_path / "rotated", common_name="rotated edge CA")
        workload.trust_bundle = rotated.ca_cert.read_text()
        watch = asyncio.create_task(bundle.watch(interval=3600, min_interval=0))  # only when asked for
        bundle.refresh_soon()  # what a refused parent certificate does
        try:
            for _ in range(200):
                if changes:
                    break
                await asyncio.sleep(0.02)
        finally:
            watch.cancel()
        assert changes and "rotated edge CA" in _subjects(changes[0])

        client = ParentClient("https://parent.example:8000", None, None, ssl_context=first)
        old_session = client.session
        client.set_ssl_context(changes[0])
        assert client.session is not old_session and client.ssl_context is changes[0]
        await client.close()
        await old_session.close()
    finally:
        workload.stop()
        socket_path.unlink(missing_ok=True)


def _https_get(url: str, ca: Path) -> int:
    context = ssl.create_default_context(cafile=str(ca))
    with urllib.request.urlopen(url, timeout=5, context=context) as response:
        return response.status


def test_the_listener_serves_https_with_the_certificate_volume_and_picks_up_a_new_certificate(tmp_path: Path,
                                                                                              edge_pki: TestPki):
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copy(edge_pki.server_chain, certs / "server.crt")
    shutil.copy(edge_pki.server_key, certs / "server.key")
    registry = RegistryProcess(tmp_path / "data", env={"ACR_REGISTRY_CERTIFICATE_VOLUME": str(certs)})
    try:
        url = f"https://127.0.0.1:{registry.port}"
        assert _https_get(f"{url}/healthz", edge_pki.ca_cert) == 200
        with urllib.request.urlopen(f"{url}/acr/connected/v1/status", timeout=5,
                                    context=ssl.create_default_context(cafile=str(edge_pki.ca_cert))) as response:
            assert json.load(response)["loginServer"]["tls"]["status"] == "Enabled"

        renewed = make_pki(tmp_path / "renewed", common_name="renewed CA")
        shutil.copy(renewed.server_key, certs / "server.key.new")
        shutil.copy(renewed.server_chain, certs / "server.crt.new")
        (certs / "server.key.new").rename(certs / "server.key")
        (certs / "server.crt.new").rename(certs / "server.crt")
        wait_until(lambda: _https_get(f"{url}/healthz", renewed.ca_cert) == 200, timeout=30,
                   what="the renewed certificate on new connections")
        assert registry.process.poll() is None  # no restart
        assert "loaded the new listener certificate" in registry.log()
    finally:
        registry.stop()


async def test_a_parent_certificate_the_trust_bundle_does_not_cover_is_reported_and_asks_for_the_bundle(
        tmp_path: Path, edge_pki: TestPki):
    from aiohttp import web

    from connected_registry.sync.parent_client import ParentError
    from connected_registry.tls import parent_ssl_context

    stranger = make_pki(tmp_path / "stranger", common_name="a CA nobody trusts")
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ssl.load_cert_chain(stranger.server_chain, stranger.server_key)
    async def base(request):
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/v2/", base)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001
    asked: list[bool] = []
    client = ParentClient(f"https://127.0.0.1:{port}", None, None,
                          ssl_context=parent_ssl_context(edge_pki.ca_cert.read_text()))
    client.on_certificate_error = lambda: asked.append(True)
    try:
        try:
            async with await client.request("GET", "/v2/"):
                raise AssertionError("a certificate from an unknown CA was accepted")
        except ParentError as error:
            assert "not trust" in str(error) and "root CA of the hierarchy" in str(error)
        assert asked == [True]
    finally:
        await client.close()
        await runner.cleanup()
