"""What each recipe of a benchmark table learnt, and when: curves, baselines on meta-validation, gain kept.

    python benchmarks/learning_curves.py runs/bench-cifar_fs-cpu-papers \
        --json benchmarks/results/cifar_fs_cpu_curves.json --plot docs/img/cifar_fs_cpu_val_acc_cpu.png

For every finished run of the benchmark folder (``<out>/runs/<name>``):

* its meta-validation curve against steps and CPU-minutes (``metrics.jsonl``) and its training
  accuracy on its own (pseudo) tasks, early (first 25 steps) and late (last 50 steps);
* ``random`` and ``average`` scored on the *same* meta-validation episodes with the same fine-tune
  (``eval.val_steps`` / ``val_lr``, by default meta-test's), so a curve can be read against them;
* how much of the meta-validation gain over ``random`` remains on meta-test: the selected step's
  validation accuracy minus ``random``'s, next to the meta-test accuracy (in the training shot)
  minus ``random``'s on the 600 test episodes.

One figure draws every trained run's meta-validation accuracy against CPU-minutes, with the two
baselines as horizontal lines (one panel per training shot). Nothing of the runs is changed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dfml.config import from_dict, load_yaml  # noqa: E402
from dfml.data import EpisodeList, get_dataset  # noqa: E402
from dfml.data.domain import InputDomain, convert_task  # noqa: E402
from dfml.eval import evaluate  # noqa: E402
from dfml.experiment import ExperimentConfig, load_meta_model  # noqa: E402
from dfml.runs import atomic_write_text  # noqa: E402
from dfml.upgrade import upgrade_config  # noqa: E402

BASELINES = ("random", "average")


def read_metrics(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def curve(rows: list[dict[str, Any]]) -> dict[str, Any]:
    val, cpu_s = [], 0.0
    for r in rows:  # a stop record has no cpu_s of its own: it was reached at the last step's
        cpu_s = r.get("cpu_s", cpu_s)
        if "val_acc" in r:
            val.append({"step": r["step"], "cpu_min": cpu_s / 60, "val_acc": r["val_acc"]})
    accs = [(r["step"], r["acc"]) for r in rows if "acc" in r]
    early = [a for s, a in accs if s <= 25]
    late = [a for _, a in accs[-50:]]
    cpu = [r["cpu_s"] for r in rows if "cpu_s" in r]
    return {
        "val": val,
        "train_acc_first_25_steps": 100 * sum(early) / len(early) if early else None,
        "train_acc_last_50_steps": 100 * sum(late) / len(late) if late else None,
        "steps": max((r["step"] for r in rows), default=0),
        "cpu_min": cpu[-1] / 60 if cpu else 0.0,
    }


def val_baselines(out: Path, runs: dict[str, Path], data_root: str) -> dict[str, dict[str, float]]:
    """``{val episode file name: {"random": acc, "average": acc}}`` for every validation set a trained run used."""
    files: dict[str, tuple[Path, ExperimentConfig]] = {}
    for name, run in runs.items():
        if name in BASELINES:
            continue
        cfg = from_dict(ExperimentConfig, upgrade_config(load_yaml(run / "config.yaml")))  # fields that moved: dfml.upgrade
        for f in sorted((run / "episodes").glob("val_*.json")):
            files.setdefault(f.name, (f, cfg))
    scores: dict[str, dict[str, float]] = {}
    for fname, (path, cfg) in files.items():
        val_ds = get_dataset(cfg.dataset, cfg.data_root if data_root is None else data_root, "val")
        domain = InputDomain.of_dataset(val_ds)
        eps = EpisodeList.load(path)
        scores[fname] = {}
        for base in BASELINES:
            if base not in runs:
                continue
            model = load_meta_model(runs[base])
            steps, lr = cfg.eval.validation()
            res = evaluate(model, (convert_task(t, domain, domain) for t in eps.tasks(val_ds)), steps=steps, lr=lr)
            scores[fname][base] = float(res.mean)  # percent, as metrics.jsonl records val_acc
    return scores


def summarise(out: Path, data_root: str | None, only: list[str] | None = None) -> dict[str, Any]:
    """The figures of the finished runs of ``out`` (``only``: these runs, and the baselines)."""
    runs = {p.name: p for p in sorted((out / "runs").iterdir()) if (p / "results.json").is_file()
            and (not only or p.name in only or p.name in BASELINES)}
    missing = sorted(set(only or []) - set(runs))
    if missing:
        raise SystemExit(f"{out}/runs holds no finished run named {', '.join(missing)}")
    if not runs:
        raise SystemExit(f"{out}/runs holds no finished run (results.json)")
    results = {n: json.loads((p / "results.json").read_text()) for n, p in runs.items()}
    baselines = val_baselines(out, runs, data_root)
    summary: dict[str, Any] = {"val_baselines": baselines, "runs": {}}
    for name, run in runs.items():
        if name in BASELINES:
            continue
        res, c = results[name], curve(read_metrics(run))
        tr = res["config"]["train"]
        shot_key = f"{tr['n_way']}way_{tr['n_shot']}shot"
        val_file = f"val_{tr['n_way']}w{tr['n_shot']}s_{tr['val_episodes']}.json"
        best = max(c["val"], key=lambda v: v["val_acc"], default=None)
        entry: dict[str, Any] = {**c, "train_shot": tr["n_shot"], "val_file": val_file,
                                 "selected": best, "test": {k: v["mean"] for k, v in res["scores"].items()}}
        base_val = baselines.get(val_file, {})
        if best and "random" in base_val and "random" in results and shot_key in res["scores"]:
            entry["val_gain_over_random"] = best["val_acc"] - base_val["random"]
            entry["test_gain_over_random"] = res["scores"][shot_key]["mean"] - results["random"]["scores"][shot_key]["mean"]
        summary["runs"][name] = entry
    return summary


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shots = sorted({e["train_shot"] for e in summary["runs"].values()})
    fig, axes = plt.subplots(1, len(shots), figsize=(6.5 * len(shots), 4.2), squeeze=False)
    for ax, shot in zip(axes[0], shots):
        for name, e in summary["runs"].items():
            if e["train_shot"] != shot or not e["val"]:
                continue
            ax.plot([v["cpu_min"] for v in e["val"]], [v["val_acc"] for v in e["val"]], marker=".", label=name)
        for fname, base in summary["val_baselines"].items():
            if f"{shot}s_" not in fname:
                continue
            for b, style in zip(BASELINES, ("--", ":")):
                if b in base:
                    ax.axhline(base[b], color="black", linestyle=style, linewidth=1, label=f"{b} (untrained)")
        ax.set_xlabel("CPU-minutes of meta-training (one thread)")
        ax.set_ylabel(f"meta-validation accuracy %, 5-way {shot}-shot")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="a benchmark output folder (holding runs/<name>)")
    ap.add_argument("--data-root", dest="data_root", help="where the dataset lives, if not where the runs say")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--plot", help="write the figure here (.png)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", nargs="+", metavar="NAME", help="only these runs (and random/average); default: all")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    summary = summarise(Path(args.out), args.data_root, args.runs)
    print("val baselines:", json.dumps(summary["val_baselines"]))
    print("| run | steps | CPU-min | train acc (first 25 / last 50 steps) | selected step (val %) "
          "| val gain over random | test gain over random |")
    print("|---|---|---|---|---|---|---|")
    for name, e in summary["runs"].items():
        sel = e["selected"]
        first, last = e["train_acc_first_25_steps"], e["train_acc_last_50_steps"]
        acc = f"{first:.1f} / {last:.1f}" if first is not None and last is not None else "-"
        gains = [f"{e[k]:+.2f}" if k in e else "-" for k in ("val_gain_over_random", "test_gain_over_random")]
        print(f"| {name} | {e['steps']} | {e['cpu_min']:.1f} | {acc} | "
              f"{sel['step'] if sel else '-'} ({sel['val_acc'] if sel else float('nan'):.2f}) | "
              f"{gains[0]} | {gains[1]} |")
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(summary, indent=1))
    if args.plot:
        plot(summary, Path(args.plot))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
