"""Hostile input at the whole /v2 API, property-based (hypothesis), against one real `serve` process.

Every response to every generated request is held to three properties:

(a) never a 5xx;
(b) every 4xx carries an OCI error body `{"errors": [{"code", "message"}, ...]}` whose codes are from the
    OCI list (plus PAGINATION_NUMBER_INVALID), and every /v2 response carries
    `Docker-Distribution-API-Version: registry/2.0`. HEAD answers have no body, so only their status is
    checked. The one documented exception: requests aiohttp's HTTP parser refuses before the application
    sees them (unparseable HTTP: a method token it does not know such as `FOO` or `get`, an invalid or
    duplicated Content-Length, Transfer-Encoding together with Content-Length, a bad chunk size, a control
    character in a header, a request line or header over 8190 bytes, raw non-ASCII bytes in the target, a
    CONNECT whose target is not host:port).
    aiohttp answers those itself with `HTTP/1.0 400 Bad Request`, `text/plain`, no API-version header, and
    closes the connection; only the raw-socket tests send such bytes and they accept exactly that shape
    (`is_parser_rejection`). A malformed chunk that arrives after the handler has started reading gets no
    answer at all: aiohttp queues the 400 behind the stuck request, which waits until the client goes away.
(c) stored data is unchanged: before the fuzzing the module pushes a known image (config, two layers, an
    OCI manifest under several tags, an index, a referrer, a second repository, and two open upload
    sessions with known bytes). After every example the catalog, every tags list, every manifest (bytes,
    digest, media type, by tag and by digest), every blob's bytes, the referrers list and both upload
    sessions' offsets must be exactly as before; content a hostile request could have created must be
    absent; every file under the data directory must be where the registry's layout puts it (blob files
    byte-identical, no new ones); and nothing may appear in the sandbox around the data directory, which
    sits four levels deep in it (the process runs with its cwd, HOME and TMPDIR inside that sandbox too).

When an example changes the stored data, the test fails with the difference and the module repairs the
registry through the API (deleting what appeared, re-pushing moved tags) so later examples start clean
(the harness, `Target`, is tests/support/hostile.py; the raw client is tests/support/raw_client.py).

The registry is a `connected-registry serve` subprocess for the whole module; requests go over fresh
loopback connections with http.client (full control of headers) or raw sockets (full control of bytes).
Hypothesis runs derandomized without an example database, so every run tries the same inputs.
"""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest
from hypothesis import assume, example, given, note, settings
from hypothesis import strategies as st

from tests.support.hostile import APP, APP_TAGS, FUZZ, OTHER, SCRATCH, SPEC_DIGEST, Target
from tests.support.oci import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, descriptor, sha256
from tests.support.raw_client import (RawResponse, Reply, call, is_parser_rejection, location_path, path_part,
                                      raw_exchange)

# --------------------------------------------------------------------------------------------------
# What the OCI distribution spec says (written out here, independent of the registry's own code)
# --------------------------------------------------------------------------------------------------

OCI_ERROR_CODES = frozenset({
    "BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID", "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID", "MANIFEST_UNKNOWN", "NAME_INVALID", "NAME_UNKNOWN", "SIZE_INVALID", "UNAUTHORIZED",
    "DENIED", "UNSUPPORTED", "TOOMANYREQUESTS", "PAGINATION_NUMBER_INVALID",
})
SPEC_NAME = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*")
SPEC_TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")

MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
MAX_MANIFEST = 4 * 1024 * 1024
INT64_MAX = 2**63 - 1


# --------------------------------------------------------------------------------------------------
# The checks every answer must pass
# --------------------------------------------------------------------------------------------------


def check_oci_error_body(body: bytes, context: str) -> list[str]:
    try:
        document = json.loads(body)
    except ValueError:
        raise AssertionError(f"4xx without a JSON OCI error body: {context}") from None
    assert isinstance(document, dict) and isinstance(document.get("errors"), list) and document["errors"], (
        f"4xx body is not {{\"errors\": [...]}}: {context}")
    codes = []
    for error in document["errors"]:
        assert isinstance(error, dict), f"error entry is not an object: {context}"
        assert error.get("code") in OCI_ERROR_CODES, f"error code {error.get('code')!r} is not an OCI code: {context}"
        assert isinstance(error.get("message"), str), f"error without a message: {context}"
        codes.append(error["code"])
    return codes


def check(reply: Reply) -> Reply:
    """Properties (a) and (b) for one answer."""
    assert reply.status < 500, f"5xx: {reply.describe()}"
    if reply.target.startswith("/v2"):
        assert reply.header("Docker-Distribution-API-Version") == "registry/2.0", (
            f"no Docker-Distribution-API-Version: {reply.describe()}")
    if 400 <= reply.status < 500 and reply.method != "HEAD":
        check_oci_error_body(reply.body, reply.describe())
    return reply


def check_raw(response: RawResponse, context: str) -> None:
    assert response.status < 500, f"5xx: {context}: {response.describe()}"
    if 400 <= response.status < 500 and not is_parser_rejection(response):
        check_oci_error_body(response.body, f"{context}: {response.describe()}")


def expect_error(reply: Reply, codes: set[str] | frozenset[str]) -> None:
    check(reply)
    assert 400 <= reply.status < 500, f"expected a 4xx ({sorted(codes)}): {reply.describe()}"
    if reply.method != "HEAD":
        got = reply.error_codes()
        assert set(got) & set(codes), f"expected one of {sorted(codes)}, got {got}: {reply.describe()}"


# --------------------------------------------------------------------------------------------------
# The registry under test (tests/support/hostile.py: the known content, and the invariant check)
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory):
    registry = Target(tmp_path_factory.mktemp("hostile"))
    try:
        yield registry
    finally:
        registry.close()


# --------------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------------

NAME_ATOMS = ["..", ".", "%2e%2e", "%2E%2E", "%2e", "%2f", "%2F", "%252f", "%00", "\x00", "/", "//", "\\", "~",
              "etc", "passwd", "Fuzz", "APP", "a", "app", "fuzz", "é", "ａ", "\u212a", "\u0130", "ß", "-", "_",
              "__", "___", ".git", " ", "%20", "\n", "%0a", "\r", "?", "#", "%3f", "%23", ":", "@", "*", "%",
              "%zz", "%ff", "\ud7ff", "😀", "\u202e", "\t", "+", "=", ";", "'", '"', "<", ">", "|", "$"]
CURATED_NAMES = [
    "..", "../..", "../../etc", "..%2F..%2Fetc", "%2e%2e", "%2e%2e/%2e%2e/etc", "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
    "fuzz/../app", "fuzz/./app", "./fuzz", "/etc/passwd", "%2Fetc%2Fpasswd", "//etc", "fuzz//app", "fuzz/app/",
    "/fuzz/app", "fuzz/app/..", "Fuzz/App", "FUZZ", "fuzz/App", "fuzz\x00app", "fuzz%00app", "fuzz/app%00",
    "fuzz\\..\\app", "C:\\windows", "~root", "fuzz/\u212aelvin", "fuzz/caf\u00e9", "ｆｕｚｚ", "fuzz/app\n",
    "fuzz%0aapp", "fuzz/app%0a", "-fuzz", "fuzz-", "_fuzz", "fuzz_", "fuzz___app", "fuzz..app", ".fuzz",
    "fuzz/.git", "fuzz/app?x", "fuzz%3Fapp", "fuzz%23app", "fuzz app", "fuzz%20app", "a" * 256, "a" * 300,
    "a/" * 150 + "a", "fuzz/" + "b" * 400, "%61pp%2F%2E%2E",
]


@st.composite
def hostile_names(draw) -> str:
    kind = draw(st.sampled_from(["curated", "atoms", "text", "long"]))
    if kind == "curated":
        return draw(st.sampled_from(CURATED_NAMES))
    if kind == "atoms":
        return "".join(draw(st.lists(st.sampled_from(NAME_ATOMS), min_size=1, max_size=8)))
    if kind == "text":
        return draw(st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40))
    unit = draw(st.sampled_from(["a", "a/", "ab-", "a.b/", "x_"]))
    return unit * draw(st.integers(300, 600))


def encode_name(name: str, mode: str) -> tuple[str, str]:
    """(what goes in the request path, what the server decodes it to)."""
    if mode == "encoded":
        return quote(name, safe=""), name
    # As written: keep '/', '%' and printable ASCII; encode what http.client cannot send raw.
    sent = quote(name, safe="/%:@!$&'()*+,;=-._~")
    return sent, unquote(sent)


