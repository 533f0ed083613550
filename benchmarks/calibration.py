"""Inversion calibration after the inner loop (PURER's ICFIL): with and without, on the same fixed episodes.

For each finished run and each shot, one pass of ``dfml.eval.evaluate`` scores every episode
before and after calibration (the same adaptation, so the paired difference is calibration's own
effect), and a second pass scores the control arm: the same extra fine-tuning steps on the support
set alone (``pseudo_weight=0``), which separates "more steps" from "inverted pseudo-support".

    python benchmarks/calibration.py ../main/runs/bench-cifar_fs-small/runs/purer \\
        --pool ../main/pools/cifarfs-conv4 --data-root ../shared/data \\
        --episodes-dir ../main/runs/bench-cifar_fs-small/episodes --first-n 200 --out runs/icfil

``--split val`` scores freshly drawn meta-validation episodes instead (for choosing settings
without touching the test split). Finished cells are reused: re-run the same command to resume.
Settings: ``--set eval.calibration.<field>=<value>`` (see ``dfml.eval.CalibrationConfig``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dfml.config import apply_mapping, apply_overrides, from_dict, load_yaml, to_dict  # noqa: E402
from dfml.data import get_dataset  # noqa: E402
from dfml.eval import evaluate, paired  # noqa: E402
from dfml.experiment import ExperimentConfig, episode_list, load_meta_model  # noqa: E402
from dfml.runs import atomic_write_text  # noqa: E402
from dfml.upgrade import upgrade_config  # noqa: E402


def run_config(run: Path, args: argparse.Namespace) -> ExperimentConfig:
    """The run's own configuration, calibration switched on, then the command line's changes."""
    cfg = from_dict(ExperimentConfig, upgrade_config(load_yaml(run / "config.yaml")))  # fields that moved: dfml.upgrade
    layer: dict[str, Any] = {"eval": {"calibration": {"enabled": True}}}
    if args.data_root:
        layer["data_root"] = args.data_root
    if args.shots:
        layer["eval"]["shots"] = list(args.shots)
    return apply_overrides(apply_mapping(cfg, layer), args.set)


def score_cell(model: torch.nn.Module, cfg: ExperimentConfig, shot: int, args: argparse.Namespace) -> dict:
    """Uncalibrated, calibrated and control scores of one shot setting, with the paired differences."""
    ev = cfg.eval
    ds = get_dataset(cfg.dataset, cfg.data_root, args.split)
    if args.split == "test":
        path, n, seed = Path(args.episodes_dir) / f"test_{ev.n_way}w{shot}s_{ev.episodes}.json", ev.episodes, ev.seed
    else:
        path, n, seed = Path(args.out) / "episodes" / f"{args.split}_{ev.n_way}w{shot}s_{args.first_n}.json", \
            args.first_n, ev.seed + 1
    eps = episode_list(ds, path, n, ev.n_way, shot, ev.n_query, seed)
    common = dict(steps=ev.steps, lr=ev.lr, device=torch.device(cfg.device), first_n=args.first_n)
    start = time.perf_counter()

    def progress(done: int, _acc: float) -> None:
        if done % 50 == 0:
            print(f"  {shot}-shot: {done} episodes calibrated ({time.perf_counter() - start:.0f} s)",
                  file=sys.stderr, flush=True)

    cal = evaluate(model, eps.tasks(ds), calibration=ev.calibration, progress=progress, **common)
    cal_seconds = time.perf_counter() - start
    control = evaluate(model, eps.tasks(ds), calibration=dataclasses.replace(ev.calibration, pseudo_weight=0.0),
                       **common)
    info = cal.info["calibration"]
    return {
        "n": cal.n,
        "uncalibrated": info["uncalibrated"],
        "calibrated": {"mean": cal.mean, "ci95": cal.ci95, "per_episode": cal.per_episode},
        "control": {"mean": control.mean, "ci95": control.ci95, "per_episode": control.per_episode},
        "calibrated_vs_uncalibrated": info["paired"],
        "calibrated_vs_control": paired(cal.per_episode, control.per_episode),
        "control_vs_uncalibrated": paired(control.per_episode, info["uncalibrated"]["per_episode"]),
        "pseudo_acc": info["pseudo_acc"],
        "seconds_per_episode": cal_seconds / cal.n,
        "calibration": to_dict(ev.calibration),
    }


def table(cells: dict[str, dict]) -> str:
    def ci(d: dict) -> str:
        return f"{d['mean']:.2f} ± {d['ci95']:.2f}"

    def diff(d: dict) -> str:
        return f"{d['mean_diff']:+.2f} ± {d['ci95']:.2f} ({d['wins']}/{d['losses']}/{d['ties']})"

    lines = ["| run | setting | episodes | no ICFIL | + extra steps (control) | ICFIL | ICFIL - no ICFIL "
             "(w/l/t) | ICFIL - control (w/l/t) | s/episode |", "|" + "---|" * 9]
    for key, c in cells.items():
        run, shot = key.rsplit("/", 1)
        lines.append(f"| {run} | {shot} | {c['n']} | {ci(c['uncalibrated'])} | {ci(c['control'])} | "
                     f"{ci(c['calibrated'])} | {diff(c['calibrated_vs_uncalibrated'])} | "
                     f"{diff(c['calibrated_vs_control'])} | {c['seconds_per_episode']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Score finished runs with and without inversion calibration (ICFIL).")
    ap.add_argument("runs", nargs="+", help="finished run directories (only read)")
    ap.add_argument("--out", required=True, help="output folder (results.json, results.md)")
    ap.add_argument("--pool", help="the runs' pool, when their recorded pool path does not resolve from here")
    ap.add_argument("--data-root", dest="data_root")
    ap.add_argument("--episodes-dir", dest="episodes_dir", help="the runs' fixed test episode lists (--split test)")
    ap.add_argument("--split", default="test", choices=["test", "val"])
    ap.add_argument("--first-n", dest="first_n", type=int, default=None, help="score the first N episodes only")
    ap.add_argument("--shots", type=int, nargs="+")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", help="e.g. eval.calibration.steps=5")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.split == "test" and not args.episodes_dir:
        ap.error("--split test needs --episodes-dir (the fixed test episodes every method is scored on)")
    if args.split == "val" and not args.first_n:
        ap.error("--split val needs --first-n (how many meta-validation episodes to draw)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = out / "results.json"
    cells: dict[str, dict] = json.loads(store.read_text())["cells"] if store.is_file() else {}
    command = "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    for run in map(Path, args.runs):
        cfg = run_config(run, args)
        model = load_meta_model(run, args.pool)
        for shot in cfg.eval.shots:
            key = f"{run.name}/{args.split}-{cfg.eval.n_way}w{shot}s"
            if key in cells and cells[key]["calibration"] == to_dict(cfg.eval.calibration):
                continue
            cells[key] = score_cell(model, cfg, shot, args)
            atomic_write_text(store, json.dumps({"command": command, "cells": cells}, indent=1))
            print(table({key: cells[key]}).splitlines()[-1], file=sys.stderr, flush=True)
    md = table(cells)
    atomic_write_text(out / "results.md", f"{md}\n\ncommand: `{command}`\n")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
