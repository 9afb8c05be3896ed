"""Exploratory probe of the toy base model (see docs/toy.md). WORLD: a `rrpo toy generate` directory."""
import os
WORLD = os.environ.get("WORLD", "/tmp/pt/world")
import json, random, time, torch
from rrpo.models import load_model
from rrpo.models.packing import encode_prefix, encode_response
from rrpo.video import read_frames
torch.manual_seed(0); random.seed(0); torch.set_num_threads(1)
vlm = load_model("rrpo/toy/checkpoint"); m = vlm.model; m.train()
recs = [json.loads(l) for l in open(WORLD + "/pretrain.jsonl")]
single = [r for r in recs if r["metadata"]["n_objects"] == 1][:500]
col = lambda r: r["metadata"]["caption"].split("object. ")[1].split()[0]
ex = []
for r in single:
    fr = read_frames(WORLD + "/" + r["video"], 16, size=tuple(vlm.frame_size))
    items = [("What colour is the object?", col(r), "colour")]
    items += [(t["question"] + "\nAnswer the question using 'yes' or 'no'.", t["answer"].capitalize(), "exist")
              for t in r["turns"] if t["kind"] == "existence"]
    for q, a, k in items:
        ids, mm = encode_prefix(vlm, fr, q); rid, _ = encode_response(vlm, a, [])
        ex.append((ids, rid, mm, k))
train, test = ex[: int(len(ex) * 0.8)], ex[int(len(ex) * 0.8):]
def run(items, grad):
    tot, acc = 0, 0
    for ids, rid, mm, _ in items:
        inp = torch.cat([ids, rid])[None]
        kw = {k: v for k, v in mm.items() if k != "mm_token_type_ids"}
        kw["mm_token_type_ids"] = torch.cat([mm["mm_token_type_ids"], torch.zeros_like(rid)])[None]
        lg = m(input_ids=inp, **kw).logits[0, ids.numel() - 1]
        tot = tot + torch.nn.functional.cross_entropy(lg[None], rid[:1])
        acc += int(lg.argmax() == rid[0])
    return tot / len(items), acc / len(items)
opt = torch.optim.AdamW(m.parameters(), lr=1e-3); t0 = time.time(); s = 0
while time.time() - t0 < 480:
    loss, _ = run(random.sample(train, 16), True); opt.zero_grad(); loss.backward(); opt.step(); s += 1
    if s % 50 == 0:
        with torch.no_grad():
            m.eval(); r = {k: run([e for e in test if e[3] == k][:80], False) for k in ("colour", "exist")}; m.train()
        print(s, {k: (round(v[0].item(), 3), round(v[1], 2)) for k, v in r.items()}, f"{time.time()-t0:.0f}s", flush=True)
