"""Repository names and tags, validated by the OCI distribution spec's patterns."""

from __future__ import annotations

import re

from connected_registry.oci.errors import OciError

# The distribution spec's <name> pattern; each path component a lowercase alnum run with separators.
NAME_RE = re.compile(
    r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$"
)
TAG_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")
# Docker's reference grammar caps a full name at 255 characters; keep names well inside file-name limits.
MAX_NAME_LENGTH = 255


def validate_name(name: str) -> str:
    if len(name) > MAX_NAME_LENGTH or not NAME_RE.match(name):
        raise OciError(
            "NAME_INVALID",
            "invalid repository name: use lowercase letters, digits and separators (. _ __ -), "
            "path components joined by '/', at most 255 characters",
            detail={"name": name[:300]},
        )
    return name


def is_tag(value: str) -> bool:
    return bool(TAG_RE.match(value))


def validate_tag(tag: str, code: str = "MANIFEST_INVALID") -> str:
    """A bad tag is MANIFEST_INVALID on a push and MANIFEST_UNKNOWN (it cannot exist) on a read."""
    if not TAG_RE.match(tag):
        raise OciError(
            code,
            "invalid tag: up to 128 characters of letters, digits, '_', '.' and '-', not starting with '.' or '-'",
            detail={"tag": tag[:300]},
        )
    return tag
