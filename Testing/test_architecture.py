"""The core's shape (DEVELOPING.md, "Architecture"): stage packages in one direction, no import cycles, modules and
functions of a size a reader holds in mind, and a thin Slicer module file."""

from __future__ import annotations

import ast
import collections
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "PedTumorSeg" / "pedtumorseg"
#: the stages, lowest first: a module may import from its own stage and from stages before it, never after.
#: "root" is the package's top-level helpers (conventions, errors, arrays, geometry, files, progress); the
#: command line and the front ends sit on top of everything.
STAGES = ("root", "model", "inputs", "postprocess", "inference", "outputs", "evaluation", "phantoms", "ui",
          "pipeline", "front")
FRONT_ENDS = ("cli", "__main__", "web", "response", "cohort")
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60
LONG_ON_PURPOSE = "Long on purpose:"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(CORE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(CORE.rglob("*.py"))}


def _stage(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "root"
    if parts[1] in FRONT_ENDS:
        return "front"
    return parts[1] if (CORE / parts[1]).is_dir() else "root"


def _imports(module: str) -> set[str]:
    """Every core module ``module`` imports, at the top or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and (
                node.module == "pedtumorseg" or node.module.startswith("pedtumorseg.")):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.add(sub if sub in MODULES else node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in MODULES}
        assert not (isinstance(node, ast.ImportFrom) and node.level), f"{module}: relative import"
    return out - {module}


GRAPH = {m: _imports(m) for m in MODULES}


def test_every_stage_is_a_package_that_says_what_it_does():
    for stage in STAGES:
        if stage in ("root", "front"):
            continue
        init = CORE / stage / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and len(doc.splitlines()) <= 3, f"{init}: a short docstring says what the stage does"
    folders = {p.name for p in CORE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders <= set(STAGES) | set(FRONT_ENDS), f"a folder outside the stage map: {folders - set(STAGES)}"


def test_imports_go_one_way_between_stages():
    rank = {s: i for i, s in enumerate(STAGES)}
    upward = [(m, t) for m, targets in GRAPH.items() for t in targets
              if rank[_stage(t)] > rank[_stage(m)] and _stage(t) != _stage(m)]
    assert not upward, f"imports from a later stage: {upward}"


def test_no_import_cycles():
    state: dict[str, int] = collections.defaultdict(int)  # 0 new, 1 on the stack, 2 done
    cycles = []

    def visit(module, path):
        state[module] = 1
        for target in sorted(GRAPH.get(module, ())):
            if target == "pedtumorseg":  # the package itself (__version__)
                continue
            if state[target] == 1:
                cycles.append(path[path.index(target):] + [target])
            elif state[target] == 0:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(GRAPH):
        if state[module] == 0:
            visit(module, [module])
    assert not cycles, f"import cycles: {cycles[:3]}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_and_functions_stay_small(module):
    text = MODULES[module].read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{module}: over {MAX_MODULE_LINES} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            reason = LONG_ON_PURPOSE in (ast.get_docstring(node) or "")
            assert length <= MAX_FUNCTION_LINES or reason, \
                f"{module}.{node.name}: {length} lines (split it, or say why in '{LONG_ON_PURPOSE} ...')"


def test_the_slicer_module_file_is_thin():
    lines = (REPO / "PedTumorSeg" / "PedTumorSeg.py").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 300
