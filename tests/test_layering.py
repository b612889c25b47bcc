"""The house rules of the import structure: lower layers never import higher ones, no cycles,
only sinelr/peft imports peft, recipes are not importable and import no other recipe."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "sinelr"

# functional -> layers -> convert / peft -> models / data -> train / sweep / report -> recipes -> cli
LEVEL = {
    "errors": 0, "stats": 0, "functional": 1, "layers": 2, "kinds": 3, "spectral": 3, "convert": 3,
    "serialization": 4, "peft": 4, "models": 5, "data": 5, "metrics": 5, "config": 5,
    "train": 6, "report": 6, "sweep": 7, "recipes": 8, "cli": 9, "__init__": 9,
}


def _module_of(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    return rel.parts[0]


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = list(path.relative_to(PKG).parent.parts)[: len(path.relative_to(PKG).parent.parts) - node.level + 1]
                target = base + (node.module.split(".") if node.module else [])
                if not target:  # `from . import x` at the top package
                    target = [a.name for a in node.names][:1]
                yield "sinelr." + ".".join(target)
            elif node.module:
                yield node.module
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name


def _edges():
    for path in PKG.rglob("*.py"):
        src = _module_of(path)
        for name in _imports(path):
            if name.startswith("sinelr.") or name == "sinelr":
                parts = name.split(".")
                if len(parts) > 1:
                    yield path, src, parts[1]
            elif name.split(".")[0] == "peft":
                yield path, src, "<peft>"


def test_lower_layers_never_import_higher_ones():
    bad = [f"{p.relative_to(ROOT)} ({src}) imports sinelr.{dst}" for p, src, dst in _edges()
           if dst in LEVEL and src in LEVEL and LEVEL[dst] > LEVEL[src]]
    assert bad == []


def test_only_sinelr_peft_imports_peft():
    bad = [str(p.relative_to(ROOT)) for p, src, dst in _edges() if dst == "<peft>" and src != "peft"]
    assert bad == []


def test_no_recipe_imports_another_and_nothing_imports_a_recipe():
    users = [f"{p.relative_to(ROOT)} -> {dst}" for p, src, dst in _edges() if dst == "recipes"]
    assert users == []
    for folder in ("tests", "scripts", "benchmarks", "examples"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name != "test_layering.py":  # which imports it only to show that it cannot
                assert not any(n.startswith("sinelr.recipes") for n in _imports(path)), path


def test_recipes_package_cannot_be_imported_and_the_cli_loads_every_recipe():
    with pytest.raises(ModuleNotFoundError, match="not importable"):
        import sinelr.recipes  # noqa: F401
    from sinelr.cli import RECIPES, load_recipe

    for r in RECIPES:
        module = load_recipe(r.name)
        assert hasattr(module, "Config") and hasattr(module, "run"), r.name


def test_no_function_in_a_recipe_is_longer_than_80_lines():
    long = []
    for path in (PKG / "recipes").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80:
                long.append(f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert long == []