def name_is_hostile(decoded: str) -> bool:
    """True when the spec rejects the name. Names of 256-299 valid characters are left unspecified."""
    return not (SPEC_NAME.fullmatch(decoded) and len(decoded) < 300)


HEX = "0123456789abcdef"


@st.composite
def bad_digests(draw) -> str:
    kind = draw(st.sampled_from(["curated", "built", "text"]))
    if kind == "curated":
        return draw(st.sampled_from(CURATED_BAD_DIGESTS))
    if kind == "text":
        return draw(st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=80))
    algorithm = draw(st.sampled_from(["sha256", "sha512", "sha384", "md5", "sha1", "SHA256", "Sha256", "sha256+b64u",
                                      "blake3", "", "sha-256", "sha256 ", "256"]))
    separator = draw(st.sampled_from([":", ":", "", "::", "=", " :", ": "]))
    length = draw(st.sampled_from([0, 1, 32, 63, 64, 65, 127, 128, 129, 256]))
    alphabet = draw(st.sampled_from([HEX, HEX.upper(), HEX + "g", "0123456789ABCDEFabcdef", HEX + "-_/.%"]))
    hex_part = draw(st.text(st.sampled_from(alphabet), min_size=length, max_size=length))
    return algorithm + separator + hex_part


def _upper_hex(digest: str) -> str:
    algorithm, _, hex_part = digest.partition(":")
    return f"{algorithm}:{hex_part.upper()}"


CURATED_BAD_DIGESTS = [
    "sha256:" + "a" * 63, "sha256:" + "a" * 65, "sha256:", "sha256", ":" + "a" * 64, "sha512:" + "a" * 64,
    "sha256:" + "a" * 128, "sha512:" + "a" * 127, "md5:" + "a" * 32, "sha1:" + "a" * 40, "sha384:" + "a" * 96,
    "SHA256:" + "a" * 64, "sha256:" + "A" * 64, "sha256:" + "g" * 64, "sha256:" + "a" * 63 + " ",
    "sha256:" + "a" * 63 + "\n", "sha256:" + "a" * 64 + "\n", " sha256:" + "a" * 64, "sha256:" + "a" * 64 + ":x",
    "sha256:../../../../etc/passwd", "sha256:%2e%2e", "sha256:" + "0" * 62 + "..", "..", ".", "sha256:\x00",
    "sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564", "blake3:" + "a" * 64,
]


@st.composite
def bad_tags(draw) -> str:
    tag = draw(st.one_of(
        st.sampled_from([".v1", "-v1", "v1!", "a" * 129, "tág", "v 1", "v1\n", "\x00", "v1\x00", "..", ".", "v1?",
                         "v1#", "%", "%2e%2e", "~v1", "v:1", "v1:", ":v1", "ü", "😀", "v\t1"]),
        st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=140),
    ))
    assume(not SPEC_TAG.fullmatch(tag) and tag)
    return tag


# --------------------------------------------------------------------------------------------------
# (1) Malformed repository names on every route and method
# --------------------------------------------------------------------------------------------------

NAME_ROUTES = [
    ("GET", "/tags/list"), ("GET", "/manifests/v1"), ("HEAD", "/manifests/v1"), ("PUT", "/manifests/hostile"),
    ("DELETE", "/manifests/v1"), ("DELETE", "/manifests/{image}"), ("GET", "/blobs/{layer}"),
    ("HEAD", "/blobs/{layer}"), ("DELETE", "/blobs/{layer}"), ("POST", "/blobs/uploads/"),
    ("POST", "/blobs/uploads/?digest={unique}"), ("POST", "/blobs/uploads/?mount={layer}&from=fuzz/app"),
    ("GET", "/blobs/uploads/{session}"), ("PATCH", "/blobs/uploads/{session}"),
    ("PUT", "/blobs/uploads/{session}?digest={unique}"), ("DELETE", "/blobs/uploads/{session}"),
    ("GET", "/referrers/{image}"),
]


@settings(FUZZ, max_examples=80)
@given(name=hostile_names(), route=st.sampled_from(NAME_ROUTES), mode=st.sampled_from(["as-is", "encoded"]),
       method=st.one_of(st.none(), st.sampled_from(["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"])))
@example(name="..%2F..%2Fetc", route=("GET", "/tags/list"), mode="as-is", method=None)
@example(name="%2e%2e/%2e%2e/etc", route=("PUT", "/manifests/hostile"), mode="as-is", method=None)
@example(name="/etc/passwd", route=("POST", "/blobs/uploads/?digest={unique}"), mode="as-is", method=None)
@example(name="fuzz\x00app", route=("PUT", "/manifests/hostile"), mode="encoded", method=None)
@example(name="a" * 300, route=("PUT", "/manifests/hostile"), mode="as-is", method=None)
@example(name="Fuzz/App", route=("GET", "/manifests/v1"), mode="as-is", method=None)
def test_malformed_names_are_rejected_everywhere(target: Target, name, route, mode, method):
    sent, decoded = encode_name(name, mode)
    assume(name_is_hostile(decoded))
    route_method, suffix = route
    method = method or route_method
    unique = f"never stored under a hostile name: {decoded!r}".encode()
    manifest = json.dumps({**target.image_doc, "annotations": {"hostile-name": decoded[:64]}}).encode()
    session_id, _ = target.sessions[SCRATCH]
    suffix = suffix.format(image=target.image, layer=sha256(target.big_layer), unique=sha256(unique),
                           session=session_id)
    body = manifest if "manifests" in suffix else unique
    with target.example() as guard:
        guard.must_not_store(SCRATCH, unique)
        guard.must_not_store(APP, manifest, manifest=True)
        reply = guard.sent(call(target.port, method, f"/v2/{sent}{suffix}",
                                body if method in ("PUT", "POST", "PATCH") else None,
                                {"Content-Type": OCI_MANIFEST if "manifests" in suffix else "application/octet-stream"}))
        note(reply.describe())
        expect_error(reply, {"NAME_INVALID", "UNSUPPORTED"})


# --------------------------------------------------------------------------------------------------
# (2) Malformed references and digests
# --------------------------------------------------------------------------------------------------

REFERENCE_ENDPOINTS = ["manifest-get", "manifest-head", "manifest-delete", "manifest-put", "blob-get", "blob-head",
                       "blob-delete", "referrers", "upload-post-digest", "upload-mount", "upload-put-digest"]


@settings(FUZZ, max_examples=80)
@given(value=st.one_of(bad_digests(), bad_tags()), endpoint=st.sampled_from(REFERENCE_ENDPOINTS),
       encoded=st.booleans())
@example(value="sha256:" + "a" * 63, endpoint="blob-get", encoded=False)
@example(value="sha256:" + "a" * 63, endpoint="manifest-put", encoded=False)
@example(value="sha512:" + "a" * 64, endpoint="upload-put-digest", encoded=False)
@example(value="md5:" + "a" * 32, endpoint="upload-post-digest", encoded=False)
@example(value="v1\n", endpoint="manifest-put", encoded=True)
@example(value="a" * 129, endpoint="manifest-put", encoded=False)
def test_malformed_references_and_digests(target: Target, value, endpoint, encoded):
    if endpoint.startswith("manifest"):
        assume(not SPEC_DIGEST.fullmatch(value) and not SPEC_TAG.fullmatch(value))
    else:
        assume(not SPEC_DIGEST.fullmatch(value))
    segment = path_part(value, safe="" if encoded else ":")
    query = quote(value, safe="")
    manifest = json.dumps({**target.image_doc, "annotations": {"hostile-reference": value[:64]}}).encode()
    blob = f"blob behind a hostile digest {value!r}".encode()
    with target.example() as guard:
        guard.must_not_store(APP, manifest, manifest=True)
        guard.must_not_store(SCRATCH, blob)
        manifest_codes = {"MANIFEST_UNKNOWN", "MANIFEST_INVALID", "DIGEST_INVALID", "UNSUPPORTED", "NAME_INVALID"}
        blob_codes = {"DIGEST_INVALID", "BLOB_UNKNOWN", "UNSUPPORTED", "NAME_INVALID"}
        if endpoint.startswith("manifest"):
            method = endpoint.split("-")[1].upper()
            reply = call(target.port, method, f"/v2/{APP}/manifests/{segment}",
                         manifest if method == "PUT" else None, {"Content-Type": OCI_MANIFEST})
            expect_error(guard.sent(reply), manifest_codes)
        elif endpoint.startswith("blob"):
            method = endpoint.split("-")[1].upper()
            expect_error(guard.sent(call(target.port, method, f"/v2/{APP}/blobs/{segment}")), blob_codes)
        elif endpoint == "referrers":
            reply = call(target.port, "GET", f"/v2/{APP}/referrers/{segment}")
            expect_error(guard.sent(reply), blob_codes | {"MANIFEST_UNKNOWN"})
        elif endpoint == "upload-post-digest":
            reply = call(target.port, "POST", f"/v2/{SCRATCH}/blobs/uploads/?digest={query}", blob)
            expect_error(guard.sent(reply), {"DIGEST_INVALID", "BLOB_UPLOAD_INVALID"})
        elif endpoint == "upload-mount":
            reply = guard.sent(call(target.port, "POST",
                                    f"/v2/{SCRATCH}/blobs/uploads/?mount={query}&from={APP}"))
            check(reply)
            if reply.status == 202:  # the spec lets a registry fall back to an ordinary upload
                call(target.port, "DELETE", location_path(reply))
            else:
                expect_error(reply, {"DIGEST_INVALID", "BLOB_UPLOAD_INVALID"})
        else:
            session = target.open_session(SCRATCH, blob)
            reply = call(target.port, "PUT", f"/v2/{SCRATCH}/blobs/uploads/{session}?digest={query}")
            expect_error(guard.sent(reply), {"DIGEST_INVALID", "BLOB_UPLOAD_INVALID"})
            call(target.port, "DELETE", f"/v2/{SCRATCH}/blobs/uploads/{session}")


