"""Exploratory probe of the toy base model (see docs/toy.md). WORLD: a `rrpo toy generate` directory.

Usage: WORLD=DIR python docs/experiments/toy_colour_probe.py rrpo/toy/checkpoint 1e-3 100  (checkpoint, lr, steps)
"""
import os
WORLD = os.environ.get("WORLD", "/tmp/pt/world")
import json, random, sys, time, torch, numpy as np
from rrpo.models import load_model
from rrpo.models.packing import encode_prefix, encode_response
from rrpo.video import read_frames
torch.manual_seed(0); random.seed(0)
ck = sys.argv[1]; lr = float(sys.argv[2]); steps = int(sys.argv[3])
vlm = load_model(ck)
m = vlm.model; m.train()
recs = [json.loads(l) for l in open(WORLD + "/pretrain.jsonl")]
single = [r for r in recs if r["metadata"]["n_objects"] == 1][:400]
def colour(r): return r["metadata"]["caption"].split("object. ")[1].split()[0]
ex = []
t0=time.time()
for r in single:
    fr = read_frames(WORLD + "/" + r["video"], 16, size=tuple(vlm.frame_size))
    ids, mm = encode_prefix(vlm, fr, "What colour is the object?")
    rid, _ = encode_response(vlm, colour(r), [])
    ex.append((ids, rid, mm, colour(r)))
print("encoded", len(ex), time.time()-t0, flush=True)
train, test = ex[:300], ex[300:]
def batch_loss(items, shuffle=False):
    losses=[]
    mms=[e[2] for e in items]
    if shuffle: mms = mms[1:]+mms[:1]
    tot=0
    for (ids, rid, _, _), mm in zip(items, mms):
        inp = torch.cat([ids, rid])[None]
        kw = {k:v for k,v in mm.items() if k!="mm_token_type_ids"}
        kw["mm_token_type_ids"] = torch.cat([mm["mm_token_type_ids"], torch.zeros_like(rid)])[None]
        logits = m(input_ids=inp, **kw).logits[0]
        P = ids.numel()
        lp = logits[P-1:P-1+rid.numel()].log_softmax(-1).gather(-1, rid[:,None])
        tot = tot - lp[0]  # first token = colour word
    return tot/len(items)
opt = torch.optim.AdamW([p for p in m.parameters()], lr=lr)
for s in range(steps):
    b = random.sample(train, 16)
    loss = batch_loss(b)
    opt.zero_grad(); loss.backward(); opt.step()
    if s % 25 == 0 or s == steps-1:
        with torch.no_grad():
            m.eval(); tl = batch_loss(test).item(); ts = batch_loss(test, shuffle=True).item(); m.train()
        print(f"step {s} train {loss.item():.3f} test {tl:.3f} test-shuffled-video {ts:.3f} {time.time()-t0:.0f}s", flush=True)
