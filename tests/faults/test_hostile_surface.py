"""Hostile input at the authenticated surface: the token service (/oauth2/token, /acr/oauth2/token), the
control API (/acr/connected/v1) and /v2 with credentials and tokens from another instance. This extends
tests/api/test_hostile_input.py (which fuzzes /v2 of an open instance) with the same raw client
(tests/support/raw_client.py) and hypothesis settings (tests/support/hostile.py).

Two real instances with the same token names and passwords but their own signing keys: `factory-root`
(the target, with a ReadWrite child `line1-child` registered) and `other-root`. Every answer: never a 5xx,
every 4xx a JSON error body; a 200 from the token service grants nothing beyond the credentials; without
a child's sync token nothing may activate, deactivate, report or read events for it; and after every
example the stored content and the children's activations are exactly as before. With the child's own
sync token (a child gone wrong) its requests may change its own record, but still never answer 5xx; a report it
posts is refused (400 naming the field) unless it fits the report schema, and whatever is kept prints clean in
`connected-registry list`. The status and the hierarchy answer only `metadata/read` on `*` or the instance's own
gateway rights, and a deactivated child's feed and report stay closed whatever X-Instance-Id it sends, or none."""

from __future__ import annotations

import base64
import json
import os
import socket
import time
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from tests.faults.conftest import figures
from tests.support.hostile import FUZZ
from tests.support.http import basic, request
from tests.support.oci import image_manifest, sha256
from tests.support.processes import wait_until
from tests.support.raw_client import Reply, call
from tests.sync.hierarchy import OPERATOR, READER, WRITER, start_instance, sync_token_for
from tests.sync.instance_api import CONTROL, ONE_REPOSITORY_READER, OTHER_CHILD_SYNC, activate, add_tokens, operator_cli

REPOSITORY = "factory/app"
CHILD = "line1-child"
INSTANCE_ID = "11111111-2222-3333-4444-555555555555"
DEACTIVATED_CHILD, DEACTIVATED_ID = "line2-child", "22222222-3333-4444-5555-666666666666"
REPORTING_CHILD, REPORTING_ID = "line3-child", "33333333-4444-5555-6666-777777777777"  # posts hostile reports


