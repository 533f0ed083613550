"""What several commands share: progress bars, ``KEY=VALUE`` arguments, dataset options, one-process commands."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .. import distributed


class ProgressBars:
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



def parse_kv(items: list[str] | None, flag: str = "--arch-arg", example: str = "hidden=[64,64]") -> dict[str, Any]:
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



def data_options(args: argparse.Namespace, dataset: str | None, given: dict[str, Any] | None = None,
                  image_size: bool = True) -> dict[str, Any]:
    """The dataset options of a command: ``given`` (e.g. from a config), then ``--data-opt``, then ``--image-size``.

    A dataset that draws its class split (``--data-opt ratio=...`` without ``splits``) writes its
    class lists into ``<--out>/splits``, next to the pool or run they belong to.
    """
    from ..data.registry import check_options, dataset_options

    options = {**(given or {}), **parse_kv(args.data_opt, "--data-opt", "ratio=[0.6,0.2,0.2]")}
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



def one_process(command: str) -> None:
    """Commands that write files from one process refuse a torchrun launch (ranks would race)."""
    if distributed.is_distributed():
        raise ValueError(
            f"`dfml {command}` runs in one process; launch it without torchrun (only `pool build`, `train` "
            f"and `eval` share their work among processes)"
        )
