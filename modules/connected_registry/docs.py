"""The README's tables of error codes, status details and audit record fields, written from the registries themselves
so the two cannot drift (unit tests compare them): `python -m connected_registry.docs errors|details|audit` prints
one."""

from __future__ import annotations

import sys

from connected_registry.audit import FIELDS
from connected_registry.oci.errors import ERROR_CODES
from connected_registry.status import STATUS_DETAILS


def markdown_table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def error_table() -> str:
    """One row per code: the status it is always answered with, and the code the JSON body carries."""
    return markdown_table(("Code", "Status", "Sent as", "Default message"), [
        (f"`{key}`", str(entry.status), f"`{entry.sent_as or key}`", entry.message)
        for key, entry in ERROR_CODES.items()
    ])


def detail_table() -> str:
    """One row per code; `{field}` in a description is filled where the detail is set."""
    return markdown_table(("Code", "Type", "Severity", "Description"), [
        (f"`{code}`", kind.type, kind.severity, kind.template.replace("<", "&lt;"))  # `<parent>` is no HTML tag
        for code, kind in STATUS_DETAILS.items()
    ])


def audit_table() -> str:
    """One row per field of an audit record, in the order written."""
    return markdown_table(("Field", "What"), [(f"`{name}`", text) for name, text in FIELDS.items()])


TABLES = {"errors": error_table, "details": detail_table, "audit": audit_table}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in TABLES:
        print(f"usage: python -m connected_registry.docs {'|'.join(TABLES)}", file=sys.stderr)
        return 2
    print(TABLES[argv[0]]())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
