"""How the process gives memory back to the system (glibc; elsewhere these do nothing): a buffer of some MiB is
mapped for its use alone and unmapped when freed, and freed pages are returned when asked."""

from __future__ import annotations

import ctypes

# Above the buffers of streaming (1 MiB blocks, 4 MiB hash reads: kept for reuse), below scrypt's 16 MiB.
MAPPED_FROM_BYTES = 8 << 20
TRIM_ABOVE_BYTES = 16 << 20  # free space a heap keeps at its top for the next blocks: twice the above, as glibc's own
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _libc_function(name: str, *argument_types):
    try:  # the process's own symbols, libc's among them: no `find_library`, which runs ldconfig
        function = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):  # not glibc
        return None
    function.argtypes = list(argument_types)
    function.restype = ctypes.c_int
    return function


_mallopt = _libc_function("mallopt", ctypes.c_int, ctypes.c_int)
malloc_trim = _libc_function("malloc_trim", ctypes.c_size_t)


def map_large_buffers() -> None:
    """glibc raises its mmap threshold to the size of the largest buffer freed so far, and from then on keeps such
    buffers in the allocating thread's heap: each password check (scrypt, 16 MiB, in one of two threads) would leave
    32 MiB resident for good. Pinned, buffers this large are mapped and unmapped each time (well under a millisecond
    beside a check's 50)."""
    if _mallopt is not None:
        _mallopt(_M_MMAP_THRESHOLD, MAPPED_FROM_BYTES)
        _mallopt(_M_TRIM_THRESHOLD, TRIM_ABOVE_BYTES)
