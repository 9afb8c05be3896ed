"""The trainer's loss wiring: `rrpo train` flags -> RRPOConfig -> RRPOTrainer.compute_loss equals calling
each loss function directly with those settings, for every loss type and every flag that changes one.

A trainer that ignored --no-fine-grained, --no-token-kl, --ddpo-gamma or --tdpo-version, or trained one
loss whatever --loss says, fails here: every case below gives a different value on this batch.
"""

from __future__ import annotations

import pytest
import torch

from rrpo.losses import ddpo_loss, dpa_loss, dpo_loss, rrpo_loss, tdpo_loss
from rrpo.train.config import parse_train_args
from rrpo.train.trainer import RRPOTrainer


def fixed_outputs() -> dict[str, torch.Tensor]:
    """A PairForward's outputs for two pairs, T = 6: float32, zero outside the masks, spans inside."""
    g = torch.Generator().manual_seed(3)
    c_mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    r_mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)

    def per_token(mask: torch.Tensor, scale: float) -> torch.Tensor:
        return torch.where(mask, -torch.rand(mask.shape, generator=g) * scale, 0.0)

    return {
        "policy_chosen_logps": per_token(c_mask, 2.0),
        "policy_rejected_logps": per_token(r_mask, 2.0),
        "ref_chosen_logps": per_token(c_mask, 2.0),
        "ref_rejected_logps": per_token(r_mask, 2.0),
        "chosen_kl": -per_token(c_mask, 0.5),
        "rejected_kl": -per_token(r_mask, 0.5),
        "chosen_span_ids": torch.tensor([[0, 1, 1, 0, 2, 0], [0, 0, 1, 1, 0, 0]]),
        "rejected_span_ids": torch.tensor([[0, 1, 0, 2, 0, 0], [0, 1, 1, 0, 0, 0]]),
        "chosen_mask": c_mask,
        "rejected_mask": r_mask,
    }


class FixedOutputs(torch.nn.Module):
    """Stands in for PairForward: one parameter (the Trainer wants one), fixed outputs."""

    def __init__(self, outputs: dict[str, torch.Tensor]):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.outputs = outputs

    def forward(self, **batch):  # noqa: ANN003, ANN201
        return self.outputs


OUT = fixed_outputs()
LOGPS = [
    OUT[k] for k in ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps")
]
SPANS = {"chosen_span_ids": OUT["chosen_span_ids"], "rejected_span_ids": OUT["rejected_span_ids"]}
MASKS = {"chosen_mask": OUT["chosen_mask"], "rejected_mask": OUT["rejected_mask"]}

# (flags of `rrpo train`, the direct call it must equal)
CASES = {
    "rrpo": (
        [],
        lambda: rrpo_loss(*LOGPS, **SPANS, chosen_kl=OUT["chosen_kl"], beta=0.1, alpha=0.01, **MASKS),
    ),
    "rrpo beta alpha": (
        ["--beta", "0.5", "--alpha", "0.2"],
        lambda: rrpo_loss(*LOGPS, **SPANS, chosen_kl=OUT["chosen_kl"], beta=0.5, alpha=0.2, **MASKS),
    ),
    "rrpo --no-fine-grained": (
        ["--no-fine-grained"],
        lambda: rrpo_loss(*LOGPS, **SPANS, chosen_kl=OUT["chosen_kl"], fine_grained=False, **MASKS),
    ),
    "rrpo --no-token-kl": (
        ["--no-token-kl"],
        lambda: rrpo_loss(*LOGPS, **SPANS, chosen_kl=OUT["chosen_kl"], token_kl=False, **MASKS),
    ),
    "dpo": (["--loss", "dpo"], lambda: dpo_loss(*LOGPS, beta=0.1, **MASKS)),
    "dpo beta": (
        ["--loss", "dpo", "--beta", "0.5", "--alpha", "3"],
        lambda: dpo_loss(*LOGPS, beta=0.5, **MASKS),
    ),
    "tdpo": (
        ["--loss", "tdpo"],
        lambda: tdpo_loss(
            *LOGPS, OUT["chosen_kl"], OUT["rejected_kl"], beta=0.1, alpha=0.5, version=2, **MASKS
        ),
    ),
    "tdpo --tdpo-version 1": (
        ["--loss", "tdpo", "--tdpo-version", "1"],
        lambda: tdpo_loss(*LOGPS, OUT["chosen_kl"], OUT["rejected_kl"], version=1, **MASKS),
    ),
    "tdpo alpha": (
        ["--loss", "tdpo", "--alpha", "2"],
        lambda: tdpo_loss(*LOGPS, OUT["chosen_kl"], OUT["rejected_kl"], alpha=2.0, **MASKS),
    ),
    "dpa": (
        ["--loss", "dpa"],
        lambda: dpa_loss(*LOGPS, **SPANS, chosen_kl=OUT["chosen_kl"], alpha=0.4, **MASKS),
    ),
    "dpa alpha": (
        ["--loss", "dpa", "--alpha", "0.05"],
        lambda: dpa_loss(*LOGPS, **SPANS, chosen_kl=OUT["chosen_kl"], alpha=0.05, **MASKS),
    ),
    "ddpo": (["--loss", "ddpo"], lambda: ddpo_loss(*LOGPS, **SPANS, **MASKS, beta=0.1, gamma=5.0)),
    "ddpo --ddpo-gamma 1.5": (
        ["--loss", "ddpo", "--ddpo-gamma", "1.5"],
        lambda: ddpo_loss(*LOGPS, **SPANS, **MASKS, gamma=1.5),
    ),
}


def test_every_case_gives_a_distinct_loss():
    """Guards the test's own power: if two cases coincided, a trainer mixing them up would pass."""
    values = {name: direct()[0] for name, (_, direct) in CASES.items()}
    names = list(values)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not torch.allclose(values[a], values[b], atol=1e-6), (a, b)


@pytest.mark.parametrize("case", list(CASES))
def test_compute_loss_equals_the_loss_called_directly(case, tmp_path):
    flags, direct = CASES[case]
    cfg = parse_train_args(["--out", str(tmp_path), "--report-to", "none", *flags])
    trainer = RRPOTrainer(model=FixedOutputs(OUT), args=cfg)
    loss = trainer.compute_loss(trainer.model, {})
    losses, chosen_rewards, rejected_rewards = direct()
    torch.testing.assert_close(loss, losses.mean(), rtol=0, atol=1e-7)
    # the logged rewards come from the same call
    logged = {k: v[-1] for k, v in trainer._stored.items()}
    assert logged["rewards/chosen"] == pytest.approx(chosen_rewards.mean().item(), abs=1e-6)
    assert logged["rewards/margins"] == pytest.approx(
        (chosen_rewards - rejected_rewards).mean().item(), abs=1e-6
    )


def test_the_trainer_builds_its_loss_once_from_the_config(tmp_path):
    cfg = parse_train_args(
        ["--out", str(tmp_path), "--loss", "tdpo", "--tdpo-version", "1", "--alpha", "0.7"]
    )
    trainer = RRPOTrainer(model=FixedOutputs(OUT), args=cfg)
    assert trainer.loss_fn.spec.name == "tdpo"
    assert trainer.loss_fn.options == {"beta": 0.1, "alpha": 0.7, "version": 1}
