"""Prints the package's import graph, one line per top-level module or package (packages squashed): what it
imports of the package, counting imports inside functions and under TYPE_CHECKING. Run: .venv/bin/python
scripts/import_graph.py. The rules it must keep are the import-linter contracts in pyproject.toml."""

import grimp

graph = grimp.build_graph("connected_registry")
parts = sorted(graph.find_children("connected_registry"))
for part in parts:
    if graph.find_children(part):
        graph.squash_module(part)
for part in parts:
    imported = sorted(name.rsplit(".", 1)[-1] for name in graph.find_modules_directly_imported_by(part) if name != part)
    print(f"{part.rsplit('.', 1)[-1]:16} -> {' '.join(imported)}")