class Surface:
    def __init__(self, base: Path) -> None:
        self.root = start_instance(base, "factory-root", children=[(CHILD, "ReadWrite"), (DEACTIVATED_CHILD, "ReadOnly"),
                                                                  (REPORTING_CHILD, "ReadOnly")])
        add_tokens(self.root, ONE_REPOSITORY_READER, OTHER_CHILD_SYNC)
        self.other = start_instance(base, "other-root")
        self.port = self.root.process.port
        writer = basic(*WRITER)
        config, layer = b'{"os":"linux"}', os.urandom(4096)
        for blob in (config, layer):
            assert request(f"{self.root.url}/v2/{REPOSITORY}/blobs/uploads/?digest={sha256(blob)}", "POST", blob,
                           writer).status == 201
        self.manifest = image_manifest(config, [layer])
        assert request(f"{self.root.url}/v2/{REPOSITORY}/manifests/v1", "PUT", self.manifest,
                       {**writer, "Content-Type": "application/vnd.oci.image.manifest.v1+json"}).status == 201
        self.sync_name, self.sync_password, _ = sync_token_for(CHILD, "ReadWrite")
        activation = {"instanceId": INSTANCE_ID, "deviceId": "edge-1",
                      "mode": "ReadWrite", "version": "1", "messageTtl": "P2D", "repositories": ["factory/*"]}
        reply = request(f"{self.root.url}/acr/connected/v1/registries/{CHILD}/activate", "POST",
                        json.dumps(activation).encode(), basic(self.sync_name, self.sync_password))
        assert reply.status == 200, reply.body
        # A second child, deactivated by its operator: its old instance must find everything closed.
        activate(self.root, DEACTIVATED_CHILD, DEACTIVATED_ID)
        self.deactivated_sync = basic(*sync_token_for(DEACTIVATED_CHILD)[:2])
        reply = request(f"{self.root.url}/acr/connected/v1/registries/{DEACTIVATED_CHILD}/deactivate", "POST", b"",
                        self.deactivated_sync)
        assert reply.status == 200, reply.body
        activate(self.root, REPORTING_CHILD, REPORTING_ID)
        self.reporting_sync = basic(*sync_token_for(REPORTING_CHILD)[:2])
        # Tokens: ours for reading factory/app, and the other instance's for pushing (same names, other key).
        self.own_pull = self._token(self.root.url, READER, f"repository:{REPOSITORY}:pull")
        self.other_push = self._token(self.other.url, WRITER, f"repository:{REPOSITORY}:pull,push")
        self.other_refresh = self._refresh(self.other.url, WRITER)
        self.other_gateway = self._token(self.other.url, WRITER, f"gateway:{CHILD}:config_write")
        self.one_repository_catalog = self._token(self.root.url, ONE_REPOSITORY_READER[:2], "registry:catalog:*")
        self.before = self.snapshot()

    @staticmethod
    def _token(url: str, credentials: tuple[str, str], scope: str) -> str:
        reply = request(f"{url}/acr/oauth2/token?{urlencode({'scope': scope})}", headers=basic(*credentials))
        assert reply.status == 200, reply.body
        return reply.json()["token"]

    @staticmethod
    def _refresh(url: str, credentials: tuple[str, str]) -> str:
        form = urlencode({"grant_type": "password", "username": credentials[0], "password": credentials[1],
                          "service": "other-root", "access_type": "offline", "client_id": "fuzz"}).encode()
        reply = request(f"{url}/acr/oauth2/token", "POST", form, {"Content-Type": "application/x-www-form-urlencoded"})
        assert reply.status == 200, reply.body
        return reply.json()["refresh_token"]

    def snapshot(self) -> dict:
        reader = basic(*OPERATOR)
        tree = request(f"{self.root.url}/acr/connected/v1/registries", headers=reader).json()
        children = sorted((c["name"], c["activation"]["status"], c["activation"]["instanceId"])
                          for c in tree["children"])
        return {
            "catalog": request(f"{self.root.url}/v2/_catalog", headers=reader).json(),
            "tags": request(f"{self.root.url}/v2/{REPOSITORY}/tags/list", headers=basic(*READER)).json(),
            "manifest": request(f"{self.root.url}/v2/{REPOSITORY}/manifests/v1", headers=basic(*READER)).body,
            "children": children,
        }

    def assert_unchanged(self, what: str) -> None:
        after = self.snapshot()
        assert after == self.before, f"stored state changed after {what}: {after} != {self.before}"
        assert self.root.process.process.poll() is None, "the registry died"


@pytest.fixture(scope="module")
def surface(tmp_path_factory):
    surface = Surface(tmp_path_factory.mktemp("surface"))
    try:
        yield surface
    finally:
        surface.other.stop()
        surface.root.stop()


def check_answer(reply: Reply) -> Reply:
    """Never a 5xx; every 4xx (but HEAD) has a JSON body {"errors": [{"code", "message"}]}."""
    figures["hostile: requests sent (authenticated surface)"] += 1
    assert reply.status < 500, f"5xx: {reply.describe()}"
    if 400 <= reply.status < 500 and reply.method != "HEAD":
        document = json.loads(reply.body)
        assert isinstance(document.get("errors"), list) and document["errors"], reply.describe()
        for error in document["errors"]:
            assert isinstance(error.get("code"), str) and error["code"].isupper(), reply.describe()
            assert isinstance(error.get("message"), str) and error["message"], reply.describe()
    return reply


def jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


# --- strategies ------------------------------------------------------------------------------------

HOSTILE_TEXT = st.one_of(
    st.sampled_from(["", "..", "../../etc/passwd", "%2e%2e%2f", "\x00", "*", "repository:*:*", "registry:catalog:*",
                     f"repository:{REPOSITORY}:*", f"repository:{REPOSITORY}:pull,push,delete",
                     f"gateway:{CHILD}:config_write", "gateway:factory-root:config_write", "a" * 5000,
                     "repository:../x:pull", "repository:FACTORY/APP:push", "true", "false", "-1", "1e309"]),
    st.text(max_size=60),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
ACTIVATION_FIELDS = st.fixed_dictionaries({}, optional={
    "instanceId": st.one_of(st.just("11111111-2222-3333-4444-555555555555"), JSON_VALUES),
    "deviceId": st.one_of(st.just("edge-1"), JSON_VALUES),
    "mode": st.one_of(st.sampled_from(["ReadWrite", "ReadOnly", "readwrite"]), JSON_VALUES),
    "messageTtl": st.one_of(st.sampled_from(["P2D", "P0D", "PT1S", "P9999D", "x", ""]), JSON_VALUES),
    "repositories": st.one_of(st.just(["factory/*"]), JSON_VALUES),
    "activation": st.one_of(st.just({"instanceId": "11111111-2222-3333-4444-555555555555"}), JSON_VALUES),
    "children": JSON_VALUES,
})
BODIES = st.one_of(
    ACTIVATION_FIELDS.map(lambda document: json.dumps(document).encode()),
    JSON_VALUES.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=200),
    st.sampled_from([b"[" * 100_000, b'{"a":' * 50_000, b"{" + b" " * 1_000_000 + b"}", b"\xff\xfe", b"null"]),
).map(lambda body: Body(body))


