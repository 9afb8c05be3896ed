"""RRPOConfig: TrainingArguments + RRPO fields, parsed by HfArgumentParser; old flags, YAML, checks."""

from __future__ import annotations

import pytest
import yaml

from rrpo.cli import main
from rrpo.errors import RRPOError
from rrpo.train.config import RRPOConfig, parse_train_args


def test_old_flags_are_aliases_and_trainer_options_are_reachable(tmp_path):
    cfg = parse_train_args(
        ["--out", str(tmp_path), "--loss", "dpo", "--epochs", "2", "--batch-size", "3", "--grad-accum", "4",
         "--lr-scheduler", "linear", "--no-token-kl", "--frame-size", "32", "48", "--learning-rate", "1e-4",
         # TrainingArguments fields no hand table listed
         "--optim", "sgd", "--lr_scheduler_kwargs", '{"foo": 1}', "--torch_compile", "false",
         "--eval_strategy", "no"]
    )  # fmt: skip
    assert (cfg.loss_type, cfg.output_dir, cfg.num_train_epochs) == ("dpo", str(tmp_path), 2.0)
    assert (cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps) == (3, 4)
    assert (cfg.lr_scheduler_type.value, cfg.token_kl, cfg.frame_size) == ("linear", False, [32, 48])
    assert cfg.learning_rate == 1e-4 and cfg.optim.value == "sgd" and cfg.lr_scheduler_kwargs == {"foo": 1}
    assert cfg.alpha == 0.0, "dpo has no regulariser"
    # the paper's defaults where nothing is given
    d = parse_train_args([])
    assert (d.loss_type, d.beta, d.alpha, d.learning_rate, d.gradient_accumulation_steps) == (
        "rrpo", 0.1, 0.01, 5e-6, 32,
    )  # fmt: skip
    assert (d.lr_scheduler_type.value, d.warmup_steps, d.lora_r, d.lora_alpha) == ("cosine", 0.03, 128, 256)


def test_flags_override_the_config_file_which_overrides_defaults(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"beta": 0.5, "lora_r": 8, "optim": "adafactor", "fine_grained": False}))
    cfg = parse_train_args(["--config", str(path), "--lora-r", "16"])
    assert (cfg.beta, cfg.lora_r, cfg.optim.value, cfg.fine_grained) == (0.5, 16, "adafactor", False)
    path.write_text(yaml.safe_dump({"learning_rate": "fast"}))
    with pytest.raises((RRPOError, SystemExit)):
        parse_train_args(["--config", str(path)])
    path.write_text(yaml.safe_dump({"bogus_option": 1}))
    with pytest.raises(RRPOError, match="unknown option.*bogus_option"):
        parse_train_args(["--config", str(path)])


def test_saved_config_reads_back_to_the_same_run(tmp_path):
    cfg = parse_train_args(
        ["--out", str(tmp_path), "--model", "m", "--data", "d.jsonl", "--loss", "tdpo", "--tdpo-version", "1",
         "--optim", "sgd", "--warmup-ratio", "0.1", "--max-steps", "7"]
    )  # fmt: skip
    path = cfg.save(tmp_path)
    again = RRPOConfig.from_sources(path)
    for name in ("loss_type", "tdpo_version", "alpha", "warmup_steps", "max_steps", "model", "output_dir"):
        assert getattr(again, name) == getattr(cfg, name), name
    assert again.optim == cfg.optim
    saved = yaml.safe_load(path.read_text())
    assert "use_cpu" not in saved and "bf16" not in saved, "machine-resolved values are left unsaved"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--learning-rate", "-1"], "learning_rate must be >= 0"),
        (["--lora-r", "0"], "lora_r must be >= 1"),
        (["--batch-size", "0"], "per_device_train_batch_size"),
        (["--grad-accum", "0"], "gradient_accumulation_steps"),
        (["--chunk-size", "0"], "chunk_size must be >= 1"),
        (["--lr-scheduler", "fast"], "lr_scheduler_type.*choose one of"),
        (["--warmup-ratio", "2"], "warmup_ratio must be in"),
        (["--beta", "-5"], "beta must be > 0"),
        (["--epochs", "0"], "num_train_epochs"),
        (["--frame-size", "32"], "frame_size must be two"),
        (["--no-such-flag", "1"], "no-such-flag"),
    ],
)
def test_bad_values_are_one_line_errors(flags, message):
    with pytest.raises(RRPOError, match=message):
        parse_train_args(flags)


def test_cli_prints_the_error_and_help(capsys):
    assert main(["train", "--lora-r", "0"]) == 1
    assert "rrpo train: error: lora_r must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--loss" in out and "--no-fine-grained" in out and "--optim" in out
    with pytest.raises(SystemExit):
        main(["merge", "--unknown-flag"])


def test_presets_set_the_papers_settings_and_flags_and_files_override_them(tmp_path):
    from rrpo.train.config import PRESETS, parse_train_args

    base = ["--model", "m", "--data", "d.jsonl", "--out", str(tmp_path / "o")]
    longvu = parse_train_args([*base, "--preset", "longvu"])
    assert (longvu.learning_rate, longvu.beta, longvu.alpha) == (5e-6, 0.5, 0.05)
    assert (longvu.lora_r, longvu.lora_alpha, longvu.fps, longvu.max_frames) == (128, 256, 1.0, 16)
    assert (longvu.per_device_train_batch_size, longvu.gradient_accumulation_steps, longvu.max_length) == (
        1,
        8,
        8192,
    )
    assert str(longvu.lr_scheduler_type.value) == "cosine"
    chat = parse_train_args([*base, "--preset", "videochat2", "--beta", "0.2"])
    assert (chat.learning_rate, chat.beta, chat.alpha, chat.weight_decay) == (2e-5, 0.2, 0.01, 0.02)
    yaml_file = tmp_path / "t.yaml"
    yaml_file.write_text("alpha: 0.5\n")
    video = parse_train_args([*base, "--preset", "llava-video", "--config", str(yaml_file)])
    assert (video.learning_rate, video.beta, video.alpha) == (5e-6, 0.1, 0.5)
    plain = parse_train_args(base)
    assert plain.beta == 0.1 != PRESETS["longvu"]["beta"] and plain.lora_r == 128 and plain.fps is None
    with pytest.raises(RRPOError, match="--preset 'llama'"):
        parse_train_args([*base, "--preset", "llama"])


def test_activation_checkpointing_is_on_by_default_only_where_it_is_needed():
    """Unset: on for GPU training (a 7B model's activations do not fit without it), off on CPU; a
    value given either way is kept."""
    from rrpo.train.config import checkpointing_default

    assert checkpointing_default(on_gpu=True) is True and checkpointing_default(on_gpu=False) is False
    assert parse_train_args([]).gradient_checkpointing is False  # this machine has no GPU
    assert parse_train_args(["--gradient_checkpointing"]).gradient_checkpointing is True
    assert parse_train_args(["--gradient_checkpointing", "false"]).gradient_checkpointing is False


def test_fsdp_on_cpu_is_refused_rather_than_silently_run_as_ddp(monkeypatch):
    """accelerate applies FSDP to GPU-like processes only: asked for on CPU (a flag or an accelerate FSDP
    config's environment), rrpo says so before anything runs instead of training data-parallel."""
    with pytest.raises(RRPOError, match="FSDP was asked for .* run on CPU"):
        parse_train_args(["--fsdp", "full_shard auto_wrap"])
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(RRPOError, match="FSDP was asked for"):
        parse_train_args([])
