"""Model resolution (local directory or Hub id), family detection and `load_model`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from rrpo.errors import RRPOError
from rrpo.models.base import VideoLMAdapter
from rrpo.models.options import ATTN_IMPLEMENTATIONS
from rrpo.models.registry import family_class, family_classes, family_options
from rrpo.models.tiny_parts import FAMILY_FILE


def family_of(model_dir_or_config: str | Path | Any) -> str:
    """The family name of a model directory, config object or config dict, from `config.model_type`.

    A directory's `rrpo_family.json` (written by `rrpo tiny-model`) is only a hint, used when the model
    type alone does not name a family.
    """
    families = family_classes()
    hint = None
    if isinstance(model_dir_or_config, (str, Path)):
        path = Path(model_dir_or_config)
        if (path / FAMILY_FILE).is_file():
            hint = json.loads((path / FAMILY_FILE).read_text()).get("family")
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            for name, cls in families.items():
                if cls.recognises_directory(path):  # a release without config.json (VideoChat2)
                    return name
            raise RRPOError(f"{path}: no config.json (not a model directory)")
        model_type = json.loads(cfg_file.read_text()).get("model_type")
    elif isinstance(model_dir_or_config, dict):
        model_type = model_dir_or_config.get("model_type")
    else:
        model_type = getattr(model_dir_or_config, "model_type", None)
    for name, cls in families.items():
        if model_type in cls.model_types:
            return name
    if hint in families:
        return hint
    known = ", ".join(f"{n} ({'/'.join(c.model_types)})" for n, c in families.items())
    raise RRPOError(f"unsupported model_type '{model_type}' in {model_dir_or_config}; supported: {known}")


# Non-weight files a model needs besides its weights; downloaded with the safetensors shards.
_MODEL_PATTERNS = ["*.json", "*.jinja", "*.txt", "*.model", "*.safetensors", "*.tiktoken", "*.py"]


def resolve_model(model: str | Path, *, revision: str | None = None, what: str = "model") -> Path:
    """A local directory for `model`: the directory itself, or a Hub id's snapshot.

    Hub ids ("Qwen/Qwen2.5-VL-7B-Instruct") go through `huggingface_hub.snapshot_download`, so its cache,
    `HF_HOME`, `HF_TOKEN` and `HF_HUB_OFFLINE=1` apply; `revision` is a branch, tag or commit. Errors
    say what is wrong (not a directory and not a Hub id, gated, missing, offline without a cached copy).
    """
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    text = str(model)
    looks_like_id = text.count("/") == 1 and not text.startswith((".", "/", "~")) and not path.exists()
    if not looks_like_id:
        raise RRPOError(
            f"{what} directory not found: {model} (give a local directory or a Hub id like owner/name)"
        )
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(snapshot_download(text, revision=revision, allow_patterns=_MODEL_PATTERNS))
    except GatedRepoError:
        raise RRPOError(
            f"{what} {text}: the repository is gated; accept its licence on huggingface.co and set HF_TOKEN"
        ) from None
    except RevisionNotFoundError:
        raise RRPOError(f"{what} {text}: revision {revision!r} not found") from None
    except RepositoryNotFoundError:
        raise RRPOError(
            f"{what} {text}: no such repository on the Hub (or it is private: set HF_TOKEN), "
            "and no such local directory"
        ) from None
    except LocalEntryNotFoundError:
        if constants.HF_HUB_OFFLINE:
            raise RRPOError(
                f"{what} {text}: HF_HUB_OFFLINE is set and no copy"
                + (f" of revision {revision}" if revision else "")
                + " is in the Hugging Face cache (HF_HOME); download it once online or give a local directory"
            ) from None
        raise RRPOError(f"{what} {text}: the Hub cannot be reached and no copy is cached") from None
    except (HfHubHTTPError, OSError) as err:
        raise RRPOError(f"{what} {text}: download failed ({err})") from None


def _check_processor_files(model_dir: Path) -> None:
    """Name the fix for processor files an older transformers wrote that this one refuses."""
    cfg = model_dir / "preprocessor_config.json"
    if not cfg.is_file():
        return
    try:
        data = json.loads(cfg.read_text())
    except json.JSONDecodeError as err:
        raise RRPOError(f"{cfg}: not valid JSON ({err})") from None
    renamed = {"Qwen2_5_VLImageProcessor": "Qwen2VLImageProcessor"}
    old = data.get("image_processor_type")
    if old in renamed:
        raise RRPOError(
            f"{cfg}: image_processor_type {old!r} comes from an early snapshot of this checkpoint and "
            f"transformers names it {renamed[old]!r}; update the snapshot (the current Hub revision has "
            f"the fix) or edit that field to {renamed[old]!r}"
        )


def _family_meta(model_dir: Path) -> dict:
    f = model_dir / FAMILY_FILE
    return json.loads(f.read_text()) if f.is_file() else {}


def recorded_frame_size(model_dir: str | Path) -> tuple[int, int] | None:
    """The frame size a tiny test model records in `rrpo_family.json` (None for real checkpoints, whose
    processor sizes the frames)."""
    size = _family_meta(Path(model_dir)).get("frame_size")
    return tuple(size) if size else None


DTYPES = {"auto": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


# The packed pair forward passes a float 4D mask; flash-attention-2 takes only a 2D padding mask (it
# cannot express "rejected tokens do not see chosen ones"), so it is not offered.
def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """ "auto"/None: bf16 on a GPU that supports it, else fp32 (CPU); or "bf16", "fp16", "fp32"."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in (None, *DTYPES):
        raise RRPOError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    chosen = DTYPES.get(dtype) if dtype else None
    if chosen is None:
        gpu_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        chosen = torch.bfloat16 if gpu_bf16 else torch.float32
    return chosen


