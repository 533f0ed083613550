"""How far training moved each pool model from its initial weights.

    python benchmarks/pool_displacement.py pools/cifarfs-conv4 pools/cifarfs-conv4-papers

For every model, ``||w - w0|| / ||w0||`` over its convolution (or linear) weights, where ``w0`` is
the initialisation the build drew from the model's recorded seed (``init_model(arch, arch_kwargs,
seed)``, exactly what ``dfml pool build`` trained from). Averaging the weights of independently
initialised models (the ``average`` baseline) can only keep what the models learnt while their
displacement stays small next to the random initial weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dfml.pool import ModelPool  # noqa: E402
from dfml.pool.training import init_model  # noqa: E402


def displacements(pool_dir: str) -> list[float]:
    pool = ModelPool(pool_dir)
    out = []
    for i, entry in enumerate(pool.entries):
        trained, initial = pool.load(i).state_dict(), init_model(entry.arch, entry.arch_kwargs, entry.seed).state_dict()
        keys = [k for k, v in trained.items() if k.endswith("weight") and v.dim() >= 2]
        w = torch.cat([trained[k].flatten() for k in keys])
        w0 = torch.cat([initial[k].flatten() for k in keys])
        out.append(float((w - w0).norm() / w0.norm()))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pools", nargs="+")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    print("| pool | models | relative displacement: mean | min | max |")
    print("|---|---|---|---|---|")
    for p in args.pools:
        d = displacements(p)
        print(f"| {p} | {len(d)} | {sum(d) / len(d):.2f} | {min(d):.2f} | {max(d):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
