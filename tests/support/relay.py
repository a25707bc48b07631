"""A TCP relay on a loopback port in front of a listener, as a second address of the same registry (a replica, a
load balancer, the API proxy of another route), in the test's event loop. Its `mode` is what the address does:
`forward` (bytes pass both ways, unchanged: Host names the relay), `refuse` (nothing listens), `silent` (a listener
that accepts and never answers). A switch drops the connections of the mode before, as a host that died does.
`cut_after(n, upstream=...)` lets n more bytes through in one direction, then drops everything and refuses.
The requests it carried (client to server bytes, the first MiB of each connection) are in `requests`."""

from __future__ import annotations

import asyncio

HEAD_KEPT = 1 << 20


class TcpRelay:
    def __init__(self, target_port: int, mode: str = "forward") -> None:
        self.target_port = target_port
        self.mode = mode
        self.port = 0
        self.requests = bytearray()
        self.bytes_up = 0  # client to server, while forwarding
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._cut: list | None = None  # [bytes left, upstream]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> "TcpRelay":
        await self._listen()  # a port of its own, also for one that refuses from the start
        if self.mode == "refuse":
            await self._close_listener()
        return self

    async def set(self, mode: str) -> None:
        if mode == self.mode:
            return
        self.mode = mode
        self._drop_connections()
        if mode == "refuse":
            await self._close_listener()
        elif self._server is None:
            await self._listen()

    def cut_after(self, count: int, upstream: bool) -> None:
        """After `count` more bytes client to server (`upstream`) or server to client, the link goes: refused."""
        self._cut = [count, upstream]

    async def close(self) -> None:
        self.mode = "refuse"
        self._drop_connections()
        await self._close_listener()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close_listener(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    def _drop_connections(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        if self.mode != "forward":
            return  # silent: the connection stays open, and nothing ever answers
        try:
            target_reader, target_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.add(target_writer)
        await asyncio.gather(self._pipe(reader, target_writer, upstream=True),
                             self._pipe(target_reader, writer, upstream=False), return_exceptions=True)
        self._writers.difference_update((writer, target_writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: bool) -> None:
        kept = 0
        try:
            while data := await reader.read(1 << 16):
                if self.mode != "forward":
                    return
                data = self._within_cut(data, upstream)
                if upstream:
                    self.bytes_up += len(data)
                    if kept < HEAD_KEPT:
                        self.requests += data[:HEAD_KEPT - kept]
                        kept += len(data)
                writer.write(data)
                await writer.drain()
                if self._cut is not None and self._cut[0] == 0:
                    self._cut = None
                    await self.set("refuse")
                    return
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()

    def _within_cut(self, data: bytes, upstream: bool) -> bytes:
        if self._cut is None or self._cut[1] != upstream:
            return data
        data = data[:self._cut[0]]
        self._cut[0] -= len(data)
        return data