def check_family_options(family: str, options: dict[str, Any], where: Any) -> dict[str, Any]:
    """The family-only loading options that were given (None dropped); one naming another family, or
    no family, is a one-line error."""
    known = family_options()
    given = {name: value for name, value in options.items() if value is not None}
    for name in given:
        flag = "--" + name.replace("_", "-")
        if name not in known:
            raise RRPOError(
                f"{flag}: not a loading option of any family ({', '.join(sorted(known)) or 'none'})"
            )
        owner = known[name][0]
        if owner != family:
            raise RRPOError(f"{flag} is for {owner} checkpoints; {where} is {family}")
    return given


# The first transformers release rrpo's models are right on (pyproject.toml says why: Qwen2.5-VL's
# temporal positions, `mm_encoder_outputs`).
TRANSFORMERS_FLOOR = (5, 18)


def check_transformers(version: str | None = None) -> None:
    """Refuse a transformers older than `TRANSFORMERS_FLOOR` in one line (an image that ships an older one
    and installed rrpo with --no-deps would otherwise train on wrong Qwen2.5-VL temporal positions)."""
    import re

    import transformers

    version = version or transformers.__version__
    found = tuple(int(x) for x in re.findall(r"\d+", version)[:2])
    if found < TRANSFORMERS_FLOOR:
        floor = ".".join(map(str, TRANSFORMERS_FLOOR))
        raise RRPOError(
            f"transformers {version} is too old for rrpo: {floor} is the first release with Qwen2.5-VL's "
            f"fractional temporal positions and `mm_encoder_outputs`; pip install 'transformers>={floor}'"
        )


