"""How good are a run's recovered examples? Teacher accuracy and diversity of its task memory or pixel bank.

    python benchmarks/pseudo_tasks.py runs/bench-cifar_fs-cpu/runs/free --data-root ../shared/data

Reads the task memory of the run's last checkpoint (recipes with ``datafree.memory``: free, robust,
tgr) or, when it has none, its pixel bank (``datafree.inverter: bank``: purer; every image of every
class of every model the bank holds), and, for every stored example, the teacher that recovered it
(its ``model_id``):

* **teacher accuracy**: how often that teacher predicts the class the example was recovered for,
  and its mean confidence (softmax probability of that class);
* **diversity**: mean pairwise cosine distance of the teacher's penultimate features between
  examples of one class, next to the same figure for as many *real* training images of that class
  (the class's images of the dataset's train split), so 1.0 means "as diverse as real data";
* **pixel statistics**: the per-channel mean and standard deviation of the examples in the
  teacher's input space, next to those of the real images (0 / 1 after normalisation).

Prints one table and writes ``--json`` when given. Nothing of the run is changed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dfml.config import load_yaml  # noqa: E402
from dfml.data import get_dataset  # noqa: E402
from dfml.files import load_tensors  # noqa: E402
from dfml.pool import ModelPool  # noqa: E402
from dfml.runs import atomic_write_text  # noqa: E402


def penultimate(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input of the model's last linear layer (its features), captured with a forward hook."""
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    seen: list[torch.Tensor] = []
    handle = last.register_forward_hook(lambda _m, inp, _out: seen.append(inp[0].detach()))
    try:
        model(x)
    finally:
        handle.remove()
    return seen[0].flatten(1)


def pairwise_cosine_distance(f: torch.Tensor) -> float:
    """Mean cosine distance over the distinct pairs of rows of ``f`` (``nan`` for fewer than 2 rows)."""
    n = f.shape[0]
    if n < 2:
        return float("nan")
    g = F.normalize(f, dim=1)
    sim = g @ g.T
    return float((1 - sim[~torch.eye(n, dtype=torch.bool)]).mean())


def examples_of(run: Path) -> Iterator[tuple[int, int, torch.Tensor]]:
    """``(class id, model id, examples)`` of the run's last checkpoint: its task memory, else its pixel bank."""
    ckpt = run / "checkpoints" / "last.pt"
    if not ckpt.is_file():
        raise SystemExit(f"{run}: no checkpoints/last.pt; pseudo-task statistics need a run that saved a checkpoint")
    stream = load_tensors(ckpt).get("stream") or {}
    memory, bank = stream.get("memory"), (stream.get("inverter") or {}).get("entries")
    if memory and memory.get("slots"):
        for (_dataset, cid), slot in zip(memory["keys"], memory["slots"]):
            count = int(slot["count"])
            x, ids = slot["x"][:count].float(), slot["model_id"][:count]
            for mid in sorted({int(i) for i in ids}):
                yield int(cid), mid, x[ids == mid]
    elif bank:
        pool = ModelPool(load_yaml(run / "config.yaml")["pool"])
        for mid in sorted(int(i) for i in bank):
            x = bank[mid].float()  # [n_classes, per_class, *input_shape], in teacher output order
            for label, cid in enumerate(pool.entry(mid).class_ids):
                yield int(cid), mid, x[label]
    else:
        raise SystemExit(f"{run}: its checkpoint holds no task memory and no pixel bank (datafree.memory or "
                         "datafree.inverter: bank)")


def statistics(run: Path, data_root: str, seed: int = 0) -> dict[str, Any]:
    config = load_yaml(run / "config.yaml")
    pool = ModelPool(config["pool"])
    real = get_dataset(config["dataset"], data_root, "train")
    rng = np.random.default_rng(seed)
    teachers: dict[int, torch.nn.Module] = {}
    rows = []
    for cid, mid, xs in examples_of(run):
        entry = pool.entry(mid)
        if cid not in entry.class_ids:
            continue  # an example filed under a class its teacher does not know: not a recovered one
        if mid not in teachers:
            teachers[mid] = pool.load(mid).eval()
        teacher, label = teachers[mid], entry.class_ids.index(cid)
        idx = np.flatnonzero(real.labels == cid)
        take = rng.choice(idx, size=min(len(idx), max(len(xs), 2)), replace=False)
        xr = real.get_batch(take)
        with torch.no_grad():
            logits = teacher(xs)
            fr, fs = penultimate(teacher, xr), penultimate(teacher, xs)
            real_acc = float((teacher(xr).argmax(1) == label).float().mean())
        rows.append({
            "class": cid, "model": mid, "n": len(xs),
            "teacher_acc": float((logits.argmax(1) == label).float().mean()),
            "confidence": float(logits.softmax(1)[:, label].mean()),
            "teacher_acc_real": real_acc,
            "diversity": pairwise_cosine_distance(fs), "diversity_real": pairwise_cosine_distance(fr),
            "pixel_mean": float(xs.mean()), "pixel_std": float(xs.std()),
            "pixel_mean_real": float(xr.mean()), "pixel_std_real": float(xr.std()),
        })
    if not rows:
        raise SystemExit(f"{run}: no recovered example belongs to a class of its teacher")
    weights = np.array([r["n"] for r in rows], dtype=float)

    def mean(key: str) -> float:
        vals = np.array([r[key] for r in rows], dtype=float)
        ok = ~np.isnan(vals)
        return float(np.average(vals[ok], weights=weights[ok]))

    summary = {k: mean(k) for k in ("teacher_acc", "confidence", "teacher_acc_real", "diversity", "diversity_real",
                                    "pixel_mean", "pixel_std", "pixel_mean_real", "pixel_std_real")}
    summary["relative_diversity"] = summary["diversity"] / summary["diversity_real"]
    summary["examples"] = int(weights.sum())
    summary["classes"] = len({r["class"] for r in rows})
    summary["teachers"] = len(teachers)
    return {"run": str(run), "summary": summary, "per_class_and_teacher": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="run directories (with checkpoints/last.pt)")
    ap.add_argument("--data-root", dest="data_root", default="../shared/data")
    ap.add_argument("--json", help="write every figure here")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = [statistics(Path(r), args.data_root) for r in args.runs]
    print("| run | examples | teacher acc | confidence | teacher acc, real | diversity (real) | relative diversity "
          "| pixel std (real) |")
    print("|---|---|---|---|---|---|---|---|")
    for res in results:
        s = res["summary"]
        print(f"| {Path(res['run']).name} | {s['examples']} | {100 * s['teacher_acc']:.1f}% | {s['confidence']:.3f} "
              f"| {100 * s['teacher_acc_real']:.1f}% | {s['diversity']:.3f} ({s['diversity_real']:.3f}) "
              f"| {s['relative_diversity']:.2f} | {s['pixel_std']:.2f} ({s['pixel_std_real']:.2f}) |")
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
