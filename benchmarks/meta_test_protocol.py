"""What each difference between dfml's meta-test protocol and the DFML papers' code is worth.

Scores a randomly initialised Conv4 (the ``random`` baseline) on CIFAR-FS's fixed meta-test
episodes (the lists ``dfml eval`` draws with ``eval.seed``) under one protocol *arm* at a time,
each a single change, and writes every arm's per-episode accuracies, its mean ± 95% interval and
its paired difference to the ``standard`` arm (same episodes, same initial weights unless the arm
changes them) to ``<out>/results.json`` and a Markdown table to ``<out>/results.md``.

Arms:

* ``standard``: the papers' protocol (dfml's default): ``Conv4(init="kaiming_fan_out")``, the
  head's bias zeroed, CIFAR-100 statistics as dfml computes them, all parameters fine-tuned
  10 steps at 0.01, batch statistics.
* ``dfml-2025``: dfml's protocol before 2026-12: PyTorch's default initialisation, head untouched.
* ``pytorch-init``: ``standard`` with PyTorch's default initialisation only.
* ``head-bias``: ``standard`` with the head's bias left at PyTorch's default.
* ``zero-head``: ``standard`` with the whole head zeroed (PURER's ``--zero_ini``).
* ``official-stats``: ``standard`` with the official code's rounded CIFAR-100 mean/std
  ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)) instead of dfml's.
* ``support-stats``: ``standard``, but queries are normalised with the *support* set's BN
  statistics (non-transductive; the papers use the query batch's).

``--seeds`` repeats every arm with several initialisation seeds (the spread of a random network
from one draw to the next is part of what a single published Random figure means); the second
table averages each episode's accuracy over the seeds. Finished arms are kept in
``results.json``: re-run with other ``--arms``/``--seeds`` to add to it.

    python benchmarks/meta_test_protocol.py --data-root ../shared/data --out runs/protocol --threads 1
    python benchmarks/meta_test_protocol.py --data-root ../shared/data --out runs/protocol --threads 1 \
        --arms standard dfml-2025 --seeds 1 2 3 4 5 6 7 8 9     # the draw-to-draw spread

(``--episodes-dir runs/<eval run>/episodes`` scores the episode files of a ``dfml eval`` run; without
it the same lists are drawn again from ``--episode-seed``, ``eval.seed``'s default 0.)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dfml.data import get_dataset  # noqa: E402
from dfml.data.episodes import EpisodeList  # noqa: E402
from dfml.eval import evaluate, mean_ci95, paired  # noqa: E402
from dfml.models import Conv4  # noqa: E402
from dfml.runs import atomic_write_text  # noqa: E402
from dfml.types import Task  # noqa: E402

OFFICIAL_MEAN = (0.5071, 0.4867, 0.4408)
OFFICIAL_STD = (0.2675, 0.2565, 0.2761)


def _conv4(seed: int, init: str, head: str) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Conv4(num_classes=5, init=init)
    if head in ("zero_bias", "zero"):
        nn.init.zeros_(model.head.bias)
    if head == "zero":
        nn.init.zeros_(model.head.weight)
    return model


ARMS: dict[str, dict[str, Any]] = {
    "standard": {"init": "kaiming_fan_out", "head": "zero_bias"},
    "dfml-2025": {"init": "pytorch", "head": "default"},
    "pytorch-init": {"init": "pytorch", "head": "zero_bias"},
    "head-bias": {"init": "kaiming_fan_out", "head": "default"},
    "zero-head": {"init": "kaiming_fan_out", "head": "zero"},
    "official-stats": {"init": "kaiming_fan_out", "head": "zero_bias", "stats": "official"},
    "support-stats": {"init": "kaiming_fan_out", "head": "zero_bias", "query_bn": "support"},
}


def _restats(dataset: Any) -> Callable[[Task], Task]:
    """Re-normalise a task's images from dfml's CIFAR-100 statistics to the official code's."""
    mean_d, std_d = dataset.mean, dataset.std
    mean_o = torch.tensor(OFFICIAL_MEAN).view(1, -1, 1, 1)
    std_o = torch.tensor(OFFICIAL_STD).view(1, -1, 1, 1)

    def convert(task: Task) -> Task:
        f = lambda x: ((x * std_d + mean_d) - mean_o) / std_o  # noqa: E731
        return replace(task, support_x=f(task.support_x), query_x=f(task.query_x))

    return convert


