"""The two registries: error codes (each with one status) and status details (each with one type, severity and
text), the call sites that use them, and the README tables written from them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import connected_registry
from connected_registry.docs import detail_table, error_table, main
from connected_registry.oci.errors import ERROR_CODES, OciError
from connected_registry.status import STATUS_DETAILS, StatusBoard, describe, template_fields

PACKAGE = Path(connected_registry.__file__).parent
README = Path(__file__).parents[2] / "README.md"


def _calls() -> list[tuple[str, ast.Call]]:
    """Every call in the package, with the file and line it is on."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                found.append((f"{path.relative_to(PACKAGE)}:{node.lineno}", node))
    return found


def _name(node: ast.expr) -> str:
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""


def _literal_code(call: ast.Call) -> str | None:
    first = call.args[0] if call.args else None
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None


# --- error codes ---------------------------------------------------------------------------------------------

def test_an_error_is_answered_with_its_codes_one_status_and_sends_its_client_visible_code():
    error = OciError("PRECONDITION_FAILED", "precondition failed: the blob was stored after If-Unmodified-Since")
    assert (error.key, error.code, error.status) == ("PRECONDITION_FAILED", "UNSUPPORTED", 412)
    assert error.body() == {"errors": [{"code": "UNSUPPORTED",
                                        "message": "precondition failed: the blob was stored after If-Unmodified-Since"}]}
    plain = OciError("BLOB_UNKNOWN")
    assert (plain.code, plain.status, plain.message) == ("BLOB_UNKNOWN", 404, "blob unknown to registry")


def test_a_caller_cannot_choose_a_status_or_an_undeclared_code():
    with pytest.raises(TypeError):
        OciError("UNSUPPORTED", "no such endpoint", status=404)  # type: ignore[call-arg]
    with pytest.raises(KeyError):
        OciError("NO_SUCH_CODE")


def test_a_code_sent_as_another_sends_a_declared_code_under_a_status_of_its_own():
    for key, entry in ERROR_CODES.items():
        if entry.sent_as is None:
            continue
        sent = ERROR_CODES[entry.sent_as]
        assert sent.sent_as is None, f"{key} is sent as {entry.sent_as}, which is itself sent as another code"
        assert entry.status != sent.status, f"{key} means what {entry.sent_as} means: use {entry.sent_as}"


def test_the_status_overrides_of_before_keep_their_status_and_code_on_the_wire():
    """Each (status, code) pair clients saw through a `status=` override is now a code of its own."""
    before = {"ENDPOINT_UNKNOWN": (404, "UNSUPPORTED"), "PRECONDITION_FAILED": (412, "UNSUPPORTED"),
              "REQUEST_INVALID": (400, "UNSUPPORTED"), "NOT_ACTIVE": (409, "UNSUPPORTED"),
              "TOKEN_REQUEST_TOO_LARGE": (413, "UNSUPPORTED"), "RANGE_INVALID": (416, "SIZE_INVALID"),
              "BODY_TOO_LARGE": (413, "SIZE_INVALID"), "MANIFEST_TOO_LARGE": (413, "MANIFEST_INVALID"),
              "UPLOAD_RANGE_INVALID": (416, "BLOB_UPLOAD_INVALID")}
    assert {key: (OciError(key).status, OciError(key).code) for key in before} == before


def test_no_call_overrides_a_status_and_every_code_raised_is_declared():
    for where, call in _calls():
        if _name(call.func) == "OciError":
            assert not [k for k in call.keywords if k.arg == "status"], f"{where}: a status override"
            code = _literal_code(call)
            assert code is None or code in ERROR_CODES, f"{where}: {code} is not in ERROR_CODES"
        if _name(call.func) == "read_body":
            for keyword in call.keywords:
                assert keyword.value.value in ERROR_CODES, f"{where}: {keyword.value.value} is not in ERROR_CODES"


def test_storage_failures_are_both_error_codes_and_status_details():
    codes = {_literal_code(call) for _, call in _calls() if _name(call.func) == "StorageError"} - {None}
    assert codes and codes <= set(ERROR_CODES) and codes <= set(STATUS_DETAILS)


# --- status details ------------------------------------------------------------------------------------------

