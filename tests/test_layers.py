"""The stages import only downward: errors; then video, data, losses, llm; then models; then selfalign,
train, eval (not one another); then toy and the cli. Read from the source (lazy imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import rrpo

PACKAGE = Path(rrpo.__file__).parent
LAYERS = {
    "rrpo": 0,  # the package itself (__version__)
    "errors": 0,
    "video": 1,
    "data": 1,
    "losses": 1,
    "llm": 2,  # the LLM client and judge read rrpo.data's answers
    "models": 3,
    "selfalign": 4,
    "train": 4,
    "eval": 4,
    "toy": 5,
    "cli": 6,
}


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "rrpo"


def imports_by_stage() -> dict[tuple[str, str], list[str]]:
    """(importer stage, imported stage) -> the files where it happens."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent)
        module = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
        source = _stage(module)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name == "rrpo" or name.startswith("rrpo."):
                    target = _stage(name)
                    if target != source:
                        edges.setdefault((source, target), []).append(str(rel))
    return edges


def test_every_stage_has_a_layer():
    stages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    stages |= {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert stages <= set(LAYERS), f"new stage(s) without a layer: {stages - set(LAYERS)}"


def test_imports_go_downward_only():
    wrong = {
        f"{src} -> {dst}": sorted(set(files))
        for (src, dst), files in imports_by_stage().items()
        if LAYERS[dst] >= LAYERS[src]
    }
    assert not wrong, f"imports against the layering: {wrong}"


def test_the_check_sees_lazy_imports(tmp_path):
    """The reader must find an import inside a function body (where most cross-stage imports sit)."""
    tree = ast.parse("def f():\n    from rrpo.eval.extract import mcq_letter\n")
    found = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert found == ["rrpo.eval.extract"]