@pytest.mark.parametrize("case", ["upper-hex-of-stored-manifest", "upper-hex-of-stored-blob", "absent-blob",
                                  "manifest-digest-mismatch", "manifest-sha512-mismatch", "upload-digest-mismatch"])
def test_well_formed_but_wrong_digests(target: Target, case):
    with target.example() as guard:
        if case == "upper-hex-of-stored-manifest":
            reply = call(target.port, "GET", f"/v2/{APP}/manifests/{_upper_hex(target.image)}")
            expect_error(guard.sent(reply), {"MANIFEST_UNKNOWN", "DIGEST_INVALID", "MANIFEST_INVALID"})
        elif case == "upper-hex-of-stored-blob":
            reply = call(target.port, "GET", f"/v2/{APP}/blobs/{_upper_hex(sha256(target.big_layer))}")
            expect_error(guard.sent(reply), {"BLOB_UNKNOWN", "DIGEST_INVALID"})
        elif case == "absent-blob":
            reply = call(target.port, "GET", f"/v2/{APP}/blobs/sha256:{'0' * 64}")
            expect_error(guard.sent(reply), {"BLOB_UNKNOWN"})
            assert reply.status == 404, reply.describe()
        elif case in ("manifest-digest-mismatch", "manifest-sha512-mismatch"):
            body = json.dumps({**target.image_doc, "annotations": {"case": case}}).encode()
            guard.must_not_store(APP, body, manifest=True)
            wrong = f"sha256:{'1' * 64}" if case == "manifest-digest-mismatch" else f"sha512:{'1' * 128}"
            reply = call(target.port, "PUT", f"/v2/{APP}/manifests/{wrong}", body, {"Content-Type": OCI_MANIFEST})
            expect_error(guard.sent(reply), {"DIGEST_INVALID", "MANIFEST_INVALID"})
        else:
            blob = b"upload whose digest is wrong"
            guard.must_not_store(SCRATCH, blob)
            session = target.open_session(SCRATCH, blob)
            reply = call(target.port, "PUT", f"/v2/{SCRATCH}/blobs/uploads/{session}?digest=sha256:{'2' * 64}")
            expect_error(guard.sent(reply), {"DIGEST_INVALID"})
            call(target.port, "DELETE", f"/v2/{SCRATCH}/blobs/uploads/{session}")


# --------------------------------------------------------------------------------------------------
# (3) Range on blob GET
# --------------------------------------------------------------------------------------------------

# Around the sizes of both blobs used (1 and 70000 bytes), and far beyond.
RANGE_NUMBERS = st.one_of(st.integers(0, 3), st.sampled_from([69_998, 69_999, 70_000, 70_001]), st.integers(0, 140_000),
                          st.sampled_from([INT64_MAX, 2**64, 10**30]), st.integers(0, 2**70))


@st.composite
def single_ranges(draw) -> tuple[str, str, int, int]:
    kind = draw(st.sampled_from(["from-to", "from", "suffix"]))
    a, b = draw(RANGE_NUMBERS), draw(RANGE_NUMBERS)
    if kind == "from-to":
        return kind, f"{a}-{b}", a, b
    if kind == "from":
        return kind, f"{a}-", a, -1
    return kind, f"-{a}", a, -1


def single_range_outcome(kind: str, a: int, b: int, size: int) -> tuple[str, tuple[int, int] | None]:
    """RFC 9110 14.1.2 for one byte-range-spec on a representation of `size` > 0 bytes."""
    if kind == "from-to":
        if a > b:
            return "invalid", None
        return ("partial", (a, min(b, size - 1))) if a < size else ("unsatisfiable", None)
    if kind == "from":
        return ("partial", (a, size - 1)) if a < size else ("unsatisfiable", None)
    if a == 0:
        return "unsatisfiable", None  # a suffix-range of length zero is never satisfiable
    return "partial", (max(size - a, 0), size - 1)


def _blob_choice(target: Target, which: str) -> bytes:
    return target.big_layer if which == "big" else target.small_layer


@FUZZ
@given(which=st.sampled_from(["big", "small"]), spec=single_ranges(), unit=st.sampled_from(["bytes", "Bytes", "BYTES"]))
def test_blob_single_range(target: Target, which, spec, unit):
    blob = _blob_choice(target, which)
    kind, spec, a, b = spec
    outcome, span = single_range_outcome(kind, a, b, len(blob))
    header = f"{unit}={spec}"
    with target.example() as guard:
        reply = guard.sent(call(target.port, "GET", f"/v2/{APP}/blobs/{sha256(blob)}", headers={"Range": header}))
        note(reply.describe())
        assert reply.status < 500, reply.describe()
        if outcome == "partial":
            start, end = span
            assert reply.status == 206, f"satisfiable range {header!r} on {len(blob)} bytes: {reply.describe()}"
            assert reply.body == blob[start:end + 1], f"wrong bytes for {header!r}: {reply.describe()}"
            assert reply.header("Content-Range") == f"bytes {start}-{end}/{len(blob)}", reply.describe()
        elif outcome == "unsatisfiable":
            assert reply.status == 416, f"unsatisfiable range {header!r} on {len(blob)} bytes: {reply.describe()}"
        else:
            assert reply.status in (200, 416), f"invalid range {header!r}: {reply.describe()}"
            if reply.status == 200:
                assert reply.body == blob, reply.describe()
        check(reply)


def _parse_byteranges(reply: Reply) -> list[tuple[int, int, bytes]]:
    boundary = re.search(r'boundary="?([^";]+)"?', reply.header("Content-Type") or "")
    assert boundary, f"206 with several ranges but no multipart boundary: {reply.describe()}"
    parts = []
    for part in reply.body.split(b"--" + boundary.group(1).encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, content = part.lstrip(b"\r\n").partition(b"\r\n\r\n")
        match = re.search(rb"(?i)content-range:\s*bytes (\d+)-(\d+)/\d+", head)
        assert match, f"part without Content-Range: {reply.describe()}"
        parts.append((int(match.group(1)), int(match.group(2)), content[:-2] if content.endswith(b"\r\n") else content))
    return parts


GARBAGE_RANGES = [
    "", "bytes=", "bytes=-", "bytes", "bytes 0-1", "=0-1", "bytes=0-1-2", "bytes=--1", "bytes=+1-2", "bytes=0x0-0x1",
    "bytes=1.5-2", "bytes=0-1;x", "bytes=0 -1", "bytes=a-b", "bytes=,", "bytes=0-1,", "bytes=,0-1", "bytes=-0-",
    "bytes=" + "9" * 5000 + "-", "bytes=0-" + "9" * 5000, "bytes=0-1 , 3-4", "bytes==0-1", "bytes=0-1\t",
]


@st.composite
def odd_range_headers(draw) -> tuple[str, str, list]:
    kind = draw(st.sampled_from(["multi", "unit", "garbage", "text"]))
    if kind == "multi":
        specs = draw(st.lists(single_ranges(), min_size=2, max_size=4))
        joiner = draw(st.sampled_from([",", ", ", " ,"]))
        return kind, "bytes=" + joiner.join(spec for _, spec, _, _ in specs), specs
    if kind == "unit":
        unit = draw(st.sampled_from(["items", "none", "chars", "bits", "x-bytes", "byte"]))
        return kind, f"{unit}={draw(single_ranges())[1]}", []
    if kind == "garbage":
        return kind, draw(st.sampled_from(GARBAGE_RANGES)), []
    return kind, draw(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)), []


