"""One registry of the preference losses: what each needs, its defaults, and how a config builds it.

`LOSS_SPECS[name]` declares, for one loss function of `rrpo.losses.preference`:
- `inputs`: the per-token tensors (names of `rrpo.models.PairOutputs` fields) it takes;
- `options`: its keyword -> the training-config field that sets it (`ddpo_gamma` -> `gamma`);
- `default_alpha`: the regulariser weight it uses when the config leaves `alpha` unset (None: no alpha);
- whether it trains on the differing spans (pairs without a span on both sides cannot be used).

`PreferenceLoss.from_config(cfg)` is what the trainer calls once; calling the result on a forward's
outputs gives `(losses [B], chosen_rewards [B], rejected_rewards [B])`. Adding a loss = one function in
`preference.py` plus one `LossSpec` here; the trainer, the config's checks and `--help` follow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from rrpo.losses.preference import (
    DPA_DEFAULT_ALPHA,
    LossInputError,
    Triple,
    ddpo_loss,
    dpa_loss,
    dpo_loss,
    rrpo_loss,
    tdpo_loss,
)

LOGPS = ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps")
SPANS = ("chosen_span_ids", "rejected_span_ids")
MASKS = ("chosen_mask", "rejected_mask")


@dataclass(frozen=True)
class LossSpec:
    """What one loss needs from the forward pass and from the config."""

    name: str
    fn: Callable[..., Triple]
    paper: str
    inputs: tuple[str, ...]
    options: Mapping[str, str] = field(default_factory=dict)  # loss keyword -> config field
    default_alpha: float | None = None
    # True: trains on the differing spans. A callable decides from the loss keywords (RRPO's whole-
    # response ablation needs no span).
    uses_spans: bool | Callable[[Mapping[str, Any]], bool] = False

    def needs_spans(self, **options: Any) -> bool:
        return self.uses_spans(options) if callable(self.uses_spans) else bool(self.uses_spans)


LOSS_SPECS: dict[str, LossSpec] = {
    spec.name: spec
    for spec in (
        LossSpec(
            "rrpo",
            rrpo_loss,
            "RRPO, Sarkar et al., arXiv 2504.12083",
            inputs=(*LOGPS, *SPANS, "chosen_kl", *MASKS),
            options={
                "beta": "beta",
                "alpha": "alpha",
                "fine_grained": "fine_grained",
                "token_kl": "token_kl",
            },
            default_alpha=0.01,
            uses_spans=lambda options: bool(options.get("fine_grained", True)),
        ),
        LossSpec(
            "dpo",
            dpo_loss,
            "DPO, Rafailov et al., arXiv 2305.18290",
            inputs=(*LOGPS, *MASKS),
            options={"beta": "beta"},
        ),
        LossSpec(
            "tdpo",
            tdpo_loss,
            "TDPO, Zeng et al., arXiv 2404.11999",
            inputs=(*LOGPS, "chosen_kl", "rejected_kl", *MASKS),
            options={"beta": "beta", "alpha": "alpha", "version": "tdpo_version"},
            default_alpha=0.5,
        ),
        LossSpec(
            "dpa",
            dpa_loss,
            "DPA (HALVA), Sarkar et al., arXiv 2405.18654",
            inputs=(*LOGPS, *SPANS, "chosen_kl", *MASKS),
            options={"alpha": "alpha"},
            default_alpha=DPA_DEFAULT_ALPHA,
            uses_spans=True,
        ),
        LossSpec(
            "ddpo",
            ddpo_loss,
            "DDPO (RLHF-V), Yu et al., arXiv 2312.00849",
            inputs=(*LOGPS, *SPANS, *MASKS),
            options={"beta": "beta", "gamma": "ddpo_gamma"},
            uses_spans=True,
        ),
    )
}
LOSS_TYPES = tuple(LOSS_SPECS)
# name -> loss function (the public table since the first release).
LOSSES: dict[str, Callable[..., Triple]] = {name: spec.fn for name, spec in LOSS_SPECS.items()}
# Keywords every loss may be handed and ignores when it has no such term, so that one config (or one
# call of `preference_loss`) serves every loss type.
SHARED_OPTIONS = ("beta", "alpha")


def loss_spec(loss_type: str) -> LossSpec:
    if loss_type not in LOSS_SPECS:
        raise LossInputError(f"unknown loss_type {loss_type!r}; choose one of {', '.join(LOSS_TYPES)}")
    return LOSS_SPECS[loss_type]


def default_alpha(loss_type: str) -> float:
    """The regulariser weight a loss uses when none is given (0.0 for a loss without one)."""
    alpha = loss_spec(loss_type).default_alpha
    return 0.0 if alpha is None else alpha


class PreferenceLoss:
    """A loss bound to its hyper-parameters: `loss(outputs) -> (losses, chosen_rewards, rejected_rewards)`.

    `outputs` is a mapping (or an object with attributes) holding the spec's `inputs`, e.g. the dict a
    `PairForward` returns or a `PairOutputs`.
    """

    def __init__(self, loss_type: str, **options: Any):
        self.spec = loss_spec(loss_type)
        unknown = sorted(set(options) - set(self.spec.options) - set(SHARED_OPTIONS))
        if unknown:
            raise LossInputError(
                f"{loss_type} takes no option(s) {', '.join(unknown)}; it takes "
                f"{', '.join(self.spec.options) or 'none'}"
            )
        # Shared options a loss has no term for are dropped; alpha=None means the loss's own default.
        self.options = {
            k: v for k, v in options.items() if k in self.spec.options and not (k == "alpha" and v is None)
        }

    @classmethod
    def from_config(cls, cfg: Any) -> PreferenceLoss:
        """Build `cfg.loss_type` with every option the registry maps to a field of `cfg`."""
        spec = loss_spec(cfg.loss_type)
        return cls(cfg.loss_type, **{kw: getattr(cfg, name) for kw, name in spec.options.items()})

    @property
    def needs_spans(self) -> bool:
        return self.spec.needs_spans(**self.options)

    def __call__(self, outputs: Mapping[str, torch.Tensor | None] | Any) -> Triple:
        get = outputs.get if isinstance(outputs, Mapping) else lambda k: getattr(outputs, k, None)
        return self.spec.fn(**{name: get(name) for name in self.spec.inputs}, **self.options)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"PreferenceLoss({self.spec.name!r}{', ' if args else ''}{args})"


def preference_loss(
    loss_type: str,
    *,
    beta: float = 0.1,
    alpha: float | None = None,
    **tensors_and_options: Any,
) -> Triple:
    """One call for every loss in `LOSS_SPECS`, given one set of [B, T] per-token tensors as keywords.

    Each loss takes what it needs: `alpha=None` means that loss's own default (RRPO 0.01, TDPO 0.5,
    DPA 0.4); `beta`/`alpha` are ignored by a loss without that term, as are tensors it does not use.
    Other keywords are loss options (`fine_grained`, `token_kl` for rrpo; `version` for tdpo; `gamma`
    for ddpo). Returns (losses [B], chosen_rewards [B], rejected_rewards [B]).
    """
    tensor_names = {*LOGPS, *SPANS, *MASKS, "chosen_kl", "rejected_kl"}
    tensors = {k: v for k, v in tensors_and_options.items() if k in tensor_names}
    options = {k: v for k, v in tensors_and_options.items() if k not in tensor_names}
    return PreferenceLoss(loss_type, beta=beta, alpha=alpha, **options)(tensors)
