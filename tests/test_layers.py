"""The import graph of src/apis: layers that only import downward, and no circle.

Every ``import`` and ``from … import`` counts, at module level or inside a function (a deferred import
that runs upward is still a knot), so a new module must be placed in ``LAYERS`` before it can land.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import apis
from apis.names import DISPLAY_NAMES, NEEDS_GT, POINT_STRATEGIES
from apis.selection.points import STRATEGIES

SRC = Path(apis.__file__).parent

# Bottom first. A module belongs to the longest prefix that names it; it may import its own layer
# (without closing a circle) and any layer below, never one above.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("vocabulary and primitives", ("apis", "apis.names", "apis.atomic", "apis.geometry", "apis.memory",
                                   "apis.mask_checks", "apis.data.records", "apis.data.images",
                                   "apis.data.transforms")),
    ("data, store and run layout", ("apis.data", "apis.store", "apis.layout", "apis.cost", "apis.queue",
                                    "apis.oracle")),
    ("models and selection maths", ("apis.models", "apis.selection.uncertainty", "apis.selection.points")),
    ("passes over images", ("apis.batches", "apis.train", "apis.evaluate", "apis.selection", "apis.pseudo_boxes",
                            "apis.yardsticks", "apis.pseudo_masks", "apis.shape_prior")),
    ("configuration", ("apis.config", "apis.splits", "apis.config_doc")),
    ("export", ("apis.export", "apis.box_start")),
    # The loop's parts: who answers, what each model learns from, what each step measures, the simulated
    # reviewer, what a step asks about. None may import apis.loop.
    ("parts of a run", ("apis.answerers", "apis.mask_policy", "apis.step_measures", "apis.simulated_review",
                        "apis.step_plan")),
    ("runs", ("apis.loop", "apis.afis", "apis.distributed", "apis.supervision")),
    ("experiments, reports and the server", ("apis.experiment", "apis.report", "apis.serve")),
    ("command line", ("apis.cli", "apis.__main__")),
]


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = ["apis", *path.relative_to(SRC).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """module → the project modules it imports (``from apis.x import name`` counts as apis.x.name if that
    is a module, else apis.x)."""
    mods = modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base_name = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    base_name = node.module or ""
                names = [f"{base_name}.{a.name}" for a in node.names] or [base_name]
            else:
                continue
            targets.update(t for n in names if n.split(".")[0] == "apis" and (t := resolve(n)) is not None)
        targets.discard(mod)
        graph[mod] = targets
    return graph


def layer_of(mod: str) -> int:
    best, best_len = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (mod == p or mod.startswith(p + ".")) and len(p) > best_len:
                best, best_len = i, len(p)
    if best is None or (best_len == len("apis") and mod != "apis"):
        pytest.fail(f"{mod} is in no layer of tests/test_layers.py: add it to LAYERS where it belongs")
    return best


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of imports as [a, b, …, a], None if the graph has none (depth-first search)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                return [*path[path.index(t):], t]
            if t not in state and (c := visit(t)):
                return c
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_graph_is_read():
    g = import_graph()
    # Spot checks that the walker sees module-level, deferred and relative imports.
    assert "apis.store" in g["apis.loop"]
    assert "apis.names" in g["apis.config"]
    assert {"apis.serve.auth", "apis.serve.commit"} <= g["apis.serve.app"]


def test_no_import_runs_upward():
    upward = [f"{m} ({LAYERS[layer_of(m)][0]}) imports {t} ({LAYERS[layer_of(t)][0]})"
              for m, targets in import_graph().items() for t in sorted(targets) if layer_of(t) > layer_of(m)]
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " → ".join(cycle)


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_vocabulary_matches_the_implementations():
    assert tuple(STRATEGIES) == POINT_STRATEGIES
    assert set(DISPLAY_NAMES) == set(POINT_STRATEGIES)
    assert NEEDS_GT <= set(POINT_STRATEGIES)