@FUZZ
@given(which=st.sampled_from(["big", "small"]), header=odd_range_headers())
def test_blob_multiple_unknown_and_garbage_ranges(target: Target, which, header):
    kind, value, specs = header
    blob = _blob_choice(target, which)
    with target.example() as guard:
        reply = guard.sent(call(target.port, "GET", f"/v2/{APP}/blobs/{sha256(blob)}", headers={"Range": value}))
        note(reply.describe())
        assert reply.status in (200, 206, 416), f"Range {value[:80]!r}: {reply.describe()}"
        if reply.status == 200:
            assert reply.body == blob, reply.describe()
        elif reply.status == 206:
            assert kind != "unit", f"a Range in an unknown unit must be ignored (RFC 9110 14.2): {reply.describe()}"
            if (reply.header("Content-Type") or "").startswith("multipart/byteranges"):
                parts = _parse_byteranges(reply)
            else:
                match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", reply.header("Content-Range") or "")
                assert match, reply.describe()
                parts = [(int(match.group(1)), int(match.group(2)), reply.body)]
            for start, end, content in parts:
                assert content == blob[start:end + 1], f"wrong bytes for part {start}-{end}: {reply.describe()}"
        else:  # 416
            assert kind != "unit", f"a Range in an unknown unit must be ignored (RFC 9110 14.2): {reply.describe()}"
            if kind == "multi":
                outcomes = [single_range_outcome(k, a, b, len(blob)) for k, _, a, b in specs]
                spans = [span for outcome, span in outcomes if outcome == "partial"]
                all_valid = all(outcome != "invalid" for outcome, _ in outcomes)
                ascending = all(x[1] < y[0] for x, y in zip(spans, spans[1:])) and len(spans) == len(outcomes)
                assert not (spans and all_valid and ascending), (
                    f"416 for satisfiable, ascending, non-overlapping ranges {value!r} on {len(blob)} bytes "
                    f"(RFC 9110 15.5.17: 416 only when none overlaps the content): {reply.describe()}")
        check(reply)


CONDITIONAL_VALUES = ['"x"', "*", "garbage", '"sha256:0000"', 'W/"x"', "", "Sat, 01 Jan 2000 00:00:00 GMT",
                      "Fri, 01 Jan 2100 00:00:00 GMT", "not a date", "0", "-1"]


@settings(FUZZ, max_examples=60)
@given(endpoint=st.sampled_from(["blob", "manifest"]), method=st.sampled_from(["GET", "HEAD"]),
       headers=st.dictionaries(st.sampled_from(["If-Match", "If-None-Match", "If-Modified-Since",
                                                "If-Unmodified-Since", "If-Range"]),
                               st.sampled_from(CONDITIONAL_VALUES), min_size=1, max_size=3),
       with_range=st.booleans())
def test_conditional_headers_on_reads(target: Target, endpoint, method, headers, with_range):
    if endpoint == "blob":
        path, content = f"/v2/{APP}/blobs/{sha256(target.big_layer)}", target.big_layer
    else:
        path, content = f"/v2/{APP}/manifests/v1", target.image_body
    headers = dict(headers)
    if with_range:
        headers["Range"] = "bytes=10-19"
    with target.example() as guard:
        reply = guard.sent(check(call(target.port, method, path, headers=headers)))
        note(reply.describe())
        assert reply.status in (200, 206, 304, 412, 416), reply.describe()
        if method == "GET" and reply.status == 200:
            assert reply.body == content, reply.describe()
        if method == "GET" and reply.status == 206:
            assert reply.body == content[10:20], reply.describe()


# Each a plain test, so that every distinct finding of the three tests above reads on its own line.
BLOB_READ_CASES = {
    "range-10-19": ({"Range": "bytes=10-19"}, {206}),
    "range-open-end": ({"Range": "bytes=69990-"}, {206}),
    "range-suffix-5": ({"Range": "bytes=-5"}, {206}),
    "range-past-the-end": ({"Range": "bytes=70000-70010"}, {416}),
    "range-suffix-0": ({"Range": "bytes=-0"}, {416}),
    "range-reversed": ({"Range": "bytes=20-10"}, {200, 416}),
    "range-garbage": ({"Range": "bytes=0-1-2"}, {200, 416}),
    "two-ranges": ({"Range": "bytes=0-1,3-4"}, {200, 206}),
    "unknown-unit": ({"Range": "items=0-5"}, {200}),
    "if-match-other-etag": ({"If-Match": '"x"'}, {412}),
    "if-unmodified-since-2000": ({"If-Unmodified-Since": "Sat, 01 Jan 2000 00:00:00 GMT"}, {412}),
}


@pytest.mark.parametrize("case", sorted(BLOB_READ_CASES))
def test_blob_read_cases(target: Target, case):
    headers, statuses = BLOB_READ_CASES[case]
    blob = target.big_layer
    with target.example() as guard:
        reply = guard.sent(call(target.port, "GET", f"/v2/{APP}/blobs/{sha256(blob)}", headers=headers))
        assert reply.status in statuses, f"{case}: expected {sorted(statuses)}: {reply.describe()}"
        if reply.status == 200:
            assert reply.body == blob, reply.describe()
        if reply.status == 206 and "Range" in headers and "," not in headers["Range"]:
            match = re.fullmatch(r"bytes (\d+)-(\d+)/70000", reply.header("Content-Range") or "")
            assert match and reply.body == blob[int(match.group(1)):int(match.group(2)) + 1], reply.describe()
        check(reply)


@pytest.mark.parametrize("endpoint", ["tags", "catalog"])
@pytest.mark.parametrize("n", ["²", "¹", "١", "𝟗", "9" * 13, "-1", "1.0", "abc"])
def test_pagination_odd_numbers(target: Target, endpoint, n):
    path = f"/v2/{APP}/tags/list" if endpoint == "tags" else "/v2/_catalog"
    with target.example() as guard:
        reply = guard.sent(check(call(target.port, "GET", f"{path}?n={quote(n, safe='')}")))
        assert reply.status in (200, 400), reply.describe()
        if reply.status == 400:
            assert reply.error_codes() == ["PAGINATION_NUMBER_INVALID"], reply.describe()


# --------------------------------------------------------------------------------------------------
# (4) Chunked uploads: Content-Range and Content-Length
# --------------------------------------------------------------------------------------------------

GARBAGE_CONTENT_RANGES = ["", "abc", "-", "0-", "-5", "0--1", "1-2-3", "0x0-0x3", " ", "*", "0-1/", "bytes 0-1/abc",
                          "0-" + "9" * 25, "9" * 25 + "-" + "9" * 26, "bytes */10", "0-1,2-3", "0 - 1", "+0-1", "0-+1",
                          "0-1\t1"]


def classify_content_range(value: str) -> tuple[str, int, int] | None:
    """('strict', start, end) for OCI's `<start>-<end>`; ('lenient', ...) for RFC forms; None for garbage."""
    value = value.strip(" \t")
    match = re.fullmatch(r"([0-9]+)-([0-9]+)", value)
    if match:
        return "strict", int(match.group(1)), int(match.group(2))
    match = re.fullmatch(r"(?:bytes[ =])?([0-9]+)-([0-9]+)(?:/(?:[0-9]+|\*))?", value)
    if match:
        return "lenient", int(match.group(1)), int(match.group(2))
    return None


@st.composite
def chunk_steps(draw) -> list[dict]:
    steps = []
    for _ in range(draw(st.integers(1, 6))):
        steps.append({
            "data": draw(st.binary(min_size=0, max_size=40)),
            "kind": draw(st.sampled_from(["none", "exact", "exact", "shifted", "reversed", "length", "garbage",
                                          "text", "rfc"])),
            "delta": draw(st.one_of(st.integers(-50, 50), st.sampled_from([2**40, 10**19, -(10**3)]))),
            "garbage": draw(st.sampled_from(GARBAGE_CONTENT_RANGES)),
            "text": draw(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)),
            "chunked": draw(st.booleans()),
        })
    return steps


