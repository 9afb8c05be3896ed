"""The family registry is read from the family modules' `FAMILY` literals without importing them: a new
family is one file in rrpo/models/families/."""

from __future__ import annotations

import pytest

from rrpo.models.registry import (
    FAMILY_ENTRIES,
    FAMILY_NAMES,
    declared_family,
    discover_families,
    family_class,
)


def test_every_declared_family_is_its_adapter_class():
    assert FAMILY_NAMES[:7] == ("qwen2-vl", "qwen2.5-vl", "qwen3-vl", "llava-onevision", "llava-next-video",
                                "longvu", "videochat2")  # fmt: skip
    assert set(FAMILY_NAMES) >= {"internvl", "videollama3"}
    for entry in FAMILY_ENTRIES:
        cls = family_class(entry.name)
        assert cls.family == entry.name and entry.target.endswith(":" + cls.__name__)


def test_a_new_family_is_one_file(tmp_path):
    """A module with a FAMILY literal is found (and never executed); one without is not a family."""
    (tmp_path / "acme_vl.py").write_text(
        'raise SystemExit("a family module is not imported to be listed")\n'
        'FAMILY = {"name": "acme-vl", "adapter": "AcmeAdapter", "order": 3, "options": {"acme_dir": "Acme only"}}\n'
    )
    (tmp_path / "helpers.py").write_text("X = 1\n")
    (tmp_path / "port").mkdir()
    (tmp_path / "port" / "__init__.py").write_text(
        'FAMILY = {"name": "port", "adapter": "PortAdapter", "order": 1}\n'
    )
    entries = discover_families(tmp_path, "pkg")
    assert [(e.name, e.target, e.options) for e in entries] == [
        ("port", "pkg.port:PortAdapter", {}),
        ("acme-vl", "pkg.acme_vl:AcmeAdapter", {"acme_dir": "Acme only"}),
    ]
    assert declared_family(tmp_path / "helpers.py") is None


def test_two_modules_with_one_name_are_refused(tmp_path):
    for stem in ("a", "b"):
        (tmp_path / f"{stem}.py").write_text('FAMILY = {"name": "same", "adapter": "X"}\n')
    with pytest.raises(RuntimeError, match="declare the same name"):
        discover_families(tmp_path, "pkg")
