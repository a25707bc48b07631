"""Errors that cross layers and must be importable without heavy dependencies."""

from __future__ import annotations


class ConfigInvalid(Exception):
    """A desired document that does not validate; `problems` names each bad field (CONFIG_INVALID)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))
