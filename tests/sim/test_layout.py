"""The shape of `sim/` (issue #20): no module over 300 lines, and no two modules that import each
other, directly or round a loop (every import counted: at the top, inside functions, for type hints)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SIM = Path(__file__).resolve().parents[2] / "sim"
MAX_LINES = 300


def module_name(path: Path) -> str:
    parts = path.relative_to(SIM.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(SIM.rglob("*.py"))}


def imports(name: str) -> set[str]:
    """The sim modules `name` imports (a package's names resolve to its modules where they are ones)."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in MODULES and t != name}
    return found


def cycle() -> list[str] | None:
    """One import loop among sim's modules, or None."""
    graph = {name: imports(name) for name in MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for name in sorted(graph):
        if name not in state and (found := visit(name)):
            return found
    return None


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_over_300_lines(name: str) -> None:
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{MODULES[name]} has {lines} lines: split it by what its parts do"


def test_no_import_cycle() -> None:
    loop = cycle()
    assert loop is None, f"sim modules import each other round a loop: {' -> '.join(loop or [])}"


def test_the_cycle_finder_finds_one(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = {"sim.a": {"sim.b"}, "sim.b": {"sim.c"}, "sim.c": {"sim.a"}}
    monkeypatch.setattr(f"{__name__}.MODULES", dict.fromkeys(fake, SIM))
    monkeypatch.setattr(f"{__name__}.imports", lambda name: fake[name])
    assert cycle() == ["sim.a", "sim.b", "sim.c", "sim.a"]
