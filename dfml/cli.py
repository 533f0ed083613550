"""The ``dfml`` command: argument parsing and dispatch only.

    dfml pool build   pretrain a pool of models on a class split of a dataset
    dfml pool import  convert a pool saved by the papers' code into a dfml pool
    dfml pool merge   copy several pools into one (models of several datasets or builds)
    dfml pool info    show (and verify) a pool
    dfml train        meta-train a recipe on a pool, select on meta-val, meta-test
    dfml eval         score recipes (e.g. random, average) on the same fixed meta-test episodes
    dfml compare      paired comparison of two finished runs
    dfml export       a run's meta-model in one file to take elsewhere (state dict, architecture, inputs, protocol)
    dfml invert       recover images from pool models: one labelled PNG grid per model + invert.json
    dfml plot         plots of run directories (meta-val accuracy, reliability weights, model groups)
    dfml demo         the whole pipeline on the built-in toy world

Every command also runs under ``torchrun --nproc_per_node K -m dfml ...`` (docs/distributed.md):
``pool build``, ``train`` and ``eval`` share their work among the processes; only rank 0 prints.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from . import __version__, distributed
from .allocator import keep_freed_memory
from .config import apply_overrides, dotted_keys, load_yaml, override_keys
from .experiment import ExperimentConfig, experiment_config, run_experiment

log = logging.getLogger("dfml")


class _Bars:
    """tqdm progress bars keyed by stage, fed by the library's progress callbacks."""

    def __init__(self) -> None:
        self.bars: dict[str, tqdm] = {}

    def __call__(self, stage: str, i: int, n: int, info: dict[str, Any]) -> None:
        bar = self.bars.get(stage)
        if bar is None:
            quiet = None if distributed.is_main() else True  # one set of bars per launch
            bar = self.bars[stage] = tqdm(total=n, desc=stage, leave=False, dynamic_ncols=True, disable=quiet)
        bar.n = i
        if "val_acc" in info:
            bar.set_postfix(val_acc=f"{info['val_acc']:.3f}")
        elif "loss" in info:
            bar.set_postfix(loss=f"{info['loss']:.3f}", refresh=False)
        bar.refresh()
        if i >= n or "stopped_early" in info:  # a stage that ended early (e.g. a spent query budget) is done too
            bar.close()
            del self.bars[stage]


def _parse_kv(items: list[str] | None, flag: str = "--arch-arg", example: str = "hidden=[64,64]") -> dict[str, Any]:
    import yaml

    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{flag} {item!r} is not of the form key=value (e.g. {example})")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = yaml.safe_load(v)
        except yaml.YAMLError as err:
            problem = " ".join(str(getattr(err, "problem", None) or err).split())
            raise ValueError(f"{flag} {item!r}: {v!r} is not a YAML value ({problem}); write e.g. "
                             f"{example} or {k}=64") from None
    return out


def _data_options(args: argparse.Namespace, dataset: str | None, given: dict[str, Any] | None = None,
                  image_size: bool = True) -> dict[str, Any]:
    """The dataset options of a command: ``given`` (e.g. from a config), then ``--data-opt``, then ``--image-size``.

    A dataset that draws its class split (``--data-opt ratio=...`` without ``splits``) writes its
    class lists into ``<--out>/splits``, next to the pool or run they belong to.
    """
    from .data.registry import check_options, dataset_options

    options = {**(given or {}), **_parse_kv(args.data_opt, "--data-opt", "ratio=[0.6,0.2,0.2]")}
    if image_size and args.image_size is not None:
        options["image_size"] = args.image_size
    if not options:
        return options
    if dataset is None:
        flags = "--data-opt/--image-size" if image_size else "--data-opt"
        raise ValueError(f"{flags} set dataset options {sorted(options)} but no --dataset is given; add --dataset NAME")
    check_options(dataset, options)
    if "ratio" in options and "splits" not in options and "splits" in (dataset_options(dataset) or []):
        options["splits"] = str(Path(args.out) / "splits")
    return options


