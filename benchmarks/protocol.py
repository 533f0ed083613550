"""The paper protocol, shared by ``cifar_fs.py`` and ``mini_imagenet.py``: pool -> every recipe -> one table.

For one dataset and scale (``presets/<dataset>_<scale>.yaml``): build the pool if it is not there
(resumable), optionally a corrupted copy, run every recipe with ``dfml.experiment.run_experiment``
(each resumes from its checkpoint when interrupted; finished runs are reused), all scored on the same
fixed meta-test episodes, and write ``results.md`` / ``results.json`` with mean ± 95% interval, each
recipe's paired difference to ``average`` and its cost.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from dfml.data import get_dataset
from dfml.eval import paired
from dfml.experiment import experiment_config, run_experiment
from dfml.pool import ModelPool, PretrainConfig, add_untrustworthy, pretrain_pool

PRESETS = Path(__file__).parent / "presets"


def load_preset(dataset: str, scale: str) -> dict[str, Any]:
    path = PRESETS / f"{dataset}_{scale}.yaml"
    if not path.is_file():
        have = sorted(p.stem for p in PRESETS.glob(f"{dataset}_*.yaml"))
        raise FileNotFoundError(f"no preset {path}; presets for {dataset}: {have}")
    return yaml.safe_load(path.read_text())


def build_pools(p: dict[str, Any], data_root: str, out: Path, device: str, existing: str | None,
                needed: set[str]) -> dict[str, Path]:
    """The clean pool (built, or an existing one) and, when the preset asks, a corrupted copy; resumable."""
    train = get_dataset(p["dataset"], data_root, "train")
    pools = {"clean": Path(existing) if existing else out / "pool"}
    start = time.perf_counter()
    if existing:
        pool = ModelPool(existing)
    else:
        pool = pretrain_pool(train, pools["clean"], PretrainConfig(**p["pool"]), device=device)
    print(f"pool: {len(pool)} models, mean held-out accuracy "
          f"{100 * sum(e.heldout_acc for e in pool.entries) / len(pool):.1f}% ({time.perf_counter() - start:.0f} s)",
          file=sys.stderr, flush=True)
    if p.get("corruption") and "corrupted" in needed:
        c = p["corruption"]
        pools["corrupted"] = out / f"pool-corrupted-{int(100 * c['ratio'])}"
        if not (pools["corrupted"] / "pool.json").is_file():
            add_untrustworthy(pool, pools["corrupted"], ratio=c["ratio"], source_dataset=train,
                              seed=c.get("seed", 0), config=PretrainConfig(**{**p["pool"], **c.get("pool", {})}),
                              device=device)
    return pools


def run_all(p: dict[str, Any], data_root: str, out: Path, device: str, recipes: list[str] | None,
            pool: str | None = None) -> dict:
    # a token names a run, or a recipe (its runs on the clean pool)
    selected = {n: s for n, s in p["runs"].items()
                if not recipes or n in recipes or (s["recipe"] in recipes and s.get("pool", "clean") == "clean")}
    pools = build_pools(p, data_root, out, device, pool, {s.get("pool", "clean") for s in selected.values()})
    common = {"dataset": p["dataset"], "data_root": data_root, "device": device,
              "eval": {**p.get("eval", {}), "episodes_dir": str(out / "episodes")}, "train": p.get("train", {}),
              "datafree": p.get("datafree", {})}
    runs: dict[str, dict] = {}
    for name, spec in selected.items():
        pool = pools[spec.get("pool", "clean")]
        layer = {**common, "pool": str(pool)}
        cfg = experiment_config(spec["recipe"], layer, spec.get("set", {}))
        start = time.perf_counter()
        runs[name] = run_experiment(cfg, out / "runs" / name)
        print(f"{name}: {_scores(runs[name])} ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    return runs


def _scores(res: dict) -> str:
    return ", ".join(f"{k} {v['mean']:.2f} ± {v['ci95']:.2f}" for k, v in res["scores"].items())


def table(runs: dict[str, dict], baseline: str = "average") -> str:
    shots = list(next(iter(runs.values()))["scores"])
    head = "| run | " + " | ".join(f"{s} acc %" for s in shots) + " | " + " | ".join(
        f"vs {baseline} ({s})" for s in shots) + " | train s | teacher queries |"
    lines = [head, "|" + "---|" * (2 * len(shots) + 3)]
    for name, res in runs.items():
        cells = [f"{res['scores'][s]['mean']:.2f} ± {res['scores'][s]['ci95']:.2f}" for s in shots]
        for s in shots:
            if baseline in runs and name != baseline:
                d = paired(res["scores"][s]["per_episode"], runs[baseline]["scores"][s]["per_episode"])
                cells.append(f"{d['mean_diff']:+.2f} ± {d['ci95']:.2f}")
            else:
                cells.append("-")
        cost = res["info"].get("inversion_cost", {})
        cells += [f"{res['seconds']['train']:.0f}", f"{int(cost.get('teacher_queries', 0))}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(dataset: str, argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=f"The DFML paper protocol on {dataset}: every recipe, one table.")
    ap.add_argument("--data-root", dest="data_root", default="../shared/data")
    ap.add_argument("--scale", default="small", help="preset: small (this machine) or paper (a GPU)")
    ap.add_argument("--out", default=None, help=f"output folder (default runs/bench-{dataset}-<scale>)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--recipes", nargs="*", help="only these runs (by name) or recipes (their clean-pool runs)")
    ap.add_argument("--pool", help="use this existing pool instead of building the preset's")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    p = load_preset(dataset, args.scale)
    out = Path(args.out or f"runs/bench-{dataset}-{args.scale}")
    out.mkdir(parents=True, exist_ok=True)
    runs = run_all(p, args.data_root, out, args.device, args.recipes, args.pool)
    md = table(runs)
    command = "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    (out / "results.md").write_text(f"{md}\n\ncommand: `{command}`\n")
    (out / "results.json").write_text(json.dumps({"command": command, "preset": p, "runs": runs}, indent=1))
    print(md)
    return 0