@settings(FUZZ, max_examples=75)
@given(steps=chunk_steps())
def test_patch_content_range(target: Target, steps):
    with target.example() as guard:
        upload_id = target.open_session(SCRATCH)
        path = target.session_path(SCRATCH, upload_id)
        uploaded = b""
        for step in steps:
            data, kind, offset = step["data"], step["kind"], len(uploaded)
            end = offset + len(data) - 1
            header: str | None
            if kind == "none":
                header = None
            elif kind == "exact":
                header = f"{offset}-{end}" if data else None
            elif kind == "rfc":
                header = f"bytes {offset}-{end}/*" if data else None
            elif kind == "shifted":
                start = max(offset + (step["delta"] or 1), 0)
                header = f"{start}-{start + max(len(data), 1) - 1}"
            elif kind == "reversed":
                header = f"{offset + len(data) + abs(step['delta'])}-{offset}"
            elif kind == "length":
                header = f"{offset}-{offset + max(len(data) - 1 + (step['delta'] or 1), 0)}"
            elif kind == "garbage":
                header = step["garbage"]
            else:
                header = step["text"]
            headers = {"Content-Type": "application/octet-stream"}
            if header is not None:
                headers["Content-Range"] = header
            reply = guard.sent(check(call(target.port, "PATCH", path, None if step["chunked"] else data, headers,
                                          chunks=[data] if step["chunked"] else None)))
            note(reply.describe())
            parsed = classify_content_range(header) if header is not None else None
            consistent = header is None or (
                parsed is not None and parsed[1] == offset and parsed[2] >= parsed[1]
                and parsed[2] - parsed[1] + 1 == len(data))
            if header is not None and parsed is not None and parsed[0] == "lenient" and not consistent:
                parsed = None
            if consistent and (header is None or parsed[0] == "strict"):
                assert reply.status == 202, f"in-order chunk refused: {reply.describe()}"
            elif consistent:
                assert reply.status in (202, 400, 416), reply.describe()
            elif step["chunked"] and parsed is not None and parsed[1] == offset and parsed[2] >= parsed[1]:
                # Without Content-Length the server can only compare the range with the bytes as they come.
                assert reply.status in (202, 400, 416), reply.describe()
            else:
                assert reply.status in (400, 416), f"chunk with Content-Range {header!r} at offset {offset}: " \
                                                   f"{reply.describe()}"
            if reply.status == 202:
                uploaded += data
            if reply.status in (400, 416):
                assert set(reply.error_codes()) & {"BLOB_UPLOAD_INVALID", "SIZE_INVALID"}, reply.describe()
            status = guard.sent(check(call(target.port, "GET", path)))
            assert status.status == 204, status.describe()
            expected = f"0-{len(uploaded) - 1}" if uploaded else ("0-0", "0--1", None)
            assert status.header("Range") in (expected if isinstance(expected, tuple) else (expected,)), (
                f"upload holds {len(uploaded)} accepted bytes but reports Range {status.header('Range')}: "
                f"{status.describe()}")
        guard.must_not_store(SCRATCH, uploaded)
        reply = guard.sent(check(call(target.port, "DELETE", path)))
        assert reply.status == 204, reply.describe()


# --------------------------------------------------------------------------------------------------
# (5) Content-Length that does not match the bytes sent (raw sockets)
# --------------------------------------------------------------------------------------------------

@settings(FUZZ, max_examples=60)
@given(endpoint=st.sampled_from(["post-digest", "patch", "put-finish", "put-manifest"]),
       direction=st.sampled_from(["short", "long"]), cut=st.integers(1, 60), payload=st.binary(min_size=2, max_size=60))
def test_content_length_mismatch(target: Target, endpoint, direction, cut, payload):
    data = b"content-length mismatch " + payload
    if endpoint == "put-manifest":
        data = json.dumps({**target.image_doc, "annotations": {"cl": payload.hex()}}).encode()
    cut = min(cut, len(data) - 1)
    with target.example() as guard:
        guard.must_not_store(SCRATCH, data)
        guard.must_not_store(SCRATCH, data[:cut])
        guard.must_not_store(SCRATCH, data[:len(data) - cut])
        session = None
        if endpoint == "post-digest":
            request_line = f"POST /v2/{SCRATCH}/blobs/uploads/?digest={sha256(data)}"
        elif endpoint == "put-manifest":
            guard.must_not_store(APP, data, manifest=True)
            guard.must_not_store(APP, data[:len(data) - cut], manifest=True)
            request_line = f"PUT /v2/{APP}/manifests/cl-mismatch"
        else:
            session = target.open_session(SCRATCH)
            suffix = f"?digest={sha256(data)}" if endpoint == "put-finish" else ""
            request_line = f"{'PATCH' if endpoint == 'patch' else 'PUT'} {target.session_path(SCRATCH, session)}{suffix}"
        content_type = OCI_MANIFEST if endpoint == "put-manifest" else "application/octet-stream"
        if direction == "short":
            # Content-Length promises more than arrives; then the client stops sending.
            head = (f"{request_line} HTTP/1.1\r\nHost: registry\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {len(data)}\r\n\r\n").encode()
            responses = raw_exchange(target.port, head + data[:cut], half_close=True, responses=1)
        else:
            # Content-Length promises fewer bytes than are sent: the rest is read as a (garbage) next request.
            head = (f"{request_line} HTTP/1.1\r\nHost: registry\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {len(data) - cut}\r\n\r\n").encode()
            responses = raw_exchange(target.port, head + data + b"\r\n\r\n", responses=2)
        guard.log.append(f"{request_line} ({direction} by {cut}) -> {[r.describe() for r in responses]}")
        for response in responses:
            check_raw(response, request_line)
            assert not 200 <= response.status < 300 or endpoint == "patch", (
                f"{request_line} with a Content-Length {direction} by {cut} succeeded: {response.describe()}")
        if session is not None:
            status = call(target.port, "GET", target.session_path(SCRATCH, session))
            check(status)
            if status.status == 204 and status.header("Range") and status.header("Range") != "0-0":
                held = int(status.header("Range").split("-")[1]) + 1
                assert held <= len(data), status.describe()
            call(target.port, "DELETE", target.session_path(SCRATCH, session))


UNPARSEABLE_REQUESTS = {
    "negative-content-length": b"Content-Length: -1\r\n\r\n",
    "letters-content-length": b"Content-Length: abc\r\n\r\n",
    "duplicate-content-length": b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}x",
    "overflowing-content-length": b"Content-Length: 99999999999999999999999\r\n\r\n",
    "content-length-list": b"Content-Length: 2, 2\r\n\r\n{}",
    "transfer-encoding-and-content-length": b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "bad-chunk-size": b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    "overflowing-chunk-size": b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n{}\r\n0\r\n\r\n",
    "unknown-transfer-encoding": b"Transfer-Encoding: gzip, chunked, identity\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    "control-character-in-header": b"X-Forwarded-Host: a\x01b\r\nContent-Length: 2\r\n\r\n{}",
    "nul-in-header": b"X-Test: a\x00b\r\nContent-Length: 2\r\n\r\n{}",
    "header-over-8190-bytes": b"X-Long: " + b"a" * 9000 + b"\r\nContent-Length: 2\r\n\r\n{}",
    "obsolete-line-folding": b"Content-Type: application/json\r\n folded\r\nContent-Length: 2\r\n\r\n{}",
    "space-before-colon": b"Content-Length : 2\r\n\r\n{}",
}


@pytest.mark.parametrize("case", sorted(UNPARSEABLE_REQUESTS) + ["unknown-method", "lowercase-method",
                                                                   "request-line-over-8190-bytes", "raw-nul-in-path",
                                                                   "raw-high-bytes-in-path", "http-version-9"])
def test_unparseable_http_is_refused_by_aiohttp(target: Target, case):
    """The documented exception to property (b): aiohttp's own 400 for unparseable HTTP. Nothing is stored."""
    body_line = f"PUT /v2/{APP}/manifests/unparseable HTTP/1.1\r\nHost: registry\r\nConnection: close\r\n".encode()
    if case in UNPARSEABLE_REQUESTS:
        request = body_line + UNPARSEABLE_REQUESTS[case]
    else:
        request = {
            "unknown-method": b"FOO /v2/ HTTP/1.1\r\nHost: registry\r\nConnection: close\r\n\r\n",
            "lowercase-method": b"get /v2/ HTTP/1.1\r\nHost: registry\r\nConnection: close\r\n\r\n",
            "request-line-over-8190-bytes": b"GET /v2/" + b"a" * 9000 + b"/tags/list HTTP/1.1\r\nHost: r\r\n\r\n",
            "raw-nul-in-path": b"GET /v2/a\x00b/tags/list HTTP/1.1\r\nHost: registry\r\n\r\n",
            "raw-high-bytes-in-path": b"GET /v2/a\xff/tags/list HTTP/1.1\r\nHost: registry\r\n\r\n",
            "http-version-9": b"GET /v2/ HTTP/9.9\r\nHost: registry\r\n\r\n",
        }[case]
    with target.example() as guard:
        guard.absent_manifests.append((APP, sha256(b"{}")))
        responses = raw_exchange(target.port, request, responses=1)
        guard.log.append(f"{case}: {[r.describe() for r in responses]}")
        assert responses, f"{case}: no answer at all"
        for response in responses:
            check_raw(response, case)
            assert response.status >= 400 or case == "http-version-9", f"{case}: {response.describe()}"


