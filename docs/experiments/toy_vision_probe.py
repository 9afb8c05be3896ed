"""Probe: can the vision tower *learn* the direction of motion when it is supervised directly?
(docs/toy.md, "Teaching the vision tower to see motion", fourth session.) Fine-tunes a model's vision
tower and merger with a LayerNorm + linear head on the mean of the 32 video tokens, predicting the
direction of the object that appears first (1500 pretraining clips; the 200 test clips held out).
This direct signal is what `rrpo toy pretrain --vision-steps` turned into a pretraining stage.
Usage: [INIT=MODEL_DIR|fresh] [LR=1e-3] python toy_vision_probe.py WORLD_DIR   (INIT default /tmp/s3/C)"""
import sys, json, numpy as np, torch
sys.path.insert(0, "/work/main")
from pathlib import Path
from rrpo.toy import pretrain as pt
from rrpo.toy.splits import load_scenes
from rrpo.models import load_model
torch.set_num_threads(1); torch.manual_seed(0)
W = Path(sys.argv[1]); spec = pt.ModelSpec()
scenes = load_scenes(W)
ids = [i for i in scenes if i.startswith("pretrain_")][:1500] + [i for i in scenes if i.startswith("test_")]
frames = pt.load_frames(W, [f"videos/{i}.mp4" for i in ids], spec)
D = ["left", "right", "up", "down"]
y = torch.tensor([D.index(scenes[i].objects[0].direction) for i in ids])
import os
INIT = os.environ.get("INIT", "/tmp/s3/C")
if INIT == "fresh":
    INIT = str(pt.build_toy_model(Path("/tmp/g/fresh_" + str(os.getpid())), spec, seed=0))
vlm = load_model(INIT); m = vlm.model; enc = pt.Encoder(vlm.processor, spec)
visual = m.model.visual if hasattr(m.model, "visual") else m.visual
head = torch.nn.Sequential(torch.nn.LayerNorm(128), torch.nn.Linear(128, 4))
opt = torch.optim.AdamW(list(visual.parameters()) + list(head.parameters()), lr=float(os.environ.get("LR", "1e-3")))
def feats(idx):
    px = enc.pixels(frames[np.asarray(idx)])
    grid = enc.grid(len(idx))
    out = visual(px, grid_thw=grid)
    out = out.pooler_output if hasattr(out, "pooler_output") else out
    return out.reshape(len(idx), -1, out.shape[-1]).mean(1)
ntr = 1500; test = list(range(ntr, len(ids)))
rng = np.random.default_rng(0)
for step in range(301):
    b = rng.choice(ntr, 32, replace=False)
    loss = torch.nn.functional.cross_entropy(head(feats(b)), y[b])
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 50 == 0:
        with torch.no_grad():
            acc = (head(feats(test)).argmax(-1) == y[test]).float().mean().item()
        print(step, f"loss {loss.item():.3f} test acc {acc:.2f}", flush=True)
