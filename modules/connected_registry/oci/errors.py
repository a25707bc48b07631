"""Every error code, declared once with its one HTTP status (as distribution's registry/api/errcode does).

Handlers raise `OciError(code)`; one middleware writes the JSON body
`{"errors": [{"code", "message", "detail"}]}`. No caller chooses a status: a new meaning is a new code here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ErrorCode:
    """One code: its HTTP status, its default message, and the code string the body carries.

    `sent_as` is set where a narrower meaning keeps a code clients already see: the /v2 API answers only the
    OCI spec's codes (clients act on them), and the control API's answers stay as children parse them."""

    status: int
    message: str
    sent_as: str | None = None


ERROR_CODES: dict[str, ErrorCode] = {
    # The OCI distribution spec's codes.
    "BLOB_UNKNOWN": ErrorCode(404, "blob unknown to registry"),
    "BLOB_UPLOAD_INVALID": ErrorCode(400, "blob upload invalid"),
    "BLOB_UPLOAD_UNKNOWN": ErrorCode(404, "blob upload unknown to registry"),
    "DIGEST_INVALID": ErrorCode(400, "provided digest did not match uploaded content"),
    "MANIFEST_BLOB_UNKNOWN": ErrorCode(404, "manifest references a manifest or blob unknown to registry"),
    "MANIFEST_INVALID": ErrorCode(400, "manifest invalid"),
    "MANIFEST_UNKNOWN": ErrorCode(404, "manifest unknown to registry"),
    "NAME_INVALID": ErrorCode(400, "invalid repository name"),
    "NAME_UNKNOWN": ErrorCode(404, "repository name not known to registry"),
    "SIZE_INVALID": ErrorCode(400, "provided length did not match content length"),
    "UNAUTHORIZED": ErrorCode(401, "authentication required"),
    "DENIED": ErrorCode(403, "requested access to the resource is denied"),
    "UNSUPPORTED": ErrorCode(405, "the operation is unsupported"),
    "TOOMANYREQUESTS": ErrorCode(429, "too many requests"),
    # Not in the OCI list, spelled as CNCF distribution spells it.
    "PAGINATION_NUMBER_INVALID": ErrorCode(400, "invalid number of results requested"),
    "UNKNOWN": ErrorCode(500, "unknown error"),  # ours, not the client's: the log has the traceback
    # Narrower meanings, each with its own status, sent as the OCI code clients already know.
    "RANGE_INVALID": ErrorCode(416, "the requested range is outside the blob", sent_as="SIZE_INVALID"),
    "UPLOAD_RANGE_INVALID": ErrorCode(416, "the chunk does not continue the upload where it stands",
                                      sent_as="BLOB_UPLOAD_INVALID"),
    "PRECONDITION_FAILED": ErrorCode(412, "a precondition of the request does not hold", sent_as="UNSUPPORTED"),
    "MANIFEST_TOO_LARGE": ErrorCode(413, "the manifest is larger than its limit", sent_as="MANIFEST_INVALID"),
    "BODY_TOO_LARGE": ErrorCode(413, "the body is larger than its limit", sent_as="SIZE_INVALID"),
    "TOKEN_REQUEST_TOO_LARGE": ErrorCode(413, "the token request is larger than its limit", sent_as="UNSUPPORTED"),
    "REQUEST_INVALID": ErrorCode(400, "the request is malformed: its body, a header or a parameter",
                                 sent_as="UNSUPPORTED"),
    "ENDPOINT_UNKNOWN": ErrorCode(404, "no such endpoint on this registry", sent_as="UNSUPPORTED"),
    # The control API's codes (SPEC 6, 11).
    "NOT_ACTIVE": ErrorCode(409, "the connected registry is not active here: activate it first",
                            sent_as="UNSUPPORTED"),
    "ALREADY_ACTIVE": ErrorCode(409, "this connected registry name is already active elsewhere"),
    "DEACTIVATED": ErrorCode(409, "this instance was deactivated"),
    "MODE_INCOMPATIBLE": ErrorCode(403, "a ReadOnly parent may only have ReadOnly children"),
    "CURSOR_EXPIRED": ErrorCode(410, "the event cursor is older than the events the parent keeps"),
    # Offline bundles (issue 17), through the control API: what did not verify, named in the message.
    "BUNDLE_INVALID": ErrorCode(400, "the bundle is not a readable OCI layout or connected-registry bundle"),
    "BUNDLE_UNTRUSTED": ErrorCode(403, "the bundle's signature does not verify with the trusted key"),
    "BUNDLE_TAMPERED": ErrorCode(400, "content of the bundle does not match its digest or its signed manifest"),
    "BUNDLE_INCOMPLETE": ErrorCode(400, "the bundle ended early: what arrived is kept, give it again whole"),
    # SPEC 4's storage codes, answered when the data volume fails a write.
    "DISK_STORAGE_FULL": ErrorCode(507, "the registry's data volume is full"),
    "DISK_PERMISSION_DENIED": ErrorCode(503, "the registry cannot write its data volume"),
    "DISK_ERROR": ErrorCode(503, "the registry's data volume failed"),
    "DISK_SCHEMA_NEWER": ErrorCode(503, "the registry's data volume was written by a newer version"),
}


class OciError(Exception):
    """An error answered with an OCI error body (the client's, but for UNKNOWN).

    `key` is the registry's code (it fixes the status); `code` is what the body carries."""

    def __init__(
        self,
        key: str,
        message: str | None = None,
        *,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        entry = ERROR_CODES[key]
        self.key = key
        self.code = entry.sent_as or key
        self.status = entry.status
        self.message = message or entry.message
        self.detail = detail
        self.headers = headers or {}
        super().__init__(f"{self.code}: {self.message}")

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            error["detail"] = self.detail
        return {"errors": [error]}
