"""Exploratory probe of toy pretraining recipes (docs/toy.md, "Why the benchmark questions do not learn").
Trains a fresh (or INIT) toy Qwen2-VL on a mix of task kinds and logs the loss per kind.
WORLD: a `rrpo toy generate` directory (DEFAULT_DATA of rrpo/toy/pretrain.py); OUT: scratch directory.
Env: NAME, LR, MIN (minutes), BATCH, HID, HEADS, KV, LAYERS, VDIM, VDEPTH, TASKS (comma list),
QALOSS (decisive|all), SINGLE_STEPS, SEED, EVAL_EVERY"""
import os, json, random, time, sys, numpy as np, torch
sys.path.insert(0, "/work/main")
from pathlib import Path
import sys
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2] / "examples"))  # toy_pretrain
from toy_pretrain import (ModelSpec, build_toy_model, Encoder, Example, forward_logits, IGNORE,
    eval_examples_from_benchmarks, decisions, turn_example, read_pretrain)
from rrpo.models import load_model
E = os.environ.get
NAME = E("NAME", "p"); LR = float(E("LR", "2e-3")); MIN = float(E("MIN", "10")); BATCH = int(E("BATCH", "32"))
TASKS = E("TASKS", "order,direction,count,existence,colours").split(",")
QALOSS = E("QALOSS", "decisive"); SINGLE = int(E("SINGLE_STEPS", "0")); EV = int(E("EVAL_EVERY", "100"))
torch.set_num_threads(1); torch.manual_seed(int(E("SEED", "0"))); random.seed(int(E("SEED", "0")))
spec = ModelSpec(hidden_size=int(E("HID", "128")), num_heads=int(E("HEADS", "4")), num_kv_heads=int(E("KV", "2")),
                 num_layers=int(E("LAYERS", "4")), vision_dim=int(E("VDIM", "32")), vision_depth=int(E("VDEPTH", "2")))
W = Path(E("WORLD", "/tmp/pt/world")); OUT = Path(E("OUT", "/tmp/p2")); out = OUT / NAME; OUT.mkdir(parents=True, exist_ok=True)
if not (OUT / "pre.npy").is_file():  # decode once (about 1 minute), reuse across probes
    from toy_pretrain import load_frames, benchmark_videos
    np.save(OUT / "pre.npy", load_frames(W, [r["video"] for r in read_pretrain(W)], spec))
    vids = benchmark_videos(W); np.save(OUT / "bench.npy", load_frames(W, vids, spec))
    json.dump(vids, open(OUT / "bench.json", "w"))
build_toy_model(out / "init", spec, seed=int(E("SEED", "0")))
if E("INIT"):
    import shutil
    for f in (out / "init").iterdir():
        if f.name not in ("model.safetensors", "config.json", "generation_config.json"): shutil.copy(f, E("INIT"))
