"""Task-distribution corruption on the toy world: what 40% bad models cost `robust`, with and without its defences.

The pool: 10 toy MLPs of which ``--ratio`` are untrustworthy, half untrained, half *deceptive*:
they advertise the toy world's classes but were trained in another toy world (``--deceptive
same`` trains them on other classes of the same world instead, which still make good
meta-training tasks). Every arm is trained on that pool and on its trusted models alone, with
``--seeds`` seeds, and scored on the same fixed test episodes; per-episode accuracy is averaged
over the seeds, and an arm's *loss* is its trusted-only score minus its corrupted-pool score
(paired over episodes). Arms:

* ``uniform``: the ``robust`` preset with a uniform selector (no weigher);
* ``weigher``: the reliability weigher, memory kept (``forget_below: 0``);
* ``robust``: the preset (weigher + forgetting distrusted models' memory).

``weigher`` and ``robust`` are also trained on the full clean pool (what forgetting costs when no
model is bad). Finished runs are reused: re-run the same command to resume.

    python benchmarks/toy_corruption.py --out runs/toy-corruption            # about 15 min on 1 thread
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dfml.data.toy import make_toy_world  # noqa: E402
from dfml.eval import paired  # noqa: E402
from dfml.experiment import experiment_config, run_experiment  # noqa: E402
from dfml.pool import ModelPool, build_toy_pool, subset_pool  # noqa: E402
from dfml.runs import atomic_write_text  # noqa: E402

ARMS = {"uniform": {"selector": "uniform"}, "weigher": {"forget_below": 0.0}, "robust": {}}
SHOTS = (1, 5)


def pools(out: Path, ratio: float, deceptive: str) -> dict[str, ModelPool]:
    """The corrupted pool, its trusted models alone and the clean pool it was made from."""
    source = make_toy_world(seed=1, name="toy_other")["train"] if deceptive == "other" else None
    bad = build_toy_pool(out / "bad", n_models=10, seed=0, untrustworthy_ratio=ratio, deceptive_source=source)
    trusted = [e.index for e in bad if e.trust == "trusted"]
    return {"bad": bad, "trusted": subset_pool(bad, trusted, out / "trusted"), "clean": ModelPool(out / "bad" / "clean")}


def train(pool: ModelPool, arm: str, seed: int, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    cfg = experiment_config("robust", {
        "pool": str(pool.root), "dataset": "toy",
        "train": {"n_query": 10, "meta_batch_size": 4, "steps": args.steps, "inner_steps": 3, "inner_lr": 0.1,
                  "outer_lr": 3e-3, "val_every": args.steps, "val_episodes": 30,
                  "checkpoint_every": args.steps, "seed": seed},
        "eval": {"episodes": args.episodes, "shots": list(SHOTS), "lr": 0.1,
                 "episodes_dir": str(Path(args.out) / "episodes")},
        "datafree": {"inverter": "pixel", "pixel": {"steps": 30, "l2_weight": 0.05}, **ARMS[arm]}})
    return run_experiment(cfg, out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/toy-corruption")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--episodes", type=int, default=600)
    ap.add_argument("--ratio", type=float, default=0.4)
    ap.add_argument("--deceptive", choices=("other", "same"), default="other",
                    help="deceptive models train in another toy world (default) or on other classes of this one")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if not 0.0 < args.ratio < 1.0:
        ap.error(f"--ratio is the share of untrustworthy models and must lie strictly between 0 and 1, got {args.ratio}")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    p = pools(out / "pools", args.ratio, args.deceptive)
    trust = [e.trust for e in p["bad"]]
    cells = [(arm, name) for arm in ARMS for name in ("bad", "trusted")] + [("weigher", "clean"), ("robust", "clean")]
    per: dict[tuple[str, str, int], np.ndarray] = {}
    on_trusted: dict[str, list[float]] = {}
    for arm, name in cells:
        scores = {k: [] for k in SHOTS}
        for seed in range(args.seeds):
            r = train(p[name], arm, seed, args, out / "runs" / f"{arm}-{name}-s{seed}")
            for k in SHOTS:
                scores[k].append(r["scores"][f"5way_{k}shot"]["per_episode"])
            w = r["info"].get("reliability_weights")
            if w is not None and name == "bad":
                on_trusted.setdefault(arm, []).append(sum(x for x, t in zip(w, trust) if t == "trusted"))
        for k in SHOTS:
            per[arm, name, k] = np.mean(np.asarray(scores[k], dtype=float), axis=0)
        print(f"{arm} on {name}: " + " / ".join(f"{per[arm, name, k].mean():.2f}" for k in SHOTS), flush=True)

    rows = []
    print(f"\n{args.seeds} seeds x {args.episodes} episodes, {trust.count('trusted')} trusted of {len(trust)} "
          f"(deceptive: {args.deceptive} world); loss = trusted-only minus corrupted pool, paired\n")
    print("| arm | trusted only (1 / 5-shot) | corrupted pool | loss 1-shot | loss 5-shot | vs uniform, corrupted (1 / 5) "
          "| weight on trusted |")
    print("|---|---|---|---|---|---|---|")
    for arm in ARMS:
        loss = {k: paired(per[arm, "trusted", k], per[arm, "bad", k]) for k in SHOTS}
        gain = {k: paired(per[arm, "bad", k], per["uniform", "bad", k]) for k in SHOTS}
        w = on_trusted.get(arm)
        row = {"arm": arm, **{f"{n}_{k}shot": float(per[arm, n, k].mean()) for n in ("trusted", "bad") for k in SHOTS},
               **{f"loss_{k}shot": loss[k] for k in SHOTS}, **{f"vs_uniform_{k}shot": gain[k] for k in SHOTS},
               "weight_on_trusted": float(np.mean(w)) if w else None}
        rows.append(row)
        vs = "-" if arm == "uniform" else " / ".join(f"{gain[k]['mean_diff']:+.2f} ± {gain[k]['ci95']:.2f}" for k in SHOTS)
        print(f"| {arm} | {row['trusted_1shot']:.2f} / {row['trusted_5shot']:.2f} | {row['bad_1shot']:.2f} / "
              f"{row['bad_5shot']:.2f} | {-loss[1]['mean_diff']:+.2f} ± {loss[1]['ci95']:.2f} | "
              f"{-loss[5]['mean_diff']:+.2f} ± {loss[5]['ci95']:.2f} | {vs} | "
              f"{'-' if not w else f'{100 * np.mean(w):.1f}%'} |")
    clean = {k: paired(per["robust", "clean", k], per["weigher", "clean", k]) for k in SHOTS}
    print("\nclean pool, forgetting (robust) minus memory kept (weigher): "
          + " / ".join(f"{clean[k]['mean_diff']:+.2f} ± {clean[k]['ci95']:.2f}" for k in SHOTS))
    result = {"args": vars(args), "trust": trust, "rows": rows,
              "clean_forgetting_cost": {f"{k}shot": clean[k] for k in SHOTS}}
    atomic_write_text(out / "results.json", json.dumps(result, indent=2, default=float))
    print(f"results: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
