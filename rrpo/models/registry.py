"""The model families rrpo supports: a registry of import strings (torch-free).

`rrpo --help`, `rrpo tiny-model --family`, the `--help` of every model-loading command and the test
parametrisation read this list without importing a family's code (torch, transformers); a family's
adapter class is imported the first time it is asked for (`family_class`).

Adding a family: write `rrpo/models/families/<name>.py` (a package for a port) whose adapter subclasses
`rrpo.models.base.VideoLMAdapter`, add its line below, and add its real checkpoint files to the tests.
A family that needs loading options of its own (LongVU's towers, VideoChat2's base LLM) names them here
with their help text: every model-loading command then offers them as flags and hands them to
`load_model` (`rrpo.models.options`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class FamilyEntry:
    """One family: its CLI name, where its adapter class lives ("module:Class"), and its family-only
    loading options (option name -> help text; the flag is `--` + the name with dashes)."""

    name: str
    target: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def module(self) -> str:
        return self.target.partition(":")[0]


_F = "rrpo.models.families"
FAMILY_ENTRIES: tuple[FamilyEntry, ...] = (
    FamilyEntry("qwen2-vl", f"{_F}.qwen2_vl:Qwen2VLAdapter"),
    FamilyEntry("qwen2.5-vl", f"{_F}.qwen2_5_vl:Qwen25VLAdapter"),
    FamilyEntry("qwen3-vl", f"{_F}.qwen3_vl:Qwen3VLAdapter"),
    FamilyEntry("llava-onevision", f"{_F}.llava_onevision:LlavaOneVisionAdapter"),
    FamilyEntry("llava-next-video", f"{_F}.llava_next_video:LlavaNextVideoAdapter"),
    FamilyEntry(
        "longvu",
        f"{_F}.longvu:LongVUAdapter",
        {
            "vision_towers": "LongVU only: a directory holding its two towers as siglip/ and dinov2/ (default: "
            "inside --model, else google/siglip-so400m-patch14-384 and facebook/dinov2-giant from the Hub)"
        },
    ),
    FamilyEntry(
        "videochat2",
        f"{_F}.videochat2:VideoChat2Adapter",
        {
            "base_llm": "VideoChat2 only: the base LLM its stage 3 was trained on (default: --model's mistral/, "
            "else mistralai/Mistral-7B-Instruct-v0.2)",
            "qformer_tokenizer": "VideoChat2 only: the Q-Former's BERT tokenizer (default: --model's bert/, else "
            "bert-base-uncased)",
        },
    ),
    FamilyEntry("internvl", f"{_F}.internvl:InternVLAdapter"),
    FamilyEntry("videollama3", f"{_F}.videollama3:VideoLlama3Adapter"),
)

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
