"""Probe: held-out (test clips) accuracy / loss of the auxiliary tasks of `rrpo toy pretrain` for toy
checkpoints (a step_N folder borrows its parent's tokenizer and processor). The accuracy is the greedy
choice at the answer's deciding token (the colour / direction word, or Yes / No). Needs the world in
/tmp/pt/world and /tmp/p2/bench.npy + bench.json (toy_interaction_probe.py writes them).
Usage: python toy_aux_eval.py MODEL_DIR [MODEL_DIR ...]"""
import json, sys, numpy as np, torch
sys.path.insert(0, "/work/main")
from pathlib import Path
import sys
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2] / "examples"))  # toy_pretrain
import toy_pretrain as pt
from rrpo.toy.splits import load_scenes, load_world
from rrpo.toy.world import WorldConfig
from rrpo.models import load_model
torch.set_num_threads(1)
W = Path("/tmp/pt/world"); spec = pt.ModelSpec()
vids = json.load(open("/tmp/p2/bench.json")); bench = np.load("/tmp/p2/bench.npy", mmap_mode="r")
scenes = load_scenes(W); cfg = load_world(W)["config"]
recs = [{"id": f"test_{i:06d}"} for i in range(200)]
idx = [vids.index(f"videos/{r['id']}.mp4") for r in recs]
frames = np.asarray(bench[idx])
kinds = ["first_colour", "which_colour", "first_direction", "which_direction", "directions", "yesno_motion", "yesno_temporal"]
exs = pt.aux_examples(recs, scenes, cfg["colours"], kinds, WorldConfig(**cfg))
import shutil
for d in sys.argv[1:]:
    for f in Path(d).parent.iterdir():
        if f.is_file() and not (Path(d) / f.name).exists() and f.suffix != ".md" and f.name != "pretrain_metrics.json":
            shutil.copy(f, Path(d) / f.name)
    vlm = load_model(d); m = vlm.model.eval(); enc = pt.Encoder(vlm.processor, spec)
    res = {}
    with torch.no_grad():
        for k in kinds:
            ks = [e for e in exs if e.kind == k][:150]
            ok = []; losses = []
            for i in range(0, len(ks), 50):
                ch = ks[i:i+50]; b = enc.batch(ch, frames); lg = pt.forward_logits(m, b)
                for j, e in enumerate(ch):
                    ends = (b["labels"][j] != -100).nonzero().flatten()
                    pos = int(b["answer_start"][j]) + (e.decisive if e.decisive is not None else len(ends) - 2)
                    ok.append(int(lg[j, pos - 1].argmax()) == int(b["input_ids"][j, pos]))
                    losses.append(float(torch.nn.functional.cross_entropy(lg[j, pos - 1], b["input_ids"][j, pos])))
            res[k] = f"{100*np.mean(ok):.0f}%/{np.mean(losses):.2f}"
    print(d, res, flush=True)
