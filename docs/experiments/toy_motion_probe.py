"""Probe: is the direction of motion in the toy model's video features, and in what form?
(docs/toy.md, "Motion is in the features but not where the language model looks", third session.)
Trains logistic-regression readouts (300 Adam steps, 2400 train / 600 held-out pretraining clips) of the
direction of the object that appears first from (a) raw pixels, (b) the merger outputs of a model,
all 32 video tokens concatenated (a position-specific readout), and (c) the same features averaged over
the tokens (what uniform attention would give the language model). Needs /tmp/p2/pre.npy (decoded
pretraining frames, written by toy_interaction_probe.py) and the world in /tmp/pt/world.
Usage: python toy_motion_probe.py MODEL_DIR [MODEL_DIR ...]"""
import json, sys, numpy as np, torch
sys.path.insert(0, "/work/main")
from pathlib import Path
import sys
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2] / "examples"))  # toy_pretrain
from toy_pretrain import ModelSpec, Encoder, read_pretrain, build_toy_model
from rrpo.models import load_model
torch.set_num_threads(1); torch.manual_seed(0)
W = Path("/tmp/pt/world")
recs = read_pretrain(W); pre = np.load("/tmp/p2/pre.npy", mmap_mode="r")
scenes = {json.loads(l)["id"]: json.loads(l)["scene"] for l in open(W / "scenes.jsonl")}
DIRS = {(-1,0):0,(1,0):1,(0,-1):2,(0,1):3}
y = torch.tensor([DIRS[(int(np.sign(scenes[r["id"]]["objects"][0]["vx"])), int(np.sign(scenes[r["id"]]["objects"][0]["vy"])))] for r in recs])
nobj = torch.tensor([len(scenes[r["id"]]["objects"]) for r in recs])
def feats(model_dir, spec):
    vlm = load_model(model_dir); m = vlm.model.eval(); enc = Encoder(vlm.processor, spec)
    out = []
    with torch.no_grad():
        for i in range(0, len(recs), 100):
            fr = np.asarray(pre[i:i+100]); pv = enc.pixels(fr); g = enc.grid(len(fr))
            f = m.model.get_video_features(pixel_values_videos=pv, video_grid_thw=g)
            f = f.pooler_output if hasattr(f, "pooler_output") else f
            f = torch.cat(list(f)) if isinstance(f, (list, tuple)) else f
            out.append(f.reshape(len(fr), spec.video_tokens(), -1))
    return torch.cat(out)
def probe(X, name):
    X = X.reshape(len(X), -1)
    X = (X - X[:2400].mean(0)) / (X[:2400].std(0) + 1e-5)
    lin = torch.nn.Linear(X.shape[1], 4); opt = torch.optim.Adam(lin.parameters(), 1e-3, weight_decay=1e-4)
    for it in range(300):
        loss = torch.nn.functional.cross_entropy(lin(X[:2400]), y[:2400]); opt.zero_grad(); loss.backward(); opt.step()
    ok = (lin(X[2400:]).argmax(1) == y[2400:]).float(); s = nobj[2400:] == 1
    print(name, f"held-out acc {ok.mean():.3f} single-object {ok[s].mean():.3f}", flush=True)
probe(torch.from_numpy(np.asarray(pre[:, :, ::4, ::4]).astype(np.float32)), "raw pixels, every 4th")
for d in sys.argv[1:]:
    spec = ModelSpec(**json.load(open(Path(d) / "rrpo_family.json"))["toy_model_spec"])
    F = feats(d, spec)
    probe(F, f"{d}: tokens concatenated")
    probe(F.mean(1), f"{d}: tokens averaged")