class Body(bytes):
    """A request body that prints short in hypothesis' reports."""

    def __repr__(self) -> str:
        return f"Body({bytes(self[:80])!r}{'...' if len(self) > 80 else ''} {len(self)} bytes)"


def _credentials(surface: Surface) -> dict[str, dict]:
    """Everything but the child's own sync token, which may legitimately change its own record."""
    return {
        "none": {},
        "garbage": {"Authorization": "Basic !!!"},
        "basic-garbage": {"Authorization": "Basic " + base64.b64encode(os.urandom(20)).decode()},
        "wrong-password": basic("fuzz-nobody", "nope"),
        "reader": basic(*READER),
        "writer": basic(*WRITER),
        "operator": basic(*OPERATOR),
        "one-repository-reader": basic(*ONE_REPOSITORY_READER[:2]),
        "one-repository-catalog-jwt": {"Authorization": f"Bearer {surface.one_repository_catalog}"},
        "other-child-sync": basic(*OTHER_CHILD_SYNC[:2]),
        "own-pull-jwt": {"Authorization": f"Bearer {surface.own_pull}"},
        "other-push-jwt": {"Authorization": f"Bearer {surface.other_push}"},
        "other-gateway-jwt": {"Authorization": f"Bearer {surface.other_gateway}"},
        "other-refresh-as-bearer": {"Authorization": f"Bearer {surface.other_refresh}"},
        "alg-none": {"Authorization": "Bearer " + _unsigned(jwt_claims(surface.own_pull) | {"access": [
            {"type": "repository", "name": REPOSITORY, "actions": ["*"]}]})},
        "long": {"Authorization": "Bearer " + "A" * 8000},
    }


def _unsigned(claims: dict) -> str:
    encode = lambda part: base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()  # noqa: E731
    return f"{encode({'alg': 'none', 'typ': 'JWT'})}.{encode(claims)}."


# --- the token service ---------------------------------------------------------------------------

ALLOWED_ACTIONS = {"reader": {"pull"}, "writer": {"pull", "push", "delete", "*"}, "operator": set(),
                   "one-repository-reader": {"pull"}, "other-child-sync": {"pull"}}


@settings(FUZZ, max_examples=120)
@given(data=st.data(), path=st.sampled_from(["/oauth2/token", "/acr/oauth2/token"]),
       method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
       query=st.dictionaries(st.sampled_from(["service", "scope", "account", "offline_token", "client_id", "x"]),
                             HOSTILE_TEXT, max_size=4),
       form=st.dictionaries(st.sampled_from(["grant_type", "username", "password", "refresh_token", "scope",
                                             "service", "access_token"]), HOSTILE_TEXT, max_size=5),
       content_type=st.sampled_from(["application/x-www-form-urlencoded", "application/json", "text/plain", None]))
def test_token_service_answers_hostile_requests_without_5xx_or_extra_grants(surface, data, path, method, query, form,
                                                                            content_type):
    credentials = _credentials(surface)
    who = data.draw(st.sampled_from(sorted(credentials)))
    if data.draw(st.booleans()):
        form["refresh_token"] = data.draw(st.sampled_from([surface.other_refresh, surface.own_pull, "x.y.z"]))
        form.setdefault("grant_type", "refresh_token")
    body = urlencode(form).encode() if method != "GET" else None
    headers = dict(credentials[who])
    if content_type and body is not None:
        headers["Content-Type"] = content_type
    target = path + ("?" + urlencode(query) if query else "")
    note(f"{who} {method} {target} {body!r}")
    reply = check_answer(call(surface.port, method, target, body, headers))
    if reply.status == 200:
        document = json.loads(reply.body)
        token = document.get("token") or document.get("access_token")
        # GET takes Basic credentials; POST only the form's (fuzzed, never valid) or a refresh token (never ours)
        allowed = ALLOWED_ACTIONS.get(who, set()) if method == "GET" else set()
        for entry in jwt_claims(token).get("access", []):
            if entry["type"] == "repository":
                assert set(entry["actions"]) <= allowed, f"{who} was granted more: {reply.describe()}"
            assert entry["type"] != "gateway" or not entry["actions"], f"gateway rights granted: {reply.describe()}"
    figures["hostile: token service inputs tried"] += 1