def _one_process(command: str) -> None:
    """Commands that write files from one process refuse a torchrun launch (ranks would race)."""
    if distributed.is_distributed():
        raise ValueError(
            f"`dfml {command}` runs in one process; launch it without torchrun (only `pool build`, `train` "
            f"and `eval` share their work among processes)"
        )


# ---------------------------------------------------------------------------- pool
def cmd_pool_build(args: argparse.Namespace) -> int:
    from .data import get_dataset
    from .pool import PretrainConfig, pretrain_pool
    from .pool.pretrain import PRETRAIN_TRAINING_FIELDS, pretrain_training_fields

    dataset = get_dataset(args.dataset, args.data_root, args.split, **_data_options(args, args.dataset))
    cfg = PretrainConfig(
        n_models=args.n_models,
        n_way=args.n_way,
        class_mode=args.class_mode,
        **_arch_fields(args.arch, args.arch_arg, dataset),
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
    _print_pool(pool)
    return 0


def _arch_fields(archs: list[str], items: list[str] | None, dataset: Any) -> dict[str, Any]:
    """``arch`` / ``arch_kwargs`` of a PretrainConfig from ``--arch A [B ...]`` and ``--arch-arg [ARCH:]KEY=VALUE``."""
    from .models import model_arguments

    shared: dict[str, Any] = {}
    own: dict[str, dict[str, Any]] = {a: {} for a in archs}
    for item in items or []:
        target, sep, rest = item.partition(":")
        if sep and "=" not in target:
            if target not in own:
                raise ValueError(f"--arch-arg {item!r} names architecture {target!r}, which is not in --arch {archs}")
            own[target].update(_parse_kv([rest]))
        else:
            shared.update(_parse_kv([item]))
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
    _one_process("pool import")
    from .data import get_dataset
    from .pool import import_official_pool

    dataset = get_dataset(args.dataset, args.data_root, args.split, **_data_options(args, args.dataset))
    pool = import_official_pool(
        args.src,
        args.out,
        class_names=dataset.classes,
        dataset=args.dataset,
        split=args.split,
        arch=args.arch,
        arch_kwargs=_parse_kv(args.arch_arg) or None,
    )
    _print_pool(pool)
    return 0


def cmd_pool_merge(args: argparse.Namespace) -> int:
    _one_process("pool merge")
    from .pool import merge_pools

    _print_pool(merge_pools(args.sources, args.out))
    return 0


def cmd_pool_info(args: argparse.Namespace) -> int:
    from .pool import ModelPool

    pool = ModelPool(args.pool, allow_partial=True)  # a stopped build is shown (and refused by --verify)
    if args.verify:
        pool.verify()
        print(f"verified {len(pool)} model files (checksums and shapes)")
    _print_pool(pool, show_all=True)
    if pool.unfinished is not None:
        from .pool.manifest import unfinished_message

        print(unfinished_message(pool.root, pool.unfinished))
    return 0


def _print_pool(pool: Any, show_all: bool = False) -> None:
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


# -------------------------------------------------------------------- invert
def cmd_invert(args: argparse.Namespace) -> int:
    _one_process("invert")
    from .inversion.grid import invert_pool

    mean = std = None
    options = _data_options(args, args.dataset, image_size=False)  # invert's --image-size is the models' input size
    if args.dataset is not None:
        from .data import get_dataset

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


# -------------------------------------------------------------------- plot
def cmd_plot(args: argparse.Namespace) -> int:
    _one_process("plot")
    from .plots import plot_runs

    for path in plot_runs(args.runs, args.out, overwrite=args.force):
        print(path)
    return 0


# ------------------------------------------------------------------ train / eval
def _experiment_configs(args: argparse.Namespace, recipes: list[str], models: bool = False) -> list[ExperimentConfig]:
    """Each recipe's resolved configuration; what the user set that none of them reads is refused.

    ``models``: exported models are scored too (``dfml eval --model``), which read
    :data:`dfml.export.score.READS`.
    """
    from .export.score import READS
    from .recipes.base import check_reads

    cfgs = [_experiment_config(args, recipe) for recipe in recipes]
    given = {}
    if args.config:
        given = {key: f"{key} in --config {args.config}" for key in dotted_keys(load_yaml(args.config))}
    given.update({key: f"--set {item}" for key, item in override_keys(args.set).items()})
    if models:
        read = {k for k in given if any(k == r or k.startswith(r + ".") or r.startswith(k + ".") for r in READS)}
        unread = sorted(set(given) - read)
        if unread and not cfgs:
            raise ValueError(f"{given[unread[0]]}: scoring an exported model (--model) does not read {unread[0]}, so "
                             "the run would record a setting it never used; drop it")
        given = {k: v for k, v in given.items() if k not in read}
    check_reads(cfgs, given)
    return cfgs


def _experiment_config(args: argparse.Namespace, recipe: str) -> ExperimentConfig:
    layer = load_yaml(args.config) if args.config else {}
    if layer.get("recipe", recipe) != recipe:
        raise ValueError(f"--config {args.config} sets recipe: {layer['recipe']}, but the command runs {recipe!r}; "
                         f"drop recipe from the file or pass --recipe {layer['recipe']}")
    cfg = experiment_config(recipe, layer)
    updates: dict[str, Any] = {"recipe": recipe}
    for name in ("pool", "dataset", "data_root", "device"):
        value = getattr(args, name)
        if value is not None:
            updates[name] = value
    cfg = replace(cfg, **updates)
    if args.data_opt or args.image_size is not None:
        cfg = replace(cfg, data_options=_data_options(args, cfg.dataset, cfg.data_options))
    if args.episodes is not None:
        cfg = replace(cfg, eval=replace(cfg.eval, episodes=args.episodes))
    if args.shots:
        cfg = replace(cfg, eval=replace(cfg.eval, shots=tuple(args.shots)))
    return apply_overrides(cfg, args.set)


def cmd_train(args: argparse.Namespace) -> int:
    (cfg,) = _experiment_configs(args, [args.recipe])
    results = run_experiment(cfg, args.out, progress=_Bars(), extend=args.extend)
    _print_results({cfg.recipe: results})
    print(f"run directory: {args.out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    out = Path(args.out)
    recipes = args.recipe if args.recipe is not None else ([] if args.model else ["random", "average"])
    models = _model_rows(args.model or [], recipes)
    cfgs = _experiment_configs(args, recipes, models=bool(models))  # every configuration checked before the first runs
    model_cfg = _shared_episodes(_experiment_config(args, _config_recipe(args)), out) if models else None
    all_results = {}
    for cfg in cfgs:
        all_results[cfg.recipe] = run_experiment(_shared_episodes(cfg, out), out / cfg.recipe, progress=_Bars())
    for name, path in models.items():
        from .export import score_exported

        all_results[name] = score_exported(path, model_cfg, out / name, progress=_Bars())
    _print_results(all_results)
    print(f"results: {out}/<{'recipe' if not models else 'recipe or model'}>/results.json")
    return 0


def _shared_episodes(cfg: ExperimentConfig, out: Path) -> ExperimentConfig:
    """``cfg`` scored on the episode lists of ``out/episodes`` (unless eval.episodes_dir names others)."""
    if cfg.eval.episodes_dir is None:
        cfg = replace(cfg, eval=replace(cfg.eval, episodes_dir=str(out / "episodes")))
    return cfg


def _model_rows(paths: list[str], recipes: list[str]) -> dict[str, str]:
    """``{row name: file}`` of ``dfml eval --model``: each file's name without its suffix (its run directory's name)."""
    rows: dict[str, str] = {}
    for path in paths:
        name = Path(path).stem
        if name in rows or name in recipes:
            raise ValueError(f"--model {path}: its name {name!r} is also the name of {rows.get(name) or 'a recipe'} "
                             f"in this command, and each is scored into --out/<name>; rename the file")
        rows[name] = path
    return rows


def _config_recipe(args: argparse.Namespace) -> str:
    """The recipe whose preset exported models are scored under: the one ``--config`` names, else ``random`` (none)."""
    return str(load_yaml(args.config).get("recipe", "random")) if args.config else "random"


def cmd_compare(args: argparse.Namespace) -> int:
    from .demo import results_table

    names = [Path(path).name for path in args.runs]
    if len(set(names)) < len(names):  # e.g. runs/a/maml and runs/b/maml: tell them apart by their paths
        names = list(args.runs)
    results = {}
    for name, path in zip(names, args.runs):
        f = Path(path) / "results.json"
        if not f.is_file():
            raise FileNotFoundError(f"{str(f)!r} does not exist: is {path!r} a finished run directory?")
        results[name] = json.loads(f.read_text())
    from .config import config_changes
    from .experiment import saved_defaults

    # a run saved before a field existed had its default; before eval.protocol, the earlier protocol
    defaults = saved_defaults()["eval"]
    (first, base), *others = list(results.items())
    for name, other in others:
        ev_a, ev_b = base["config"]["eval"], other["config"]["eval"]
        # a field one run lacks counts as its default, whichever run lacks it
        diff = sorted(set(config_changes(ev_a, ev_b, defaults)) & set(config_changes(ev_b, ev_a, defaults)))
        sha_a, sha_b = base.get("episodes_sha256"), other.get("episodes_sha256")
        if sha_a and sha_b:  # the episode files' content is compared, not the folder they were read from
            diff = [k for k in diff if k != "episodes_dir"]
        if diff:
            raise ValueError(f"{first!r} and {name!r} were scored with different meta-test protocols (eval: "
                             f"{', '.join(diff)}); a paired comparison needs the same episodes and settings")
        differ = sorted(k for k in set(sha_a or {}) & set(sha_b or {}) if sha_a[k] != sha_b[k])
        if differ:
            raise ValueError(f"{first!r} and {name!r} were scored on different meta-test episodes ({', '.join(differ)}: "
                             f"the episode files differ); a paired comparison needs the same episodes: score both "
                             f"with one eval.episodes_dir")
    print(results_table(results, baseline=names[0]))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    _one_process("export")
    from .export import export_meta_model

    export = export_meta_model(args.run, args.out, torchscript=args.torchscript, force=args.force, pool=args.pool)
    params = sum(t.numel() for t in export["state_dict"].values())
    inputs = export["inputs"]
    scored = ", ".join(f"{k} {v['mean']:.2f} ± {v['ci95']:.2f}" for k, v in (export["scores"] or {}).items())
    print(f"{args.out}: {export['arch']} meta-model, {params} parameters, inputs {'x'.join(map(str, inputs['shape']))}"
          f"{' normalised' if inputs['mean'] is not None else ''}; scored {scored or 'not yet'} "
          f"({export['eval']['protocol']} protocol)")
    if args.torchscript:
        print(f"{args.torchscript}: the same model as TorchScript (torch.jit.load)")
    print("load it with dfml.load_exported(path), or torch.load(path, weights_only=True) and dfml.models "
          "(docs/getting-started.md)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    _one_process("demo")
    import time

    from .demo import results_table, run_demo

    start = time.perf_counter()
    results = run_demo(args.out, progress=_Bars(), episodes=args.episodes)
    pool = results["_pool"]
    print(f"toy pool: {pool['n_models']} MLPs, mean held-out accuracy {100 * pool['mean_heldout_acc']:.1f}%")
    print(f"meta-test: {args.episodes} fixed episodes of unseen toy classes, mean ± 95% interval; the "
          "last columns are paired differences to 'average' on the same episodes\n")
    print(results_table(results))
    print(f"\ndone in {time.perf_counter() - start:.1f} s; runs in {args.out}/")
    return 0


def _print_results(results: dict[str, Any]) -> None:
    from .demo import results_table

    print(results_table(results))


# -------------------------------------------------------------------- parser
def _add_experiment_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pool", help="pool directory (from `dfml pool build`)")
    p.add_argument("--dataset", help="target dataset for meta-val/test: cifar_fs, mini_imagenet, omniglot, cub, "
                                      "image_folder, toy")
    p.add_argument("--data-root", dest="data_root", help="folder holding the dataset (e.g. ../shared/data)")
    _add_data_option_args(p)
    p.add_argument("--device", help="cpu (default) or cuda[:k]")
    p.add_argument("--config", help="YAML file of ExperimentConfig fields, applied over the recipe's preset")
    p.add_argument("--episodes", type=int, help="number of fixed meta-test episodes (default 600)")
    p.add_argument("--shots", type=int, nargs="+", help="meta-test shots (default 1 5)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config field, e.g. --set train.steps=500 (repeatable)")
    p.add_argument("--out", required=True, help="run directory (re-run the same command to resume)")


def _add_data_option_args(p: argparse.ArgumentParser, image_size: bool = True) -> None:
    if image_size:
        p.add_argument("--image-size", dest="image_size", type=int,
                       help="the dataset's image side length (default: omniglot 28, cub, mini_imagenet and "
                            "image_folder 84)")
    p.add_argument("--data-opt", dest="data_opt", action="append", metavar="KEY=VALUE",
                   help="a dataset option, e.g. --data-opt rotations=true (omniglot) or --data-opt ratio=[0.6,0.2,0.2] "
                        "(image_folder); repeatable; the options are in docs/datasets.md")


def build_parser() -> argparse.ArgumentParser:
    from .data import DATASETS
    from .models import MODELS
    from .recipes import RECIPES
    from .pool.pretrain import PRETRAIN_CONVENTIONS

    parser = argparse.ArgumentParser(prog="dfml", description="Data-free meta-learning from a pool of pre-trained models.")
    parser.add_argument("--version", action="version", version=f"dfml {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op CPU threads (default: torch's choice; `demo` uses 1)")
    sub = parser.add_subparsers(dest="command", required=True)

    pool = sub.add_parser("pool", help="build, import and inspect model pools")
    psub = pool.add_subparsers(dest="pool_command", required=True)
    b = psub.add_parser("build", help="pretrain a pool on a class split of a dataset")
    b.add_argument("--dataset", required=True, choices=DATASETS.names())
    b.add_argument("--data-root", dest="data_root", help="folder holding the dataset")
    _add_data_option_args(b)
    b.add_argument("--split", default="train", help="class split the models are trained on (default train)")
    b.add_argument("--out", required=True, help="pool directory (re-run the same command to resume)")
    b.add_argument("--n-models", dest="n_models", type=int, default=20)
    b.add_argument("--n-way", dest="n_way", type=int, default=5)
    b.add_argument("--class-mode", dest="class_mode", default="random", choices=["random", "disjoint"])
    b.add_argument("--arch", nargs="+", default=["conv4"], choices=MODELS.names(),
                   help="architecture(s); several make a heterogeneous pool, dealt round robin or by --arch-share")
    b.add_argument("--arch-share", dest="arch_share", type=float, nargs="+", metavar="W",
                   help="one weight per --arch: the share of models of each architecture (default: equal)")
    b.add_argument("--arch-arg", dest="arch_arg", action="append", metavar="[ARCH:]KEY=VALUE",
                   help="architecture argument, e.g. --arch-arg hidden=64 or --arch-arg resnet10:widths=[16,32,64,128]")
    b.add_argument("--convention", default="dfml", choices=sorted(PRETRAIN_CONVENTIONS),
                   help="training defaults: dfml (Adam 1e-3, 30 epochs, batch 64, L2 5e-4, crop+flip) or papers "
                        "(the papers' code: Adam 0.01, 60 epochs, batch 128, no L2, no augmentation, gradient "
                        "norm clipped at 50); the flags below override single values")
    b.add_argument("--epochs", type=int)
    b.add_argument("--batch-size", dest="batch_size", type=int)
    b.add_argument("--lr", type=float)
    b.add_argument("--weight-decay", dest="weight_decay", type=float, help="Adam's L2 term")
    b.add_argument("--augment", dest="augment", action=argparse.BooleanOptionalAction,
                   help="random crop + horizontal flip of training images")
    b.add_argument("--clip-grad-norm", dest="clip_grad_norm", type=float, help="0: no clipping")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--device", default="cpu")
    b.set_defaults(func=cmd_pool_build)

    im = psub.add_parser("import", help="convert a pool saved by the papers' code (model_specific_<i>.pth files)")
    im.add_argument("src", help="folder holding model_specific_<i>.pth files (searched recursively)")
    im.add_argument("--out", required=True)
    im.add_argument("--dataset", required=True, choices=DATASETS.names())
    im.add_argument("--data-root", dest="data_root")
    _add_data_option_args(im)
    im.add_argument("--split", default="train")
    im.add_argument("--arch", default="conv4")
    im.add_argument("--arch-arg", dest="arch_arg", action="append", metavar="KEY=VALUE")
    im.set_defaults(func=cmd_pool_import)

    mg = psub.add_parser("merge", help="copy several pools into one (e.g. models of several datasets)")
    mg.add_argument("sources", nargs="+", help="pool directories, in order")
    mg.add_argument("--out", required=True, help="the new pool directory")
    mg.set_defaults(func=cmd_pool_merge)

    info = psub.add_parser("info", help="show a pool's manifest")
    info.add_argument("pool")
    info.add_argument("--verify", action="store_true", help="check every file's checksum and shapes")
    info.set_defaults(func=cmd_pool_info)

    t = sub.add_parser("train", help="meta-train a recipe, select on meta-val, meta-test once")
    t.add_argument("--recipe", required=True, choices=RECIPES.names())
    _add_experiment_args(t)
    t.add_argument("--extend", action="store_true",
                   help="go on with the run in --out to a larger train.budget_minutes / train.steps, from its last "
                        "checkpoint (its results so far move to --out/extended/<n>/)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="score recipes and exported models on the same fixed meta-test episodes")
    e.add_argument("--recipe", nargs="+", choices=RECIPES.names(),
                   help="recipes to score (default: random average, none with --model)")
    e.add_argument("--model", nargs="+", metavar="FILE",
                   help="exported meta-models (`dfml export`) to score, each into --out/<file name>")
    _add_experiment_args(e)
    e.set_defaults(func=cmd_eval)

    x = sub.add_parser("export", help="a run's meta-model in one file (weights, architecture, inputs, protocol)")
    x.add_argument("run", help="a run directory (from `dfml train` or `dfml eval`)")
    x.add_argument("--out", required=True, help="the file to write, e.g. model.pt (never overwritten without --force)")
    x.add_argument("--torchscript", metavar="FILE", help="also write the model as TorchScript (torch.jit.load)")
    x.add_argument("--force", action="store_true", help="replace existing --out / --torchscript files")
    x.add_argument("--pool", help="the run's pool, only for runs made before dfml recorded the meta-model's "
                                  "architecture, when its recorded path does not resolve from here")
    x.set_defaults(func=cmd_export)

    c = sub.add_parser("compare", help="paired comparison of finished runs (first one is the baseline)")
    c.add_argument("runs", nargs="+")
    c.set_defaults(func=cmd_compare)

    inv = sub.add_parser("invert", help="recover images from pool models and save one labelled grid per model")
    inv.add_argument("--pool", required=True, help="pool directory")
    inv.add_argument("--out", required=True, help="folder for model_<i>.png grids and invert.json")
    inv.add_argument("--models", type=int, nargs="+", help="pool indices (default: all)")
    inv.add_argument("--per-class", dest="per_class", type=int, default=8, help="images per class (default 8)")
    inv.add_argument("--steps", type=int, default=200, help="optimisation steps (default 200)")
    inv.add_argument("--dataset", choices=DATASETS.names(), help="un-normalise with this dataset's mean/std")
    inv.add_argument("--data-root", dest="data_root", help="folder holding the dataset")
    _add_data_option_args(inv, image_size=False)
    inv.add_argument("--image-size", dest="image_size", type=int,
                     help="image side length, for architectures whose pool entry records none (ResNets)")
    inv.add_argument("--seed", type=int, default=0)
    inv.add_argument("--device", default="cpu")
    inv.add_argument("--force", action="store_true", help="overwrite existing grids and invert.json")
    inv.set_defaults(func=cmd_invert)

    pl = sub.add_parser("plot", help="PNG plots of finished or running runs (val accuracy, reliability, groups)")
    pl.add_argument("runs", nargs="+", help="run directories")
    pl.add_argument("--out", required=True, help="folder for the PNG files")
    pl.add_argument("--force", action="store_true", help="overwrite existing PNG files")
    pl.set_defaults(func=cmd_plot)

    d = sub.add_parser("demo", help="the whole pipeline on the built-in toy world (about a minute)")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--episodes", type=int, default=600)
    d.set_defaults(func=cmd_demo)
    return parser


@contextlib.contextmanager
def _quiet_unless_main() -> Iterator[None]:
    """Under torchrun only rank 0 prints results (every rank still reports its own errors)."""
    if distributed.is_main():
        yield
        return
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield


def _os_error_line(exc: BaseException) -> str:
    """One line for an error; an error the OS raised on a file (``[Errno 13] Permission denied: '...'``)
    names the file, the nearest folder that exists and what to do."""
    if not isinstance(exc, OSError) or exc.filename is None or not exc.strerror:
        return str(exc)  # dfml's own messages are already one line
    path = Path(exc.filename)
    folder = next((p for p in (path, *path.parents) if p.is_dir()), path.parent)
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if isinstance(exc, (NotADirectoryError, FileExistsError)) and blocker is not None:
        return f"cannot write {str(path)!r}: {str(blocker)!r} is a file, not a folder; choose another --out folder"
    if isinstance(exc, PermissionError):
        return (f"cannot access {str(path)!r}: permission denied (in folder {str(folder)!r}); choose an --out folder "
                f"you can write to, or fix the folder's permissions (chmod u+rwx {str(folder)!r})")
    return f"cannot access {str(path)!r}: {exc.strerror}; check the folder {str(folder)!r} (or choose another --out)"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    threads = args.threads if args.threads is not None else (1 if args.command == "demo" else None)
    if threads is not None:
        if threads < 1:
            parser.error(f"--threads must be >= 1, got {threads}")
        # Small models gain nothing from intra-op parallelism, and OpenMP threads spinning against
        # another busy process slowed the demo's meta-test more than tenfold on 2 cores.
        torch.set_num_threads(threads)
    try:
        # large CPU tensors (84x84 activations) reuse freed heap memory instead of being mapped per batch
        keep_freed_memory()
        with distributed.launched(), _quiet_unless_main():
            return int(args.func(args) or 0)
    except (ValueError, TypeError, KeyError, OSError, RuntimeError, FloatingPointError, ImportError) as exc:
        if args.verbose:
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else _os_error_line(exc)
        where = f" (rank {os.environ.get('RANK')})" if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 else ""
        print(f"dfml: error{where}: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the same line under -v: a traceback of where Ctrl-C landed helps nobody
        print("dfml: interrupted. Saved checkpoints are kept: run the same command again to resume "
              "(runs and pool builds continue from their last checkpoint).", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
