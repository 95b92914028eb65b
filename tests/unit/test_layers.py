"""The import directions of lib/raylm: every import points down the layer table below, and no
module imports itself back through others (lazy imports inside functions count too).

    python -m pytest tests/unit/test_layers.py      # names each forbidden import, file:line

A layer is a list of module prefixes (the longest matching prefix places a module). A module may
import from lower layers, and within its own layer only from its own package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[2] / "lib"

# Lowest first. docs/architecture.md draws the same table.
LAYERS: list[list[str]] = [
    ["raylm.configkit", "raylm.fsutil", "raylm.reaper", "raylm.console"],
    # typed sections of the recipe schema
    [
        "raylm.serve.schemas",
        "raylm.tune.settings",
        "raylm.train.settings",
        "raylm.task_settings",
        "raylm.quality_settings",
        "raylm.tracking_settings",
    ],
    ["raylm.config"],
    ["raylm.runtime"],
    ["raylm.generate", "raylm.constrain", "raylm.data"],
    ["raylm.models"],
    ["raylm.preflight"],
    ["raylm.eval", "raylm.span_reader"],
    ["raylm.tasks"],
    ["raylm.plan"],
    ["raylm.recipe"],
    ["raylm.runfolder", "raylm.runstate"],
    ["raylm.tracking"],
    ["raylm.train.tensor_parallel", "raylm.train.lm_loss", "raylm.train.elastic"],
    [
        "raylm.train.flops",
        "raylm.train.deepspeed",
        "raylm.train.manifest",
        "raylm.train.ledger",
        "raylm.train.preemption",
        "raylm.train.strided",
    ],
    ["raylm.train.pipeline"],
    ["raylm.train.checkpoint", "raylm.train.resume"],
    ["raylm.train.loop"],
    ["raylm.train.driver"],
    ["raylm.stages"],
    ["raylm.serve.openai_compat"],
    ["raylm.serve.api", "raylm.serve.models"],
    ["raylm.serve.app"],
    ["raylm.serve.launch"],
    ["raylm.serve.cli"],
    ["raylm.tune.space"],
    ["raylm.tune.report"],
    ["raylm.tune.search"],
    ["raylm.tune.cli"],
    ["raylm.jobs"],
    ["raylm.runs", "raylm.predict"],
    ["raylm.cli"],
]


# Packages split across layers: their __init__ imports nothing, so any layer may import it.
SPLIT_PACKAGES = ("raylm.serve", "raylm.train", "raylm.tune")


def _module_name(path: Path, lib: Path = LIB) -> str:
    parts = list(path.relative_to(lib).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> tuple[int, str]:
    """(layer index, matching prefix) of a raylm module."""
    if module in SPLIT_PACKAGES:
        return (-1, module)
    best = None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (
                best is None or len(p) > len(best[1])
            ):
                best = (i, p)
    if best is None:
        raise AssertionError(f"{module}: not placed in any layer of tests/unit/test_layers.py")
    return best


def imports_of(path: Path, lib: Path = LIB) -> list[tuple[str, int]]:
    """Every raylm module `path` imports (module level, inside functions, under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module_name(path, lib).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.startswith("raylm")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            if not base.startswith("raylm"):
                continue
            for alias in node.names:  # `from raylm import stages` imports a module
                sub = f"{base}.{alias.name}"
                known = (lib / Path(*sub.split("."))).with_suffix(".py").is_file() or (
                    lib / Path(*sub.split(".")) / "__init__.py"
                ).is_file()
                out.append((sub if known else base, node.lineno))
    return out


def graph(lib: Path = LIB) -> dict[str, list[tuple[str, int]]]:
    files = sorted((lib / "raylm").rglob("*.py"))
    return {_module_name(p, lib): imports_of(p, lib) for p in files}


def _package(module: str) -> str:
    return ".".join(module.split(".")[:2])


def violations(edges: dict[str, list[tuple[str, int]]]) -> list[str]:
    """Imports that point up the table, or sideways into another package of the same layer."""
    bad = []
    for src, targets in edges.items():
        if src == "raylm":
            continue
        src_layer, _ = layer_of(src)
        for dst, line in targets:
            if dst == "raylm" or dst == src:
                continue
            dst_layer, _ = layer_of(dst)
            up = dst_layer > src_layer
            sideways = dst_layer == src_layer and _package(dst) != _package(src)
            if up or sideways:
                bad.append(f"{src}:{line} imports {dst} ({'up' if up else 'sideways'})")
    return bad


def cycles(edges: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """Import cycles between modules (each found once, from its first module in order)."""
    adj = {s: sorted({d for d, _ in t if d in edges and d != s}) for s, t in edges.items()}
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in adj[node]:
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for node in adj:
        if node not in state:
            visit(node, [node])
    return found


def test_imports_point_down_the_layers():
    edges = graph()
    assert sum(len(t) for t in edges.values()) > 100  # the scan sees the real imports
    assert violations(edges) == []


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_the_check_catches_a_back_edge(tmp_path):
    """A copy of lib/ with one forbidden import added fails both checks, naming the line."""
    import shutil

    shutil.copytree(LIB / "raylm", tmp_path / "raylm")
    target = tmp_path / "raylm" / "data" / "collate.py"
    target.write_text(target.read_text() + "\n\ndef _x():\n    from raylm.train import loop\n")
    edges = graph(tmp_path)
    bad = violations(edges)
    assert any(b.startswith("raylm.data.collate:") and "raylm.train.loop (up)" in b for b in bad)
    assert any("raylm.data.collate" in c and "raylm.train.loop" in c for c in cycles(edges))


@pytest.mark.parametrize("module", sorted(graph()))
def test_every_module_has_a_layer(module):
    if module != "raylm":
        layer_of(module)
    if module in SPLIT_PACKAGES:
        assert graph()[module] == [], f"{module}/__init__.py must import nothing"