def test_tokens_and_refresh_tokens_of_another_instance_are_refused(surface):
    port = surface.port
    for name, header in [("push", surface.other_push), ("gateway", surface.other_gateway)]:
        auth = {"Authorization": f"Bearer {header}"}
        reply = check_answer(call(port, "POST", f"/v2/{REPOSITORY}/blobs/uploads/", b"", auth))
        assert reply.status == 401, reply.describe()
        reply = check_answer(call(port, "GET", f"/v2/{REPOSITORY}/manifests/v1", None, auth))
        assert reply.status == 401, reply.describe()
        reply = check_answer(call(port, "POST", f"/acr/connected/v1/registries/{CHILD}/deactivate", b"{}", auth))
        assert reply.status in (401, 403), reply.describe()
    form = urlencode({"grant_type": "refresh_token", "refresh_token": surface.other_refresh,
                      "service": "factory-root", "scope": f"repository:{REPOSITORY}:push"}).encode()
    reply = check_answer(call(port, "POST", "/acr/oauth2/token", form,
                              {"Content-Type": "application/x-www-form-urlencoded"}))
    assert reply.status == 401, reply.describe()
    # Our own pull token reaches no further than its scope.
    own = {"Authorization": f"Bearer {surface.own_pull}"}
    assert check_answer(call(port, "GET", f"/v2/{REPOSITORY}/manifests/v1", None, own)).status == 200
    assert check_answer(call(port, "GET", "/v2/factory/secret/manifests/v1", None, own)).status == 401
    reply = check_answer(call(port, "PUT", f"/v2/{REPOSITORY}/manifests/v2", surface.manifest,
                              {**own, "Content-Type": "application/vnd.oci.image.manifest.v1+json"}))
    assert reply.status == 401 and 'error="insufficient_scope"' in reply.header("WWW-Authenticate"), reply.describe()
    forged = {"Authorization": "Bearer " + _unsigned(jwt_claims(surface.own_pull) | {"access": [
        {"type": "repository", "name": REPOSITORY, "actions": ["*"]}]})}
    assert check_answer(call(port, "DELETE", f"/v2/{REPOSITORY}/manifests/v1", None, forged)).status == 401
    surface.assert_unchanged("foreign tokens")


# --- the control API -----------------------------------------------------------------------------

CONTROL_ROUTES = [
    ("POST", "/acr/connected/v1/registries/{child}/activate"),
    ("POST", "/acr/connected/v1/registries/{child}/deactivate"),
    ("POST", "/acr/connected/v1/registries/{child}/status"),
    ("GET", "/acr/connected/v1/registries/{child}/events"),
    ("GET", "/acr/connected/v1/registries"),
    ("GET", "/acr/connected/v1/status"),
    ("GET", "/acr/connected/v1/info"),
    ("POST", "/acr/connected/v1/sync"),
    ("GET", "/acr/connected/v1/outbox"),
    ("POST", "/acr/connected/v1/outbox/{entry}/retry"),
    ("DELETE", "/acr/connected/v1/outbox/{entry}"),
]
CHILD_NAMES = st.one_of(st.sampled_from([CHILD, CHILD.upper(), "factory-root", "other-root", "..", "%2e%2e",
                                         "line1-child%00", "a" * 41, "abcd", "x" * 300, "line1-child/../x"]),
                        st.text(min_size=1, max_size=40))
QUERY_NUMBERS = st.one_of(st.sampled_from(["", "-1", "0", "1", "1e3", "99999999999999999999", "²", " 1", "0x10"]),
                          st.integers(0, 2**64).map(str))


