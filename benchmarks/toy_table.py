"""The toy-world recipe table of docs/benchmarks.md: every recipe on one 10-model toy pool, paired.

The settings are the learning test's (``tests/recipes/test_learning.py``: pixel inversion, 3-layer
MLP teachers without BatchNorm, lr 0.1 for the inner loop and the fine-tune) with longer training:
``--steps`` meta-updates (150), 5 inner steps, and ``--episodes`` fixed test episodes (200) in 1-
and 5-shot. Each row is paired against the better of ``random`` and ``average`` on the same
episodes. Finished runs are reused: re-run the same command to resume.

    python benchmarks/toy_table.py --out runs/toy-table      # a few minutes on 1 thread
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

from dfml.eval import paired  # noqa: E402
from dfml.experiment import experiment_config, run_experiment  # noqa: E402
from dfml.pool import ModelPool, build_toy_pool  # noqa: E402
from dfml.runs import atomic_write_text  # noqa: E402

RECIPES = ("random", "average", "robust", "free", "tgr", "purer")
SHOTS = (1, 5)


def settings(pool: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The learning test's configuration with ``args``' steps and episodes."""
    return {
        "pool": str(pool), "dataset": "toy",
        "train": {"n_query": 10, "meta_batch_size": 4, "steps": args.steps, "inner_steps": 5, "inner_lr": 0.1,
                  "outer_lr": 3e-3, "val_every": max(1, args.steps // 5), "val_episodes": 30,
                  "checkpoint_every": args.steps, "seed": args.seed},
        "eval": {"episodes": args.episodes, "shots": list(SHOTS), "lr": 0.1,
                 "episodes_dir": str(Path(args.out) / "episodes")},
        "datafree": {"inverter": "pixel", "pixel": {"steps": 30, "l2_weight": 0.05}},
    }


def table(results: dict[str, dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """The markdown table and its rows: mean ± interval and the paired gain over the better baseline."""
    per = {r: {k: np.asarray(results[r]["scores"][f"5way_{k}shot"]["per_episode"], dtype=float) for k in SHOTS}
           for r in results}
    best = {k: max(("random", "average"), key=lambda b: per[b][k].mean()) for k in SHOTS}
    lines = ["| recipe | 1-shot | 5-shot | vs better baseline (1-shot) | vs better baseline (5-shot) |",
             "|---|---|---|---|---|"]
    rows = []
    for r in results:
        row: dict[str, Any] = {"recipe": r}
        cells = []
        for k in SHOTS:
            s = results[r]["scores"][f"5way_{k}shot"]
            row[f"{k}shot"] = {"mean": s["mean"], "ci95": s["ci95"]}
            cells.append(f"{s['mean']:.2f} ± {s['ci95']:.2f}")
        for k in SHOTS:
            if r in ("random", "average"):
                cells.append("-")
                continue
            d = paired(per[r][k], per[best[k]][k])
            row[f"vs_{best[k]}_{k}shot"] = d
            cells.append(f"{d['mean_diff']:+.2f} ± {d['ci95']:.2f} ({best[k]})")
        rows.append(row)
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    return "\n".join(lines), rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/toy-table")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0, help="training seed (the pool and the episodes stay fixed)")
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=RECIPES)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if args.steps < 1 or args.episodes < 1:
        ap.error(f"--steps and --episodes must be >= 1, got {args.steps} and {args.episodes}")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    pool_dir = out / "pool"
    pool = ModelPool(pool_dir) if (pool_dir / "pool.json").is_file() else build_toy_pool(pool_dir, n_models=10, seed=0)
    names = list(dict.fromkeys(["random", "average", *args.recipes]))
    results = {}
    for r in names:
        results[r] = run_experiment(experiment_config(r, settings(pool.root, args)), out / "runs" / r)
        s = results[r]["scores"]
        print(f"{r}: " + " / ".join(f"{s[f'5way_{k}shot']['mean']:.2f}" for k in SHOTS), flush=True)
    md, rows = table(results)
    command = "python benchmarks/toy_table.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"\n{md}\n\n{args.episodes} fixed episodes, 15 queries per class; command: `{command.strip()}`")
    atomic_write_text(out / "results.md", f"{md}\n\ncommand: `{command.strip()}`\n")
    atomic_write_text(out / "results.json", json.dumps({"command": command.strip(), "args": vars(args), "rows": rows},
                                                       indent=1, default=float))
    print(f"results: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
