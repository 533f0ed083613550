"""Image loading against arithmetic: pool training and meta-test throughput with their CPU and page-fault cost.

    python benchmarks/loading.py                         # 32x32 and 84x84, allocator kept and system
    python benchmarks/loading.py --sizes 84 --malloc keep --out benchmarks/results/loading.json
    python benchmarks/loading.py --quick                 # tiny sizes: a smoke run, figures meaningless

Each cell (workload x image size x allocator setting) runs in a fresh process on a synthetic uint8
dataset of ``--classes`` x ``--per-class`` random images held in memory (the shape of a real split:
``[N, H, W, 3]`` decoded once, ImageNet normalisation), after one untimed warm-up batch:

  batches    ``ArrayDataset.get_batch`` of ``--batch-size`` random indices + the pool's augmentation:
             the loading alone, no model
  pool       ``pretrain_pool`` (what ``dfml pool build`` runs): ``--models`` Conv4 5-way classifiers,
             ``--epochs`` epochs, the dfml convention (batch 64, augmentation), held-out evaluation
             after each epoch. Images = every image passed through a model (training + held out)
  metatest   ``dfml.eval.evaluate`` (what ``dfml eval --recipe random`` runs): a random Conv4,
             5-way 5-shot episodes with 15 queries, 10 fine-tuning steps at lr 0.01
  decode     ``MiniImageNet`` loading a split of ``--classes`` x ``--per-class`` JPEG files (written
             untimed to a temporary folder in the Ravi & Larochelle layout), one decoding thread

Allocator: ``keep`` is ``dfml.allocator.keep_freed_memory`` (what the CLI does), ``system`` glibc's
defaults. Rates are per CPU-second (user + system, from ``getrusage``) because wall time on a shared
machine measures the other jobs; minor faults are the child's own; peak RSS is the child's high-water
mark (Python, torch and the dataset included) and peak growth the rise of that mark during the timed
part (reset through ``/proc/self/clear_refs`` where it can be written).
"""

from __future__ import annotations

import argparse
import ctypes
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

from dfml.allocator import keep_freed_memory  # noqa: E402
from dfml.data.base import ArrayDataset  # noqa: E402
from dfml.runs import atomic_write_text  # noqa: E402

