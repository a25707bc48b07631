"""A client with full control of what goes on the wire, for the hostile-input suites: one request on a fresh
connection with http.client (any method, target and headers, a body sent as given or chunked), or raw bytes on a
socket with the answers parsed back (including aiohttp's own refusal of unparseable HTTP)."""

from __future__ import annotations

import http.client
import json
import socket
import time
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit


@dataclass
class Reply:
    method: str
    target: str
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes
    sent: dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def describe(self) -> str:
        shown = {k: v for k, v in self.headers.items() if k not in ("date", "server")}
        sent = f" headers={self.sent}" if self.sent else ""
        return f"{self.method} {self.target[:300]}{sent} -> {self.status} {shown} {self.body[:400]!r}"

    def error_codes(self) -> list[str]:
        return [error.get("code") for error in json.loads(self.body)["errors"]]


def call(port: int, method: str, target: str, body: bytes | None = None, headers: dict[str, str] | None = None,
         *, chunks: list[bytes] | None = None, timeout: float = 30) -> Reply:
    """One request on a fresh connection. `chunks` sends the body with Transfer-Encoding: chunked."""
    headers = dict(headers or {})
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.putrequest(method, target, skip_accept_encoding=True)
        if chunks is not None:
            headers["Transfer-Encoding"] = "chunked"
        elif body is not None and not any(k.lower() == "content-length" for k in headers):
            headers["Content-Length"] = str(len(body))
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        try:
            if chunks is not None:
                for chunk in chunks:
                    if chunk:
                        connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                connection.send(b"0\r\n\r\n")
            elif body:
                connection.send(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early (e.g. 413) and stopped reading: its answer is still there
        response = connection.getresponse()
        data = response.read()
        return Reply(method, target, response.status, {k.lower(): v for k, v in response.getheaders()}, data,
                     sent=headers)
    finally:
        connection.close()


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    head: bytes

    def describe(self) -> str:
        return f"{self.head[:300]!r} {self.body[:300]!r}"


def raw_exchange(port: int, data: bytes, *, half_close: bool = False, deadline: float = 10.0,
                 responses: int = 2, between=None, tail: bytes = b"") -> list[RawResponse]:
    """Send bytes, read what comes back until EOF, `responses` complete answers, or the deadline.

    `between` runs after `data` is sent and before `tail` (a barrier that lets the handler start)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=deadline)
    parsed: list[RawResponse] = []
    pending = b""
    try:
        try:
            sock.sendall(data)
            if between is not None:
                between()
            if tail:
                sock.sendall(tail)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        end = time.monotonic() + deadline
        while len(parsed) < responses and time.monotonic() < end:
            sock.settimeout(max(end - time.monotonic(), 0.01))
            try:
                block = sock.recv(1 << 18)
            except (socket.timeout, ConnectionResetError):
                break
            if not block:
                break
            pending += block
            while True:
                response, used = _parse_one(pending)
                if response is None:
                    break
                parsed.append(response)
                pending = pending[used:]
    finally:
        sock.close()
    if pending:  # the connection closed with a response that has no length: it runs to the end
        response, used = _parse_one(pending, at_eof=True)
        if response is not None:
            parsed.append(response)
    return parsed


def _parse_one(data: bytes, at_eof: bool = False) -> tuple[RawResponse | None, int]:
    """The first complete HTTP response in `data` and the bytes it used, or (None, 0)."""
    head, separator, rest = data.partition(b"\r\n\r\n")
    if not separator:
        return None, 0
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    start = len(head) + 4
    if status in (204, 304) or 100 <= status < 200:
        return RawResponse(status, headers, b"", head), start
    if "content-length" in headers:
        length = int(headers["content-length"])
        if len(rest) < length:
            return None, 0
        return RawResponse(status, headers, rest[:length], head), start + length
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body, position = b"", 0
        while True:
            line_end = rest.find(b"\r\n", position)
            if line_end < 0:
                return None, 0
            size = int(rest[position:line_end].split(b";")[0], 16)
            if len(rest) < line_end + 2 + size + 2:
                return None, 0
            body += rest[line_end + 2:line_end + 2 + size]
            position = line_end + 2 + size + 2
            if size == 0:
                return RawResponse(status, headers, body, head), start + position
    if at_eof:
        return RawResponse(status, headers, rest, head), len(data)
    return None, 0


def is_parser_rejection(response: RawResponse) -> bool:
    """aiohttp's own answer to unparseable HTTP: 400, text/plain, no API-version header (the registry never
    saw the request)."""
    return (response.status == 400 and response.headers.get("content-type", "").startswith("text/plain")
            and "docker-distribution-api-version" not in response.headers)


def location_path(reply: Reply) -> str:
    parts = urlsplit(reply.header("Location"))
    return parts.path + (f"?{parts.query}" if parts.query else "")


def path_part(value: str, safe: str = "") -> str:
    """Percent-encode so that the server's decoded path contains exactly `value`."""
    return quote(value, safe=safe)