def accelerator_device() -> torch.device:
    """The device this process should run a model on: its own GPU under `accelerate launch` / torchrun
    (LOCAL_RANK), the GPU when there is one, else the CPU (accelerate's `PartialState` decides)."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available()).device


def describe_placement(vlm: VideoLMAdapter) -> str:
    """One line saying where a loaded model runs: family, device and dtype (printed by every command)."""
    dtype = str(vlm.dtype).removeprefix("torch.")
    return f"rrpo: {vlm.source or 'model'} ({vlm.family}) on {vlm.device}, {dtype}"


def load_model(
    model_dir: str | Path,
    *,
    adapter_dir: str | Path | None = None,
    revision: str | None = None,
    dtype: str | torch.dtype | None = torch.float32,
    device: str | torch.device | None = None,
    num_frames: int = 16,
    frame_size: tuple[int, int] | None = None,
    fps: float | None = None,
    max_frames: int = 768,
    max_pixels: int | None = None,
    attn_implementation: str = "sdpa",
    is_trainable: bool = False,
    vision_towers: str | Path | None = None,
    base_llm: str | Path | None = None,
    qformer_tokenizer: str | Path | None = None,
    family_options: dict[str, Any] | None = None,
) -> VideoLMAdapter:
    """Load a video LLM (local directory or Hub id) as the family's adapter (the `VideoLM`).

    The family comes from `config.model_type` (`rrpo_family.json` is an optional hint of tiny test
    models). `device`: where to put the model ("auto": `accelerator_device()`, what every command uses;
    None leaves it where it loaded, the CPU). `adapter_dir`: a peft LoRA adapter (directory or Hub id) to wrap the model with (`.model`
    is then a `PeftModel`; `is_trainable=True` to keep training it). `dtype`: a torch dtype or "auto",
    "bf16", "fp16", "fp32". Frames: `num_frames` uniform samples, or `fps` samples per second up to
    `max_frames`; native aspect ratio sized by the processor (`max_pixels` caps a frame) unless
    `frame_size` (h, w) is given (tiny models carry one in `rrpo_family.json`). The packed pair forward
    needs an attention implementation that takes a float 4D mask ("sdpa" or "eager"). `vision_towers`
    (LongVU only): a directory with the towers' `siglip/` and `dinov2/` (default: inside the model
    directory if there, else their Hub ids). `base_llm`, `qformer_tokenizer` (VideoChat2 only): the
    Mistral it was trained on and the Q-Former's BERT tokenizer (default: the directory's `mistral/` and
    `bert/`, else mistralai/Mistral-7B-Instruct-v0.2 and bert-base-uncased). `family_options`: the same
    family-only options as one mapping (what the CLI hands over, `rrpo.models.options.model_options`;
    `rrpo.models.registry` lists them); an option of another family is refused.
    """
    check_transformers()
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise RRPOError(
            f"--attn-implementation {attn_implementation!r}: choose {', '.join(ATTN_IMPLEMENTATIONS)} "
            "(flash-attention-2 cannot take the packed pair forward's 4D float mask)"
        )
    packed_attention = attn_implementation if attn_implementation.startswith("shared-prefix") else "mask"
    if packed_attention != "mask":
        attn_implementation = "sdpa"  # the vision tower and generation keep sdpa
    model_dir = resolve_model(model_dir, revision=revision)
    family = family_of(model_dir)
    cls = family_class(family)
    _check_processor_files(model_dir)
    named = {"vision_towers": vision_towers, "base_llm": base_llm, "qformer_tokenizer": qformer_tokenizer}
    options = check_family_options(family, {**named, **(family_options or {})}, model_dir)
    model = cls.load_hf_model(
        model_dir, dtype=resolve_dtype(dtype), attn_implementation=attn_implementation, **options
    )
    processor = cls.load_processor(model_dir, **options)
    if adapter_dir is not None:
        from peft import PeftModel

        adapter_path = resolve_model(adapter_dir, what="adapter")
        model = PeftModel.from_pretrained(model, str(adapter_path), is_trainable=is_trainable)
    if device == "auto":
        device = accelerator_device()
    if device is not None:
        model = model.to(device)
    model.eval()
    if frame_size is None:
        frame_size = recorded_frame_size(model_dir)
    vlm = cls(
        model,
        processor,
        num_frames=num_frames,
        frame_size=frame_size,
        fps=fps,
        max_frames=max_frames,
        max_pixels=max_pixels,
    )
    vlm.source = str(model_dir)  # the resolved directory (a Hub id's snapshot), for reports
    vlm.packed_attention = packed_attention  # what pair_forward's packed pass uses by default
    if packed_attention != "mask":
        from rrpo.models.packing.attention import use_shared_prefix_attention

        use_shared_prefix_attention(vlm.language_model, flex=packed_attention == "shared-prefix-flex")
    return vlm
