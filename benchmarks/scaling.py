"""Scaling with torch.distributed: pool building and meta-training throughput on 1, 2, ... processes.

For each process count K the script launches ``torchrun --nproc-per-node K`` on this machine (gloo
on CPU, NCCL with ``--device cuda``) and times, between barriers (process start-up and imports
excluded), three workloads run through the same library calls as ``dfml pool build`` and
``dfml train``:

* ``pool``: ``pretrain_pool`` of a toy MLP pool (models are shared out), in models/s;
* ``meta``: ``MetaTrainer`` steps of second-order MAML on a fixed bank (the meta-batch is split,
  gradients all-reduced), in tasks/s;
* ``datafree``: ``MetaTrainer`` on a ``DataFreeStream`` with pixel inversion (every step inverts
  ``meta_batch_size`` models, shared out, then the data-parallel update), in tasks/s.

Parallel efficiency ("eff.") is ``throughput(K) / (K * throughput(1))``, from the median wall time of
``--repeats`` launches per K (interleaved across K, so a change in the machine's load hits every K
alike). "CPU eff." is ``cpu(1) / (K * cpu(K))`` with ``cpu(K)`` the CPU seconds of the busiest
rank: how evenly the work is split and what communication adds, whatever else the machine runs
(on a machine with K idle cores it is what the wall-clock efficiency tends to). Each launch
checks that its meta-model after the ``meta`` workload equals K = 1's (max absolute difference in
the table).

Usage:
    python benchmarks/scaling.py                        # 1 and 2 processes, CPU
    python benchmarks/scaling.py --procs 1 2 4 --out benchmarks/results/scaling_cpu.json
    python benchmarks/scaling.py --procs 1 2 4 8 --device cuda --models 256 --steps 50
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from dfml import distributed as dist  # noqa: E402
from dfml.runs import atomic_write_text  # noqa: E402

WORKLOADS = ("pool", "meta", "datafree")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="process counts to time (default 1 2)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--models", type=int, default=16, help="pool models to build (default 16)")
    p.add_argument("--epochs", type=int, default=10, help="training epochs per pool model (default 10)")
    p.add_argument("--meta-batch", dest="meta_batch", type=int, default=16, help="global meta-batch (default 16)")
    p.add_argument("--steps", type=int, default=20, help="timed meta-training steps (default 20)")
    p.add_argument("--inner-steps", dest="inner_steps", type=int, default=5)
    p.add_argument("--inversion-steps", dest="inversion_steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3,
                   help="launches per process count, interleaved across counts; medians are reported (default 3)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed per launch")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.add_argument("--worker", type=Path, help=argparse.SUPPRESS)  # set by the launcher: where rank 0 reports
    args = p.parse_args(argv)
    if min(args.procs) < 1 or 1 not in args.procs:
        p.error(f"--procs must be positive and include 1 (the reference of the efficiency), got {args.procs}")
    if args.meta_batch < max(args.procs):
        p.error(f"--meta-batch {args.meta_batch} leaves some of {max(args.procs)} processes without a task")
    return args


# ----------------------------------------------------------------------------------- worker
def timed(fn: Callable[[], Any]) -> tuple[dict[str, float], Any]:
    """Wall-clock seconds of ``fn()`` between barriers, and the CPU seconds of the busiest rank."""
    dist.barrier()
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    cpu = time.process_time() - cpu
    dist.barrier()
    wall = time.perf_counter() - start
    return {"wall": wall, "cpu": max(dist.all_gather_object(cpu))}, out


def worker(args: argparse.Namespace) -> None:
    from dfml.data import EpisodeList
    from dfml.data.toy import make_toy_world
    from dfml.inversion import PixelInversionConfig, PixelInverter
    from dfml.meta import MAML
    from dfml.datafree import DataFreeStream, StreamConfig
    from dfml.datafree import MetaTrainer, SyntheticBank, TrainConfig
    from dfml.models import build_model, use_batch_stats
    from dfml.pool import pretrain_pool
    from dfml.pool.toy import toy_pretrain_config

    torch.set_num_threads(1)
    device = dist.device_for(args.device)
    world = make_toy_world()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(dist.broadcast_object(tmp))  # rank 0's folder: the pool is shared through the file system
        cfg = toy_pretrain_config(n_models=args.models, epochs=args.epochs, seed=0)
        seconds, pool = timed(lambda: pretrain_pool(world["train"], root / "pool", cfg, device=device))
        seconds = {"pool": seconds}  # type: ignore[assignment]
        eps = EpisodeList.generate(world["val"], 2, 5, 1, 3, seed=1)
        train = TrainConfig(n_way=5, n_shot=1, n_query=15, meta_batch_size=args.meta_batch, steps=args.steps,
                            inner_steps=args.inner_steps, inner_lr=0.1, outer_lr=1e-3, val_every=10**6,
                            val_episodes=2, checkpoint_every=10**6, seed=0)

        def trainer(stream: Any) -> MetaTrainer:
            torch.manual_seed(0)
            net = use_batch_stats(build_model("mlp", in_features=32, num_classes=5))
            learner = MAML(net, inner_steps=args.inner_steps, inner_lr=0.1).to(device)
            if stream is None:
                g = torch.Generator().manual_seed(0)
                stream = SyntheticBank([torch.randn(5, 20, 32, generator=g) for _ in range(16)],
                                       [tuple(range(5 * m, 5 * m + 5)) for m in range(16)], {})
            return MetaTrainer(learner.network, stream, lambda: eps.tasks(world["val"]), train, device=device,
                               learner=learner)

        meta = trainer(None)
        seconds["meta"] = timed(meta.fit)[0]
        inverter = PixelInverter((32,), PixelInversionConfig(steps=args.inversion_steps))
        stream = DataFreeStream(pool, inverter, StreamConfig(n_way=5, n_shot=1, n_query=15,
                                                             meta_batch_size=args.meta_batch), device=device)
        seconds["datafree"] = timed(trainer(stream).fit)[0]
        if dist.is_main():
            params = {k: v.detach().cpu() for k, v in meta.learner.state_dict().items()}
            torch.save({"seconds": seconds, "world_size": dist.world_size(), "params": params}, args.worker)
        dist.barrier()  # rank 0's temporary folder outlives every rank's use of the pool


# ---------------------------------------------------------------------------------- launcher
def launch(k: int, args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.pt"
        env = {"PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
        result = dist.run_local(k, [str(Path(__file__).resolve()), *argv, "--worker", str(report)],
                                timeout=args.timeout, env=env, cwd=REPO)
        if result.returncode != 0 or not report.exists():
            raise RuntimeError(f"{k} process(es) failed (exit {result.returncode}):\n{result.stdout[-4000:]}")
        return torch.load(report, weights_only=True)


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| processes | pool build models/s | eff. | CPU eff. | meta-training tasks/s | eff. | CPU eff. "
             "| data-free tasks/s | eff. | CPU eff. | max abs param diff vs 1 |", "|---" * 11 + "|"]
    for r in rows:
        cells = [str(r["processes"])]
        for w in WORKLOADS:
            r_w = r[w]
            cells += [f"{r_w['per_s']:.2f}", f"{100 * r_w['efficiency']:.0f}%", f"{100 * r_w['cpu_efficiency']:.0f}%"]
        cells.append(f"{r['param_diff']:.1e}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker is not None:
        with dist.launched():
            worker(args)
        return {}
    work = {"pool": args.models, "meta": args.steps * args.meta_batch, "datafree": args.steps * args.meta_batch}
    reports: dict[int, list[dict[str, Any]]] = {k: [] for k in sorted(set(args.procs))}
    for r in range(args.repeats):  # interleaved, so a change in the machine's load hits every count alike
        for k in reports:
            print(f"timing {k} process(es), launch {r + 1} of {args.repeats}...", flush=True)
            reports[k].append(launch(k, args, argv))
    median = {k: {w: {c: statistics.median(rep["seconds"][w][c] for rep in reps) for c in ("wall", "cpu")}
                  for w in WORKLOADS} for k, reps in reports.items()}
    rows = []
    for k, reps in reports.items():
        row: dict[str, Any] = {"processes": k, "seconds_median": median[k],
                               "seconds_all": {w: [rep["seconds"][w] for rep in reps] for w in WORKLOADS}}
        for w in WORKLOADS:
            per_s = work[w] / median[k][w]["wall"]
            row[w] = {"per_s": per_s, "efficiency": per_s / (k * work[w] / median[1][w]["wall"]),
                      "cpu_efficiency": median[1][w]["cpu"] / (k * median[k][w]["cpu"])}
        ref = reports[1][0]["params"]
        row["param_diff"] = max(float((rep["params"][n] - ref[n]).abs().max()) for rep in reps for n in ref)
        rows.append(row)
    md = table(rows)
    print("\n" + md)
    result = {
        "command": "python benchmarks/scaling.py " + " ".join(argv),
        "date": time.strftime("%Y-%m-%d"),
        "settings": {k: v for k, v in vars(args).items() if k not in ("worker", "out")},
        "environment": {"torch": torch.__version__, "python": platform.python_version(), "cpu_count": os.cpu_count(),
                        "loadavg_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "rows": rows, "table": md,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(result, indent=2, default=str) + "\n")
        print(f"\nwrote {args.out}")
    return result


if __name__ == "__main__":
    main()
