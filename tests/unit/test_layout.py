"""The package's layers: every import of fadm_lightning goes down (README, "What is where"),
with no exception, and no module's imports lead back to it.

Read from the source (``ast``), so a lazy import inside a function counts as much as one at the
top of a file. A module may import its own package and the layers below its own; two packages
of one layer do not import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "fadm_lightning"

# bottom first; a name is a subpackage or a top-level module of fadm_lightning
LAYERS = [
    {"config", "media", "sampler", "schedule"},  # configs; media in/out; sampler; DDIM schedule
    {"faces", "synthetic"},  # detection, tubes, crops; the procedural world
    {"models"},  # plain nn.Modules
    {"loading"},  # checkpoint and folder loaders, handed the pipeline class (never importing it)
    {"data", "metrics", "pipeline"},  # datasets; metrics; FADMPipeline (+ its folder format)
    {"checkpoints"},  # load_pipeline / the folder format, bound to FADMPipeline
    {"inference", "evaluation", "systems"},  # refiner facade; evaluator; LightningModules
    {"callbacks", "benchmarks"},  # built by Hydra for train/evaluate; measurement commands
    {"workflows"},  # chains of commands (the real-face recipe) and their reports
    {
        "train",
        "evaluate",
        "animate",
        "rectify",
        "preprocess",
        "shard",
        "report",
        "export",
        "convert_release",
        "app",  # the web app (Gradio)
        "recipe",
    },
]
# modules that belong to a layer under another name
ALIASES = {"pretrained": "checkpoints"}  # the folder format builds on the checkpoint loader


def _unit(module: str) -> str:
    parts = module.split(".")
    name = parts[1] if len(parts) > 1 else ""
    return ALIASES.get(name, name)


def _layer(unit: str) -> int:
    for i, names in enumerate(LAYERS):
        if unit in names:
            return i
    raise KeyError(unit)


def _imports() -> list[tuple[str, str, int]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            for target in targets:
                if target.startswith("fadm_lightning.") or target == "fadm_lightning":
                    found.append((module, target, node.lineno))
    return found


def test_every_package_has_a_layer():
    units = {_unit(m) for m, _, _ in _imports()} | {
        _unit(f"fadm_lightning.{p.stem}") for p in PACKAGE.iterdir() if p.suffix == ".py"
    }
    units |= {_unit(f"fadm_lightning.{p.name}") for p in PACKAGE.iterdir() if p.is_dir()}
    units -= {"", "__init__", "__pycache__", "conf"}
    missing = sorted(u for u in units if not any(u in names for names in LAYERS))
    assert not missing, f"give these a layer in LAYERS (and in the README): {missing}"


def test_imports_go_down():
    wrong = []
    for module, target, line in _imports():
        source, dest = _unit(module), _unit(target)
        if dest in ("", source):
            continue
        if _layer(dest) >= _layer(source):
            wrong.append(f"{module}:{line} imports {target}")
    assert not wrong, "imports that do not go down:\n" + "\n".join(wrong)


@pytest.mark.parametrize("bottom", ["media", "faces", "synthetic", "models"])
def test_the_bottom_never_reaches_up(bottom):
    """The issue's rule in words: nothing in models/ imports data/, nothing at the bottom
    imports anything above it (checked for these packages by name, whatever LAYERS says)."""
    above = {"data", "pipeline", "checkpoints", "inference", "evaluation", "systems", "callbacks"}
    bad = [
        f"{m}:{line} imports {t}"
        for m, t, line in _imports()
        if _unit(m) == bottom and _unit(t) in above
    ]
    assert not bad, "\n".join(bad)


def _module_graph() -> dict[str, set[str]]:
    """module → the fadm_lightning modules it imports (lazy ones included; ``from pkg import
    name`` counts as importing ``pkg.name`` when that is a module, else ``pkg``)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        modules[".".join(rel.parts).removesuffix(".__init__")] = path

    def known(name: str) -> str:
        while name not in modules and "." in name:
            name = name.rsplit(".", 1)[0]
        return name

    graph = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    root = ".".join(base + ([node.module] if node.module else []))
                else:
                    root = node.module or ""
                names = [f"{root}.{a.name}" for a in node.names]
            else:
                continue
            deps |= {known(n) for n in names if n.split(".")[0] == "fadm_lightning"}
        graph[module] = deps - {module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected parts of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                cycles.append(sorted(part))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycle():
    """No module's imports, lazy ones included, lead back to it."""
    cycles = _cycles(_module_graph())
    assert not cycles, f"import cycles: {cycles}"


def test_the_cycle_check_sees_a_cycle():
    """The check can fail: a lazy import of pipeline from the folder loader is a cycle."""
    graph = _module_graph()
    assert "fadm_lightning.loading.folder" in graph["fadm_lightning.pipeline"]
    graph["fadm_lightning.loading.folder"].add("fadm_lightning.pipeline")
    assert ["fadm_lightning.loading.folder", "fadm_lightning.pipeline"] in _cycles(graph)


#: the longest a source file may be without its docstring saying why (issue 24)
MAX_LINES = 600


def long_files(root: Path) -> list[str]:
    """``path: N lines`` for each ``.py`` file under ``root`` over :data:`MAX_LINES` lines whose
    module docstring does not say why (a line containing "over 600 lines")."""
    found = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        lines = text.count("\n") + (not text.endswith("\n"))
        if lines <= MAX_LINES:
            continue
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if f"over {MAX_LINES} lines" not in docstring:
            found.append(f"{path.relative_to(root)}: {lines} lines")
    return found


def test_no_source_file_is_over_600_lines_without_saying_why(tmp_path):
    assert long_files(PACKAGE) == []
    # the check sees a long file, and accepts one whose docstring says why
    (tmp_path / "long.py").write_text('"""A module."""\n' + "x = 1\n" * MAX_LINES)
    (tmp_path / "why.py").write_text(
        '"""A table: over 600 lines because it lists every key."""\n' + "x = 1\n" * MAX_LINES
    )
    assert long_files(tmp_path) == [f"long.py: {MAX_LINES + 1} lines"]
