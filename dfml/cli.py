"""The ``dfml`` command: argument parsing and dispatch only (the commands are :mod:`dfml.commands`).

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
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from . import __version__, distributed
from .allocator import keep_freed_memory
from .commands.pool import cmd_invert, cmd_pool_build, cmd_pool_import, cmd_pool_info, cmd_pool_merge
from .commands.runs import cmd_compare, cmd_demo, cmd_eval, cmd_export, cmd_plot, cmd_train

log = logging.getLogger("dfml")


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
