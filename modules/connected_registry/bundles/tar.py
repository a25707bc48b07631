"""A tar stream read and written as bytes flow: a bundle file, a request body or a response, never whole in
memory. Reading understands what skopeo and other Go tools write (ustar, PAX and GNU long names); a stream that
ends inside a member raises BUNDLE_INCOMPLETE, so nothing half-read is taken for whole."""

from __future__ import annotations

import tarfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from connected_registry.oci.errors import OciError

BLOCK = 512
CHUNK = 1 << 20
END_OF_ARCHIVE = bytes(2 * BLOCK)

Read = Callable[[int], Awaitable[bytes]]  # up to n bytes; b"" at the end


def member_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    return info.tobuf(tarfile.PAX_FORMAT)


def padding(size: int) -> bytes:
    return bytes(-size % BLOCK)


class _Buffered:
    def __init__(self, read: Read) -> None:
        self._read, self._buffer = read, b""
        self.consumed = 0  # bytes of the stream read so far (progress)

    async def some(self, limit: int) -> bytes:
        """Up to `limit` bytes (at least one unless the stream ended)."""
        if not self._buffer:
            self._buffer = await self._read(CHUNK)
        chunk, self._buffer = self._buffer[:limit], self._buffer[limit:]
        self.consumed += len(chunk)
        return chunk

    async def exactly(self, size: int, what: str) -> bytes:
        parts, missing = [], size
        while missing:
            chunk = await self.some(missing)
            if not chunk:
                raise OciError("BUNDLE_INCOMPLETE", f"the bundle ends inside {what}")
            parts.append(chunk)
            missing -= len(chunk)
        return b"".join(parts)


@dataclass
class Member:
    """A file of the stream, read once, in order, before the next member."""

    name: str
    size: int
    _stream: _Buffered
    remaining: int = 0

    def __post_init__(self) -> None:
        self.remaining = self.size

    async def readany(self, limit: int = CHUNK) -> bytes:
        if not self.remaining:
            return b""
        chunk = await self._stream.some(min(self.remaining, limit))
        if not chunk:
            raise OciError("BUNDLE_INCOMPLETE", f"the bundle ends inside {self.name} ({self.size - self.remaining} "
                           f"of {self.size} bytes arrived)")
        self.remaining -= len(chunk)
        return chunk

    async def skip(self, size: int | None = None) -> None:
        left = self.remaining if size is None else min(size, self.remaining)
        while left:
            left -= len(await self.readany(left))


async def members(read: Read) -> AsyncIterator[Member]:
    """The regular files of a tar stream, by name as written (PAX `path` and GNU long names applied)."""
    stream = _Buffered(read)
    long_name: str | None = None
    while True:
        header = await stream.some(BLOCK)
        if not header:
            return  # ended at a member boundary without the end blocks: what is missing shows later
        if len(header) < BLOCK:
            header += await stream.exactly(BLOCK - len(header), "a tar header")
        if header == bytes(BLOCK):
            return
        name, size, kind = _parse_header(header)
        data_size = size + len(padding(size))
        if kind in (b"x", b"g", b"L"):
            data = (await stream.exactly(data_size, f"the tar extension header of {name}"))[:size]
            if kind == b"L":
                long_name = data.rstrip(b"\0").decode("utf-8", "replace")
            elif kind == b"x":
                long_name = _pax_path(data) or long_name
            continue
        name, long_name = long_name or name, None
        if kind not in (b"0", b"\0", b"7"):
            if data_size:  # a directory, a link: nothing a bundle needs
                await stream.exactly(data_size, name)
            continue
        member = Member(name.removeprefix("./"), size, stream)
        yield member
        await member.skip()
        if padding(size):
            await stream.exactly(len(padding(size)), f"the padding after {name}")


def _parse_header(header: bytes) -> tuple[str, int, bytes]:
    try:
        info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
    except tarfile.TarError as error:
        raise OciError("BUNDLE_INVALID", f"the bundle is not a tar file: {error}") from None
    return info.name, info.size, header[156:157]


def _pax_path(data: bytes) -> str | None:
    """The `path` record of a PAX extended header ("<length> path=<name>\\n" records)."""
    position = 0
    while position < len(data):
        length_text, _, rest = data[position:].partition(b" ")
        if not length_text.isdigit():
            return None
        length = int(length_text)
        record = data[position:position + length]
        key, _, value = record.partition(b" ")[2].partition(b"=")
        if key == b"path":
            return value.rstrip(b"\n").decode("utf-8", "surrogateescape")
        position += length
    return None
