"""A power cut, replayed at the storage's one durability boundary (`storage/disk.py`).

SIGKILL keeps the page cache, so it cannot show what a power cut loses. `JournalingDisk` performs the real
operations and journals what each one made durable; `rebuild` then builds the data directory a machine
would find after losing power right after journal entry `cut`:

- a file's bytes are durable as of its last `fsync_file` (read back through /proc at that moment); bytes
  written after it, and files never fsynced, are lost (an empty file is what we assume survives);
- a directory's entries are durable as of its last `fsync_dir`: the names then present, each with the bytes
  its file had durably at that moment (blob files are immutable once renamed into place). A rename or unlink
  not followed by a directory fsync may or may not have happened: we take the older listing. The uploads
  folder is never fsynced, so upload sessions vanish: the harshest case for the metadata that names them;
- SQLite: its WAL, page writes and fsyncs happen inside SQLite, not at our boundary. With journal_mode=WAL
  and synchronous=FULL SQLite guarantees that a transaction whose COMMIT returned survives a power cut and
  one that did not is rolled back (it tests that itself with its crash-simulating VFS). So we model SQLite
  by that guarantee: at every `commit` the journal keeps the committed database (`Connection.serialize`,
  which includes what is in the WAL), and the rebuilt volume holds the last one committed before the cut.
  What this replay tests is ours: the order of file fsyncs, renames, directory fsyncs and commits around
  each other and around the answers sent to clients.

Answers are journaled too (`ack`, by the test's client right after it read the 201), so "acknowledged
before the cut" is a prefix of the journal.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from connected_registry.storage import Disk


class JournalingDisk(Disk):
    def __init__(self, data_dir: str) -> None:
        self.data_dir = os.path.realpath(data_dir)
        self.journal: list[tuple] = []

    def _relative(self, path: str) -> str:
        return os.path.relpath(os.path.realpath(path), self.data_dir)

    def fsync_file(self, fd: int) -> None:
        super().fsync_file(fd)
        with open(f"/proc/self/fd/{fd}", "rb") as file:  # also for descriptors opened write-only
            content = file.read()
        self.journal.append(("fsync", os.fstat(fd).st_ino, content))

    def rename(self, source: str, target: str) -> None:
        super().rename(source, target)
        self.journal.append(("rename", os.stat(target).st_ino, self._relative(target)))

    def fsync_dir(self, path: str) -> None:
        super().fsync_dir(path)
        names = sorted(entry.name for entry in os.scandir(path) if entry.is_file(follow_symlinks=False))
        self.journal.append(("fsync_dir", self._relative(path), names))

    def commit(self, connection: sqlite3.Connection) -> None:
        super().commit(connection)
        self.journal.append(("commit", connection.serialize()))

    def ack(self, *what) -> None:
        self.journal.append(("ack", *what))


@dataclass
class Survivors:
    files: dict[str, bytes] = field(default_factory=dict)  # relative path -> durable bytes
    database: bytes | None = None
    acknowledged: list[tuple] = field(default_factory=list)


def survivors(journal: list[tuple], cut: int) -> Survivors:
    """What a power cut right after journal entry `cut - 1` leaves behind."""
    synced: dict[int, bytes] = {}  # inode -> bytes as of its last fsync
    named: dict[str, bytes] = {}  # path -> bytes of the file renamed there (not yet durable as an entry)
    durable_dirs: dict[str, dict[str, bytes]] = {}
    result = Survivors()
    for entry in journal[:cut]:
        kind = entry[0]
        if kind == "fsync":
            synced[entry[1]] = entry[2]
        elif kind == "rename":
            named[entry[2]] = synced.get(entry[1], b"")
        elif kind == "fsync_dir":
            directory, names = entry[1], entry[2]
            durable_dirs[directory] = {name: named.get(os.path.join(directory, name), b"") for name in names}
        elif kind == "commit":
            result.database = entry[1]
        elif kind == "ack":
            result.acknowledged.append(entry[1:])
    for directory, entries in durable_dirs.items():
        for name, content in entries.items():
            result.files[os.path.normpath(os.path.join(directory, name))] = content
    return result


def rebuild(journal: list[tuple], cut: int, target: Path) -> Survivors:
    """Write the data directory a machine finds after the cut; returns what survived."""
    left = survivors(journal, cut)
    target.mkdir(parents=True)
    for relative, content in left.files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    if left.database is not None:
        (target / "metadata.db").write_bytes(left.database)
    return left


def digest_matches(path: Path, digest: str) -> bool:
    algorithm, hex_part = digest.split(":", 1)
    hasher = hashlib.new(algorithm)
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            hasher.update(block)
    return hasher.hexdigest() == hex_part