def test_a_status_detail_takes_its_type_severity_and_text_from_the_registry():
    board = StatusBoard(lambda: 0.0)
    board.set("PARENT_UNREACHABLE", error="parent https://p:8000 is unreachable")
    [detail] = board.details()
    assert (detail["type"], detail["severity"], detail["code"]) == ("Parent", "Warning", "PARENT_UNREACHABLE")
    assert detail["description"] == ("parent https://p:8000 is unreachable; content already here is still served, "
                                     "and sync resumes when the parent answers")


def test_setting_the_same_detail_again_is_no_change():
    board = StatusBoard(lambda: 0.0)
    changes = []
    board.on_change = lambda: changes.append(1)
    board.set("CATALOG_REFUSED", patterns="a/*")
    board.set("CATALOG_REFUSED", patterns="a/*")
    board.clear("CATALOG_REFUSED")
    assert len(changes) == 2 and not board.has("CATALOG_REFUSED")


def test_an_undeclared_code_or_a_wrong_field_fails_at_once():
    board = StatusBoard(lambda: 0.0)
    for misuse in (lambda: board.set("NO_SUCH_DETAIL"), lambda: board.clear("NO_SUCH_DETAIL"),
                   lambda: board.has("NO_SUCH_DETAIL")):
        with pytest.raises(KeyError, match="STATUS_DETAILS"):
            misuse()
    with pytest.raises(TypeError, match="endpoint"):
        board.set("PARENT_NOT_CONNECTED", parent="https://p")
    with pytest.raises(TypeError):
        board.set("CURSOR_EXPIRED", extra="x")
    assert board.details() == []


@pytest.mark.parametrize("code, fields, text", [
    ("CONFIG_INVALID", {"rejected": "/etc/cr.json", "kept": "", "problems": "a: bad; b: bad"},
     "/etc/cr.json was not applied, the last good configuration stays: a: bad; b: bad"),
    ("CONFIG_INVALID", {"rejected": "desired $version 7", "kept": " ($version 6)", "problems": "a: bad"},
     "desired $version 7 was not applied, the last good configuration ($version 6) stays: a: bad"),
    ("DISK_STORAGE_FULL", {"error": "commit: the data volume is full; free space or grow the volume",
                           "outlook": "; reads go on, and writes resume by themselves once the volume can take them"},
     "commit: the data volume is full; free space or grow the volume; reads go on, and writes resume by themselves "
     "once the volume can take them"),
    ("DISK_SCHEMA_NEWER", {"error": "written by version 9", "outlook": ""}, "written by version 9"),
    ("UPLOAD_REJECTED", {"operation": "push", "repository": "a/b", "reference": "v1", "error": "403 DENIED", "id": 4},
     "the parent refused push of a/b:v1: 403 DENIED. Later uploads of a/b wait: `connected-registry outbox retry 4` "
     "or `outbox drop 4`"),
])
def test_descriptions_read_as_they_did_where_they_were_written_out(code, fields, text):
    assert describe(code, fields) == text


def test_every_detail_set_with_a_literal_code_is_declared_with_exactly_those_fields():
    checked = 0
    for where, call in _calls():
        receiver = call.func.value if isinstance(call.func, ast.Attribute) else None
        if _name(call.func) not in ("set", "clear", "has") or receiver is None or _name(receiver) != "status":
            continue
        code = _literal_code(call)
        if code is None:
            continue
        assert code in STATUS_DETAILS, f"{where}: {code} is not in STATUS_DETAILS"
        if _name(call.func) == "set" and all(k.arg for k in call.keywords):
            fields = {k.arg for k in call.keywords}
            assert fields == template_fields(STATUS_DETAILS[code].template), f"{where}: fields of {code}"
        checked += 1
    assert checked > 20


def test_every_detail_has_a_known_type_and_severity():
    for code, kind in STATUS_DETAILS.items():
        assert kind.type in ("Config", "Parent", "Sync", "Disk", "Auth"), code
        assert kind.severity in ("Error", "Warning", "Information"), code


# --- the README ----------------------------------------------------------------------------------------------

def test_the_readme_tables_are_the_registries():
    readme = README.read_text()
    assert error_table() in readme, "README's error codes differ: paste `python -m connected_registry.docs errors`"
    assert detail_table() in readme, "README's status details differ: paste `python -m connected_registry.docs details`"


def test_the_tables_have_a_row_per_code(capsys):
    assert main(["errors"]) == 0
    assert capsys.readouterr().out.count("\n| `") == len(ERROR_CODES)
    assert main(["details"]) == 0
    assert capsys.readouterr().out.count("\n| `") == len(STATUS_DETAILS)
    assert main(["other"]) == 2
