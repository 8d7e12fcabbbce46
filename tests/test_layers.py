"""The house's one-way flow: each package imports only packages at its own level or below.

Every `import modalign.X` / `from modalign.X import` in src/ (module level or inside a function) is
checked against LAYERS; a new top-level module or package must be placed here to pass.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "modalign"

# lowest first; names on one line share a level and may import each other
LAYERS = [
    {"errors", "utils", "__init__"},
    {"data"},
    {"encoders"},
    {"store"},
    {"evaluate"},  # metrics on embeddings only
    {"align", "adapt"},  # projectors, losses, trainer, closed-form maps; few-shot heads: embeddings only
    {"model", "features"},
    {"select", "curate"},
    {"search", "distributed", "report"},
    {"workflows", "recipes"},
    {"integrations"},
    {"cli", "__main__"},
]
LEVEL = {name: i for i, names in enumerate(LAYERS) for name in names}


def _owner(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def _imported(tree: ast.AST) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] if node.module != "modalign" else [f"modalign.{a.name}" for a in node.names]
            out += [(node.lineno, n) for n in names if n.startswith("modalign.")]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("modalign.")]
    return out


def test_every_top_level_name_has_a_layer():
    names = {p.name.removesuffix(".py") for p in SRC.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert names - set(LEVEL) == set(), "place the new module in tests/test_layers.py LAYERS"


def test_no_import_goes_up_a_layer():
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        owner = _owner(path)
        for line, name in _imported(ast.parse(path.read_text())):
            target = name.split(".")[1]
            if target != "__version__" and LEVEL.get(target, 99) > LEVEL[owner]:
                bad.append(f"{path.relative_to(SRC)}:{line} ({owner}) imports {name}")
    assert not bad, "imports against the one-way flow:\n" + "\n".join(bad)


@pytest.mark.parametrize("package", ["align", "adapt", "evaluate"])
def test_embedding_layers_never_see_encoders_model_or_store(package):
    for path in (SRC / package).rglob("*.py"):
        for _, name in _imported(ast.parse(path.read_text())):
            assert name.split(".")[1] not in {"encoders", "model", "store", "features"}, f"{path}: {name}"
