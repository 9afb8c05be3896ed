"""Probe: can the vision tower *learn* the direction of motion when it is supervised directly?
(docs/toy.md, "Teaching the vision tower to see motion", fourth session.) Fine-tunes a model's vision
tower and merger with a LayerNorm + linear head on the mean of the 32 video tokens, predicting the
direction of the object that appears first (1500 pretraining clips; the 200 test clips held out).
This direct signal is what `rrpo toy pretrain --vision-steps` turned into a pretraining stage.
Usage: INIT=MODEL_DIR|fresh [LR=1e-3] [STEPS=300] python docs/experiments/toy_vision_probe.py WORLD_DIR"""

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from rrpo.models import load_model
import sys
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2] / "examples"))  # toy_pretrain
import toy_pretrain as pt
from rrpo.toy.splits import load_scenes
from rrpo.toy.world import DIRECTIONS

torch.set_num_threads(1)
torch.manual_seed(0)
world, spec = Path(sys.argv[1]), pt.ModelSpec()
scenes = load_scenes(world)
ids = [i for i in scenes if i.startswith("pretrain_")][:1500] + [i for i in scenes if i.startswith("test_")]
frames = pt.load_frames(world, [f"videos/{i}.mp4" for i in ids], spec)
y = torch.tensor([list(DIRECTIONS).index(scenes[i].objects[0].direction) for i in ids])
init = os.environ["INIT"]
if init == "fresh":
    init = str(pt.build_toy_model(Path(tempfile.mkdtemp()), spec, seed=0))
vlm = load_model(init)
encoder = pt.Encoder(vlm.processor, spec)
head = torch.nn.Sequential(torch.nn.LayerNorm(spec.hidden_size), torch.nn.Linear(spec.hidden_size, 4))
params = list(pt.visual_tower(vlm.model).parameters()) + list(head.parameters())
opt = torch.optim.AdamW(params, lr=float(os.environ.get("LR", "1e-3")))
n_train = 1500
test = np.arange(n_train, len(ids))
rng = np.random.default_rng(0)
for step in range(int(os.environ.get("STEPS", "300")) + 1):
    batch = rng.choice(n_train, 32, replace=False)
    loss = torch.nn.functional.cross_entropy(head(pt.video_features(vlm.model, encoder, frames[batch])), y[batch])
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % 50 == 0:
        with torch.no_grad():
            pred = head(pt.video_features(vlm.model, encoder, frames[test])).argmax(-1)
        print(step, f"loss {loss.item():.3f} test acc {(pred == y[test]).float().mean().item():.2f}", flush=True)
