"""SQLite (and PostgreSQL, which runs these same queries): the event log (what the parent's feed serves its
children) and the outbox (what goes up to the parent)."""

from __future__ import annotations

import sqlite3

from connected_registry.storage.records import EventRecord

_EVENT_KEYS = ("seq", "type", "repository", "tag", "digest", "mediaType", "size", "subject", "origin", "time")
_OUTBOX_KEYS = ("id", "repository", "operation", "tag", "digest", "state", "attempts", "lastError", "created")


class LogReads:
    db: sqlite3.Connection

    def has_events_after(self, seq: int) -> bool:
        return self.db.execute("SELECT 1 FROM events WHERE seq > ? LIMIT 1", (seq,)).fetchone() is not None

    def events(self, after: int, limit: int) -> list[dict]:
        rows = self.db.execute("SELECT seq, type, repository, tag, digest, media_type, size, subject, origin, time "
                               "FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit))
        return [{key: value for key, value in zip(_EVENT_KEYS, row) if value is not None} for row in rows]

    def event_head(self) -> int:
        return self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]

    def last_event_before(self, time: str) -> int | None:
        return self.db.execute("SELECT MAX(seq) FROM events WHERE time < ?", (time,)).fetchone()[0]

    def outbox(self) -> list[dict]:
        rows = self.db.execute("SELECT id, repository, operation, tag, digest, state, attempts, last_error, created "
                               "FROM outbox ORDER BY id")
        return [dict(zip(_OUTBOX_KEYS, row)) for row in rows]

    def undelivered_tag(self, repository: str, tag: str) -> bool:
        return self.db.execute("SELECT 1 FROM outbox WHERE repository = ? AND tag = ? LIMIT 1",
                               (repository, tag)).fetchone() is not None


class LogWrites:
    db: sqlite3.Connection

    def add_event(self, event: EventRecord) -> None:
        self.db.execute(
            "INSERT INTO events (type, repository, tag, digest, media_type, size, subject, origin, time) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (event.type, event.repository, event.tag, event.digest, event.media_type, event.size, event.subject,
             event.origin, event.time),
        )

    def remove_events_through(self, seq: int) -> int:
        return self.db.execute("DELETE FROM events WHERE seq <= ?", (seq,)).rowcount

    def add_outbox_entry(self, repository: str, operation: str, tag: str | None, digest: str, created: str) -> None:
        self.db.execute("INSERT INTO outbox (repository, operation, tag, digest, created) VALUES (?, ?, ?, ?, ?)",
                        (repository, operation, tag, digest, created))

    def remove_outbox_entry(self, entry_id: int) -> bool:
        return self.db.execute("DELETE FROM outbox WHERE id = ?", (entry_id,)).rowcount == 1

    def park_outbox_entry(self, entry_id: int, error: str) -> None:
        self.db.execute("UPDATE outbox SET state = 'parked', attempts = attempts + 1, last_error = ? WHERE id = ?",
                        (error[:2000], entry_id))

    def retry_outbox_entry(self, entry_id: int) -> bool:
        return self.db.execute("UPDATE outbox SET state = 'pending', last_error = NULL WHERE id = ? AND "
                               "state = 'parked'", (entry_id,)).rowcount == 1