def _support_stats_accuracy(model: nn.Module, tasks: list[Task], steps: int, lr: float) -> list[float]:
    """Fine-tune as ``evaluate`` does, then predict queries with support statistics (eval-mode BN)."""
    from dfml.meta.inner import functional_forward, inner_update

    scores = []
    for task in tasks:
        net = Conv4(num_classes=5)
        net.load_state_dict(model.state_dict())
        params = {k: v.detach().clone().requires_grad_() for k, v in net.named_parameters()}
        with torch.enable_grad():
            fast = inner_update(net, params, task.support_x, task.support_y, steps=steps, lr=lr, first_order=True)
        fast = {k: v.detach() for k, v in fast.items()}
        for m in net.modules():  # running statistics := the support set's batch statistics
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 1.0
        net.train()
        with torch.no_grad():
            functional_forward(net, fast, task.support_x)
            net.eval()
            logits = functional_forward(net, fast, task.query_x)
        scores.append(float((logits.argmax(-1) == task.query_y).double().mean()) * 100.0)
    return scores


def run_arm(arm: str, seed: int, tasks: list[Task], dataset: Any, steps: int, lr: float) -> list[float]:
    spec = ARMS[arm]
    model = _conv4(seed, spec["init"], spec["head"])
    if spec.get("stats") == "official":
        tasks = [_restats(dataset)(t) for t in tasks]
    if spec.get("query_bn") == "support":
        return _support_stats_accuracy(model, tasks, steps, lr)
    return evaluate(model, tasks, steps=steps, lr=lr).per_episode


def _episodes(dataset: Any, shot: int, args: argparse.Namespace) -> Iterator[Task]:
    path = Path(args.episodes_dir) / f"test_5w{shot}s_{args.episodes}.json" if args.episodes_dir else None
    if path is not None and path.is_file():
        eps = EpisodeList.load(path)
    else:
        eps = EpisodeList.generate(dataset, args.episodes, 5, shot, 15, seed=args.episode_seed)
    return eps.tasks(dataset)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="initialisation seeds (train.seed)")
    p.add_argument("--shots", type=int, nargs="+", default=[1, 5])
    p.add_argument("--episodes", type=int, default=600)
    p.add_argument("--episode-seed", type=int, default=0, help="eval.seed of the episode lists")
    p.add_argument("--episodes-dir", help="reuse the episode files of a `dfml eval` run (its episodes/ folder)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res_file = out / "results.json"
    results: dict[str, Any] = json.loads(res_file.read_text()) if res_file.is_file() else {}
    dataset = get_dataset("cifar_fs", args.data_root, "test")
    for shot in args.shots:
        tasks = list(_episodes(dataset, shot, args))
        for seed in args.seeds:
            for arm in args.arms:
                key = f"{shot}shot/{arm}/seed{seed}"
                if key in results:
                    continue
                start = time.perf_counter()
                scores = run_arm(arm, seed, tasks, dataset, args.steps, args.lr)
                mean, ci = mean_ci95(scores)
                results[key] = {"per_episode": scores, "mean": mean, "ci95": ci}
                print(f"{key}: {mean:.2f} ± {ci:.2f} ({time.perf_counter() - start:.0f} s)", flush=True)
                atomic_write_text(res_file, json.dumps(results))
    atomic_write_text(out / "results.md", table(results))
    print(table(results))
    return 0


def table(results: dict[str, Any]) -> str:
    """Mean ± 95% interval of every arm and seed, and its paired difference to ``standard`` (same seed)."""
    lines = ["| shot | arm | seed | acc % | vs standard |", "|---|---|---|---|---|"]
    for key, r in results.items():
        shot, arm, seed = key.split("/")
        base = results.get(f"{shot}/standard/{seed}")
        diff = "-"
        if base is not None and arm != "standard":
            d = paired(r["per_episode"], base["per_episode"])
            diff = f"{d['mean_diff']:+.2f} ± {d['ci95']:.2f}"
        lines.append(f"| {shot} | {arm} | {seed} | {r['mean']:.2f} ± {r['ci95']:.2f} | {diff} |")
    by_arm: dict[tuple[str, str], list[list[float]]] = {}
    for key, r in results.items():
        shot, arm, _ = key.split("/")
        by_arm.setdefault((shot, arm), []).append(r["per_episode"])
    lines += ["", "| shot | arm | seeds | mean of seeds ± episode interval | sd across seeds | min | max |",
              "|---|---|---|---|---|---|---|"]
    for (shot, arm), runs in by_arm.items():
        a = np.asarray([np.mean(r) for r in runs])
        mean, ci = mean_ci95(np.mean(runs, axis=0))  # per-episode accuracy averaged over the seeds
        sd = f"{a.std(ddof=1):.2f}" if a.size > 1 else "-"
        lines.append(f"| {shot} | {arm} | {a.size} | {mean:.2f} ± {ci:.2f} | {sd} | {a.min():.2f} | {a.max():.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