vlm = load_model(E("INIT") or str(out / "init")); model = vlm.model
enc = Encoder(vlm.processor, spec)
recs = read_pretrain(W); pre = np.load(OUT / "pre.npy")
scenes = {json.loads(l)["id"]: json.loads(l)["scene"] for l in open(W / "scenes.jsonl")}
PAL = ["red", "green", "blue", "yellow"]
exs = []
for i, r in enumerate(recs):
    objs = scenes[r["id"]]["objects"]
    for k, t in enumerate(r["turns"]):
        if t["kind"] in TASKS:
            exs.append(turn_example(i, t, f"{r['id']}/{k}"))
    if "colours" in TASKS:
        cs = "colours: " + " ".join(c for c in PAL if c in {o["colour"] for o in objs})
        exs.append(Example(i, "Which colours appear in the video?", cs, "colours", r["id"] + "/c", None))
    if "objdesc" in TASKS:
        DIRS = {(-1,0):"left",(1,0):"right",(0,-1):"up",(0,1):"down"}
        present = {o["colour"] for o in objs}
        for o in objs:
            d = DIRS[(int(np.sign(o["vx"])), int(np.sign(o["vy"])))]
            exs.append(Example(i, f"Describe the {o['colour']} object.", f"a {o['colour']} {o['shape']} {d} {o['start'] + 1}", "objdesc", r["id"] + "/o", None))
        for c in PAL:
            if c not in present:
                exs.append(Example(i, f"Describe the {c} object.", f"a {c} is absent", "objabsent", r["id"] + "/n", None)); break
    if "order2" in TASKS and len(objs) >= 2:
        from rrpo.selfalign.pipeline import question_prompt, reference_answer
        from rrpo.data.record import VideoQuestion
        which = "first" if (i % 2) else "last"
        ans = objs[0]["colour"] if which == "first" else objs[-1]["colour"]
        q = VideoQuestion(id="x", video="v", question=f"Which colour appears {which}?", answer=ans, answer_type="mcq", options=PAL)
        exs.append(Example(i, question_prompt(q), reference_answer(q), "order2", r["id"] + "/o2", 1))
    if "dir1" in TASKS and len(objs) == 1:
        for k, t in enumerate(r["turns"]):
            if t["kind"] == "direction": exs.append(turn_example(i, t, f"{r['id']}/{k}")); exs[-1].kind = "dir1"
    if "which" in TASKS:  # one named colour present, one absent: additive logits solve it (no interaction)
        present = [o["colour"] for o in objs]; absent = [c for c in PAL if c not in present]
        a, b = present[i % len(present)], absent[(i // 2) % len(absent)]
        x, y = (a, b) if i % 3 else (b, a)
        exs.append(Example(i, f"Which of these colours appears in the video: {x} or {y}?", "the " + a, "which", r["id"] + "/w", None))
    if "first" in TASKS:
        exs.append(Example(i, "What colour is the object that appears first?", "the " + objs[0]["colour"], "first", r["id"] + "/f", None))
    if "shape" in TASKS:
        for o in objs:
            exs.append(Example(i, f"What shape is the {o['colour']} object?", o["shape"], "shape", r["id"] + "/s", None))
    if "dir" in TASKS:
        for o in objs:
            d = {(-1,0):"left",(1,0):"right",(0,-1):"up",(0,1):"down"}[(int(np.sign(o["vx"])), int(np.sign(o["vy"])))]
            exs.append(Example(i, f"Where does the {o['colour']} object move?", d, "dir", r["id"] + "/d", None))
nobj = [len(scenes[r["id"]]["objects"]) for r in recs]
single = [j for j, e in enumerate(exs) if nobj[e.clip] == 1]
print(NAME, "examples", len(exs), "single", len(single), {t: sum(e.kind == t for e in exs) for t in set(e.kind for e in exs)}, flush=True)
vids = json.load(open(OUT / "bench.json")); bf = np.load(OUT / "bench.npy")
groups = eval_examples_from_benchmarks(W, {v: i for i, v in enumerate(vids)})
rng = random.Random(0); groups = {k: rng.sample(v, min(100, len(v))) for k, v in groups.items()}
def ev():
    r = {k: round(100 * np.mean([c for c, _ in decisions(model, enc, v, bf)])) for k, v in groups.items()}
    model.train(); return r
opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.98), weight_decay=0.0)
t0 = time.time(); step = 0; losses = []; kl = {}
while time.time() - t0 < MIN * 60:
    pool = single if step < SINGLE else range(len(exs))
    batch = [exs[j] for j in rng.sample(pool, BATCH)] if step < SINGLE else [exs[j] for j in rng.sample(range(len(exs)), BATCH)]
    b = enc.batch(batch, pre); lab = b["labels"]
    if QALOSS == "decisive":
        for i, e in enumerate(batch):
            if e.decisive is not None:
                p = int(b["answer_start"][i]) + e.decisive; keep = lab[i, p].item()
                lab[i] = IGNORE; lab[i, p] = keep
    for g in opt.param_groups: g["lr"] = LR * min(1, (step + 1) / 50)
    lg = forward_logits(model, b)
    tok = torch.nn.functional.cross_entropy(lg[:, :-1].reshape(-1, lg.shape[-1]), lab[:, 1:].reshape(-1), ignore_index=IGNORE, reduction="none").view(lab.shape[0], -1)
    m = (lab[:, 1:] != IGNORE).float(); per = (tok * m).sum(1) / m.sum(1).clamp(min=1)
    loss = (tok * m).sum() / m.sum()
    for e, v in zip(batch, per.tolist()): kl.setdefault(e.kind, []).append(v)
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step()
    losses.append(loss.item()); step += 1
    if step % EV == 0:
        print(step, f"{time.time()-t0:.0f}s loss {np.mean(losses[-EV:]):.3f}", {k: round(np.mean(v), 2) for k, v in kl.items()}, flush=True); kl = {}
        if step % (EV * int(E("EVX", "3"))) == 0: print("  eval", ev(), flush=True)
model.save_pretrained(str(out / "final")); [__import__("shutil").copy(f, out / "final") for f in (out / "init").iterdir() if f.name not in ("model.safetensors", "config.json", "generation_config.json")]
print("final", step, ev(), flush=True)
