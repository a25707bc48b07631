"""A reverse proxy between a child and its parent that notes when each body's bytes cross it, both ways, so a
test measures the link at the parent (what the parent sent and received, and when) instead of inferring it from
the child. Bodies stream through in small chunks, each passed on before the next is read, into a small send buffer
towards the child (on loopback the kernel would otherwise take megabytes at once): what the parent sends is what
the child takes, give or take the child's own receive buffer."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

from tests.support.processes import free_port
from tests.support.threaded import ThreadedApp

# Neither passed on nor answered with: the proxy's own connections carry their own. Content-Length is kept on
# requests (an upload's PUT states its size), and set on answers from the parent's.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                         "trailers", "transfer-encoding", "upgrade"})
CHUNK = 16 << 10
SEND_BUFFER = 8 << 10  # towards the child (the kernel doubles it)


@dataclass(frozen=True)
class Crossing:
    """`size` body bytes of one request crossed the link at `at` (time.monotonic()): "down" from the parent,
    "up" to it."""

    at: float
    direction: str
    method: str
    path: str
    size: int


class LinkMeter(ThreadedApp):
    """In front of the parent at `upstream` (host:port), on a free loopback port (`url`, `host`); the Host header
    goes on as the child sent it, so the parent's token realm and upload Locations lead back through the meter."""

    name = "link meter"

    def __init__(self, upstream: str) -> None:
        super().__init__()
        self.upstream = upstream
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self._crossings: list[Crossing] = []
        self._requests: list[tuple[str, str]] = []  # (method, path)
        self._lock = threading.Lock()
        self.serve(self.port)

    async def make_app(self):
        import aiohttp
        from aiohttp import web

        self._session = aiohttp.ClientSession(auto_decompress=False, trust_env=False,
                                              timeout=aiohttp.ClientTimeout(total=None, sock_read=None))
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        return app

    async def close(self) -> None:
        await self._session.close()

    def _note(self, direction: str, request, size: int) -> None:
        with self._lock:
            self._crossings.append(Crossing(time.monotonic(), direction, request.method, request.path, size))

    async def _forward(self, request):
        import aiohttp
        from aiohttp import web

        async def body():
            async for chunk in request.content.iter_chunked(CHUNK):
                self._note("up", request, len(chunk))
                yield chunk

        with self._lock:
            self._requests.append((request.method, request.path))
        _small_send_buffer(request.transport)
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP]
        try:
            return await self._answer(request, headers, body() if request.body_exists else None)
        except aiohttp.ClientError as error:  # the parent went away, or the meter is stopping
            return web.Response(status=502, text=f"link meter: {error!r}")

    async def _answer(self, request, headers: list, body):
        import aiohttp
        from aiohttp import web

        async with self._session.request(request.method, f"http://{self.upstream}{request.raw_path}", headers=headers,
                                         data=body, allow_redirects=False,
                                         skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type")) as answer:
            response = web.StreamResponse(status=answer.status, reason=answer.reason)
            for key, value in answer.headers.items():
                if key.lower() not in _HOP_BY_HOP | {"content-length"}:
                    response.headers.add(key, value)
            if answer.content_length is not None:
                if request.method == "HEAD":
                    response.headers["Content-Length"] = str(answer.content_length)
                else:
                    response.content_length = answer.content_length
            await response.prepare(request)
            try:
                async for chunk in answer.content.iter_chunked(CHUNK):
                    self._note("down", request, len(chunk))
                    await response.write(chunk)
            except (aiohttp.ClientError, ConnectionError):  # one side went away mid-body: so does the other
                if request.transport is not None:
                    request.transport.close()
                return response
            await response.write_eof()
            return response

    # --- what crossed ------------------------------------------------------------------------------------------

    def crossings(self, direction: str, path: str = "") -> list[Crossing]:
        """The body chunks that crossed one way, of requests whose path contains `path`, in order."""
        with self._lock:
            return [c for c in self._crossings if c.direction == direction and path in c.path]

    def moved(self, direction: str, path: str = "", start: float = float("-inf"), end: float = float("inf")) -> int:
        return sum(c.size for c in self.crossings(direction, path) if start <= c.at < end)

    def span(self, direction: str, path: str = "") -> tuple[float, float]:
        """When the first and the last of those chunks crossed."""
        crossings = self.crossings(direction, path)
        assert crossings, f"nothing with {path!r} crossed {direction}"
        return crossings[0].at, crossings[-1].at

    def busiest(self, direction: str, seconds: float, path: str = "") -> float:
        """The most bytes per second over any `seconds` (from one chunk on) in that direction."""
        crossings = self.crossings(direction, path)
        best, total, first = 0, 0, 0
        for crossing in crossings:
            total += crossing.size
            while crossings[first].at < crossing.at - seconds:
                total -= crossings[first].size
                first += 1
            best = max(best, total)
        return best / seconds

    def requests(self, method: str, path: str) -> int:
        """How many requests of `method` on a path containing `path` went through."""
        with self._lock:
            return sum(1 for sent, where in self._requests if sent == method and path in where)


def _small_send_buffer(transport) -> None:
    """What the proxy writes towards the child waits in its buffers only briefly: writes block once they hold
    SEND_BUFFER, so the proxy reads from the parent as fast as the child reads from it."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    if transport is not None:
        transport.set_write_buffer_limits(high=CHUNK)
