"""Where an inversion step's CPU time goes: the generator's and the teacher's forward + backward at 32x32 and 84x84.

    python benchmarks/generator_speed.py                       # 32 and 84, both upsamplings, both allocators
    python benchmarks/generator_speed.py --sizes 84 --malloc keep --iters 5

One inversion step of the generator-based inverters (per-model generator, FREE's meta-generator)
is: the generator maps ``z`` to a batch, the frozen teacher classifies it, and the loss is
back-propagated through both to the generator's parameters. This script times those two parts
apart on the sizes of a 5-way 1-shot task with 15 queries (80 images): the label-conditional
``ImageGenerator`` (width 64, nz 64; upsampling ``nearest`` or ``phases``) forward and backward,
and a Conv4-32 teacher in eval mode forward and backward to its input. Each row is the median
CPU seconds (user + system, ``getrusage``) of ``--iters`` passes after one untimed pass, with the
system share and the minor page faults per pass; each allocator setting runs in its own process
(``keep``: ``dfml.allocator.keep_freed_memory``, as the CLI; ``system``: glibc's defaults).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dfml.allocator import keep_freed_memory  # noqa: E402
from dfml.models import build_model  # noqa: E402
from dfml.models.generator import ImageGenerator  # noqa: E402
from dfml.runs import atomic_write_text  # noqa: E402

PARTS = ("generator nearest", "generator phases", "teacher")


def _pass(part: str, size: int, batch: int) -> Callable[[], None]:
    torch.manual_seed(0)
    y = torch.arange(5).repeat_interleave(batch // 5)
    if part == "teacher":
        teacher = build_model("conv4", num_classes=5, image_size=size).eval().requires_grad_(False)
        x = torch.rand(len(y), 3, size, size, requires_grad=True)
        return lambda: torch.autograd.grad(torch.nn.functional.cross_entropy(teacher(x), y), [x])
    gen = ImageGenerator(64, 3, size, 64, n_classes=5, upsample=part.split()[1])
    z = torch.randn(len(y), 64)
    return lambda: torch.autograd.grad(gen(z, y).square().mean(), list(gen.parameters()))


def run_cell(cell: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(1)
    if cell["malloc"] == "keep":
        keep_freed_memory()
    fn = _pass(cell["part"], cell["size"], cell["batch"])
    fn()
    cpu, sys_s, faults = [], [], []
    for _ in range(cell["iters"]):
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        fn()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
        sys_s.append(r1.ru_stime - r0.ru_stime)
        faults.append(r1.ru_minflt - r0.ru_minflt)
    return {**cell, "cpu_s": statistics.median(cpu), "sys_share": sum(sys_s) / max(sum(cpu), 1e-9),
            "minflt": statistics.median(faults)}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| part | size | malloc | CPU s per pass | system share | minor faults per pass |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['part']} | {r['size']}x{r['size']} | {r['malloc']} | {r['cpu_s']:.3f} | "
                     f"{100 * r['sys_share']:.0f}% | {r['minflt']:.0f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 84])
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--malloc", nargs="+", choices=("keep", "system"), default=["keep", "system"])
    p.add_argument("--batch", type=int, default=80, help="images per pass (a multiple of 5)")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--out", type=Path, help="write the rows as JSON")
    p.add_argument("--cell", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.cell:
        print(json.dumps(run_cell(json.loads(args.cell))))
        return []
    rows = []
    for size in args.sizes:
        for part in args.parts:
            for malloc in args.malloc:
                cell = {"part": part, "size": size, "malloc": malloc, "batch": args.batch, "iters": args.iters}
                done = subprocess.run([sys.executable, __file__, "--cell", json.dumps(cell)], capture_output=True,
                                      text=True)
                if done.returncode != 0:
                    raise RuntimeError(f"cell {cell} failed:\n{done.stderr[-3000:]}")
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(table(rows))
    if args.out:
        atomic_write_text(args.out, json.dumps({"torch": torch.__version__, "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
