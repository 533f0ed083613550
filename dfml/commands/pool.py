"""``dfml pool build|import|merge|info`` and ``dfml invert``: commands on pools of models."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .. import distributed
from .common import data_options, one_process, parse_kv


def cmd_pool_build(args: argparse.Namespace) -> int:
    from ..data import get_dataset
    from ..pool import PretrainConfig, pretrain_pool
    from ..pool.pretrain import PRETRAIN_TRAINING_FIELDS, pretrain_training_fields

    dataset = get_dataset(args.dataset, args.data_root, args.split, **data_options(args, args.dataset))
    cfg = PretrainConfig(
        n_models=args.n_models,
        n_way=args.n_way,
        class_mode=args.class_mode,
        **arch_fields(args.arch, args.arch_arg, dataset),
        arch_shares=tuple(args.arch_share or ()),
        **pretrain_training_fields(args.convention, {k: getattr(args, k) for k in PRETRAIN_TRAINING_FIELDS}),
        seed=args.seed,
    )
    quiet = None if distributed.is_main() else True
    bar = tqdm(total=args.n_models, desc="pool build", dynamic_ncols=True, disable=quiet)

    def progress(i: int, n: int, entry: Any) -> None:
        bar.update(1)  # models finish out of order under torchrun; rank 0's bar counts its own share
        bar.set_postfix(heldout_acc=f"{entry.heldout_acc:.3f}")

    pool = pretrain_pool(dataset, args.out, cfg, device=distributed.device_for(args.device), progress=progress)
    bar.close()
    print_pool(pool)
    return 0


def arch_fields(archs: list[str], items: list[str] | None, dataset: Any) -> dict[str, Any]:
    """``arch`` / ``arch_kwargs`` of a PretrainConfig from ``--arch A [B ...]`` and ``--arch-arg [ARCH:]KEY=VALUE``."""
    from ..models import model_arguments

    shared: dict[str, Any] = {}
    own: dict[str, dict[str, Any]] = {a: {} for a in archs}
    for item in items or []:
        target, sep, rest = item.partition(":")
        if sep and "=" not in target:
            if target not in own:
                raise ValueError(f"--arch-arg {item!r} names architecture {target!r}, which is not in --arch {archs}")
            own[target].update(parse_kv([rest]))
        else:
            shared.update(parse_kv([item]))
    for arch in archs:  # an argument without ARCH: must fit every architecture
        refused = sorted(set(shared) - set(model_arguments(arch)))
        if refused:
            raise ValueError(
                f"--arch-arg {refused} does not apply to {arch} (it accepts {model_arguments(arch)}); write "
                f"ARCH:KEY=VALUE to give an argument to one architecture, e.g. --arch-arg {archs[0]}:{refused[0]}=..."
            )
    if len(archs) == 1:
        kwargs = {**shared, **own[archs[0]]}  # input sizes recorded as earlier dfml did (so old builds resume)
        if "image_size" in model_arguments(archs[0]) and dataset.is_image:
            kwargs.setdefault("image_size", dataset.input_shape[-1])
        elif "in_features" in model_arguments(archs[0]) and not dataset.is_image:
            kwargs.setdefault("in_features", dataset.input_shape[0])
        return {"arch": archs[0], "arch_kwargs": kwargs}
    return {"arch": tuple({"name": a, **shared, **own[a]} if shared or own[a] else a for a in archs)}


def cmd_pool_import(args: argparse.Namespace) -> int:
    one_process("pool import")
    from ..data import get_dataset
    from ..pool import import_official_pool

    dataset = get_dataset(args.dataset, args.data_root, args.split, **data_options(args, args.dataset))
    pool = import_official_pool(
        args.src,
        args.out,
        class_names=dataset.classes,
        dataset=args.dataset,
        split=args.split,
        arch=args.arch,
        arch_kwargs=parse_kv(args.arch_arg) or None,
    )
    print_pool(pool)
    return 0


def cmd_pool_merge(args: argparse.Namespace) -> int:
    one_process("pool merge")
    from ..pool import merge_pools

    print_pool(merge_pools(args.sources, args.out))
    return 0


def cmd_pool_info(args: argparse.Namespace) -> int:
    from ..pool import ModelPool

    pool = ModelPool(args.pool, allow_partial=True)  # a stopped build is shown (and refused by --verify)
    if args.verify:
        pool.verify()
        print(f"verified {len(pool)} model files (checksums and shapes)")
    print_pool(pool, show_all=True)
    if pool.unfinished is not None:
        from ..pool.manifest import unfinished_message

        print(unfinished_message(pool.root, pool.unfinished))
    return 0


def print_pool(pool: Any, show_all: bool = False) -> None:
    entries = list(pool.entries)
    accs = [e.heldout_acc for e in entries if e.heldout_acc is not None]
    print(f"pool {pool.root}: {len(entries)} models, architectures {pool.architectures()}, datasets {pool.datasets()}")
    if accs:
        print(f"held-out accuracy: mean {100 * sum(accs) / len(accs):.2f}%, min {100 * min(accs):.2f}%, "
              f"max {100 * max(accs):.2f}%")
    if show_all:
        print("| # | arch | dataset/split | inputs | classes | held-out acc |")
        print("|---|---|---|---|---|---|")
        for e in entries:
            acc = "-" if e.heldout_acc is None else f"{100 * e.heldout_acc:.1f}%"
            inputs = "-" if e.input_shape is None else "x".join(str(s) for s in e.input_shape)
            print(f"| {e.index} | {e.arch} | {e.dataset}/{e.split} | {inputs} | {', '.join(e.classes)} | {acc} |")


def cmd_invert(args: argparse.Namespace) -> int:
    one_process("invert")
    from ..inversion.grid import invert_pool

    mean = std = None
    options = data_options(args, args.dataset, image_size=False)  # invert's --image-size is the models' input size
    if args.dataset is not None:
        from ..data import get_dataset

        ds = get_dataset(args.dataset, args.data_root, "train", **options)
        if ds.mean is not None and ds.std is not None:
            mean, std = ds.mean.flatten().tolist(), ds.std.flatten().tolist()
    report = invert_pool(
        args.pool, args.out, models=args.models, per_class=args.per_class, steps=args.steps, mean=mean, std=std,
        image_size=args.image_size, seed=args.seed, device=args.device, force=args.force,
    )
    for m in report["models"]:
        print(f"model {m['index']}: teacher accuracy {100 * m['teacher_acc']:.1f}% on {m['n_images']} recovered "
              f"images -> {Path(args.out) / (m['grid'] or '-')}")
    cost = report["cost"]
    print(f"cost: {cost['teacher_queries']} teacher queries, {cost['steps']} steps, {cost['seconds']:.1f} s; "
          f"details in {Path(args.out) / 'invert.json'}")
    return 0
