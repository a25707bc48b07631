"""The audit trail's files on their own (audit.py): records numbered across restarts, segments bounded in size and
count, a line a crash cut short cut off, records read back oldest first in batches of a bounded size, nothing written
while disabled, and the README table of the fields."""

from __future__ import annotations

import json
import os
from pathlib import Path

from connected_registry.audit import FIELDS, AuditTrail
from connected_registry.docs import audit_table


def trail(directory: Path, enabled: bool = True, **limits) -> AuditTrail:
    return AuditTrail(str(directory), clock=lambda: 1_700_000_000.25, enabled=lambda: enabled,
                      registry=lambda: "factory-root", **limits)


def records(directory: Path) -> list[dict]:
    lines = [line for path in sorted(directory.glob("*.jsonl")) for line in path.read_text().splitlines()]
    return [json.loads(line) for line in lines]


def test_a_record_has_every_field_in_order_numbered_and_timed_by_the_instance_clock(tmp_path: Path):
    audit = trail(tmp_path / "audit")
    audit.record(action="pull", result="success", status=200, token="reader1", repository="factory/app")
    audit.record(action="login", result="failure", status=401, token="nobody")
    audit.close()
    first, second = records(tmp_path / "audit")
    assert list(first) == list(FIELDS)
    assert (first["seq"], second["seq"]) == (1, 2)
    assert first["time"] == "2023-11-14T22:13:20.250Z" and first["registry"] == "factory-root"
    assert first["repository"] == "factory/app" and first["digest"] is None
    assert oct(os.stat(tmp_path / "audit").st_mode & 0o777) == "0o700"
    assert all(oct(path.stat().st_mode & 0o777) == "0o600" for path in (tmp_path / "audit").glob("*.jsonl"))


def test_numbers_go_on_across_a_restart_and_a_line_cut_short_is_cut_off(tmp_path: Path):
    audit = trail(tmp_path / "audit")
    for _ in range(3):
        audit.record(action="push", result="success")
    audit.close()
    segment = next((tmp_path / "audit").glob("*.jsonl"))
    with open(segment, "ab") as file:
        file.write(b'{"seq":4,"time":"2023-')  # a crash in the middle of a write
    again = trail(tmp_path / "audit")
    again.record(action="delete", result="success")
    again.close()
    assert [record["seq"] for record in records(tmp_path / "audit")] == [1, 2, 3, 4]


def test_segments_are_bounded_in_size_and_count_and_named_by_their_first_record(tmp_path: Path):
    audit = trail(tmp_path / "audit", segment_bytes=2000, max_segments=3)
    for index in range(100):
        audit.record(action="pull", result="success", path=f"/v2/factory/app/manifests/{index}")
    audit.close()
    segments = sorted((tmp_path / "audit").glob("*.jsonl"))
    assert len(segments) == 3
    largest_record = max(len(line) for path in segments for line in path.read_bytes().splitlines(keepends=True))
    assert all(path.stat().st_size < 2000 + largest_record for path in segments)
    kept = records(tmp_path / "audit")
    assert [record["seq"] for record in kept] == list(range(kept[0]["seq"], 101))  # the newest, without a gap
    assert [int(path.stem) for path in segments] == [json.loads(path.read_text().splitlines()[0])["seq"]
                                                    for path in segments]


def test_records_read_back_oldest_first_in_batches_within_the_size_given(tmp_path: Path):
    audit = trail(tmp_path / "audit", segment_bytes=3000)
    for index in range(40):
        audit.record(action="pull", result="success", reference=str(index))
    batches, after = [], 0
    while (batch := audit.read_after(after, 1500)) is not None:
        assert len(batch.json_array()) <= 1500
        batches.append(batch)
        after = batch.last
    numbers = [json.loads(line)["seq"] for batch in batches for line in batch.lines]
    assert numbers == list(range(1, 41)) and len(batches) > 2
    assert [json.loads(b.json_array())[0]["seq"] for b in batches] == [b.first for b in batches]
    audit.record(action="pull", result="success")
    assert audit.read_after(after, 1500).first == 41  # the next read goes on from where the last stopped
    audit.mark_sent(41)
    assert trail(tmp_path / "audit").sent_mark() == 41


def test_nothing_is_written_while_disabled(tmp_path: Path):
    audit = trail(tmp_path / "audit", enabled=False)
    audit.record(action="login", result="failure", token="reader1")
    audit.close()
    assert not (tmp_path / "audit").exists()
    assert audit.read_after(0, 1000) is None


def test_the_readme_table_is_the_records_fields():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert audit_table() in readme, "README's audit fields differ: paste `python -m connected_registry.docs audit`"
