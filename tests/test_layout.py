"""The package layout holds: imports run one way between the wings, no module imports
itself back through others, and no module outgrows the house's size guideline.

Read from the source with `ast` (nothing is imported), function-level imports included.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "app")
MAX_LINES = 500

# wing -> the wings its modules may import (docs/ARCHITECTURE.md draws the picture).
# `engine` itself (the public `load_synth`, `Synth`, `ModelFileError`) counts as gansynth.
ALLOWED = {
    "util": {"util"},
    "gansynth": {"util", "gansynth"},
    "instrument": {"util", "gansynth", "instrument"},
    "devices": {"util", "gansynth", "instrument", "devices"},
    "songs": {"util", "gansynth", "instrument", "songs"},
    "commands": {"util", "gansynth", "instrument", "devices", "songs", "commands"},
    "training": {"util", "gansynth", "training"},
    "app": {"util", "gansynth", "instrument", "devices", "songs", "app"},
}


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of engine/ and app/."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Our modules that `name` imports anywhere in its file (`from pkg import module` counts
    as the module; `from module import symbol` as the module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:   # `import a.b.c` where c is a name
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def wing(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "app":
        return "app"
    return parts[1] if len(parts) > 1 else "gansynth"


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def test_every_module_belongs_to_a_wing():
    strays = [m for m in import_graph() if wing(m) not in ALLOWED]
    assert not strays, f"modules outside the wings {sorted(ALLOWED)}: {strays}"


def test_imports_run_one_way():
    wrong = [f"{m} -> {target}" for m, targets in sorted(import_graph().items()) for target in sorted(targets)
             if wing(target) not in ALLOWED.get(wing(m), ())]
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_no_import_cycles():
    """Tarjan's strongly connected components: any component of two or more is a cycle."""
    graph = import_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"



def test_modules_stay_small():
    paths = [p for package in (*PACKAGES, "benchmarks") for p in (ROOT / package).rglob("*.py")]
    long = {str(p.relative_to(ROOT)): n for p in paths
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them along a seam): {long}"
