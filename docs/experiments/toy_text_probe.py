"""Exploratory probe (docs/toy.md). Text-only: can the toy LM learn the question-video interactions when the 'video' is a text
description of each 2-frame slice? Decisive-token loss."""
import os, json, random, time, sys, numpy as np, torch
sys.path.insert(0, "/work/main")
from pathlib import Path
import sys
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2] / "examples"))  # toy_pretrain
from toy_pretrain import ModelSpec, build_toy_model, turn_example, read_pretrain, IGNORE
from rrpo.models import load_model
E = os.environ.get
torch.set_num_threads(1); torch.manual_seed(0); rng = random.Random(0)
W = Path(E("WORLD", "/tmp/pt/world")); out = Path(E("OUT", "/tmp/p2")) / "T"; build_toy_model(out, ModelSpec(), seed=0)
vlm = load_model(str(out)); model = vlm.model; tok = vlm.processor.tokenizer; proc = vlm.processor
recs = read_pretrain(W); scenes = {json.loads(l)["id"]: json.loads(l)["scene"] for l in open(W / "scenes.jsonl")}
DIRS = {(-1,0):"left",(1,0):"right",(0,-1):"up",(0,1):"down"}
def scene_text(objs):
    parts = []
    for s in range(8):
        vis = [f"{o['colour']} {o['shape']} {DIRS[(int(np.sign(o['vx'])), int(np.sign(o['vy'])))]}" for o in objs if o["start"] < 2*s+2 and o["end"] > 2*s]
        parts.append(f"{s+1}: " + (", ".join(vis) if vis else "nothing") + ".")
    return " ".join(parts)
KINDS = E("KINDS", "order,direction,count,existence").split(",")
exs = []
for i, r in enumerate(recs):
    st = scene_text(scenes[r["id"]]["objects"])
    for k, t in enumerate(r["turns"]):
        if t["kind"] in KINDS:
            ex = turn_example(i, t, "x")
            msgs = [{"role": "user", "content": [{"type": "text", "text": st + "\n" + ex.prompt}]}]
            p = tok(proc.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True), add_special_tokens=False)["input_ids"]
            a = tok(ex.answer + "<|im_end|>", add_special_tokens=False)["input_ids"]
            exs.append((p, a, ex.decisive, ex.kind, i))
test = [e for e in exs if e[4] >= 2700]; train = [e for e in exs if e[4] < 2700]
print("train", len(train), "len", np.mean([len(e[0]) for e in exs]), flush=True)
def batch(items):
    L = max(len(p) + len(a) for p, a, *_ in items)
    ids = torch.full((len(items), L), tok.pad_token_id); lab = torch.full((len(items), L), IGNORE); m = torch.zeros((len(items), L), dtype=torch.long)
    for j, (p, a, d, *_ ) in enumerate(items):
        s = p + a; ids[j, :len(s)] = torch.tensor(s); m[j, :len(s)] = 1; lab[j, len(p) + d] = a[d]
    return ids, m, lab
def ce(items):
    ids, m, lab = batch(items)
    lg = model(input_ids=ids, attention_mask=m, use_cache=False).logits
    t = torch.nn.functional.cross_entropy(lg[:, :-1].reshape(-1, lg.shape[-1]), lab[:, 1:].reshape(-1), ignore_index=IGNORE, reduction="none").view(len(items), -1)
    pred = lg[:, :-1].argmax(-1); ok = ((pred == lab[:, 1:]) | (lab[:, 1:] == IGNORE)).all(1)
    return t.sum(1), ok
opt = torch.optim.AdamW(model.parameters(), lr=float(E("LR", "2e-3")), betas=(0.9, 0.98))
t0 = time.time(); step = 0
while time.time() - t0 < float(E("MIN", "10")) * 60:
    items = rng.sample(train, 32); l, _ = ce(items); loss = l.mean()
    for g in opt.param_groups: g["lr"] = float(E("LR", "2e-3")) * min(1, (step + 1) / 50)
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step(); step += 1
    if step % 50 == 0:
        with torch.no_grad():
            model.eval(); r = {}
            for k in KINDS:
                its = [e for e in test if e[3] == k][:128]; _, ok = ce(its); r[k] = round(100 * ok.float().mean().item())
            model.train()
        print(step, f"{time.time()-t0:.0f}s {loss.item():.3f}", r, flush=True)
