"""Certificates: the listener's (ACR_REGISTRY_CERTIFICATE_VOLUME: server.crt and server.key switch it to HTTPS) and
the CAs trusted for the parent's HTTPS (the system's, plus IoT Edge's trust bundle from the workload API, which is
how a lower layer trusts its parent's API proxy). Both are re-read when they change."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
from collections.abc import Callable
from urllib.parse import quote

import aiohttp

from connected_registry.waits import wait_event

log = logging.getLogger("connected_registry.tls")

DEFAULT_CERTIFICATE_VOLUME = "/var/acr/certs"
CHECK_SECONDS = 5.0
TRUST_BUNDLE_SECONDS = 300.0
TRUST_BUNDLE_MIN_SECONDS = 10.0  # between two reads asked for by certificate errors


class ListenerCertificate:
    """server.crt and server.key in the certificate volume. The SSLContext is loaded again in place when the files
    change, so new connections get the new certificate without a restart (open ones keep theirs)."""

    def __init__(self, directory: str | None = None) -> None:
        self.directory = directory or os.environ.get("ACR_REGISTRY_CERTIFICATE_VOLUME") or DEFAULT_CERTIFICATE_VOLUME
        self.cert_path = os.path.join(self.directory, "server.crt")
        self.key_path = os.path.join(self.directory, "server.key")
        self.context: ssl.SSLContext | None = None
        self._signature = None

    def _current_signature(self):
        try:
            return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in map(os.stat, (self.cert_path, self.key_path)))
        except OSError:
            return None

    def load(self) -> ssl.SSLContext | None:
        """An SSLContext when both files are there (HTTPS), else None (HTTP)."""
        self._signature = self._current_signature()
        if self._signature is None:
            return None
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(self.cert_path, self.key_path)
        return self.context

    def reload_if_changed(self) -> bool:
        signature = self._current_signature()
        if self.context is None or signature is None or signature == self._signature:
            return False
        try:
            self.context.load_cert_chain(self.cert_path, self.key_path)
        except (OSError, ssl.SSLError) as error:  # e.g. a half-written pair: keep serving the old one
            log.warning("could not load the new listener certificate %s (%s); the old one stays", self.cert_path, error)
            return False
        self._signature = signature
        log.info("loaded the new listener certificate %s", self.cert_path)
        return True

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(CHECK_SECONDS)
            self.reload_if_changed()


def parent_ssl_context(extra_ca_pem: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if extra_ca_pem:
        context.load_verify_locations(cadata=extra_ca_pem)
    return context


async def fetch_trust_bundle() -> str | None:
    """IoT Edge's trust bundle (PEM): from the workload API (IOTEDGE_WORKLOADURI), or in IoT Edge's dev mode the
    file named by EdgeModuleCACertificateFile. None outside IoT Edge."""
    ca_file = os.environ.get("EdgeModuleCACertificateFile")
    if not os.environ.get("IOTEDGE_WORKLOADURI") and ca_file:
        return await asyncio.to_thread(lambda: open(ca_file, encoding="utf-8").read())
    uri = os.environ.get("IOTEDGE_WORKLOADURI")
    if not uri:
        return None
    query = f"api-version={quote(os.environ.get('IOTEDGE_APIVERSION', '2019-01-30'))}"
    timeout = aiohttp.ClientTimeout(total=10)
    if uri.startswith("unix://"):
        connector = aiohttp.UnixConnector(path=uri[len("unix://"):])
        url = f"http://localhost/trust-bundle?{query}"
    else:
        connector, url = None, f"{uri.rstrip('/')}/trust-bundle?{query}"
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async with session.get(url) as response:
            if response.status != 200:
                raise OSError(f"the workload API {uri} answered {response.status} for the trust bundle")
            document = json.loads(await response.read())
    return document["certificate"]


class TrustBundle:
    """The CAs trusted for the parent's HTTPS. `on_change(context)` gets a new SSLContext when the bundle changes."""

    def __init__(self, on_change: Callable[[ssl.SSLContext], None] | None = None) -> None:
        self.pem: str | None = None
        self.on_change = on_change or (lambda context: None)
        self._wanted = asyncio.Event()

    def refresh_soon(self) -> None:
        """The parent's certificate was refused: the edge CA may have been renewed, read the bundle now."""
        self._wanted.set()

    async def refresh(self) -> ssl.SSLContext | None:
        """A new context when the bundle changed (or was first read), else None."""
        try:
            pem = await fetch_trust_bundle()
        except Exception as error:  # noqa: BLE001 - the system CAs and the last bundle stay; tried again later
            log.warning("could not read IoT Edge's trust bundle (%s: %s); the parent's certificate is checked with "
                        "the CAs known so far", type(error).__name__, error)
            return None
        if pem is None or pem == self.pem:
            return None
        self.pem = pem
        log.info("trusting IoT Edge's trust bundle (%d certificates) for the parent's HTTPS",
                 pem.count("BEGIN CERTIFICATE"))
        return parent_ssl_context(pem)

    async def watch(self, interval: float = TRUST_BUNDLE_SECONDS, min_interval: float = TRUST_BUNDLE_MIN_SECONDS) -> None:
        while True:
            await wait_event(self._wanted, interval)
            self._wanted.clear()
            context = await self.refresh()
            if context is not None:
                self.on_change(context)
            await asyncio.sleep(min_interval)
