"""`rrpo eval` and `rrpo deviation` end to end on a tiny random model with synthetic videos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rrpo.cli import main
from rrpo.video import write_video


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    from rrpo.models import build_tiny_model

    root = tmp_path_factory.mktemp("eval_world")
    model = build_tiny_model("qwen2-vl", root / "model", num_frames=4)
    rng = np.random.default_rng(1)
    for i in range(3):
        write_video(
            root / "videos" / f"c{i}.mp4", rng.integers(0, 255, (6, 56, 56, 3), dtype=np.uint8), fps=4
        )
    # VideoHallucer layout: <category>/<category>.json, one pair's video is missing.
    cat = root / "vh" / "object_relation"
    cat.mkdir(parents=True)
    pairs = [
        {
            "basic": {"video": f"c{i}.mp4", "question": f"Is there a dog {i}?", "answer": "yes"},
            "hallucination": {"video": f"c{i}.mp4", "question": f"Is there a cat {i}?", "answer": "no"},
            "type": "object_relation",
        }
        for i in range(2)
    ] + [
        {
            "basic": {"video": "gone.mp4", "question": "Q?", "answer": "yes"},
            "hallucination": {"video": "gone.mp4", "question": "Q?", "answer": "no"},
            "type": "object_relation",
        }
    ]
    (cat / "object_relation.json").write_text(json.dumps(pairs))
    # MVBench layout: one json per task.
    (root / "mvb").mkdir()
    (root / "mvb" / "order.json").write_text(
        json.dumps(
            [
                {
                    "video": f"c{i}.mp4",
                    "question": f"Which first {i}?",
                    "candidates": ["red", "blue", "green"],
                    "answer": "blue",
                }
                for i in range(3)
            ]
        )
    )
    return {"root": root, "model": model}


def _preds(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def test_eval_videohallucer_scores_and_reports_missing(setup, tmp_path) -> None:
    out = tmp_path / "vh_run"
    args = [
        "eval",
        "--model",
        str(setup["model"]),
        "--benchmark",
        "videohallucer",
        "--annotations",
        str(setup["root"] / "vh"),
        "--video-root",
        str(setup["root"] / "videos"),
        "--frames",
        "4",
        "--max-new-tokens",
        "4",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    preds = {p["id"]: p["prediction"] for p in _preds(out)}
    assert len(preds) == 4, "two pairs with videos -> four questions answered"
    assert results["excluded_videos_count"] == 2
    assert {e["reason"] for e in results["excluded_videos"]} == {"missing video"}
    assert results["counts"]["questions"] == 4, "the missing-video pair is left out of the denominator"
    assert results["meta"]["model"] == str(setup["model"]) and results["meta"]["frames"] == 4
    # An independent rescoring of the written predictions with the official rule: \b(gold)\b in the reply.
    import re

    gold = {
        "object_relation/0/basic": "yes",
        "object_relation/0/hallucination": "no",
        "object_relation/1/basic": "yes",
        "object_relation/1/hallucination": "no",
    }
    assert set(preds) == set(gold)
    hits = {k: bool(re.search(rf"\b({gold[k]})\b", preds[k], re.IGNORECASE)) for k in gold}
    pair_acc = (
        sum(
            hits[f"object_relation/{i}/basic"] and hits[f"object_relation/{i}/hallucination"]
            for i in range(2)
        )
        / 2
    )
    assert results["metrics"][results["headline"]] == pytest.approx(100 * pair_acc)


def test_eval_resumes_from_appended_predictions(setup, tmp_path, monkeypatch) -> None:
    out = tmp_path / "mvb_run"
    args = [
        "eval",
        "--model",
        str(setup["model"]),
        "--benchmark",
        "mvbench",
        "--annotations",
        str(setup["root"] / "mvb"),
        "--video-root",
        str(setup["root"] / "videos"),
        "--frames",
        "4",
        "--max-new-tokens",
        "4",
        "--batch-size",
        "2",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    first = _preds(out)
    assert len(first) == 3
    # Simulate an interruption after the first answer, then rerun: only the missing two are generated.
    (out / "predictions.jsonl").write_text(json.dumps(first[0]) + "\n")
    from rrpo.models.base import VideoLMAdapter

    asked = []
    real = VideoLMAdapter.generate

    def counting(self, items, **kw):
        asked.extend(items)
        return real(self, items, **kw)

    monkeypatch.setattr(VideoLMAdapter, "generate", counting)
    assert main(args) == 0
    assert len(asked) == 2 and sorted(p["id"] for p in _preds(out)) == sorted(p["id"] for p in first)
    assert _preds(out) == [first[0]] + [p for p in first if p["id"] != first[0]["id"]]


def test_deviation_is_zero_for_untrained_adapter_and_matches_naive(setup, tmp_path) -> None:
    from peft import LoraConfig, get_peft_model

    from rrpo.models import load_model

    vlm = load_model(setup["model"], num_frames=4)
    peft_model = get_peft_model(
        vlm.model, LoraConfig(r=4, lora_alpha=8, target_modules=vlm.lora_target_modules)
    )
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    data = tmp_path / "qs.jsonl"
    data.write_text(
        "\n".join(
            json.dumps(
                {
                    "id": f"q{i}",
                    "video": f"c{i}.mp4",
                    "question": "Is it red?",
                    "answer": "yes",
                    "answer_type": "yesno",
                }
            )
            for i in range(3)
        )
        + "\n"
    )
    assert (
        main(
            [
                "deviation",
                "--model",
                str(setup["model"]),
                "--adapter",
                str(adapter),
                "--data",
                str(data),
                "--video-root",
                str(setup["root"] / "videos"),
                "--frames",
                "4",
                "--out",
                str(tmp_path / "dev0"),
            ]
        )
        == 0
    )
    zero = json.loads((tmp_path / "dev0" / "deviation.json").read_text())
    assert zero["examples"] == 3 and zero["mean_token_kl"] == pytest.approx(0.0, abs=1e-7)
    assert (tmp_path / "dev0" / "deviation.png").stat().st_size > 1000

    # Move the adapter, then compare with a naive KL from two full forwards (adapter on / off).
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    peft_model.save_pretrained(adapter)
    from rrpo.eval.deviation import model_deviation

    aligned = load_model(setup["model"], adapter_dir=adapter, num_frames=4)
    result = model_deviation(
        setup["model"],
        adapter,
        data,
        setup["root"] / "videos",
        tmp_path / "dev1",
        vlm=aligned,
        progress=False,
    )
    assert result["mean_token_kl"] > 1e-4
    from rrpo.models.packing import encode_prefix, encode_response

    clip = aligned.read_frames(setup["root"] / "videos" / "c0.mp4")
    prompt = "Is it red?\nAnswer the question using 'yes' or 'no'."
    prefix_ids, mm = encode_prefix(aligned, clip, prompt)
    resp_ids, _ = encode_response(aligned, "Yes", [])
    ids = torch.cat([prefix_ids, resp_ids]).unsqueeze(0)
    kwargs = {k: v for k, v in mm.items() if k != "mm_token_type_ids"}
    if "mm_token_type_ids" in mm:  # 1 on video tokens of the prefix, 0 on the appended response
        kwargs["mm_token_type_ids"] = torch.cat(
            [mm["mm_token_type_ids"], torch.zeros_like(resp_ids)]
        ).unsqueeze(0)
    with torch.no_grad():
        pol = aligned.model(input_ids=ids, **kwargs).logits.double().log_softmax(-1)
        with aligned.model.disable_adapter():
            ref = aligned.model(input_ids=ids, **kwargs).logits.double().log_softmax(-1)
    p = prefix_ids.numel()
    rows = range(p - 1, p - 1 + resp_ids.numel())
    naive = np.mean([float((ref[0, t].exp() * (ref[0, t] - pol[0, t])).sum()) for t in rows])
    assert result["per_example"][0]["mean_kl"] == pytest.approx(naive, rel=1e-4, abs=1e-7)


def test_eval_data_parallel_two_processes(setup, tmp_path) -> None:
    import os
    import subprocess
    import sys

    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun not installed beside this python")
    out = tmp_path / "ddp_eval"
    cmd = [
        str(torchrun),
        "--nproc_per_node",
        "2",
        "--master_port",
        "29531",
        "-m",
        "rrpo.cli",
        "eval",
        "--model",
        str(setup["model"]),
        "--benchmark",
        "mvbench",
        "--annotations",
        str(setup["root"] / "mvb"),
        "--video-root",
        str(setup["root"] / "videos"),
        "--frames",
        "4",
        "--max-new-tokens",
        "4",
        "--out",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Each rank answered its share into its own file; the main process merged all three.
    ranks = [len((out / f"predictions.rank{r}.jsonl").read_text().splitlines()) for r in range(2)]
    assert sorted(ranks) == [1, 2]
    assert sorted(p["id"] for p in _preds(out)) == [f"order/{i}" for i in range(3)]
    assert json.loads((out / "results.json").read_text())["counts"]["questions"] == 3


def _annotations(name: str, root: Path) -> Path:
    """A minimal annotation set in each benchmark's official layout."""
    ann = root / f"ann_{name}"
    ann.mkdir()
    mc = {"question": "Which colour?", "candidates": ["red", "blue", "green"], "answer": "blue"}
    if name == "videohallucer":
        (ann / "temporal").mkdir()
        (ann / "temporal" / "temporal.json").write_text(
            json.dumps(
                [
                    {
                        "basic": {"video": "a.mp4", "question": "Is it red?", "answer": "yes"},
                        "hallucination": {"video": "a.mp4", "question": "Is it blue?", "answer": "no"},
                        "type": "temporal",
                    }
                ]
            )
        )
    elif name in ("tvbench", "mvbench"):
        (ann / "action_sequence.json").write_text(
            json.dumps([{**mc, "video": "a.mp4"}, {**mc, "video": "b.mp4", "start": 0.1, "end": 0.9}])
        )
    elif name == "mlvu":
        (ann / "4_count.json").write_text(
            json.dumps([{**mc, "video": "a.mp4", "duration": 1.5, "question_type": "count"}])
        )
    elif name == "videomme":
        (ann / "videomme.json").write_text(
            json.dumps(
                [
                    {
                        "video_id": "001",
                        "videoID": "a",
                        "duration": "short",
                        "domain": "Knowledge",
                        "task_type": "Counting",
                        "question_id": "001-1",
                        "question": "How many?",
                        "options": ["A. one", "B. two", "C. three", "D. four"],
                        "answer": "B",
                    }
                ]
            )
        )
    elif name == "tempcompass":
        (ann / "questions").mkdir()
        (ann / "questions" / "multi-choice.json").write_text(
            json.dumps({"a": {"speed": [{"question": "How fast?\nA. slow\nB. fast", "answer": "B. fast"}]}})
        )
        (ann / "questions" / "yes_no.json").write_text(
            json.dumps({"a": {"speed": [{"question": "Is it slow?", "answer": "no"}]}})
        )
    elif name == "longvideobench":
        (ann / "lvb_val.json").write_text(
            json.dumps(
                [
                    {
                        "id": "q1",
                        "video_path": "a.mp4",
                        "question": "Which?",
                        "candidates": ["p", "q", "r", "s", "t"],
                        "correct_choice": 3,
                        "duration_group": 15,
                    }
                ]
            )
        )
    return ann


