"""Pools of many models: CPU time and peak memory of every whole-pool operation at 10, 100 and 1000 models.

    python benchmarks/pool_scale.py                              # 10, 100, 1000 models
    python benchmarks/pool_scale.py --sizes 10 100 --ops average verify --out benchmarks/results/pool_scale.json
    python benchmarks/pool_scale.py --quick                      # 4 and 8 models: a smoke run

A base pool of ``--base`` Conv4-32 5-way models on 32x32 inputs (initial weights: ``epochs=0``;
training changes no size) is built once, then copied model file by model file into pools of each
size (entries keep their checksums). Each operation runs in a fresh process on a pool of that
size; reported are its CPU seconds (user + system, ``getrusage``) and its peak memory above what
the process held before it began (the resident high-water mark ``VmHWM`` after resetting it
through ``/proc/self/clear_refs``; where that file cannot be written, the growth of ``ru_maxrss``).

  open       ``ModelPool(path)``: read and check ``pool.json``
  verify     ``ModelPool.verify`` (``dfml pool info --verify``): load and check every model
  average    ``pool_average`` (the ``average`` recipe and ``train.meta_init=average``)
  select     2,000 ``select(4)`` + ``update`` of the REINFORCE reliability weigher over the pool (it
             keeps the weights after every update: ``[updates, n]`` float64)
  group      TGR's grouping from one Fisher embedding per model (random non-negative ``[n, n_params]``
             of the meta-model's size, as the recovered tasks would give): the ``n x n`` cosine
             dissimilarity, then spectral clustering (an ``n x n`` eigendecomposition, cubic in n)
  fisher     TGR's embedding pass: one Fisher embedding per model, streamed, of a recovered-size
             random task (5-way, 1 + 15 images; the per-model inversion before it is not included)
  corrupt    ``add_untrustworthy`` at ratio 0.1, poor untrained models: copy, replace, verify
  merge      ``merge_pools`` of the pool with itself (2n models): checksum and copy every file
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dfml.data.base import ArrayDataset  # noqa: E402
from dfml.pool import ModelPool, PoolManifest, PretrainConfig, pretrain_pool  # noqa: E402
from dfml.runs import atomic_write_text  # noqa: E402

OPS = ("open", "verify", "average", "select", "group", "fisher", "corrupt", "merge")


def images(classes: int = 10, per_class: int = 6, size: int = 32) -> ArrayDataset:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (classes * per_class, size, size, 3), dtype=np.uint8)
    return ArrayDataset(data, np.repeat(np.arange(classes), per_class), [f"c{i}" for i in range(classes)],
                        mean=(0.5,) * 3, std=(0.25,) * 3, name="synthetic32/train")


def copies(base: ModelPool, n: int, out: Path) -> ModelPool:
    """A pool of ``n`` models: the base pool's files copied in turn (same weights, same checksums)."""
    entries = []
    (out / "models").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        src = base.entry(i % len(base))
        file = f"models/model_{i:04d}.pt"
        shutil.copyfile(base.root / src.file, out / file)
        entries.append(dataclasses.replace(src, index=i, file=file))
    PoolManifest(entries=entries, build=base.build).save(out)
    return ModelPool(out)


def _peak_reset() -> Callable[[], float]:
    """Reset the resident high-water mark; returns a function giving the growth above the current RSS in MiB."""

    def status(key: str) -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key):
                return float(line.split()[1]) / 1024
        raise KeyError(key)

    try:
        Path("/proc/self/clear_refs").write_text("5")
        start = status("VmRSS:")
        return lambda: status("VmHWM:") - start
    except OSError:
        start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - start