@settings(FUZZ, max_examples=150)
@given(data=st.data(), route=st.sampled_from(CONTROL_ROUTES), child=CHILD_NAMES, body=BODIES,
       entry=st.sampled_from(["1", "0", "-1", "abc", "9" * 30]),
       query=st.dictionaries(st.sampled_from(["cursor", "limit", "wait"]), QUERY_NUMBERS, max_size=3),
       method_swap=st.sampled_from([None, None, None, "GET", "PUT", "PATCH"]))
def test_control_api_without_the_childs_token_changes_nothing(surface, data, route, child, body, entry, query,
                                                              method_swap):
    credentials = _credentials(surface)
    who = data.draw(st.sampled_from(sorted(credentials)))
    method, template = route
    method = method_swap or method
    path = template.format(child=quote(child, safe=""), entry=entry)
    if query.get("wait"):
        query["wait"] = "1"  # a long poll may only ever wait; keep the run short
    target = path + ("?" + urlencode(query) if query else "")
    note(f"{who} {method} {target} {body[:200]!r}")
    reply = check_answer(call(surface.port, method, target, body if method != "GET" else None,
                              {**credentials[who], "Content-Type": "application/json"}))
    if "/registries/" in template:
        assert not (200 <= reply.status < 300), f"{who} reached a child's endpoint: {reply.describe()}"
    if template in INSTANCE_VIEWS and 200 <= reply.status < 300:
        assert who in INSTANCE_READERS, f"{who} read the instance's status or hierarchy: {reply.describe()}"
    surface.assert_unchanged(f"{who} {method} {target}")
    figures["hostile: control API inputs tried"] += 1


@settings(FUZZ, max_examples=100)
@given(route=st.sampled_from(CONTROL_ROUTES[:4]), body=BODIES,
       query=st.dictionaries(st.sampled_from(["cursor", "limit"]), QUERY_NUMBERS, max_size=2),
       instance=st.sampled_from([None, INSTANCE_ID, INSTANCE_ID, DEACTIVATED_ID, "someone-else"]))
def test_a_child_gone_wrong_gets_4xx_not_5xx_and_breaks_nothing(surface, route, body, query, instance):
    method, template = route
    target = template.format(child=CHILD, entry="1") + "?" + urlencode({**query, "wait": "0"})
    headers = {**basic(surface.sync_name, surface.sync_password), "Content-Type": "application/json"}
    if instance is not None:
        headers["X-Instance-Id"] = instance
    reply = check_answer(call(surface.port, method, target, body if method != "GET" else None, headers))
    note(reply.describe()[:500])
    # Whatever the child sent, the parent's own view of its hierarchy and content still answers.
    assert request(f"{surface.root.url}/acr/connected/v1/registries", headers=basic(*OPERATOR)).status == 200
    assert request(f"{surface.root.url}/v2/{REPOSITORY}/manifests/v1", headers=basic(*READER)).body == surface.manifest
    figures["hostile: control API inputs tried"] += 1


INSTANCE_VIEWS = ("/acr/connected/v1/status", "/acr/connected/v1/registries")
INSTANCE_READERS = {"reader", "writer", "operator"}  # metadata/read on *, or gateway rights on factory-root


def test_status_and_hierarchy_answer_only_metadata_read_on_everything_or_the_instances_gateway_rights(surface):
    credentials = _credentials(surface)
    for who, headers in sorted(credentials.items()):
        for path in INSTANCE_VIEWS:
            reply = check_answer(call(surface.port, "GET", path, None, headers))
            if who in INSTANCE_READERS:
                assert reply.status == 200, reply.describe()
                continue
            figures["hostile: control API status and hierarchy without metadata/read on * tried"] += 1
            assert reply.status in (401, 403, 429), f"{who}: {reply.describe()}"
            figures["hostile: control API status and hierarchy without metadata/read on * held"] += 1