@pytest.mark.parametrize("endpoint", ["patch", "put-manifest", "post-digest", "put-finish"])
def test_malformed_chunk_after_the_handler_started(target: Target, endpoint):
    """A bad chunk size arriving mid-body: no answer comes (aiohttp queues its 400 behind the stuck request),
    and nothing is stored once the client gives up."""
    data = b"hello"
    with target.example() as guard:
        guard.must_not_store(SCRATCH, data)
        guard.must_not_store(APP, b"{}", manifest=True)
        session = target.open_session(SCRATCH)
        request_line = {
            "patch": f"PATCH {target.session_path(SCRATCH, session)}",
            "put-manifest": f"PUT /v2/{APP}/manifests/midchunk",
            "post-digest": f"POST /v2/{SCRATCH}/blobs/uploads/?digest={sha256(data)}",
            "put-finish": f"PUT {target.session_path(SCRATCH, session)}?digest={sha256(data)}",
        }[endpoint]
        head = f"{request_line} HTTP/1.1\r\nHost: registry\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n".encode()

        def barrier() -> None:  # two full round trips on other connections: the handler is reading by now
            for _ in range(2):
                check(call(target.port, "GET", "/v2/"))

        responses = raw_exchange(target.port, head, between=barrier, tail=b"zz\r\nxx\r\n0\r\n\r\n", deadline=0.5,
                                 responses=1)
        guard.log.append(f"{endpoint}: {[r.describe() for r in responses]}")
        for response in responses:
            check_raw(response, endpoint)
            assert response.status >= 400, response.describe()
        call(target.port, "DELETE", target.session_path(SCRATCH, session))


# --------------------------------------------------------------------------------------------------
# (6) Pagination: n and last on tags list and catalog
# --------------------------------------------------------------------------------------------------

ODD_NUMBERS = ["", "-1", "+1", " 1", "1 ", "1.0", "1e3", "0x10", "²", "³", "¹", "١", "٣", "①", "Ⅻ", "abc", "01",
               "00", "9" * 13, "9" * 100, "9" * 4000, "1,2", "NaN", "inf", "true", "null", "%", "1\x00", "٣٤", "𝟗"]


@settings(FUZZ, max_examples=75)
@given(endpoint=st.sampled_from(["tags", "catalog"]),
       n=st.one_of(st.none(), st.integers(0, 12).map(str), st.integers(0, 10**30).map(str), st.sampled_from(ODD_NUMBERS),
                   st.text(max_size=6)),
       last=st.one_of(st.none(), st.sampled_from(list(APP_TAGS) + ["", "0", "zzzz", "\x00", "a", "fuzz/app", "fuzz/"]),
                      st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=10)))
def test_pagination_parameters(target: Target, endpoint, n, last):
    if endpoint == "tags":
        path, key = f"/v2/{APP}/tags/list", "tags"
        everything = sorted([*APP_TAGS, "multi"])
    else:
        path, key = "/v2/_catalog", "repositories"
        everything = sorted([APP, OTHER])
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in (("n", n), ("last", last)) if v is not None)
    remaining = [item for item in everything if not last or item > last]
    with target.example() as guard:
        reply = guard.sent(check(call(target.port, "GET", f"{path}?{query}" if query else path)))
        note(reply.describe())
        strict = n is None or n == "" or (n.isascii() and n.isdigit() and int(n) <= 10_000)
        if strict:
            assert reply.status == 200, reply.describe()
        elif reply.status != 200:
            assert reply.status == 400 and "PAGINATION_NUMBER_INVALID" in reply.error_codes(), reply.describe()
            return
        document = json.loads(reply.body)
        listed = document[key]
        if endpoint == "tags":
            assert document.get("name") == APP, reply.describe()
        if strict and n not in (None, "") and int(n) == 0:
            assert listed == [], reply.describe()
            return
        limit = int(n) if strict and n not in (None, "") else None
        expected = remaining[:limit] if limit is not None else remaining
        if strict:
            assert listed == expected, f"expected {expected}: {reply.describe()}"
        else:
            assert listed == remaining[:len(listed)], f"not a page of {remaining}: {reply.describe()}"
        link = reply.header("Link")
        if strict and limit is not None and len(remaining) > limit:
            assert link, f"more results but no Link header: {reply.describe()}"
        if link:
            match = re.fullmatch(r'<([^>]+)>;\s*rel="next"', link)
            assert match, reply.describe()
            parameters = parse_qs(urlsplit(match.group(1)).query)
            assert parameters.get("last") == [listed[-1]], reply.describe()


# --------------------------------------------------------------------------------------------------
# (7) Upload ids: not uuids, unknown, and another repository's
# --------------------------------------------------------------------------------------------------

_SAMPLE_UUID = "3f2b8c1e-9d4a-4b6e-8f3a-2c1d0e9b7a65"


@settings(FUZZ, max_examples=60)
@given(upload_id=st.one_of(
           st.sampled_from(["<other-repository>", "<other-repository>", "<other-repository-upper>", "", "x", "0", "..",
                            "null", "tmp-" + _SAMPLE_UUID, _SAMPLE_UUID.upper(), _SAMPLE_UUID.replace("-", ""),
                            "{" + _SAMPLE_UUID + "}", _SAMPLE_UUID + "0", _SAMPLE_UUID[:-1], " " + _SAMPLE_UUID,
                            _SAMPLE_UUID + "\x00", "../" + _SAMPLE_UUID, "..%2f" + _SAMPLE_UUID, "a" * 300,
                            "<own>\n", "<own>/..", "../../metadata.db", "../blobs"]),
           st.uuids().map(str),
           st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)),
       method=st.sampled_from(["GET", "PATCH", "PUT", "DELETE"]), repository=st.sampled_from([SCRATCH, OTHER]))
@example(upload_id="<other-repository>", method="PUT", repository=SCRATCH)
@example(upload_id="<other-repository>", method="DELETE", repository=OTHER)
def test_upload_ids(target: Target, upload_id, method, repository):
    owner = OTHER if repository == SCRATCH else SCRATCH
    other_id, other_content = target.sessions[owner]
    own_id, own_content = target.sessions[repository]
    foreign = upload_id.startswith("<other-repository")
    upload_id = (upload_id.replace("<other-repository-upper>", other_id.upper())
                 .replace("<other-repository>", other_id).replace("<own>", own_id))
    assume(upload_id != own_id)
    path = f"/v2/{repository}/blobs/uploads/{quote(upload_id, safe='')}"
    with target.example() as guard:
        for content in (own_content, other_content, other_content + b"hostile append"):
            guard.must_not_store(repository, content)
            guard.must_not_store(owner, content)
        if method == "PUT":
            path += f"?digest={sha256(other_content)}"
        body = b"hostile append" if method in ("PATCH", "PUT") else None
        reply = guard.sent(call(target.port, method, path, body, {"Content-Type": "application/octet-stream"}))
        note(reply.describe())
        if foreign and "/" not in upload_id:
            expect_error(reply, {"BLOB_UPLOAD_UNKNOWN"})
        else:
            expect_error(reply, {"BLOB_UPLOAD_UNKNOWN", "BLOB_UPLOAD_INVALID", "UNSUPPORTED", "NAME_INVALID",
                                 "DIGEST_INVALID"})


# --------------------------------------------------------------------------------------------------
# (8) Manifests: invalid documents, wrong types, bad descriptors, encodings, Content-Type mismatches
# --------------------------------------------------------------------------------------------------

BAD_DESCRIPTOR_DIGESTS = ["sha256:" + "A" * 64, "sha256:" + "a" * 63, "sha256:" + "a" * 65, "md5:" + "a" * 32,
                          "sha256:" + "g" * 64, "", 1, None, [], {}, "sha512:" + "a" * 64, "sha256:" + "a" * 128,
                          " sha256:" + "a" * 64, "sha256:" + "a" * 64 + "\n"]