def operation(name: str, path: Path, work: Path) -> Callable[[], Any]:
    from dfml.datafree import TrainConfig
    from dfml.models import build_model

    if name == "open":
        return lambda: len(ModelPool(path))
    pool = ModelPool(path)
    n = len(pool)
    if name == "verify":
        return pool.verify
    if name == "average":
        from dfml.recipes.base import RecipeContext
        from dfml.recipes.baselines import pool_average

        ctx = RecipeContext(pool=pool, train=TrainConfig(n_way=5), input_shape=(3, 32, 32), val_tasks=lambda: [])
        return lambda: pool_average(ctx)
    if name == "select":
        from dfml.selection import ReliabilityWeigher

        weigher, g = ReliabilityWeigher(n), torch.Generator().manual_seed(0)

        def steps() -> None:  # the metrics of each update (one w/<id> per model) go to metrics.jsonl, not memory
            for _ in range(2000):
                weigher.update(weigher.select(4, g), 0.1)

        return steps
    probe = build_model("conv4", num_classes=5, image_size=32)
    n_params = sum(p.numel() for p in probe.parameters())
    if name == "group":
        from dfml.selection import GroupSelector

        emb = torch.rand(n, n_params, generator=torch.Generator().manual_seed(0))
        return lambda: GroupSelector.from_embeddings(emb, min(4, n), seed=0)
    if name == "fisher":
        from dfml.models import use_batch_stats
        from dfml.selection.fisher import fisher_embeddings
        from dfml.types import Task

        probe = use_batch_stats(probe)

        def tasks():
            g = torch.Generator().manual_seed(0)
            for _ in range(n):
                x = torch.randn(80, 3, 32, 32, generator=g)
                yield Task(x[:5], torch.arange(5), x[5:], torch.arange(5).repeat_interleave(15))

        return lambda: fisher_embeddings(probe, tasks())
    if name == "corrupt":
        from dfml.pool import add_untrustworthy

        return lambda: add_untrustworthy(pool, work / "corrupt", ratio=0.1, source_dataset=images(),
                                         kinds=("poor",), poor_epochs=0)
    if name == "merge":
        from dfml.pool import merge_pools

        return lambda: merge_pools([pool, pool], work / "merge")
    raise ValueError(f"unknown operation {name!r}; choose from {OPS}")


def run_cell(cell: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as work:
        fn = operation(cell["op"], Path(cell["pool"]), Path(work))
        peak = _peak_reset()
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        fn()
        r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - t0
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {**cell, "cpu_s": cpu, "wall_s": wall, "peak_mib": peak()}


def table(rows: list[dict[str, Any]], sizes: Sequence[int]) -> str:
    head = "| operation | " + " | ".join(f"{n} models: CPU s, peak MiB" for n in sizes) + " | CPU x per 10x models |"
    lines = [head, "|---" * (len(sizes) + 2) + "|"]
    for op in dict.fromkeys(r["op"] for r in rows):
        cells = {r["n"]: r for r in rows if r["op"] == op}
        row = [f"{cells[n]['cpu_s']:.3f} s, {cells[n]['peak_mib']:.1f}" if n in cells else "-" for n in sizes]
        done = [n for n in sizes if n in cells]
        growth = "-"
        if len(done) >= 2:
            a, b = cells[done[-2]], cells[done[-1]]
            growth = f"{(b['cpu_s'] / max(a['cpu_s'], 1e-9)) ** (1 / np.log10(done[-1] / done[-2])):.1f}x"
        lines.append(f"| {op} | " + " | ".join(row) + f" | {growth} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    p.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS))
    p.add_argument("--base", type=int, default=4, help="models in the base pool that is copied")
    p.add_argument("--quick", action="store_true", help="4 and 8 models (smoke run)")
    p.add_argument("--out", type=Path, help="write the rows and the environment as JSON")
    p.add_argument("--cell", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.cell:
        print(json.dumps(run_cell(json.loads(args.cell))))
        return []
    if args.quick:
        args.sizes, args.base = [4, 8], 2
    torch.set_num_threads(1)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = PretrainConfig(n_models=args.base, n_way=5, arch="conv4", epochs=0, seed=0)
        base = pretrain_pool(images(), Path(tmp) / "base", cfg)
        for n in args.sizes:
            pool = copies(base, n, Path(tmp) / f"pool{n}")
            for op in args.ops:
                cell = {"op": op, "n": n, "pool": str(pool.root)}
                done = subprocess.run([sys.executable, __file__, "--cell", json.dumps(cell)], capture_output=True,
                                      text=True)
                if done.returncode != 0:
                    raise RuntimeError(f"{op} on {n} models failed:\n{done.stderr[-3000:]}")
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
                r = rows[-1]
                print(f"{op:8s} {n:5d} models: {r['cpu_s']:8.3f} CPU s  {r['peak_mib']:8.1f} MiB peak", flush=True)
    print(table(rows, args.sizes))
    if args.out:
        env = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine()}
        atomic_write_text(args.out, json.dumps({"env": env, "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