def test_a_deactivated_childs_feed_and_report_stay_closed_whatever_instance_id_it_names(surface):
    events = f"/acr/connected/v1/registries/{DEACTIVATED_CHILD}/events"
    report = f"/acr/connected/v1/registries/{DEACTIVATED_CHILD}/status"
    for instance in (None, "", DEACTIVATED_ID, INSTANCE_ID, "someone-else", "x" * 300):
        headers = dict(surface.deactivated_sync)
        if instance is not None:
            headers["X-Instance-Id"] = instance
        for method, target, body in (("GET", events, None), ("GET", f"{events}?cursor=1&wait=0", None),
                                     ("POST", report, json.dumps({"name": DEACTIVATED_CHILD}).encode())):
            figures["hostile: control API deactivated child's feed and report tried"] += 1
            reply = check_answer(call(surface.port, method, target, body, headers))
            assert reply.status in (400, 409), reply.describe()
            figures["hostile: control API deactivated child's feed and report held"] += 1
    # The active child, too, is answered only when it names itself.
    reply = check_answer(call(surface.port, "GET", f"/acr/connected/v1/registries/{CHILD}/events", None,
                              basic(surface.sync_name, surface.sync_password)))
    assert reply.status == 400 and "X-Instance-Id" in reply.body.decode(), reply.describe()
    assert (DEACTIVATED_CHILD, "Inactive", DEACTIVATED_ID) in surface.snapshot()["children"]


ESCAPE_TEXT = st.one_of(
    st.sampled_from(["\x1b]0;pwned\x07", "\x1b[2J\x1b[H", "\x9b31mred", "ok\r\nline9-fake  ReadOnly  Active  Online",
                     "\x00", "\x7f", "tab\there", "plain", "line9-fake", "Online", "Error", "ReadOnly"]),
    st.text(max_size=20),
)
PRINTABLE_TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=40)  # kept, and listed
REPORT_PATHS = ["name", "mode", "version", "connectionState", "lastSyncTime", "activation", "activation.status",
                "parent", "parent.endpoint", "sync", "sync.pendingUploads", "sync.rejectedUploads", "sync.operation",
                "statusDetails", "statusDetails.0", "statusDetails.0.severity", "statusDetails.0.description",
                "cache", "garbageCollection.lastRun", "children", "children.0", "children.0.name",
                "children.0.connectionState", "children.0.activation", "children.0.report",
                "children.0.report.statusDetails", "children.0.report.lastSyncTime", "children.0.children",
                "aNewerField", "aNewerField.deeper"]


def _well_formed_report() -> dict:
    """What a real child with one child of its own reports."""
    return {"version": "0.1.0", "name": REPORTING_CHILD, "mode": "ReadWrite",
            "activation": {"status": "Active", "instanceId": REPORTING_ID, "since": "2026-01-01T00:00:00Z"},
            "connectionState": "Online", "parent": {"endpoint": "http://factory-root:8080", "kind": "connected"},
            "lastSyncTime": "2026-01-01T00:00:00Z", "sync": {"pendingUploads": 0, "rejectedUploads": 0},
            "statusDetails": [{"type": "Sync", "severity": "Warning", "code": "DOWNLOAD_FAILED",
                               "description": "factory/app: retried in 5 s"}],
            "cache": {"hits": 0}, "garbageCollection": {"lastRun": None},
            "children": [{"name": "line1-leaf", "mode": "ReadOnly", "activation": {"status": "Active"},
                          "connectionState": "Online", "reportedAt": "2026-01-01T00:00:00Z",
                          "report": {"name": "line1-leaf", "statusDetails": []}, "children": []}]}


def _set(document: dict, path: str, value) -> None:
    """Put `value` at a dotted path ("children.0.name"); nothing when an earlier change took the path away."""
    *parents, last = path.split(".")
    node = document
    for part in parents:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and node and part.isdigit():
            node = node[0]
        else:
            return
    if isinstance(node, dict):
        node[last] = value
    elif isinstance(node, list) and node:
        node[0] = value


@settings(FUZZ, max_examples=60)
@given(changes=st.lists(st.tuples(st.sampled_from(REPORT_PATHS),
                                  st.one_of(ESCAPE_TEXT, PRINTABLE_TEXT, PRINTABLE_TEXT, JSON_VALUES)),
                        min_size=1, max_size=2))
