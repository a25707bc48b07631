"""Every OCI distribution error code, declared once with its HTTP status.

Handlers raise `OciError`; one middleware writes the JSON body
`{"errors": [{"code", "message", "detail"}]}`.
"""

from __future__ import annotations

from typing import Any

# code -> (HTTP status, the spec's default message)
ERROR_CODES: dict[str, tuple[int, str]] = {
    "BLOB_UNKNOWN": (404, "blob unknown to registry"),
    "BLOB_UPLOAD_INVALID": (400, "blob upload invalid"),
    "BLOB_UPLOAD_UNKNOWN": (404, "blob upload unknown to registry"),
    "DIGEST_INVALID": (400, "provided digest did not match uploaded content"),
    "MANIFEST_BLOB_UNKNOWN": (404, "manifest references a manifest or blob unknown to registry"),
    "MANIFEST_INVALID": (400, "manifest invalid"),
    "MANIFEST_UNKNOWN": (404, "manifest unknown to registry"),
    "NAME_INVALID": (400, "invalid repository name"),
    "NAME_UNKNOWN": (404, "repository name not known to registry"),
    "SIZE_INVALID": (400, "provided length did not match content length"),
    "UNAUTHORIZED": (401, "authentication required"),
    "DENIED": (403, "requested access to the resource is denied"),
    "UNSUPPORTED": (405, "the operation is unsupported"),
    "TOOMANYREQUESTS": (429, "too many requests"),
    # Not in the OCI list, spelled as CNCF distribution spells it.
    "PAGINATION_NUMBER_INVALID": (400, "invalid number of results requested"),
    # The control API's codes (SPEC 6, 11).
    "ALREADY_ACTIVE": (409, "this connected registry name is already active elsewhere"),
    "DEACTIVATED": (409, "this instance was deactivated"),
    "MODE_INCOMPATIBLE": (403, "a ReadOnly parent may only have ReadOnly children"),
    "CURSOR_EXPIRED": (410, "the event cursor is older than the events the parent keeps"),
    # SPEC 4's storage codes, answered when the data volume fails a write.
    "DISK_STORAGE_FULL": (507, "the registry's data volume is full"),
    "DISK_PERMISSION_DENIED": (503, "the registry cannot write its data volume"),
    "DISK_ERROR": (503, "the registry's data volume failed"),
    "DISK_SCHEMA_NEWER": (503, "the registry's data volume was written by a newer version"),
}


class OciError(Exception):
    """An error a client caused, answered with an OCI error body."""

    def __init__(
        self,
        code: str,
        message: str | None = None,
        *,
        status: int | None = None,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        default_status, default_message = ERROR_CODES[code]
        self.code = code
        self.message = message or default_message
        self.status = status or default_status
        self.detail = detail
        self.headers = headers or {}
        super().__init__(f"{self.code}: {self.message}")

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            error["detail"] = self.detail
        return {"errors": [error]}
