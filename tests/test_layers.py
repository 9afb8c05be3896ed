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


# ------------------------------------------------------------------------------------------------------
# Module level: no import circle anywhere in rrpo (lazy imports included), no private names across modules
def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent)
    return ".".join(rel.with_suffix("").parts).removesuffix(".__init__")


def _is_module(name: str) -> bool:
    base = PACKAGE.parent.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def import_edges(root: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the rrpo modules it imports (a `from pkg import sub` names the submodule itself)."""
    edges: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path)
        targets = edges.setdefault(module, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.split(".")[0] == "rrpo"}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.split(".")[0] != "rrpo":
                    continue
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    targets.add(sub if _is_module(sub) else node.module)
        targets.discard(module)
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None (depth-first search, colouring the modules)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_circle_anywhere_in_rrpo():
    assert find_cycle(import_edges()) is None, f"import circle: {' -> '.join(find_cycle(import_edges()))}"


def test_the_circle_check_finds_a_circle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(edges) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"b"}}) is None


def private_imports(root: Path = PACKAGE) -> list[str]:
    """`from rrpo.x import _name` anywhere under `root` (a private name used outside its module)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "rrpo":
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.append(f"{path.relative_to(root)}: {node.module}.{alias.name}")
    return found


def test_no_private_name_imported_across_modules():
    roots = [PACKAGE, *(PACKAGE.parent / d for d in ("tests", "benchmarks", "examples"))]
    found = [f for root in roots if root.is_dir() for f in private_imports(root)]
    assert not found, f"private names imported across modules: {found}"


def test_the_private_check_sees_one(tmp_path):
    (tmp_path / "m.py").write_text("def f():\n    from rrpo.models.base import _SENTINEL\n")
    assert private_imports(tmp_path) == ["m.py: rrpo.models.base._SENTINEL"]


def test_importing_the_models_package_imports_no_family_and_no_torch():
    """`import rrpo.models` and the registry are torch-free; building `rrpo --help` imports no family
    module (`rrpo train`'s options are TrainingArguments', so the CLI does import transformers)."""
    import subprocess
    import sys

    code = (
        "import sys, rrpo.models\n"
        "from rrpo.models import FAMILY_NAMES\n"
        "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "import rrpo.cli\n"
        "rrpo.cli.build_parser()\n"
        "families = [m for m in sys.modules if m.startswith('rrpo.models.families')]\n"
        "print(len(FAMILY_NAMES), heavy, families)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split(" ", 1)[1].strip() == "[] []" and int(out.split(" ", 1)[0]) >= 7, out


def test_the_models_and_training_import_without_pyav():
    """PyAV is needed only where video is decoded (rrpo.video.io): a training or scoring process that
    gets its frames otherwise imports the models, the packed pass and the trainer without it."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "sys.modules['av'] = None  # any `import av` now raises ImportError\n"
        "import rrpo.models.packing, rrpo.train.trainer, rrpo.eval.deviation\n"
        "from rrpo.models import FAMILIES\n"
        "print(len(FAMILIES))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and int(done.stdout) >= 7, done.stderr[-2000:]