def test_a_childs_hostile_report_is_refused_naming_the_field_or_lists_without_control_characters(surface, changes):
    report = _well_formed_report()
    for path, value in changes:
        _set(report, path, value)
    note(repr(report)[:600])
    figures["hostile: control API reports with escapes or wrong types tried"] += 1
    reply = check_answer(call(surface.port, "POST", f"/acr/connected/v1/registries/{REPORTING_CHILD}/status",
                              json.dumps(report).encode(),
                              {**surface.reporting_sync, "X-Instance-Id": REPORTING_ID,
                               "Content-Type": "application/json"}))
    assert reply.status in (204, 400), reply.describe()
    if reply.status == 400:
        message = json.loads(reply.body)["errors"][0]["message"]
        assert message.startswith("malformed report: ") and ": " in message.removeprefix("malformed report: "), message
        assert not CONTROL.search(message), message
    else:
        listing = operator_cli(surface.root, "list", env={"COLUMNS": "200"})
        assert listing.returncode == 0 and "Traceback" not in listing.stderr, listing.stderr
        assert not CONTROL.search(listing.stdout), listing.stdout
        assert not any(line.startswith("line9-fake") for line in listing.stdout.splitlines()), listing.stdout
        figures["hostile: control API reports kept, then listed without control characters"] += 1
    figures["hostile: control API reports with escapes or wrong types held"] += 1


# --- headers and slow clients --------------------------------------------------------------------


@pytest.mark.parametrize("headers", [
    {f"X-Fuzz-{n}": "x" for n in range(200)},
    {"Authorization": "Basic " + "A" * 8100},
    {"X-Forwarded-Host": "a" * 8000, "X-Forwarded-Proto": "gopher"},
    {"Range": "bytes=" + ",".join(f"{n}-{n}" for n in range(1500))},
    {"Content-Type": "application/vnd.oci.image.manifest.v1+json; " + "x=y;" * 1500},
])
def test_oversized_and_odd_headers_are_refused_cleanly(surface, headers):
    for target in (f"/v2/{REPOSITORY}/manifests/v1", "/acr/oauth2/token", "/acr/connected/v1/status"):
        try:
            reply = call(surface.port, "GET", target, None, headers)
        except ConnectionError:
            continue  # refused by the HTTP parser before anything ran
        assert reply.status < 500, reply.describe()
    assert request(f"{surface.root.url}/v2/{REPOSITORY}/manifests/v1", headers=basic(*READER)).status == 200
    figures["hostile: oversized header cases"] += 1


def test_an_upload_session_flood_is_capped_and_holds_up_no_other_token(surface):
    """A pusher that POSTs upload sessions without end (each a file and a row, kept for a day): past its token's cap
    every POST is 429 naming the cap, nothing more is kept, and another token still starts uploads."""
    writer, opened, flood = basic(*WRITER), [], 200
    stored = surface.snapshot()

    def open_sessions() -> int:
        return request(f"{surface.root.url}/acr/connected/v1/status", headers=basic(*OPERATOR)).json()[
            "uploadSessions"]["open"]

    try:
        for _ in range(flood):
            reply = check_answer(call(surface.port, "POST", f"/v2/{REPOSITORY}/blobs/uploads/", b"", writer))
            if reply.status == 202:
                opened.append(reply.header("Location"))
                continue
            assert reply.status == 429 and "cap is 64 per token" in reply.body.decode(), reply.describe()
            figures["attack: upload-session flood held"] += 1
        figures["attack: upload-session flood tried"] += flood - len(opened)
        assert len(opened) == 64
        other = request(f"{surface.root.url}/v2/{REPOSITORY}/blobs/uploads/", "POST", b"",
                        basic(surface.sync_name, surface.sync_password))
        assert other.status == 202, other.body
        opened.append(other.headers["Location"])
        during = open_sessions()
    finally:
        for location in opened:
            assert request(location, "DELETE", headers=writer).status == 204
    assert during - open_sessions() == 64 + 1  # the status document counted them, and they are gone
    assert surface.snapshot() == stored, "stored state changed after an upload-session flood"


def test_slow_clients_do_not_hold_up_the_others(surface):
    """Hundreds of connections that send half a request and then nothing: everyone else is still served."""
    stalled = []
    try:
        for number in range(300):
            sock = socket.create_connection(("127.0.0.1", surface.port), timeout=5)
            sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: Basic " if number % 2 else
                         b"PATCH /v2/factory/app/blobs/uploads/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nab")
            stalled.append(sock)
        started = time.monotonic()
        reply = request(f"{surface.root.url}/v2/{REPOSITORY}/manifests/v1", headers=basic(*READER), timeout=10)
        assert reply.status == 200 and time.monotonic() - started < 5
        figures["hostile: slow connections held open while others were served"] += len(stalled)
    finally:
        for sock in stalled:
            sock.close()
    wait_until(lambda: request(f"{surface.root.url}/readyz").status == 200, timeout=10, what="the registry")