WORKLOADS = ("batches", "pool", "metatest", "decode")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def synthetic_dataset(size: int, classes: int, per_class: int, seed: int = 0) -> ArrayDataset:
    """``classes * per_class`` random uint8 ``size x size`` RGB images, class-major, ImageNet normalisation."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (classes * per_class, size, size, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(classes), per_class)
    return ArrayDataset(data, labels, [f"c{i}" for i in range(classes)], mean=MEAN, std=STD,
                        name=f"synthetic{size}/train")


def _batches(ds: ArrayDataset, cell: dict[str, Any]) -> tuple[Callable[[], None], Callable[[], int]]:
    from dfml.pool.training import augment_images

    gen = torch.Generator().manual_seed(0)
    b, pad = cell["batch_size"], max(1, ds.input_shape[-1] // 8)

    def one() -> None:
        idx = torch.randint(0, len(ds), (b,), generator=gen).numpy()
        augment_images(ds.get_batch(idx), gen, pad)

    def run() -> int:
        for _ in range(cell["n_batches"]):
            one()
        return cell["n_batches"] * b

    return one, run


def _pool(ds: ArrayDataset, cell: dict[str, Any]) -> tuple[Callable[[], None], Callable[[], int]]:
    import torch.nn.functional as F

    from dfml.pool import PretrainConfig, pretrain_pool
    from dfml.pool.training import init_model, split_holdout

    cfg = PretrainConfig(n_models=cell["models"], n_way=5, arch="conv4", epochs=cell["epochs"],
                         batch_size=cell["batch_size"])
    size = ds.input_shape[-1]

    def warm() -> None:  # one training step and one evaluation batch of the sizes the build uses
        model = init_model("conv4", {"num_classes": 5, "image_size": size}, 0)
        x = ds.get_batch(np.arange(min(cfg.batch_size, len(ds))))
        F.cross_entropy(model(x), torch.zeros(len(x), dtype=torch.long)).backward()
        with torch.no_grad():
            model.eval()(ds.get_batch(np.arange(min(256, len(ds)))))

    def run() -> int:
        with tempfile.TemporaryDirectory() as out:
            pool = pretrain_pool(ds, out, cfg)
        per_model = sum(len(a) for a in split_holdout(ds, pool.entry(0).class_ids, cfg.holdout_frac, 0)[::2])
        return cfg.n_models * cfg.epochs * per_model

    return warm, run


def _metatest(ds: ArrayDataset, cell: dict[str, Any]) -> tuple[Callable[[], None], Callable[[], int]]:
    from dfml.data import EpisodeList
    from dfml.eval import evaluate
    from dfml.models import build_model

    torch.manual_seed(0)
    model = build_model("conv4", num_classes=5, image_size=ds.input_shape[-1])
    episodes = EpisodeList.generate(ds, cell["episodes"] + 1, 5, 5, 15, seed=0)
    tasks = list(episodes.tasks(ds)) if cell.get("predecoded") else None

    def warm() -> None:
        evaluate(model, [episodes.task(0, ds)], steps=10, lr=0.01)

    def run() -> int:
        stream = tasks[1:] if tasks is not None else (episodes.task(i, ds) for i in range(1, len(episodes)))
        evaluate(model, stream, steps=10, lr=0.01)
        return cell["episodes"]

    return warm, run


def _decode(ds: ArrayDataset, cell: dict[str, Any]) -> tuple[Callable[[], None], Callable[[], int]]:
    from PIL import Image

    from dfml.data.miniimagenet import MiniImageNet

    root = Path(tempfile.mkdtemp(prefix="dfml-loading-"))

    def write() -> None:
        (root / "images").mkdir()
        rows = ["filename,label"]
        for i, (img, label) in enumerate(zip(ds.data.numpy(), ds.labels)):
            Image.fromarray(img).save(root / "images" / f"im{i:06d}.jpg", quality=90)
            rows.append(f"im{i:06d}.jpg,n{label:08d}")
        (root / "val.csv").write_text("\n".join(rows) + "\n")

    def run() -> int:
        try:
            return len(MiniImageNet(root, "val", image_size=cell["size"], num_workers=1))
        finally:
            shutil.rmtree(root, ignore_errors=True)

    return write, run


def _peak_reset() -> Callable[[], float | None]:
    """Reset the resident high-water mark; returns a function giving its rise in MiB (``None`` if it cannot)."""

    def hwm() -> float:
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
        return float(line.split()[1]) / 1024

    try:
        Path("/proc/self/clear_refs").write_text("5")
        start = hwm()
    except (OSError, StopIteration):
        return lambda: None
    return lambda: hwm() - start


def run_cell(cell: dict[str, Any]) -> dict[str, Any]:
    """One measurement in this process: returns the cell with its figures."""
    torch.set_num_threads(cell["threads"])
    applied = keep_freed_memory() if cell["malloc"] == "keep" else {}
    ds = synthetic_dataset(cell["size"], cell["classes"], cell["per_class"])
    make = {"batches": _batches, "pool": _pool, "metatest": _metatest, "decode": _decode}[cell["workload"]]
    warm, run = make(ds, cell)
    warm()
    if cell["workload"] == "decode":
        ds = warm = None  # only the files are loaded: the in-memory copy would count in the peak,
        if platform.libc_ver()[0] == "glibc":  # and its freed heap memory would be reused by the load
            ctypes.CDLL("libc.so.6").malloc_trim(0)
    peak = _peak_reset()
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    units = run()
    r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - t0
    growth = peak()
    user, sys_s = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
    return {
        **cell, "allocator": applied, "units": units, "user_s": user, "sys_s": sys_s, "wall_s": wall,
        "minflt": r1.ru_minflt - r0.ru_minflt, "per_cpu_s": units / max(user + sys_s, 1e-9),
        "sys_over_user": sys_s / max(user, 1e-9), "peak_rss_mib": r1.ru_maxrss / 1024, "peak_growth_mib": growth,
        "dataset_mib": cell["classes"] * cell["per_class"] * cell["size"] ** 2 * 3 / 2**20,
    }


def table(rows: list[dict[str, Any]]) -> str:
    unit = {"batches": "images", "pool": "images", "metatest": "episodes", "decode": "images"}
    lines = ["| workload | size | malloc | units | per CPU-s | user s | sys s | sys/user | minor faults | "
             "faults/unit | peak RSS MiB | peak growth MiB |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        growth = "-" if r.get("peak_growth_mib") is None else f"{r['peak_growth_mib']:.0f}"
        lines.append(
            f"| {r['workload']} | {r['size']}x{r['size']} | {r['malloc']} | {r['units']} {unit[r['workload']]} | "
            f"{r['per_cpu_s']:.1f} | {r['user_s']:.2f} | {r['sys_s']:.2f} | {100 * r['sys_over_user']:.1f}% | "
            f"{r['minflt']} | {r['minflt'] / max(r['units'], 1):.0f} | {r['peak_rss_mib']:.0f} | {growth} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 84])
    p.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    p.add_argument("--malloc", nargs="+", choices=("keep", "system"), default=["keep", "system"])
    p.add_argument("--classes", type=int, default=10, help="classes of the synthetic dataset")
    p.add_argument("--per-class", type=int, default=300, help="images per class")
    p.add_argument("--models", type=int, default=2, help="pool: models")
    p.add_argument("--epochs", type=int, default=1, help="pool: epochs")
    p.add_argument("--batch-size", type=int, default=64, help="pool and batches: batch size")
    p.add_argument("--n-batches", type=int, default=50, help="batches: batches decoded")
    p.add_argument("--episodes", type=int, default=20, help="metatest: episodes scored")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke run)")
    p.add_argument("--out", type=Path, help="write the rows and the environment as JSON")
    p.add_argument("--cell", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.classes, args.per_class, args.models, args.n_batches, args.episodes = 5, 24, 1, 2, 2
        args.batch_size = 16
    return args


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if args.cell:
        print(json.dumps(run_cell(json.loads(args.cell))))
        return []
    rows = []
    for workload in args.workloads:
        for size in args.sizes:
            for malloc in args.malloc:
                cell = {"workload": workload, "size": size, "malloc": malloc, "threads": args.threads,
                        "classes": args.classes, "per_class": args.per_class, "models": args.models,
                        "epochs": args.epochs, "batch_size": args.batch_size, "n_batches": args.n_batches,
                        "episodes": args.episodes}
                done = subprocess.run([sys.executable, __file__, "--cell", json.dumps(cell)],
                                      capture_output=True, text=True)
                if done.returncode != 0:
                    raise RuntimeError(f"cell {cell} failed:\n{done.stderr[-3000:]}")
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(table(rows))
    if args.out:
        env = {"torch": torch.__version__, "python": platform.python_version(), "threads": args.threads,
               "machine": platform.machine(), "cpus": __import__("os").cpu_count()}
        atomic_write_text(args.out, json.dumps({"env": env, "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
