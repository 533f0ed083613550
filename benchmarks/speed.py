"""Meta-training step throughput and peak memory: dfml's MAML against higher and learn2learn.

One run times, for Conv4 (batch-statistics BatchNorm) on N-way K-shot tasks, one full meta-step
(zero the gradients, inner SGD on each task's support set, query loss backpropagated, Adam step)
of every implementation that is installed. Before timing, each reference's meta-gradient is
compared with dfml's in float64 on a small case; an implementation that disagrees is not timed.

Usage:
    python benchmarks/speed.py --quick                       # tiny sizes, a smoke run
    python benchmarks/speed.py --device cpu --threads 1 --out results.json
    python benchmarks/speed.py --device cuda --config benchmarks/presets/speed.yaml
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import functools
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dfml.config import from_dict, load_yaml
from dfml.meta import MAML
from dfml.models.conv4 import Conv4
from dfml.models.norm import use_batch_stats
from dfml.runs import atomic_write_text
from dfml.types import Task

Step = Callable[[Sequence[Task], torch.optim.Optimizer], None]
"""One meta-step: zero the gradients, accumulate the mean meta-gradient, ``optimizer.step()``."""
IMPLEMENTATIONS = ("dfml", "higher", "learn2learn")
GRAD_TOL = 1e-10  # float64 relative error ||g - g_dfml|| / ||g_dfml||, worst parameter


@dataclass(frozen=True)
class SpeedConfig:
    """What to time. The defaults are the benchmark issue's grid for Conv4-32 on 32x32 images."""

    hidden: int = 32
    image_size: int = 32
    channels: int = 3
    n_way: int = 5
    n_query: int = 15
    inner_steps: int = 5
    inner_lr: float = 0.01
    outer_lr: float = 1e-3
    shots: tuple[int, ...] = (1, 5)
    orders: tuple[str, ...] = ("second", "first")
    meta_batch_sizes: tuple[int, ...] = (4, 16)
    warmup: int = 3
    iters: int = 10
    task_sets: int = 2  # distinct meta-batches, cycled so that no step reuses the previous inputs
    seed: int = 0


QUICK = SpeedConfig(hidden=8, image_size=16, n_query=2, inner_steps=2, shots=(1,), meta_batch_sizes=(2,),
                    warmup=1, iters=3)
CHECK = SpeedConfig(hidden=4, image_size=16, n_way=3, n_query=2, inner_steps=2, inner_lr=0.1, shots=(2,),
                    meta_batch_sizes=(2,))
"""The float64 gradient-check case: small, several inner steps, several tasks."""


# ---------------------------------------------------------------- models, tasks, implementations
def make_model(cfg: SpeedConfig, dtype: torch.dtype, device: torch.device) -> nn.Module:
    """Conv4 with batch-statistics BN (``track_running_stats=False``), seeded: same weights every call."""
    torch.manual_seed(cfg.seed)
    model = Conv4(cfg.channels, cfg.n_way, hidden=cfg.hidden, image_size=cfg.image_size)
    return use_batch_stats(model).to(device=device, dtype=dtype)


def make_tasks(cfg: SpeedConfig, n_shot: int, meta_batch_size: int, dtype: torch.dtype, device: torch.device,
               seed: int) -> list[Task]:
    """``meta_batch_size`` random Gaussian-image tasks (never zeros), labels ``0..n_way-1``."""
    gen = torch.Generator().manual_seed(seed)
    shape = (cfg.channels, cfg.image_size, cfg.image_size)

    def split(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(cfg.n_way * k, *shape, generator=gen, dtype=torch.float64)
        return x.to(device=device, dtype=dtype), torch.arange(cfg.n_way).repeat(k).to(device)

    return [Task(*split(n_shot), *split(cfg.n_query)) for _ in range(meta_batch_size)]


def dfml_step(model: nn.Module, cfg: SpeedConfig, first_order: bool) -> tuple[Step, nn.Module]:
    maml = MAML(model, inner_steps=cfg.inner_steps, inner_lr=cfg.inner_lr, first_order=first_order)

    def step(tasks: Sequence[Task], opt: torch.optim.Optimizer) -> None:
        maml.meta_step(tasks, opt)

    return step, maml


def higher_step(model: nn.Module, cfg: SpeedConfig, first_order: bool) -> tuple[Step, nn.Module]:
    import higher  # ImportError is reported by `available`

    inner_opt = torch.optim.SGD(model.parameters(), lr=cfg.inner_lr)
    params = list(model.parameters())

    def step(tasks: Sequence[Task], opt: torch.optim.Optimizer) -> None:
        opt.zero_grad(set_to_none=True)
        for t in tasks:
            with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False,
                                      track_higher_grads=not first_order) as (fmodel, diffopt):
                for _ in range(cfg.inner_steps):
                    diffopt.step(F.cross_entropy(fmodel(t.support_x), t.support_y))
                loss = F.cross_entropy(fmodel(t.query_x), t.query_y) / len(tasks)
                if not first_order:
                    loss.backward()
                    continue
                # higher detaches the fast weights when not tracking: FOMAML's gradient is the
                # query-loss gradient at the adapted weights, accumulated by hand.
                for p, g in zip(params, torch.autograd.grad(loss, list(fmodel.parameters()))):
                    p.grad = g if p.grad is None else p.grad + g
        opt.step()

    return step, model