@pytest.mark.parametrize(
    "name", ["videohallucer", "tvbench", "mvbench", "mlvu", "videomme", "tempcompass", "longvideobench"]
)
def test_eval_every_benchmark_layout(setup, tmp_path, name) -> None:
    from rrpo.eval.benchmarks import BENCHMARKS

    ann = _annotations(name, tmp_path)
    items = BENCHMARKS[name].load(ann)
    videos = tmp_path / "videos"
    rng = np.random.default_rng(2)
    for video in {it.video for it in items}:
        write_video(videos / video, rng.integers(0, 255, (8, 56, 56, 3), dtype=np.uint8), fps=8)
    out = tmp_path / "run"
    assert (
        main(
            [
                "eval",
                "--model",
                str(setup["model"]),
                "--benchmark",
                name,
                "--annotations",
                str(ann),
                "--video-root",
                str(videos),
                "--frames",
                "4",
                "--max-new-tokens",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert sorted(p["id"] for p in _preds(out)) == sorted(it.id for it in items)
    results = json.loads((out / "results.json").read_text())
    assert results["excluded_videos_count"] == 0 and results["meta"]["benchmark"] == name
    assert results["headline"] in results["metrics"]


def test_eval_decodes_each_video_once_for_all_its_questions(tmp_path) -> None:
    """Questions on one clip share its decode (the toy's temporal set asks several per clip), and the
    answers equal answering each question on its own freshly decoded clip."""
    from rrpo.eval.benchmarks import BENCHMARKS
    from rrpo.eval.runner import run_eval
    from rrpo.models import build_tiny_model, load_model
    from rrpo.toy.splits import generate_dataset

    toy = tmp_path / "toy"
    generate_dataset(toy, seed=2, n_pretrain=1, n_train=1, n_test=3, n_prior_break=1, progress=False)
    annotations = toy / "benchmarks" / "temporal"
    items = BENCHMARKS["mvbench"].load(annotations)
    clips = {(it.video, it.start, it.end) for it in items}
    assert len(clips) < len(items)  # several questions per clip
    vlm = load_model(build_tiny_model("qwen2-vl", tmp_path / "m", num_frames=4), num_frames=4)
    decodes = []
    original = vlm.read_clip
    vlm.read_clip = lambda path, **kw: decodes.append(path) or original(path, **kw)
    run_eval(
        "m",
        "mvbench",
        annotations,
        toy,
        tmp_path / "ev",
        vlm=vlm,
        batch_size=1,
        max_new_tokens=4,
        progress=False,
        quiet=True,
    )
    assert len(decodes) == len(clips)
    got = {
        json.loads(line)["id"]: json.loads(line)["prediction"]
        for line in (tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()
    }
    for it in items:
        clip = original(toy / it.video, start_sec=it.start, end_sec=it.end)
        assert got[it.id] == vlm.generate([(clip, it.prompt)], max_new_tokens=4)[0], it.id
