"""What can go wrong with the parent, one exception per kind: a caller catches the kind it knows how to
handle (a refused piece of content is parked or skipped, a link failure is retried with backoff, a refused
token is reported as such) and lets the others go up to the sync loop, which catches `ParentError`."""

from __future__ import annotations


class ParentError(Exception):
    """The parent could not be used; `status` is its HTTP answer when it gave one."""

    timed_out = False

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class ParentUnreachable(ParentError):
    """No answer, a link that broke, or an answer that means "not now" (5xx, 429): asked again with backoff;
    content already here is still served meanwhile."""

    def __init__(self, message: str, status: int | None = None, timed_out: bool = False) -> None:
        super().__init__(message, status)
        self.timed_out = timed_out


class ParentUnauthorized(ParentError):
    """The parent refused the sync token (or asked for authentication this client cannot give): nothing syncs
    until its password or actions are fixed."""


class ParentRefused(ParentError):
    """The parent will not give or take this piece of content (400, 403, 404, 405, 413...): the rest of a sync
    goes on without it."""


class ParentProtocolError(ParentError):
    """The parent answered what it must not: bytes that fail their digest, a malformed list, a status that makes
    no sense here. Like a refusal, it concerns one piece of content or one call."""