def learn2learn_step(model: nn.Module, cfg: SpeedConfig, first_order: bool) -> tuple[Step, nn.Module]:
    import learn2learn as l2l  # ImportError is reported by `available`

    maml = l2l.algorithms.MAML(model, lr=cfg.inner_lr, first_order=first_order)

    def step(tasks: Sequence[Task], opt: torch.optim.Optimizer) -> None:
        opt.zero_grad(set_to_none=True)
        for t in tasks:
            learner = maml.clone()
            for _ in range(cfg.inner_steps):
                learner.adapt(F.cross_entropy(learner(t.support_x), t.support_y))
            (F.cross_entropy(learner(t.query_x), t.query_y) / len(tasks)).backward()
        opt.step()

    return step, maml


BUILDERS: dict[str, Callable[[nn.Module, SpeedConfig, bool], tuple[Step, nn.Module]]] = {
    "dfml": dfml_step, "higher": higher_step, "learn2learn": learn2learn_step,
}
PIP = {"higher": "pip install higher", "learn2learn": "pip install learn2learn (0.2.0 does not build on Python 3.11)"}


def available(names: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The implementations that import, and a skip reason for each one that does not."""
    ok, skipped = [], {}
    for name in names:
        if name == "dfml":
            ok.append(name)
            continue
        try:
            __import__(name)
            ok.append(name)
        except Exception as e:  # a broken install must not stop the benchmark: report and skip it
            skipped[name] = f"not installed ({type(e).__name__}: {e}); {PIP[name]}"
    return ok, skipped


# ---------------------------------------------------------------- gradient check
def meta_gradient(build: Callable[..., tuple[Step, nn.Module]], cfg: SpeedConfig, tasks: Sequence[Task],
                  first_order: bool, device: torch.device) -> dict[str, torch.Tensor]:
    """The mean meta-gradient one implementation writes into the Conv4 parameters (float64)."""
    model = make_model(cfg, torch.float64, device)
    step, owner = build(model, cfg, first_order)
    step(tasks, torch.optim.SGD(owner.parameters(), lr=0.0))  # lr 0: the weights stay, .grad holds the result
    return {k: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for k, p in model.named_parameters()}


def gradient_error(grads: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> tuple[float, str]:
    """Worst per-parameter relative error and that parameter's name.

    Each parameter's error is ``||g - ref|| / max(||ref||, 1e-8 ||ref_all||)``: relative where the
    reference is not tiny, and measured against the whole gradient where it is (a conv bias before
    BatchNorm has a true meta-gradient of 0, so its float64 value is rounding noise).

    Raises:
        ValueError: the reference gradient is zero or not finite (the check would prove nothing).
    """
    total = torch.sqrt(sum((r.double() ** 2).sum() for r in ref.values()))
    if not bool(torch.isfinite(total)) or float(total) == 0.0:
        raise ValueError(f"dfml's reference meta-gradient has norm {float(total)}; the check needs a non-zero one")
    errors = {k: float((grads[k] - ref[k]).norm() / torch.clamp(ref[k].norm(), min=1e-8 * total)) for k in ref}
    worst = max(errors, key=lambda k: errors[k] if errors[k] == errors[k] else float("inf"))
    return errors[worst], worst


def check_gradients(names: Sequence[str], device: torch.device, orders: Sequence[str],
                    builders: dict[str, Callable[..., tuple[Step, nn.Module]]] = BUILDERS,
                    cfg: SpeedConfig = CHECK) -> dict[str, dict[str, object]]:
    """Compare every implementation's float64 meta-gradient with dfml's, for each order.

    Returns:
        ``{name: {"ok": bool, "errors": {order: worst relative error}, "message": str}}``.
    """
    tasks = make_tasks(cfg, cfg.shots[0], cfg.meta_batch_sizes[0], torch.float64, device, seed=cfg.seed + 1)
    refs = {o: meta_gradient(builders["dfml"], cfg, tasks, o == "first", device) for o in orders}
    out: dict[str, dict[str, object]] = {"dfml": {"ok": True, "errors": {o: 0.0 for o in orders}, "message": "reference"}}
    for name in names:
        if name == "dfml":
            continue
        errors, bad = {}, []
        for o in orders:
            try:
                grads = meta_gradient(builders[name], cfg, tasks, o == "first", device)
            except Exception as e:  # third-party code on a newer torch: report it, time the others
                errors[o] = float("nan")
                bad.append(f"{o} order: raised {type(e).__name__}: {e}")
                continue
            err, worst = gradient_error(grads, refs[o])
            errors[o] = err
            if not err <= GRAD_TOL:  # NaN fails too
                bad.append(f"{o} order: relative error {err:.2e} > {GRAD_TOL:.0e} (worst at {worst})")
        message = "; ".join(bad) if bad else f"meta-gradients equal dfml's to {max(errors.values()):.1e}"
        out[name] = {"ok": not bad, "errors": errors, "message": message}
    return out


# ---------------------------------------------------------------- timing and memory
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak memory of a region above its start, in MiB.

    CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (tensors only).
    CPU: the process's resident-set high-water mark ``VmHWM``, reset through ``/proc/self/clear_refs``
    after ``malloc_trim``, minus ``VmRSS`` at the start (whole-process; Linux only). Where that is not
    possible, the growth of ``getrusage().ru_maxrss``, which stays 0 once an earlier region peaked higher.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        if device.type == "cuda":
            self.method = "cuda max_memory_allocated - memory_allocated at start"
        elif _hwm_resettable():
            self.method = "VmHWM (reset via /proc/self/clear_refs) - VmRSS at start"
        else:
            self.method = "ru_maxrss growth (0 when an earlier region peaked higher)"

    def __enter__(self) -> PeakMemory:
        synchronize(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        elif self.method.startswith("VmHWM"):
            _reset_hwm()
            self.start = _proc_status_kib("VmRSS") * 1024
        else:
            import resource
            self.start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return self

    def __exit__(self, *exc: object) -> None:
        synchronize(self.device)
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.method.startswith("VmHWM"):
            peak = _proc_status_kib("VmHWM") * 1024
        else:
            import resource
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.mib = max(peak - self.start, 0) / 2**20


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


@functools.lru_cache(maxsize=1)
def _hwm_resettable() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _proc_status_kib("VmHWM")
        return True
    except OSError:
        return False


def _reset_hwm() -> None:
    gc.collect()  # free unreachable graphs of earlier regions
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap pages back, so VmRSS is the live set
    except (OSError, AttributeError):
        pass
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def time_steps(step: Step, batches: Sequence[Sequence[Task]], opt: torch.optim.Optimizer, warmup: int,
               iters: int, device: torch.device) -> tuple[list[float], PeakMemory]:
    """Seconds of each of ``iters`` meta-steps after ``warmup`` untimed ones (device synchronised)."""
    for i in range(warmup):
        step(batches[i % len(batches)], opt)
    times = []
    with PeakMemory(device) as mem:
        for i in range(iters):
            synchronize(device)
            t0 = time.perf_counter()
            step(batches[(warmup + i) % len(batches)], opt)
            synchronize(device)
            times.append(time.perf_counter() - t0)
    return times, mem


def benchmark(cfg: SpeedConfig, names: Sequence[str], device: torch.device,
              log: Callable[[str], None] = print) -> list[dict[str, object]]:
    """Time every implementation in ``names`` on every (shot, order, meta-batch) cell of ``cfg`` (float32)."""
    rows = []
    for n_shot in cfg.shots:
        for order in cfg.orders:
            for mbs in cfg.meta_batch_sizes:
                batches = [make_tasks(cfg, n_shot, mbs, torch.float32, device, seed=cfg.seed + 100 + i)
                           for i in range(max(cfg.task_sets, 1))]
                for name in names:
                    model = make_model(cfg, torch.float32, device)
                    step, owner = BUILDERS[name](model, cfg, order == "first")
                    opt = torch.optim.Adam(owner.parameters(), lr=cfg.outer_lr)
                    times, mem = time_steps(step, batches, opt, cfg.warmup, cfg.iters, device)
                    med = statistics.median(times)
                    row = {"impl": name, "n_shot": n_shot, "order": order, "meta_batch_size": mbs,
                           "median_step_s": med, "min_step_s": min(times), "max_step_s": max(times),
                           "tasks_per_s": mbs / med, "peak_mib": mem.mib, "memory_method": mem.method}
                    rows.append(row)
                    log(f"  {name:12s} {n_shot}-shot {order:6s} order, meta-batch {mbs:3d}: "
                        f"{row['tasks_per_s']:8.2f} tasks/s, peak +{mem.mib:.1f} MiB")
    return rows


# ---------------------------------------------------------------- report
def markdown_table(rows: Sequence[dict[str, object]], names: Sequence[str]) -> str:
    """One line per (shot, order, meta-batch): tasks/s and peak MiB of each implementation, and
    the ratios dfml/higher and dfml/learn2learn of tasks/s (above 1: dfml is faster)."""
    by_cell: dict[tuple, dict[str, dict[str, object]]] = {}
    for r in rows:
        by_cell.setdefault((r["n_shot"], r["order"], r["meta_batch_size"]), {})[str(r["impl"])] = r
    refs = ["higher", "learn2learn"]
    head = (["shot", "order", "meta-batch"] + [f"{n} tasks/s" for n in names] + [f"dfml/{n}" for n in refs]
            + [f"{n} peak MiB" for n in names])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (shot, order, mbs), cell in by_cell.items():
        vals = [str(shot), str(order), str(mbs)]
        vals += [f"{cell[n]['tasks_per_s']:.2f}" if n in cell else "-" for n in names]
        for n in refs:
            ok = n in cell and "dfml" in cell
            vals.append(f"{cell['dfml']['tasks_per_s'] / cell[n]['tasks_per_s']:.2f}x" if ok else "-")
        vals += [f"{cell[n]['peak_mib']:.1f}" if n in cell else "-" for n in names]
        lines.append("| " + " | ".join(vals) + " |")
    return "\n".join(lines)


def environment(device: torch.device) -> dict[str, object]:
    """What the figures depend on: versions, device, threads, load, git revision."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        rev = None
    return {
        "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
        "loadavg_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None, "git_revision": rev,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run, figures meaningless)")
    p.add_argument("--config", type=Path, help="YAML preset of SpeedConfig fields (see benchmarks/presets/)")
    p.add_argument("--impl", nargs="+", choices=IMPLEMENTATIONS, default=list(IMPLEMENTATIONS))
    p.add_argument("--iters", type=int, help="timed meta-steps per cell (overrides the config)")
    p.add_argument("--warmup", type=int, help="untimed meta-steps per cell (overrides the config)")
    p.add_argument("--threads", type=int, help="torch intra-op CPU threads (default: torch's choice)")
    p.add_argument("--out", type=Path, help="write the full results as JSON here")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch.cuda.is_available() is False; run on a GPU machine or use --device cpu")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    if args.quick and args.config:
        p.error("--quick and --config are exclusive: --quick is its own preset")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    """Check gradients, time, print the table; return (and with ``--out`` write) the results."""
    args = parse_args(argv)
    cfg = QUICK if args.quick else from_dict(SpeedConfig, load_yaml(args.config)) if args.config else SpeedConfig()
    overrides = {k: getattr(args, k) for k in ("iters", "warmup") if getattr(args, k) is not None}
    cfg = dataclasses.replace(cfg, **overrides)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names, skipped = available(["dfml"] + [n for n in args.impl if n != "dfml"])
    for name, why in skipped.items():
        print(f"skipping {name}: {why}")
    print(f"gradient check (float64, {device}, Conv4-{CHECK.hidden} {CHECK.n_way}-way {CHECK.shots[0]}-shot, "
          f"{CHECK.inner_steps} inner steps, {CHECK.meta_batch_sizes[0]} tasks, tolerance {GRAD_TOL:.0e}):")
    checks = check_gradients(names, device, cfg.orders)
    for name, c in checks.items():
        print(f"  {name:12s} {'ok' if c['ok'] else 'MISMATCH'}: {c['message']}")
        if not c["ok"]:
            skipped[name] = f"not timed: meta-gradients differ from dfml's ({c['message']})"
    names = [n for n in names if checks[n]["ok"]]
    print(f"timing on {device} (float32), {cfg.warmup} warm-up + {cfg.iters} timed meta-steps per cell:")
    rows = benchmark(cfg, names, device)
    table = markdown_table(rows, [n for n in IMPLEMENTATIONS if n in names])
    print("\n" + table)
    result = {"config": dataclasses.asdict(cfg), "quick": args.quick, "environment": environment(device),
              "gradient_check": {"tolerance": GRAD_TOL, "case": dataclasses.asdict(CHECK), "results": checks},
              "skipped": skipped, "rows": rows, "table": table}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.out}")
    return result


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
    main()
