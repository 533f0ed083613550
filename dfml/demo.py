"""The built-in demo: the whole DFML pipeline on the toy world in about a minute on two cores.

It builds a pool of small MLPs on the toy world's meta-train classes, then scores three ways of
getting a meta-model from that pool on the same 600 fixed meta-test episodes of unseen classes:
``random`` (random init), ``average`` (parameter average of the pool) and ``maml`` (MAML on pseudo
tasks recovered from the pool by inversion; no real training data is ever used).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from .eval import paired
from .experiment import EvalConfig, ExperimentConfig, Progress, run_experiment
from .inversion import PixelInversionConfig
from .datafree.config import DataFreeConfig, SyntheticBankConfig
from .datafree.trainer import TrainConfig
from .pool import build_toy_pool

DEMO_RECIPES = ("random", "average", "maml")


MAML_BANK = DataFreeConfig(pixel=PixelInversionConfig(steps=100, lr=0.1, l2_weight=0.05),
                           synthetic=SyntheticBankConfig(per_class=40))
"""The ``maml`` run's bank: 40 examples per class of every model, 100 pixel-inversion steps (only ``maml`` reads it)."""


def demo_config(pool_dir: Path, episodes_dir: Path, episodes: int = 600, recipe: str = "maml") -> ExperimentConfig:
    """The demo's experiment configuration for ``recipe``."""
    return ExperimentConfig(
        recipe=recipe,
        pool=str(pool_dir),
        dataset="toy",
        train=TrainConfig(
            n_way=5,
            n_shot=1,
            n_query=15,
            meta_batch_size=4,
            steps=300,
            inner_steps=5,
            inner_lr=0.1,
            outer_lr=3e-3,
            val_every=50,
            val_episodes=100,
            checkpoint_every=50,
        ),
        eval=EvalConfig(shots=(1, 5), episodes=episodes, steps=10, lr=0.1, episodes_dir=str(episodes_dir)),
        datafree=MAML_BANK if recipe == "maml" else DataFreeConfig(),
    )


def run_demo(out: str | Path = "runs/demo", progress: Progress | None = None, episodes: int = 600) -> dict[str, Any]:
    """Run the demo in ``out`` (resumable: re-running continues or reuses what is there).

    Returns:
        ``{recipe: results}`` as written to each run's ``results.json``.
    """
    out = Path(out)
    pool = build_toy_pool(out / "pool", n_models=10, seed=0)
    results = {}
    for recipe in DEMO_RECIPES:
        results[recipe] = run_experiment(demo_config(out / "pool", out / "episodes", episodes, recipe), out / recipe,
                                         progress)
    results["_pool"] = {
        "n_models": len(pool),
        "mean_heldout_acc": sum(e.heldout_acc for e in pool.entries) / len(pool),
    }
    return results


def results_table(results: dict[str, Any], baseline: str = "average") -> str:
    """A markdown table of mean ± 95% interval per recipe and setting, with the paired difference
    to ``baseline`` (same episodes, so the difference has its own, tighter interval); without
    ``baseline`` among the runs, no difference columns."""
    runs = {k: v for k, v in results.items() if not k.startswith("_")}
    settings = list(next(iter(runs.values()))["scores"])
    compare = baseline in runs and len(runs) > 1
    head = "| recipe | " + " | ".join(f"{s.replace('_', ' ')} acc %" for s in settings)
    if compare:
        head += " | " + " | ".join(f"vs {baseline} ({s.split('_')[1]})" for s in settings)
    lines = [head + " |", "|" + "---|" * (1 + (2 if compare else 1) * len(settings))]
    for name, res in runs.items():
        cells = []
        for s in settings:
            sc = res["scores"][s]
            cells.append(f"{sc['mean']:.2f} ± {sc['ci95']:.2f}")
        diffs = []
        for s in settings if compare else []:
            if name == baseline:
                diffs.append("-")
                continue
            d = paired(res["scores"][s]["per_episode"], runs[baseline]["scores"][s]["per_episode"])
            diffs.append(f"{d['mean_diff']:+.2f} ± {d['ci95']:.2f}")
        lines.append(f"| {name} | " + " | ".join(cells + diffs) + " |")
    return "\n".join(lines)
