"""The bundle commands' side of a running instance (issue 17): requests to its control API with the operator's
token (remote.py's credentials), a bundle streamed up as a tar (a directory made into one on the fly) with its
progress, and one streamed down into a file or a layout directory."""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tarfile
import time
import urllib.error
import urllib.request

from connected_registry.bundles.tar import CHUNK, END_OF_ARCHIVE, member_header, padding
from connected_registry.oci.errors import OciError
from connected_registry.printable import printable
from connected_registry.remote import credentials, fail
from connected_registry.views import format_bytes

BUNDLE_FILE = "connected-registry-bundle.jws"  # bundles.document's name for it (that module loads PyJWT)


class Progress:
    """Bytes, images, rate and time left on one line at a terminal; a line per image otherwise."""

    def __init__(self, total: int | None, stream=sys.stdout) -> None:
        self.total, self.stream, self.live = total, stream, stream.isatty()
        self.done, self.images, self.started, self._shown = 0, 0, time.monotonic(), 0.0

    def bytes(self, count: int) -> None:
        self.done += count
        if self.live and time.monotonic() - self._shown > 0.2:
            self._draw()

    def image(self, name: str, digest: str) -> None:
        self.images += 1
        if self.live:
            self._draw()
        else:
            print(f"imported {name} {digest}", file=self.stream, flush=True)

    def _draw(self) -> None:
        self._shown = time.monotonic()
        rate = self.done / max(self._shown - self.started, 1e-6)
        left = f"{(self.total - self.done) / rate:4.0f} s left" if self.total and rate else ""
        share = self.done / self.total if self.total else 0
        bar = ("#" * int(share * 30)).ljust(30)
        print(f"\r[{bar}] {format_bytes(self.done)}/{format_bytes(self.total)} {format_bytes(rate)}/s {left}  "
              f"{self.images} images", end="", file=self.stream, flush=True)

    def finish(self) -> None:
        if self.live:
            self._draw()
            print(file=self.stream)


def read_json(path: str | None) -> dict | None:
    if path is None:
        return None
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def open_request(arguments: argparse.Namespace, method: str, path: str, data=None, headers: dict | None = None):
    username, password = credentials(arguments)
    request = urllib.request.Request(arguments.registry.rstrip("/") + path, method=method, data=data,
                                     headers=headers or {})
    if username:
        request.add_header("Authorization",
                           "Basic " + base64.b64encode(f"{username}:{password or ''}".encode()).decode())
    try:
        return urllib.request.urlopen(request, timeout=600)
    except urllib.error.HTTPError as error:
        return error
    except (urllib.error.URLError, OSError) as error:
        raise SystemExit(f"error: cannot reach {arguments.registry}: {getattr(error, 'reason', error)}; is the "
                         "instance running there? (--registry URL, or --data DIR for a stopped one)") from None


def call(arguments: argparse.Namespace, method: str, path: str, data=None) -> tuple[int, dict]:
    with open_request(arguments, method, path, data, {"Content-Type": "application/json"} if data else None) as answer:
        body = answer.read()
        status = answer.status
    try:
        return status, printable(json.loads(body))
    except ValueError:
        return status, {"raw": body[:500].decode("utf-8", "replace")}


def export_remote(arguments: argparse.Namespace) -> dict | None:
    wanted = {"repositories": arguments.repository, "for": arguments.for_child, "have": read_json(arguments.have),
               "outbox": arguments.outbox, "platforms": arguments.platform}
    with open_request(arguments, "POST", "/acr/connected/v1/bundles/export", json.dumps(wanted).encode(),
                  {"Content-Type": "application/json"}) as answer:
        if answer.status != 200:
            body = answer.read()
            document = json.loads(body) if body.startswith(b"{") else {"raw": body[:300]}
            fail(answer.status, printable(document), "export", "content/read on what is exported")
            return None
        if arguments.output.endswith(".tar"):
            with open(arguments.output + ".partial", "wb") as file:
                while chunk := answer.read(CHUNK):
                    file.write(chunk)
            os.replace(arguments.output + ".partial", arguments.output)
        else:
            with tarfile.open(fileobj=answer, mode="r|") as archive:
                archive.extractall(arguments.output, filter="data")
    return exported_summary(arguments.output)


def exported_summary(path: str) -> dict:
    """What the written bundle holds, read back from its signed manifest (the signature is the importer's to check)."""
    import jwt  # deferred: only this command reads a JWS

    if path.endswith(".tar"):
        with tarfile.open(path) as archive:
            signed = archive.extractfile(BUNDLE_FILE).read()
    else:
        with open(os.path.join(path, BUNDLE_FILE), "rb") as file:
            signed = file.read()
    document = json.loads(jwt.api_jws.decode_complete(signed, options={"verify_signature": False})["payload"])
    return {"images": sum(len(r["tags"]) for r in document["repositories"].values()),
            "repositories": len(document["repositories"]), "bytes": sum(document["blobs"].values())}


def tar_of_directory(root: str, progress: Progress):
    """A layout directory streamed as a tar, the signed manifest first."""
    names = [name for name in (BUNDLE_FILE, "oci-layout", "index.json") if os.path.isfile(os.path.join(root, name))]
    for directory, _, files in sorted(os.walk(os.path.join(root, "blobs"))):
        names += [os.path.relpath(os.path.join(directory, name), root) for name in sorted(files)]
    for name in names:
        path = os.path.join(root, name)
        size = os.path.getsize(path)
        yield member_header(name, size)
        with open(path, "rb") as file:
            while chunk := file.read(CHUNK):
                progress.bytes(len(chunk))
                yield chunk
        yield padding(size)
    yield END_OF_ARCHIVE


def file_chunks(path: str, progress: Progress):
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            progress.bytes(len(chunk))
            yield chunk


def import_remote(arguments: argparse.Namespace, trust_key: str | None, progress: Progress) -> dict | None:
    query = "&".join(part for part in ("unsigned=1" if arguments.unsigned else "",
                                       f"repository={arguments.repository}" if arguments.repository else "") if part)
    headers = {"Content-Type": "application/x-tar"}
    if trust_key:
        headers["X-Bundle-Trust-Key"] = base64.b64encode(trust_key.encode()).decode()
    if os.path.isdir(arguments.bundle):
        body = tar_of_directory(arguments.bundle, progress)
    else:
        body = file_chunks(arguments.bundle, progress)
        headers["Content-Length"] = str(os.path.getsize(arguments.bundle))
    with open_request(arguments, "POST", f"/acr/connected/v1/bundles/import?{query}", body, headers) as answer:
        if answer.status != 200:
            body = answer.read()
            document = json.loads(body) if body.startswith(b"{") else {"raw": body[:300]}
            progress.finish()
            fail(answer.status, printable(document), "import", "gateway/<the instance's name>/config/write")
            return None
        for raw in answer:
            line = printable(json.loads(raw))
            if "image" in line:
                progress.image(line["image"], line["digest"])
            elif "error" in line:
                raise OciError("UNKNOWN", line["error"].get("message"))
            elif "result" in line:
                return line["result"]
    raise OciError("UNKNOWN", "the instance ended the import without a result: see its log")
