"""A three-layer hierarchy of real `serve` processes shared by the command-line tests of one module."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.sync.hierarchy import Instance, start_instance

FRESH_REPORTS = {"reportInterval": "PT10S"}  # children report every 10 s, so the root's view is fresh


@dataclass
class Hierarchy:
    root: Instance
    middle: Instance
    leaf: Instance


@pytest.fixture(scope="module")
def hierarchy(tmp_path_factory):
    base = tmp_path_factory.mktemp("hierarchy")
    started = []
    try:
        root = start_instance(base, "factory-root", children=[("line1-middle", "ReadWrite")], extra=FRESH_REPORTS)
        started.append(root)
        middle = start_instance(base, "line1-middle", parent=root, mode="ReadWrite", repositories=["factory/*"],
                                children=[("line1-leaf", "ReadOnly")], extra=FRESH_REPORTS)
        started.append(middle)
        leaf = start_instance(base, "line1-leaf", parent=middle, repositories=["factory/*"], extra=FRESH_REPORTS)
        started.append(leaf)
        yield Hierarchy(root, middle, leaf)
    finally:
        for instance in reversed(started):
            instance.stop()