BAD_SIZES = [-1, "5", 5.5, None, True, False, [], {}, 2**63, 2**64, 10**30, -(2**63) - 1, "1e3"]
BAD_MEDIA_TYPES = [None, 1, "", [], {}, True]
NOT_AN_OBJECT = [None, "x", 1, [], True, 1.5]


def _descriptor_mutations(which: str = "any"):
    choices = {
        "digest": st.tuples(st.just("digest"), st.sampled_from(BAD_DESCRIPTOR_DIGESTS)),
        "size": st.tuples(st.just("size"), st.sampled_from(BAD_SIZES)),
        "mediaType": st.tuples(st.just("mediaType"), st.sampled_from(BAD_MEDIA_TYPES)),
        "missing-field": st.tuples(st.sampled_from(["-digest", "-size", "-mediaType"]), st.none()),
    }
    return choices[which] if which != "any" else st.one_of(*choices.values())


def _mutatedescriptor(descriptor: dict, mutation) -> dict:
    field_name, value = mutation
    descriptor = dict(descriptor)
    if field_name.startswith("-"):
        descriptor.pop(field_name[1:])
    else:
        descriptor[field_name] = value
    return descriptor


MANIFEST_DEFECTS = ["schemaVersion", "mediaType", "structure", "descriptor-digest", "descriptor-size",
                    "descriptor-mediaType", "descriptor-missing-field", "annotations", "subject", "encoding", "syntax",
                    "content-type", "not-an-object", "random-json", "bytes", "nesting"]


@st.composite
def invalid_manifests(draw, target: Target, kind: str) -> tuple[str, bytes, str | None]:
    """(what was done, body, Content-Type); every body is invalid by the OCI image and distribution specs."""
    image = json.loads(json.dumps(target.image_doc))
    image["annotations"] = {"fuzz": "not stored"}
    index = json.loads(json.dumps(target.index_doc))
    index["annotations"] = {"fuzz": "not stored"}
    base_name = draw(st.sampled_from(["image", "index"]))
    base = image if base_name == "image" else index
    media_type = base["mediaType"]
    if kind == "schemaVersion":
        value = draw(st.sampled_from([1, 3, 0, -2, "2", None, [2], {"v": 2}, True, 2.5, "two", "missing"]))
        if value == "missing":
            base.pop("schemaVersion")
        else:
            base["schemaVersion"] = value
        return f"schemaVersion={value!r}", json.dumps(base).encode(), media_type
    if kind == "mediaType":
        value = draw(st.sampled_from([1, [], {}, True, "text/plain", "application/octet-stream",
                                                        "application/vnd.docker.distribution.manifest.v1+json",
                                                        "application/vnd.docker.distribution.manifest.v1+prettyjws",
                                                        media_type + "; charset=utf-8", " " + media_type,
                                                        OCI_INDEX if base_name == "image" else OCI_MANIFEST]))
        base["mediaType"] = value
        return f"mediaType={value!r}", json.dumps(base).encode(), media_type
    if kind == "structure":
        if base_name == "image":
            key = draw(st.sampled_from(["config", "layers"]))
            value = draw(st.sampled_from(NOT_AN_OBJECT + ["missing", "element"] if key == "layers"
                                         else NOT_AN_OBJECT + ["missing"]))
        else:
            key = "manifests"
            value = draw(st.sampled_from([None, "x", 1, {}, True, "missing", "element"]))
        if value == "missing":
            base.pop(key)
        elif value == "element":
            base[key] = [draw(st.sampled_from(NOT_AN_OBJECT))]
        elif key in ("layers", "manifests") and value == []:
            base[key] = {}  # an empty list is valid; an object is not
        else:
            base[key] = value
        return f"{key}={value!r}", json.dumps(base).encode(), media_type
    if kind.startswith("descriptor"):
        mutation = draw(_descriptor_mutations(kind.split("-", 1)[1]))
        if base_name == "image":
            where = draw(st.sampled_from(["config", "layers"]))
            if where == "config":
                base["config"] = _mutatedescriptor(base["config"], mutation)
            else:
                base["layers"][1] = _mutatedescriptor(base["layers"][1], mutation)
        else:
            where = "manifests"
            base["manifests"][0] = _mutatedescriptor(base["manifests"][0], mutation)
        return f"{where} descriptor {mutation!r}", json.dumps(base).encode(), media_type
    if kind == "annotations":
        value = draw(st.sampled_from([[], "x", 1, True, {"a": 1}, {"a": None}, {"a": ["x"]}, {"a": {"b": "c"}}]))
        base["annotations"] = value
        return f"annotations={value!r}", json.dumps(base).encode(), media_type
    if kind == "subject":
        if draw(st.booleans()):
            value = draw(st.sampled_from(NOT_AN_OBJECT))
        else:
            value = _mutatedescriptor(descriptor(OCI_MANIFEST, target.image_body), draw(_descriptor_mutations()))
        base["subject"] = value
        return f"subject={value!r}", json.dumps(base).encode(), media_type
    if kind == "encoding":
        encoding = draw(st.sampled_from(["utf-16-le", "utf-16-be", "utf-16", "utf-32", "latin-1"]))
        base["annotations"] = {"fuzz": "not stored: café"}
        return f"encoded as {encoding}", json.dumps(base, ensure_ascii=False).encode(encoding), media_type
    if kind == "syntax":
        text = json.dumps(base)
        broken = draw(st.sampled_from([
            text.replace('"schemaVersion": 2', '"schemaVersion": 2, "x": NaN'),
            text.replace('"schemaVersion": 2', '"schemaVersion": 2, "x": Infinity'),
            text.replace('"schemaVersion": 2', '"schemaVersion": 2, "x": -Infinity'),
            text[:-1] + ", }", text[:-1], text + "}", text + " x", "// comment\n" + text,
            text.replace('"', "'"), text.replace('"schemaVersion"', "schemaVersion"),
        ]))
        return "broken JSON syntax", broken.encode(), media_type
    if kind == "content-type":
        drop_media_type = draw(st.booleans())
        content_type = draw(st.sampled_from(
            [t for t in MANIFEST_TYPES if t != media_type] + ["application/vnd.docker.distribution.manifest.v1+prettyjws"]
            + (["text/plain", "application/octet-stream"] if drop_media_type else [])))
        if drop_media_type:
            base.pop("mediaType")  # then the Content-Type decides, and it does not fit the document
            assume(not (content_type in (OCI_MANIFEST, DOCKER_MANIFEST) and base_name == "image"))
            assume(not (content_type in (OCI_INDEX, DOCKER_LIST) and base_name == "index"))
        return f"Content-Type {content_type} for a {media_type} document", json.dumps(base).encode(), content_type
    if kind == "not-an-object":
        value = draw(st.sampled_from([[], [base], "manifest", 2, None, True, 1.5]))
        return f"JSON {type(value).__name__}", json.dumps(value).encode(), media_type
    if kind == "random-json":
        value = draw(st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
            lambda children: st.lists(children, max_size=4) | st.dictionaries(
                st.sampled_from(["schemaVersion", "mediaType", "config", "layers", "manifests", "subject", "size",
                                 "digest", "annotations", "x"]), children, max_size=5),
            max_leaves=20))
        assume(not (isinstance(value, dict) and value.get("schemaVersion") == 2))
        return "random JSON", json.dumps(value).encode(), draw(st.sampled_from([media_type, None]))
    if kind == "bytes":
        value = draw(st.binary(max_size=200))
        return "random bytes", value, draw(st.sampled_from([media_type, None, "application/octet-stream"]))
    depth = draw(st.sampled_from([100, 1000, 10_000, 100_000]))
    shape = draw(st.sampled_from(["array", "object", "inside"]))
    if shape == "inside":
        depth = 100_000  # a valid manifest with a shallow extra field is a valid manifest
    if shape == "array":
        return f"array nested {depth} deep", b"[" * depth + b"]" * depth, media_type
    if shape == "object":
        return f"object nested {depth} deep", b'{"a":' * depth + b"1" + b"}" * depth, media_type
    nested = json.dumps(base)[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}"
    return f"valid manifest with a value nested {depth} deep", nested.encode(), media_type


