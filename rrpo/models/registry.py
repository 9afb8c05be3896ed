"""The model families rrpo supports: a registry of import strings, found without importing anything.

`rrpo --help`, `rrpo tiny-model --family`, the `--help` of every model-loading command and the test
parametrisation read this list without importing a family's code (torch, transformers): each module in
`rrpo/models/families/` (a package for a port) declares itself in a literal at its top,

    FAMILY = {"name": "internvl", "adapter": "InternVLAdapter", "order": 8, "options": {...}}

which is read here with `ast.literal_eval`, never executed. The adapter class is imported the first time it
is asked for (`family_class`).

Adding a family is one file: `rrpo/models/families/<name>.py` with its `FAMILY` declaration and an adapter
that subclasses `rrpo.models.base.VideoLMAdapter`, plus its real checkpoint files in the tests. A family
with loading options of its own (LongVU's towers, VideoChat2's base LLM) names them in `options` with their
help text: every model-loading command then offers them as flags and hands them to `load_model`
(`rrpo.models.options`).
"""

from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FAMILIES_DIR = Path(__file__).resolve().parent / "families"
FAMILIES_PACKAGE = "rrpo.models.families"


@dataclass(frozen=True)
class FamilyEntry:
    """One family: its CLI name, where its adapter class lives ("module:Class"), and its family-only
    loading options (option name -> help text; the flag is `--` + the name with dashes)."""

    name: str
    target: str
    options: dict[str, str] = field(default_factory=dict)
    order: int = 1000

    @property
    def module(self) -> str:
        return self.target.partition(":")[0]


def declared_family(path: Path) -> dict[str, Any] | None:
    """The `FAMILY = {...}` literal at the top level of a module's source, or None."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "FAMILY" for t in node.targets
        ):
            return ast.literal_eval(node.value)
    return None


def discover_families(
    directory: Path = FAMILIES_DIR, package: str = FAMILIES_PACKAGE
) -> tuple[FamilyEntry, ...]:
    """Every family declared in `directory` (modules and packages), in their declared order."""
    entries = []
    for path in sorted(directory.iterdir()):
        if path.suffix == ".py" and path.stem != "__init__":
            source, module = path, f"{package}.{path.stem}"
        elif path.is_dir() and (path / "__init__.py").is_file():
            source, module = path / "__init__.py", f"{package}.{path.name}"
        else:
            continue
        declared = declared_family(source)
        if declared is None:
            continue
        entries.append(
            FamilyEntry(
                name=declared["name"],
                target=f"{module}:{declared['adapter']}",
                options=dict(declared.get("options", {})),
                order=int(declared.get("order", 1000)),
            )
        )
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise RuntimeError(f"two family modules declare the same name: {sorted(names)}")
    return tuple(sorted(entries, key=lambda e: (e.order, e.name)))


FAMILY_ENTRIES: tuple[FamilyEntry, ...] = discover_families()
FAMILY_NAMES: tuple[str, ...] = tuple(e.name for e in FAMILY_ENTRIES)


def family_entry(name: str) -> FamilyEntry:
    """The registry entry of `name`; an unknown name is a one-line error listing the known ones."""
    for entry in FAMILY_ENTRIES:
        if entry.name == name:
            return entry
    from rrpo.errors import RRPOError

    raise RRPOError(f"unknown model family {name!r}; choose one of {', '.join(FAMILY_NAMES)}")


def family_class(name: str) -> Any:
    """The adapter class of family `name` (imports its module)."""
    module, _, attr = family_entry(name).target.partition(":")
    return getattr(importlib.import_module(module), attr)


def family_classes() -> dict[str, Any]:
    """Every family's adapter class, by name (imports every family module)."""
    return {name: family_class(name) for name in FAMILY_NAMES}


def family_options() -> dict[str, tuple[str, str]]:
    """Every family-only loading option: option name -> (owning family, help text)."""
    return {opt: (e.name, text) for e in FAMILY_ENTRIES for opt, text in e.options.items()}
