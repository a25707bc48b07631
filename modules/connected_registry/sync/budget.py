"""What one walk of a manifest's tree may cost the parent (issue 14): an outbox entry going up, or a copy of one
tag or event coming down. The walk names each distinct manifest and blob once, whatever the nesting, and it has
a budget of requests and of time; past either it stops with `BudgetExceeded`, a failure of that content only (an
outbox entry is parked, a copy fails for its tag), never of the link.

The limits: the OCI cap on a manifest is 4 MiB and a descriptor takes about 100 bytes of it, so one manifest can
name some 40,000 others, and nesting multiplies that without end unless each distinct digest is visited once.
Visited once, a walk costs about one request per distinct manifest and blob. The largest real images need a few
thousand (an index of 20 platform and attestation manifests with 127 layers each, docker's limit, is ~2,600), so
MAX_REQUESTS is four times that, a quarter of what one manifest at the cap can name. MAX_SECONDS is what all of
those requests take at 50 ms each (a slow link), and some; the bytes of blobs do not count against it (a big layer
on a slow link takes what the link allows, and one the link cuts resumes where it stopped). MAX_DEPTH bounds the
nesting a walk follows (real images nest 2 or 3 deep: an index, its manifests, a signature of one), so that a
chain of thousands of indexes fails as content instead of exhausting the interpreter's stack."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from connected_registry.oci.manifest import MAX_MANIFEST_BYTES

SMALLEST_DESCRIPTOR_BYTES = 100
MAX_REQUESTS = MAX_MANIFEST_BYTES // SMALLEST_DESCRIPTOR_BYTES // 4  # 10,485
MAX_SECONDS = 600.0
MAX_DEPTH = 32


class BudgetExceeded(Exception):
    """A walk needs more than its budget: `limit` is "requests", "time" or "depth"."""

    def __init__(self, limit: str, message: str) -> None:
        self.limit = limit
        super().__init__(message)


class WalkBudget:
    def __init__(self, requests: int = MAX_REQUESTS, seconds: float = MAX_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_requests, self.max_seconds, self.clock = requests, seconds, clock
        self.requests = 0
        self.depth = 0
        self.started = clock()
        self.transfer_seconds = 0.0  # spent moving blobs: not counted

    def afford(self, requests: int) -> None:
        """A walk known to need `requests` in all: refused before it sends anything when that is over the budget."""
        if requests > self.max_requests:
            raise BudgetExceeded("requests", f"needs at least {requests} requests to the parent (one per distinct "
                                             f"manifest and blob), over the budget of {self.max_requests}")

    def spend(self, requests: int = 1) -> None:
        """Before `requests` more requests to the parent."""
        self.requests += requests
        self.afford(self.requests)
        if self.clock() - self.started - self.transfer_seconds > self.max_seconds:
            raise BudgetExceeded("time", f"took over the budget of {self.max_seconds:.0f} s of requests to the "
                                         "parent (blob transfers not counted)")

    def reach(self, depth: int) -> None:
        """A manifest `depth` levels below the one the walk started from."""
        if depth > MAX_DEPTH:
            raise BudgetExceeded("depth", f"nests manifests (indexes or referrers) over the budget of {MAX_DEPTH} "
                                          "levels")

    @contextmanager
    def deeper(self) -> Iterator[None]:
        """Into the manifests one manifest names (or that refer to it)."""
        self.depth += 1
        try:
            self.reach(self.depth)
            yield
        finally:
            self.depth -= 1

    @contextmanager
    def transferring(self) -> Iterator[None]:
        """Moving blobs: their bytes take what the link allows, so the time does not count (their requests do)."""
        started = self.clock()
        try:
            yield
        finally:
            self.transfer_seconds += self.clock() - started