@pytest.mark.parametrize("defect", MANIFEST_DEFECTS)
@settings(FUZZ, max_examples=20)
@given(data=st.data(), reference=st.sampled_from(["v1", "fuzz-tag", "<digest>"]))
def test_invalid_manifests_are_refused(target: Target, defect, data, reference):
    what, body, content_type = data.draw(invalid_manifests(target, defect))
    note(f"{what}: {body[:300]!r} as {content_type}")
    reference = sha256(body) if reference == "<digest>" else reference
    with target.example() as guard:
        guard.must_not_store(APP, body, manifest=True)
        headers = {"Content-Type": content_type} if content_type else {}
        reply = guard.sent(call(target.port, "PUT", f"/v2/{APP}/manifests/{reference}", body, headers))
        guard.log.insert(0, what)
        expect_error(reply, {"MANIFEST_INVALID", "MANIFEST_BLOB_UNKNOWN", "DIGEST_INVALID", "SIZE_INVALID"})


def test_deeply_nested_manifest_is_a_400_not_a_500(target: Target):
    """Found by test_invalid_manifests_are_refused; kept as a plain test so the failure reads directly."""
    body = b"[" * 100_000 + b"]" * 100_000
    with target.example() as guard:
        reply = guard.sent(call(target.port, "PUT", f"/v2/{APP}/manifests/deep", body, {"Content-Type": OCI_MANIFEST}))
        expect_error(reply, {"MANIFEST_INVALID"})


@pytest.mark.parametrize("where", ["artifactType", "config.mediaType", "layer.mediaType", "annotation-value"])
def test_lone_surrogates_in_a_valid_manifest_are_not_a_500(target: Target, where):
    """`"\\ud800"` is legal JSON escape syntax; the registry may refuse the manifest (400) or store it, never 500."""
    document = json.loads(json.dumps(target.image_doc))
    if where == "artifactType":
        document["artifactType"] = "application/x\ud800"
    elif where == "config.mediaType":
        document["config"]["mediaType"] = "application/x\udfff"
    elif where == "layer.mediaType":
        document["layers"][0]["mediaType"] = "\ud800"
    else:
        document["annotations"] = {"a": "\udc00"}
    body = json.dumps(document).encode()  # ensure_ascii: the surrogate travels as a \\u escape
    tag = f"surrogate-{where.replace('.', '-')}"
    with target.example() as guard:
        reply = guard.sent(check(call(target.port, "PUT", f"/v2/{APP}/manifests/{tag}", body,
                                      {"Content-Type": OCI_MANIFEST})))
        if reply.status == 201:  # accepted: take it away again so the stored data is as before
            check(call(target.port, "DELETE", f"/v2/{APP}/manifests/{sha256(body)}"))
            target.allowed_new_files.add(sha256(body).split(":")[1])
        else:
            expect_error(reply, {"MANIFEST_INVALID"})


@pytest.mark.parametrize("size,mode,valid_inside", [
    (MAX_MANIFEST, "content-length", False),
    (MAX_MANIFEST + 1, "content-length", True),
    (MAX_MANIFEST + 1, "chunked", True),
    (5 * 1024 * 1024, "content-length", False),
    (9 * 1024 * 1024, "chunked", False),
])
def test_manifest_size_limit(target: Target, size, mode, valid_inside):
    """Over 4 MiB is 413 with an OCI body, also for an otherwise valid manifest padded with whitespace;
    exactly 4 MiB is judged as a manifest (here: invalid JSON, so 400)."""
    if valid_inside:
        inner = json.dumps({**target.image_doc, "annotations": {"padded": "yes"}}).encode()
        body = inner + b" " * (size - len(inner))
    else:
        body = b"{" + b"x" * (size - 1)
    with target.example() as guard:
        guard.must_not_store(APP, body, manifest=True)
        if valid_inside:
            guard.must_not_store(APP, body.rstrip(), manifest=True)
        chunks = [body[i:i + (1 << 20)] for i in range(0, len(body), 1 << 20)] if mode == "chunked" else None
        reply = guard.sent(call(target.port, "PUT", f"/v2/{APP}/manifests/big", None if chunks else body,
                                {"Content-Type": OCI_MANIFEST}, chunks=chunks))
        if size > MAX_MANIFEST:
            expect_error(reply, {"MANIFEST_INVALID", "SIZE_INVALID"})
            assert reply.status == 413, reply.describe()
        else:
            expect_error(reply, {"MANIFEST_INVALID"})
            assert reply.status == 400, reply.describe()


# --------------------------------------------------------------------------------------------------
# (9) Methods a route does not have
# --------------------------------------------------------------------------------------------------

ODD_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND", "PROPPATCH", "MKCOL", "COPY",
               "MOVE", "LOCK", "UNLOCK", "SEARCH", "PURGE", "REPORT", "LINK", "UNLINK", "QUERY", "CONNECT"]
METHOD_ROUTES = {
    "/v2/": {"GET", "HEAD"},
    "/v2/_catalog": {"GET", "HEAD"},
    "/v2/{app}/tags/list": {"GET", "HEAD"},
    "/v2/{app}/manifests/v1": {"GET", "HEAD", "PUT", "DELETE"},
    "/v2/{app}/manifests/{image}": {"GET", "HEAD", "PUT", "DELETE"},
    "/v2/{app}/blobs/{layer}": {"GET", "HEAD", "DELETE"},
    "/v2/{app}/blobs/uploads/": {"POST"},
    "/v2/{app}/blobs/uploads": {"POST"},
    "/v2/{scratch}/blobs/uploads/{session}": {"GET", "PATCH", "PUT", "DELETE", "HEAD"},
    "/v2/{app}/referrers/{image}": {"GET", "HEAD"},
    "/healthz": {"GET", "HEAD"},
    "/readyz": {"GET", "HEAD"},
}
UNKNOWN_ENDPOINTS = ["/v2/{app}/unknown", "/v2/{app}/blobs", "/v2/{app}/manifests", "/v2/_catalog/", "/v3/",
                     "/v2/{app}/tags/list/x", "/"]


def _route_path(target: Target, route: str) -> str:
    session_id, _ = target.sessions[SCRATCH]
    return route.format(app=APP, scratch=SCRATCH, image=target.image, layer=sha256(target.big_layer),
                        session=session_id)


@pytest.mark.parametrize("route", sorted(METHOD_ROUTES))
def test_methods_a_route_does_not_have(target: Target, route):
    """Every other method: 405 with an OCI UNSUPPORTED body; nothing changes."""
    path = _route_path(target, route)
    failures = []
    with target.example() as guard:
        for method in ODD_METHODS:
            if method in METHOD_ROUTES[route]:
                continue
            body = target.image_body if method in ("POST", "PUT", "PATCH") else None
            reply = guard.sent(call(target.port, method, path, body, {"Content-Type": OCI_MANIFEST} if body else None))
            try:
                if method == "CONNECT":
                    # aiohttp reads a CONNECT target as host:port: when the path has no valid port (a digest's
                    # ':' does that) its parser refuses the request itself (the documented exception).
                    parser = (reply.status == 400 and "docker-distribution-api-version" not in reply.headers
                              and reply.header("Content-Type").startswith("text/plain"))
                    if not parser:
                        check(reply)
                    assert 400 <= reply.status < 500, reply.describe()
                    continue
                check(reply)
                assert reply.status == 405, f"expected 405: {reply.describe()}"
                assert reply.error_codes() == ["UNSUPPORTED"], reply.describe()
            except AssertionError as error:
                failures.append(str(error).split("\n")[0])
    assert not failures, f"{len(failures)} of the methods on {path}:\n  " + "\n  ".join(failures)


def test_405_answers_carry_an_allow_header(target: Target):
    """RFC 9110 15.5.6: "The origin server MUST generate an Allow header field in a 405 response"."""
    failures = []
    with target.example() as guard:
        for route in sorted(METHOD_ROUTES):
            path = _route_path(target, route)
            method = "PROPFIND"  # no route has it
            reply = guard.sent(check(call(target.port, method, path)))
            assert reply.status == 405, reply.describe()
            allow = {m.strip() for m in (reply.header("Allow") or "").split(",") if m.strip()}
            if not allow:
                failures.append(f"{method} {path[:80]} -> 405 without Allow")
            elif method in allow or not allow & METHOD_ROUTES[route]:
                failures.append(f"{method} {path[:80]} -> 405 with Allow: {sorted(allow)}")
    assert not failures, "\n  ".join(["405 answers without a correct Allow header:", *failures])


@pytest.mark.parametrize("route", UNKNOWN_ENDPOINTS)
def test_unknown_endpoints(target: Target, route):
    path = route.format(app=APP)
    with target.example() as guard:
        for method in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]:
            body = b"{}" if method in ("POST", "PUT", "PATCH") else None
            reply = guard.sent(check(call(target.port, method, path, body)))
            assert reply.status in (404, 405), reply.describe()
            if method != "HEAD":
                assert reply.error_codes() == ["UNSUPPORTED"], reply.describe()
