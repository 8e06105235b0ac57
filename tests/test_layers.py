"""The library's floors (issue 23), from its imports: module-level and function-level, read with `ast`.

Bottom to top: the library's parts (config, data, models, train, detector, results, resume, ...); the runs floor
(`algan.runs`, and `algan.timing`, the timing harness's runs); the sweep runner (`algan.sweep`); the claims
(`algan.claims`); the pages (`algan.pages`); the command line (`algan.cli`). A module imports only from its own
floor or below, and no module imports itself back through others."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "algan"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The algan modules `name` imports anywhere in its source (a name imported from a package counts as its
    submodule where one exists)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
            if not target or not target.split(".")[0] == "algan":
                continue
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in MODULES else target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "algan"}
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def floor(name: str) -> int:
    if name == "algan.cli":
        return 5
    if name == "algan.pages" or name.startswith("algan.pages."):
        return 4
    if name == "algan.claims":
        return 3
    if name == "algan.sweep":
        return 2
    if name in ("algan.runs", "algan.timing") or name.startswith("algan.runs."):
        return 1
    return 0


def test_the_graph_is_read():
    assert GRAPH["algan.sweep"] >= {"algan.runs.image", "algan.runs.feature", "algan.runs.tabular"}
    assert "algan.extract" in GRAPH["algan.runs.feature"]  # a function-level import counts


def test_no_import_cycle():
    state, path = {}, []

    def visit(name):
        state[name] = "open"
        path.append(name)
        for dep in sorted(GRAPH[name]):
            if state.get(dep) == "open":
                pytest.fail("import cycle: " + " -> ".join(path[path.index(dep):] + [dep]))
            if dep not in state:
                visit(dep)
        path.pop()
        state[name] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name)


@pytest.mark.parametrize("name", sorted(GRAPH))
def test_a_module_imports_only_its_floor_or_below(name):
    above = sorted(dep for dep in GRAPH[name] if floor(dep) > floor(name))
    assert not above, f"{name} (floor {floor(name)}) imports {above} from above it"


def test_the_sweep_imports_the_runs_floor_and_what_is_below():
    allowed = {"algan.config", "algan.data", "algan.data.common", "algan.results", "algan.detector"}
    deps = GRAPH["algan.sweep"]
    assert deps - allowed <= {m for m in MODULES if m.startswith("algan.runs.")}, deps - allowed


def test_runs_know_nothing_of_sweeps_claims_or_pages():
    for name in (m for m in GRAPH if floor(m) == 1):
        assert not {d for d in GRAPH[name] if floor(d) > 1}, name


def test_no_lazy_module_attributes():
    """No module answers for names it does not define (PEP 562's module __getattr__), but the package itself:
    `algan.ALGAN` and the rest of the public API load on first use, so that `algan --help` does not wait for
    torch (tests/test_cli.py); they name modules of the bottom floor only."""
    lazy = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        if any(isinstance(node, ast.FunctionDef) and node.name == "__getattr__" for node in tree.body):
            lazy.append(name)
    assert lazy == ["algan"]
    import algan

    assert {floor("algan" + target) for target in algan._LAZY.values()} == {0}
    assert all(("algan" + target) in MODULES for target in algan._LAZY.values())
