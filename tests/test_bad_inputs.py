"""Every bad input ends with exit status 2 and one line naming the fix, nothing saved is lost, and
the corrected command is then accepted (issue 12: "nothing silent").

Each :class:`Case` makes its bad input under a fresh ``tmp`` folder (from a shared toy pool that it
must never modify: copy it first with :func:`copy_pool`), runs ``dfml`` with it and expects:

* exit status 2;
* exactly one line on stderr, ``dfml: error: ...``, matching ``match`` (no traceback);
* every file that existed under ``tmp`` before the bad command is byte-identical after it;
* ``fixed`` (when given): the corrected command, run next in the same ``tmp``, exits 0.

The cases are grouped in tables by where the bad input lives (pools, data, configuration, runs,
budgets); add a case to its table.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from dfml.cli import main

from .data.layouts import write_cub, write_image_folder, write_omniglot_folders, write_omniglot_npz

Argv = list[str]


@dataclass(frozen=True)
class Case:
    """One bad input.

    Attributes:
        id: a short name (the test id).
        bad: ``(tmp, pool) -> argv``: writes what the case needs under ``tmp`` and returns the bad command.
        match: a regular expression the single error line must match (``re.search``).
        fixed: ``(tmp, pool) -> argv``: the corrected command, expected to exit 0 afterwards; ``None``
            when there is nothing to correct from the command line (e.g. a tampered file).
    """

    id: str
    bad: Callable[[Path, Path], Argv]
    match: str
    fixed: Callable[[Path, Path], Argv] | None = None


def copy_pool(pool: Path, tmp: Path, name: str = "pool") -> Path:
    """A private copy of the shared toy pool (cases that damage a pool damage their copy)."""
    dst = tmp / name
    shutil.copytree(pool, dst)
    return dst


def toy_eval(pool: Path, out: Path, *extra: str) -> Argv:
    """``dfml eval --recipe random`` on the toy pool: the cheapest complete command."""
    return ["eval", "--recipe", "random", "--pool", str(pool), "--dataset", "toy", "--episodes", "5",
            "--shots", "1", "--out", str(out), *extra]


def toy_train(pool: Path, out: Path, *extra: str, recipe: str = "maml") -> Argv:
    """A few steps of ``dfml train`` on the toy pool.

    The bank settings (``datafree.synthetic``, ``datafree.pixel``) are given to ``maml`` only:
    a recipe refuses ``--set`` values it does not read (the data-free recipes invert with their
    ``datafree.*`` parts, ``random``/``average`` do not meta-train).
    """
    bank = ["--set", "datafree.synthetic.per_class=16", "--set", "datafree.pixel.steps=5"] if recipe == "maml" else []
    meta = ["--set", "train.steps=2", "--set", "train.val_every=1", "--set", "train.val_episodes=3"]
    return ["train", "--recipe", recipe, "--pool", str(pool), "--dataset", "toy", "--episodes", "5",
            "--shots", "1", "--out", str(out), *(meta if recipe not in ("random", "average") else []), *bank, *extra]


# --- pools: missing, truncated, tampered, mismatched or unreadable pool files -------------------------
def _verify(pool: Path) -> Argv:
    return ["pool", "info", str(pool), "--verify"]


def _toy_build(out: Path) -> Argv:
    """The command the shared toy pool was built with, into ``out`` (it resumes a stopped copy)."""
    return ["pool", "build", "--dataset", "toy", "--arch", "mlp", "--out", str(out), "--n-models", "3",
            "--epochs", "5", "--lr", "0.01"]


def _edit_manifest(tmp: Path, pool: Path, edit: Callable[[dict], object]) -> Path:
    """A copy of the pool whose ``pool.json`` was edited by hand."""
    dst = copy_pool(pool, tmp)
    data = json.loads((dst / "pool.json").read_text())
    edit(data)
    (dst / "pool.json").write_text(json.dumps(data))
    return dst


def _swap_model(tmp: Path, pool: Path, data: bytes) -> Path:
    """A copy of the pool whose model 1 is ``data``, its checksum updated to match (a crafted pool)."""
    dst = copy_pool(pool, tmp)
    (dst / "models" / "model_0001.pt").write_bytes(data)
    return _edit_manifest(tmp / "_", dst, lambda m: m["entries"][1].update(sha256=hashlib.sha256(data).hexdigest()))


class _RemovesCanary:
    """A pickle that would delete ``canary`` when unpickled: the harness sees the file go if code ran."""

    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self) -> tuple:
        return (os.remove, (str(self.canary),))


def _runs_code(tmp: Path) -> bytes:
    (tmp / "canary").write_text("still here")
    return pickle.dumps({"encoder.0.weight": _RemovesCanary(tmp / "canary")})


def _torch_bytes(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _stopped_build(tmp: Path, pool: Path) -> Path:
    """A copy of the pool as a build stopped after 1 of its 3 models leaves it."""
    dst = _edit_manifest(tmp, pool, lambda m: m.update(entries=m["entries"][:1]))
    for i in (1, 2):
        (dst / "models" / f"model_{i:04d}.pt").unlink()
    return dst


def _without(path: Path) -> Path:
    """``path`` deleted; returns the pool directory it was in."""
    path.unlink()
    return path.parents[1]


def _official_files(tmp: Path, data: bytes) -> Path:
    """A folder of the papers' pool files whose ``model_specific_0.pth`` is ``data``."""
    (tmp / "src").mkdir()
    (tmp / "src" / "model_specific_0.pth").write_bytes(data)
    return tmp / "src"


def _truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _flip_a_byte(path: Path) -> Path:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def _file(tmp: Path, name: str = "afile") -> Path:
    (tmp / name).write_text("a file, not a folder\n")
    return tmp / name


def _stopped_run_with_bank(tmp: Path, pool: Path, data: bytes) -> Argv:
    """A maml run stopped after its bank was saved (results removed), then ``bank.pt`` replaced by ``data``."""
    argv = toy_train(pool, tmp / "tr")
    assert main(argv) == 0
    (tmp / "tr" / "results.json").unlink()
    (tmp / "tr" / "bank.pt").write_bytes(data)
    return argv


def _stopped_run_with_checkpoints(tmp: Path, pool: Path, data: bytes) -> Argv:
    """A maml run stopped after its checkpoints were saved (results removed), both replaced by ``data``."""
    argv = toy_train(pool, tmp / "tr")
    assert main(argv) == 0
    (tmp / "tr" / "results.json").unlink()
    for name in ("last.pt", "last.prev.pt"):
        (tmp / "tr" / "checkpoints" / name).write_bytes(data)
    return argv


def _run_with_broken_config(tmp: Path, pool: Path) -> Argv:
    argv = toy_eval(pool, tmp / "ev")
    assert main(argv) == 0
    (tmp / "ev" / "random" / "config.yaml").write_text("recipe: random\neval: {episodes: 5\n")
    return argv


_UNFINISHED = (r"pool '.*pool' is unfinished: 1 of 3 models built; run the same `dfml pool build` command again "
               r"to finish it")

POOL_CASES: list[Case] = [
    Case("pool-model-missing", lambda tmp, pool: _verify(_without(copy_pool(pool, tmp) / "models" / "model_0001.pt")),
         r"1 of 3 models in .* failed: model 1: weights file '.*model_0001.pt' listed in pool.json is missing",
         fixed=lambda tmp, pool: _verify(pool)),
    Case("pool-model-truncated",
         lambda tmp, pool: _verify(_truncate(copy_pool(pool, tmp) / "models" / "model_0002.pt").parents[1]),
         r"model 2: checksum mismatch for '.*model_0002.pt'.*modified or truncated", fixed=lambda tmp, pool: _verify(pool)),
    Case("pool-model-tampered",
         lambda tmp, pool: _verify(_flip_a_byte(copy_pool(pool, tmp) / "models" / "model_0000.pt").parents[1]),
         r"model 0: checksum mismatch", fixed=lambda tmp, pool: _verify(pool)),
    Case("pool-model-random-bytes-matching-checksum",
         lambda tmp, pool: _verify(_swap_model(tmp, pool, os.urandom(4000))),
         r"model 1: .*model_0001.pt: not a plain tensor file; refusing to load it \(rebuild or re-copy the pool\)$",
         fixed=lambda tmp, pool: _verify(pool)),
    Case("pool-model-pickle-that-runs-code",
         lambda tmp, pool: _verify(_swap_model(tmp, pool, _runs_code(tmp))),
         r"^(?!.*weights_only).*model 1: .*model_0001.pt: not a plain tensor file; refusing to load it",
         fixed=lambda tmp, pool: _verify(pool)),
    Case("pool-model-pickle-that-runs-code-in-train",
         lambda tmp, pool: toy_train(_swap_model(tmp, pool, _runs_code(tmp)), tmp / "tr"),
         r"model 1: .*model_0001.pt: not a plain tensor file; refusing to load it",
         fixed=lambda tmp, pool: toy_train(pool, tmp / "tr2")),
    Case("pool-model-not-a-state-dict",
         lambda tmp, pool: _verify(_swap_model(tmp, pool, _torch_bytes([torch.ones(3)]))),
         r"model 1: .*model_0001.pt: holds a list, not a state dict", fixed=lambda tmp, pool: _verify(pool)),
    Case("pool-manifest-truncated",
         lambda tmp, pool: toy_eval(_truncate(copy_pool(pool, tmp) / "pool.json").parent, tmp / "ev"),
         r"pool.json is not valid JSON .* it may be truncated\. Rebuild the pool",
         fixed=lambda tmp, pool: toy_eval(pool, tmp / "ev")),
    Case("pool-manifest-field-of-the-wrong-type",
         lambda tmp, pool: toy_eval(_edit_manifest(tmp, pool, lambda m: m["entries"][1].update(n_way="five")),
                                    tmp / "ev"),
         r"pool.json: entry 1: field 'n_way' must be an integer, got 'five'; rebuild or re-copy the pool",
         fixed=lambda tmp, pool: toy_eval(pool, tmp / "ev")),
    Case("pool-manifest-entries-not-a-list",
         lambda tmp, pool: _verify(_edit_manifest(tmp, pool, lambda m: m.update(entries={"0": 1}))),
         r"pool.json: 'entries' must be a list of model records, got a dict", fixed=lambda tmp, pool: _verify(pool)),
    Case("pool-manifest-file-outside-the-pool",
         lambda tmp, pool: _verify(_edit_manifest(tmp, pool, lambda m: m["entries"][0].update(file="../afile"))),
         r"entry 0: field 'file' must be a path inside the pool directory", fixed=lambda tmp, pool: _verify(pool)),
    Case("pool-manifest-lists-no-models",
         lambda tmp, pool: toy_eval(_edit_manifest(tmp, pool, lambda m: m.update(entries=[], build={})), tmp / "ev"),
         r"pool.json' lists no models; build one with `dfml pool build`", fixed=lambda tmp, pool: toy_eval(pool, tmp / "ev")),
    Case("pool-verify-wrong-architecture",
         lambda tmp, pool: _verify(_edit_manifest(tmp, pool, lambda m: m["entries"][2].update(arch="conv4"))),
         r"1 of 3 models in .* failed: model 2 \(models/model_0002.pt\): architecture 'conv4' got unexpected "
         r"argument\(s\) \['in_features'\]", fixed=lambda tmp, pool: _verify(pool)),
    Case("pool-stopped-build-verify", lambda tmp, pool: _verify(_stopped_build(tmp, pool)),
         _UNFINISHED + r" \(the 1 built so far are intact\)$", fixed=lambda tmp, pool: _toy_build(tmp / "pool")),
    Case("pool-stopped-build-eval", lambda tmp, pool: toy_eval(_stopped_build(tmp, pool), tmp / "ev"),
         _UNFINISHED + "$", fixed=lambda tmp, pool: _toy_build(tmp / "pool")),
    Case("pool-stopped-build-train", lambda tmp, pool: toy_train(_stopped_build(tmp, pool), tmp / "tr"),
         _UNFINISHED + "$", fixed=lambda tmp, pool: _toy_build(tmp / "pool")),
    Case("pool-import-pickle-that-runs-code",
         lambda tmp, pool: ["pool", "import", str(_official_files(tmp, _runs_code(tmp))), "--out", str(tmp / "imp"),
                            "--dataset", "toy"],
         r"model_specific_0.pth: not a plain tensor file; refusing to load it \(re-copy the papers' file\)$"),
    Case("pool-bank-pickle-that-runs-code",
         lambda tmp, pool: _stopped_run_with_bank(tmp, pool, _runs_code(tmp)),
         r"tr/bank.pt: not a plain tensor file; refusing to load it \(delete it to invert the pool again\)$"),
    Case("pool-checkpoints-pickle-that-runs-code",
         lambda tmp, pool: _stopped_run_with_checkpoints(tmp, pool, _runs_code(tmp)),
         r"no readable checkpoint: .*last.pt: not a plain tensor file; refusing to load it; .*last.prev.pt: not a "
         r"plain tensor file"),
    Case("pool-run-config-yaml-syntax-error", _run_with_broken_config,
         r"run configuration '.*ev/random/config.yaml', line 3, column 1: not valid YAML: .*; fix the file there$"),
    Case("pool-config-yaml-syntax-error",
         lambda tmp, pool: toy_eval(pool, tmp / "ev", "--config", _yaml(tmp, "eval:\n  episodes: 5\n  shots: [1\n")),
         r"config file '.*c.yaml', line 4, column 1: not valid YAML: expected ',' or '\]', but got '<stream end>' "
         r"\(while parsing a flow sequence from line 3\); fix the file there$",
         fixed=lambda tmp, pool: toy_eval(pool, tmp / "ev", "--config", _yaml(tmp, "eval:\n  episodes: 5\n  shots: [1]\n"))),
    Case("pool-out-under-a-file", lambda tmp, pool: toy_eval(pool, _file(tmp) / "ev"),
         r"'.*afile' is a file\b.*--out",
         fixed=lambda tmp, pool: toy_eval(pool, tmp / "ev")),
    Case("pool-build-out-under-a-file", lambda tmp, pool: _toy_build(_file(tmp) / "pool"),
         r"'.*afile' is a file\b.*--out",
         fixed=lambda tmp, pool: _toy_build(tmp / "pool")),
    Case("pool-build-arch-arg-yaml-syntax-error",
         lambda tmp, pool: [*_toy_build(tmp / "pool"), "--arch-arg", "hidden=[64,"],
         r"--arch-arg 'hidden=\[64,': '\[64,' is not a YAML value",
         fixed=lambda tmp, pool: [*_toy_build(tmp / "pool2"), "--arch-arg", "hidden=[64]"]),
]

# --- data: missing or wrong datasets, class sizes, episodes -----------------------------------------
def _yaml(tmp: Path, text: str, name: str = "c.yaml") -> str:
    (tmp / name).write_text(text)
    return str(tmp / name)


def _eval_as(recipe: str, pool: Path, out: Path, *extra: str) -> Argv:
    """:func:`toy_eval` with another recipe."""
    argv = toy_eval(pool, out, *extra)
    argv[argv.index("random")] = recipe
    return argv


def _tiny_build(dataset: str, root: Path, out: Path, *extra: str) -> Argv:
    """One 2-way Conv4 of width 4 trained for an epoch on ``dataset`` (the cheapest build of an image dataset)."""
    return ["pool", "build", "--dataset", dataset, "--data-root", str(root), *extra, "--out", str(out), "--n-models",
            "1", "--n-way", "2", "--epochs", "1", "--arch", "conv4", "--arch-arg", "hidden=4"]


def _made(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _npz_without_labels(tmp: Path) -> Path:
    import numpy as np

    np.savez(_made(tmp / "om") / "images_background.npz", images=np.ones((7, 4, 20, 20), bool))
    return tmp / "om"


def _cub_without(tmp: Path, name: str) -> Path:
    write_cub(tmp / "cub")
    (tmp / "cub" / "CUB_200_2011" / name).unlink()
    return tmp / "cub"


def _omniglot_invert(tmp: Path) -> Argv:
    """``dfml invert`` of a one-model Omniglot pool (built on first use) in ``tmp/p``."""
    if not (tmp / "p").exists():
        write_omniglot_folders(tmp / "om")
        assert main(_tiny_build("omniglot", tmp / "om", tmp / "p")) == 0
    return ["invert", "--pool", str(tmp / "p"), "--out", str(tmp / "inv"), "--steps", "2", "--per-class", "1"]


def _split_files(tmp: Path) -> Path:
    """A tree of 9 class folders and hand-written class lists (2 / 1 / 1 classes) in ``tmp/s``."""
    write_image_folder(tmp / "if")
    for split, names in (("train", "class_a\nclass_b\n"), ("val", "class_c\n"), ("test", "class_d\n")):
        (_made(tmp / "s") / f"{split}.txt").write_text(names)
    return tmp / "s"


DATA_CASES: list[Case] = [
    # the toy world has 100 examples per class: 200 + 15 queries cannot be drawn
    Case("data-shots-above-class-size", lambda tmp, pool: toy_eval(pool, tmp / "ev", "--shots", "200"),
         r"toy test split's smallest class holds 100 examples, but 200-shot episodes .* need 215 per class",
         fixed=lambda tmp, pool: toy_eval(pool, tmp / "ev", "--shots", "5")),
    Case("data-queries-above-class-size", lambda tmp, pool: toy_eval(pool, tmp / "ev", "--set", "eval.n_query=100"),
         r"toy val split's smallest class holds 100 examples, but meta-validation episodes of train\.n_shot=1 with "
         r"eval\.n_query=100 need 101",
         fixed=lambda tmp, pool: toy_eval(pool, tmp / "ev", "--set", "eval.n_query=10")),
    Case("data-val-shots-above-class-size",
         lambda tmp, pool: toy_train(pool, tmp / "tr", "--set", "train.n_shot=90", "--set", "datafree.synthetic.per_class=200"),
         r"val split's smallest class holds 100 examples, but meta-validation episodes of train\.n_shot=90",
         fixed=lambda tmp, pool: toy_train(pool, tmp / "tr", "--set", "train.n_shot=1")),
    Case("data-more-ways-than-classes",
         lambda tmp, pool: toy_eval(pool, tmp / "ev", "--set", "train.n_way=17", "--set", "eval.n_way=17"),
         r"the toy val split has 16 classes, fewer than train\.n_way=17",
         fixed=lambda tmp, pool: toy_eval(pool, tmp / "ev", "--set", "train.n_way=16", "--set", "eval.n_way=16")),
    Case("data-pool-models-fewer-classes-than-n-way",
         lambda tmp, pool: toy_train(pool, tmp / "tr", "--set", "train.n_way=6", "--set", "eval.n_way=6"),
         r"train\.n_way=6 but pool model 0 has 5 classes: recipe 'maml' needs pool models of at least",
         fixed=lambda tmp, pool: toy_train(pool, tmp / "tr", "--set", "train.n_way=4", "--set", "eval.n_way=4")),
    Case("data-omniglot-wrong-layout",
         lambda tmp, pool: _tiny_build("omniglot", _made(tmp / "om" / "images").parent, tmp / "p"),
         r"omniglot: found no images_background/ or images_background\.npz for the train split under .*om' or "
         r".*omniglot-py' \(.*om' holds images/\)\. Omniglot accepts two layouts",
         fixed=lambda tmp, pool: _tiny_build("omniglot", write_omniglot_folders(tmp / "om") and tmp / "om", tmp / "p")),
    Case("data-omniglot-npz-without-labels", lambda tmp, pool: _tiny_build("omniglot", _npz_without_labels(tmp), tmp / "p"),
         r"omniglot: '.*images_background\.npz' holds the arrays \['images'\], not 'images' and 'labels'",
         fixed=lambda tmp, pool: _tiny_build("omniglot", write_omniglot_npz(tmp / "om") and tmp / "om", tmp / "p")),
    Case("data-cub-list-missing",
         lambda tmp, pool: _tiny_build("cub", _cub_without(tmp, "image_class_labels.txt"), tmp / "p", "--image-size", "32"),
         r"cub: '.*CUB_200_2011' lacks image_class_labels\.txt \('.*CUB_200_2011' holds classes\.txt, images\.txt, "
         r"images/\)\. CUB expects root",
         fixed=lambda tmp, pool: _tiny_build("cub", write_cub(tmp / "cub2") and tmp / "cub2", tmp / "p", "--image-size", "32")),
    Case("data-image-folder-without-a-class-split",
         lambda tmp, pool: _tiny_build("image_folder", write_image_folder(tmp / "if") and tmp / "if", tmp / "p"),
         r"image_folder: no class split given\. image_folder expects root/<class>/<image> files .* --data-opt splits=DIR",
         fixed=lambda tmp, pool: _tiny_build("image_folder", tmp / "if", tmp / "p", "--data-opt", "ratio=[1,1,1]",
                                             "--image-size", "16")),
    Case("data-image-folder-class-list-differs-from-the-ratio",
         lambda tmp, pool: _tiny_build("image_folder", tmp / "if", tmp / "p", "--data-opt", "ratio=[1,1,1]",
                                       "--data-opt", f"splits={_split_files(tmp)}", "--image-size", "16"),
         r"'.*s/train\.txt' exists and lists other classes than ratio=\[1, 1, 1\] seed=0 give; delete it to write "
         r"the split again, or drop ratio to use the file as it is$",
         fixed=lambda tmp, pool: _tiny_build("image_folder", tmp / "if", tmp / "p", "--data-opt", f"splits={tmp / 's'}",
                                             "--image-size", "16")),
    Case("data-option-the-dataset-does-not-take", lambda tmp, pool: toy_eval(pool, tmp / "ev", "--image-size", "32"),
         r"dataset 'toy' has no option 'image_size' \(it takes n_classes, .*\); set options with --image-size or "
         r"--data-opt KEY=VALUE", fixed=lambda tmp, pool: toy_eval(pool, tmp / "ev")),
    Case("data-option-without-a-dataset", lambda tmp, pool: [*_omniglot_invert(tmp), "--data-opt", "rotations=true"],
         r"--data-opt set dataset options \['rotations'\] but no --dataset is given; add --dataset NAME$",
         fixed=lambda tmp, pool: [*_omniglot_invert(tmp), "--data-opt", "rotations=true", "--dataset", "omniglot",
                                  "--data-root", str(tmp / "om")]),
    Case("data-average-of-heads-of-other-n-way",
         lambda tmp, pool: _eval_as("average", pool, tmp / "ev", "--set", "train.n_way=3", "--set", "eval.n_way=3"),
         r"train\.n_way=3 but pool model 0 has 5 classes: recipe 'average' needs pool models of exactly",
         fixed=lambda tmp, pool: _eval_as("average", pool, tmp / "ev")),
]

# --- configuration: --set / YAML values, types, ranges, sections a recipe does not read ------------------
CONFIG_CASES: list[Case] = [
    Case("cfg-int-from-a-fraction", lambda tmp, pool: toy_train(pool, tmp / "tr", "--set", "train.steps=1.5"),
         r"train\.steps=1\.5 is not an integer; write e\.g\. train\.steps=",
         fixed=lambda tmp, pool: toy_train(pool, tmp / "tr", "--set", "train.steps=1")),
    Case("cfg-int-from-text", lambda tmp, pool: toy_train(pool, tmp / "tr", "--set", "train.steps=abc"),
         r"train\.steps='abc' is not an integer",
         fixed=lambda tmp, pool: toy_train(pool, tmp / "tr")),
    Case("cfg-bool-from-maybe", lambda tmp, pool: toy_train(pool, tmp / "tr", "--set", "train.first_order=maybe"),
         r"train\.first_order='maybe' is not true or false",
         fixed=lambda tmp, pool: toy_train(pool, tmp / "tr", "--set", "train.first_order=true")),
    Case("cfg-float-from-text", lambda tmp, pool: toy_eval(pool, tmp / "ev", "--set", "eval.lr=abc"),
         r"eval\.lr='abc' is not a number; write e\.g\. eval\.lr=0\.01",
         fixed=lambda tmp, pool: toy_eval(pool, tmp / "ev", "--set", "eval.lr=1e-2")),
    Case("cfg-yaml-int-from-a-fraction",
         lambda tmp, pool: toy_eval(pool, tmp / "ev", "--config", _yaml(tmp, "eval: {steps: 2.5}\n")),
         r"eval\.steps=2\.5 is not an integer",
         fixed=lambda tmp, pool: toy_eval(pool, tmp / "ev", "--config", _yaml(tmp, "eval: {steps: 3, lr: 1E-2}\n", "ok.yaml"))),
    Case("cfg-negative-episodes", lambda tmp, pool: toy_eval(pool, tmp / "ev", "--episodes", "-5"),
         r"eval\.episodes must be an integer >= 1, got -5",
         fixed=lambda tmp, pool: toy_eval(pool, tmp / "ev")),
    Case("cfg-zero-lr", lambda tmp, pool: toy_eval(pool, tmp / "ev", "--set", "eval.lr=0"),
         r"eval\.lr must be a finite number > 0, got 0",
         fixed=lambda tmp, pool: toy_eval(pool, tmp / "ev", "--set", "eval.lr=0.05")),
    Case("cfg-one-way", lambda tmp, pool: toy_train(pool, tmp / "tr", "--set", "train.n_way=1"),
         r"train\.n_way must be an integer >= 2",
         fixed=lambda tmp, pool: toy_train(pool, tmp / "tr", "--set", "train.n_way=5")),
    Case("cfg-train-and-eval-n-way-differ", lambda tmp, pool: toy_eval(pool, tmp / "ev", "--set", "train.n_way=3"),
         r"train\.n_way=3 but eval\.n_way=5: .* set both",
         fixed=lambda tmp, pool: toy_eval(pool, tmp / "ev", "--set", "train.n_way=3", "--set", "eval.n_way=3")),
    Case("cfg-bank-smaller-than-a-task", lambda tmp, pool: toy_train(pool, tmp / "tr", "--set", "datafree.synthetic.per_class=10"),
         r"datafree\.synthetic\.per_class=10 is smaller than n_shot \+ n_query = 16",
         fixed=lambda tmp, pool: toy_train(pool, tmp / "tr", "--set", "datafree.synthetic.per_class=20")),
    Case("cfg-section-given-a-value", lambda tmp, pool: toy_eval(pool, tmp / "ev", "--set", "eval=3"),
         r"config key 'eval' is a section \(EvalConfig\); set its fields",
         fixed=lambda tmp, pool: toy_eval(pool, tmp / "ev", "--set", "eval={steps: 5}")),
    Case("cfg-unknown-device", lambda tmp, pool: toy_eval(pool, tmp / "ev", "--device", "gpu"),
         r"device 'gpu' is not a device; write cpu, cuda or cuda:K",
         fixed=lambda tmp, pool: toy_eval(pool, tmp / "ev", "--device", "cpu")),
    Case("cfg-datafree-part-for-maml", lambda tmp, pool: toy_train(pool, tmp / "tr", "--set", "datafree.inverter=blackbox"),
         r"--set datafree\.inverter=blackbox: recipe 'maml' does not read datafree\.inverter",
         fixed=lambda tmp, pool: toy_train(pool, tmp / "tr")),
    Case("cfg-meta-training-for-random", lambda tmp, pool: toy_eval(pool, tmp / "ev", "--set", "train.steps=50"),
         r"recipe 'random' does not read train\.steps, .* choose a recipe that reads it \(bidf_mkd, free, maml",
         fixed=lambda tmp, pool: toy_eval(pool, tmp / "ev")),
    Case("cfg-config-file-section-for-random",
         lambda tmp, pool: toy_eval(pool, tmp / "ev", "--config", _yaml(tmp, "datafree: {pixel: {steps: 3}}\n")),
         r"datafree\.pixel\.steps in --config .*c\.yaml: recipe 'random' does not read",
         fixed=lambda tmp, pool: toy_eval(pool, tmp / "ev", "--config", _yaml(tmp, "eval: {steps: 5}\n", "ok.yaml"))),
    Case("cfg-bank-for-a-data-free-recipe",
         lambda tmp, pool: toy_train(pool, tmp / "tr", "--set", "datafree.synthetic.per_class=40", recipe="purer"),
         r"recipe 'purer' does not read datafree\.synthetic\.per_class \(it is the maml recipe's bank\), .* choose a "
         r"recipe that reads it \(maml\)",
         fixed=lambda tmp, pool: toy_train(pool, tmp / "tr", "--set", "datafree.bank.per_class=20",
                                           "--set", "datafree.bank.steps=1", recipe="purer")),
    Case("cfg-part-the-recipe-did-not-choose",
         lambda tmp, pool: toy_train(pool, tmp / "tr", "--set", "datafree.generator.steps=3", recipe="purer"),
         r"recipe 'purer' does not read datafree\.generator\.steps \(read only with datafree\.inverter=generator; "
         r"it is bank\)",
         fixed=lambda tmp, pool: toy_train(pool, tmp / "tr", "--set", "datafree.bank.steps=1", recipe="purer")),
    Case("cfg-config-file-names-another-recipe",
         lambda tmp, pool: toy_eval(pool, tmp / "ev", "--config", _yaml(tmp, "recipe: maml\n")),
         r"--config .*c\.yaml sets recipe: maml, but the command runs 'random'",
         fixed=lambda tmp, pool: toy_eval(pool, tmp / "ev", "--config", _yaml(tmp, "recipe: random\n", "ok.yaml"))),
]

# --- runs: run directories, resume on other inputs, locks, diverged fine-tunes ---------------------------
_HELD: dict[Path, object] = {}  # locks a case holds for "another process" until its fixed command lets go


def _hold(folder: Path) -> None:
    from dfml.locks import DirectoryLock

    _HELD[folder] = lock = DirectoryLock(folder)
    lock.acquire()  # a second open file of this process is refused like another process would be


def _let_go(folder: Path) -> None:
    _HELD.pop(folder).release()  # type: ignore[attr-defined]


def _run_train(pool: Path, out: Path, *extra: str) -> Argv:
    return toy_train(pool, out, "--set", "train.n_query=3", *extra)


def _finished(pool: Path, out: Path, argv: Callable[[Path, Path], Argv] = toy_eval) -> Path:
    assert main(argv(pool, out)) == 0
    return out


def _failed_start(tmp: Path, pool: Path) -> Argv:
    """What an older dfml left after ``--dataset cifar_f``: config.yaml and run.json, nothing else."""
    import yaml

    from dfml.runs import RunDir

    _finished(pool, tmp / "scratch")
    cfg = yaml.safe_load((tmp / "scratch" / "random" / "config.yaml").read_text())
    cfg["dataset"] = "cifar_f"
    cfg["eval"]["episodes_dir"] = str(tmp / "ev" / "episodes")
    RunDir(tmp / "ev" / "random", cfg)
    return toy_eval(pool, tmp / "ev", "--dataset", "cifar_f")


def _other_pool(tmp: Path, pool: Path, argv: Callable[[Path, Path], Argv], unfinished: bool = False) -> Argv:
    """A run made on a copy of the pool, then another pool (other models and classes) at the same path."""
    from dfml.pool import subset_pool

    mine = copy_pool(pool, tmp)
    run = _finished(mine, tmp / "run", argv)
    if unfinished:  # killed after its last checkpoint, before the meta-test
        (run / "results.json").unlink()
        (run / "model.pt").unlink()
    shutil.rmtree(mine)
    subset_pool(pool, [2, 0], mine)
    return argv(mine, tmp / "run")


def _other_data(tmp: Path, pool: Path) -> Argv:
    """A finished run whose recorded meta-validation data differ from what --dataset loads now."""
    import json

    run_json = _finished(pool, tmp / "ev") / "random" / "run.json"
    info = json.loads(run_json.read_text())
    info["inputs"]["data"]["val_sha256"] = "0" * 64
    run_json.write_text(json.dumps(info))
    return toy_eval(pool, tmp / "ev")


def _episodes(folder: Path, seed: int) -> None:
    from dfml.data import EpisodeList, get_dataset

    EpisodeList.generate(get_dataset("toy", None, "test"), 5, 5, 1, 15, seed=seed).save(folder / "test_5w1s_5.json")


def _scored_on_other_episodes(tmp: Path, pool: Path) -> Argv:
    _finished(pool, tmp / "a")
    _episodes(tmp / "other", seed=9)
    shutil.copytree(tmp / "a" / "episodes", tmp / "same")
    for name in ("other", "same"):
        assert main(toy_eval(pool, tmp / name / "run", "--set", f"eval.episodes_dir={tmp / name}")) == 0
    return ["compare", str(tmp / "a" / "random"), str(tmp / "other" / "run" / "random")]


def _old_results_other_folders(tmp: Path, pool: Path) -> Argv:
    import json

    argv = _scored_on_other_episodes(tmp, pool)
    for run in (tmp / "a" / "random", tmp / "same" / "run" / "random"):  # saved before dfml recorded the hashes
        results = json.loads((run / "results.json").read_text())
        del results["episodes_sha256"]
        (run / "results.json").write_text(json.dumps(results))
    return argv[:2] + [str(tmp / "same" / "run" / "random")]


def _copied_run(tmp: Path, pool: Path) -> Argv:
    """A finished run copied elsewhere, where the folder of its episode lists holds other episodes."""
    _finished(pool, tmp / "ev")
    shutil.copytree(tmp / "ev" / "random", tmp / "copy" / "random")
    shutil.copytree(tmp / "ev" / "episodes", tmp / "moved")  # where the same lists went
    _episodes(tmp / "copy" / "episodes", seed=9)
    return toy_eval(pool, tmp / "copy")


def _export(run: Path, out: Path, *extra: str) -> Argv:
    return ["export", str(run), "--out", str(out), *extra]


def _exported(tmp: Path, pool: Path) -> Path:
    """A finished toy ``random`` run exported to ``tmp/model.pt``."""
    assert main(_export(_finished(pool, tmp / "ev") / "random", tmp / "model.pt")) == 0
    return tmp / "model.pt"


def _untrained(tmp: Path, pool: Path) -> Argv:
    """A maml run killed before it selected a meta-model (no model.pt, no results.json), then exported."""
    assert main(toy_train(pool, tmp / "tr")) == 0
    for name in ("results.json", "model.pt"):
        (tmp / "tr" / name).unlink()
    return _export(tmp / "tr", tmp / "m.pt")


def _eval_model(model: Path, out: Path, *extra: str) -> Argv:
    return ["eval", "--model", str(model), "--dataset", "toy", "--episodes", "5", "--shots", "1", "--out", str(out),
            *extra]


RUN_CASES: list[Case] = [
    Case("run-failed-start-typo", _failed_start, r"cifar_f",
         fixed=lambda tmp, pool: toy_eval(pool, tmp / "ev")),
    Case("run-other-config-after-work",
         lambda tmp, pool: toy_eval(pool, _finished(pool, tmp / "ev"), "--episodes", "6"),
         r"already holds a run with another configuration \(differs in: eval.episodes\).*new --out",
         fixed=lambda tmp, pool: toy_eval(pool, tmp / "ev2", "--episodes", "6")),
    Case("run-resume-results-on-another-pool", lambda tmp, pool: _other_pool(tmp, pool, toy_eval),
         r"holds a run made on other inputs \(pool.manifest_sha256: \w{12}\.\.\. when it started, \w{12}\.\.\. now\)"
         r".*new --out.*restore the pool",
         fixed=lambda tmp, pool: toy_eval(tmp / "pool", tmp / "run2")),
    Case("run-resume-training-on-another-pool", lambda tmp, pool: _other_pool(tmp, pool, _run_train, unfinished=True),
         r"made on other inputs \(pool.manifest_sha256",
         fixed=lambda tmp, pool: _run_train(tmp / "pool", tmp / "run2")),
    Case("run-resume-on-other-data", _other_data, r"made on other inputs \(data.val_sha256: 000000000000\.\.\. when "
         r"it started.*restore the data", fixed=lambda tmp, pool: toy_eval(pool, tmp / "ev2")),
    Case("run-dir-in-use", lambda tmp, pool: _hold(tmp / "ev" / "random") or toy_eval(pool, tmp / "ev"),
         r"run directory '.*/ev/random' is in use by another dfml process \(pid \d+ on .+, since \d{4}-.*\); wait for "
         r"it to finish or stop it, or use another --out",
         fixed=lambda tmp, pool: _let_go(tmp / "ev" / "random") or toy_eval(pool, tmp / "ev")),
    Case("run-pool-dir-in-use",
         lambda tmp, pool: _hold(tmp / "p") or ["pool", "build", "--dataset", "toy", "--arch", "mlp", "--out",
                                                str(tmp / "p"), "--n-models", "1", "--epochs", "1"],
         r"pool directory '.*/p' is in use by another dfml process \(pid \d+",
         fixed=lambda tmp, pool: _let_go(tmp / "p") or ["pool", "build", "--dataset", "toy", "--arch", "mlp",
                                                        "--out", str(tmp / "p"), "--n-models", "1", "--epochs", "1"]),
    Case("run-out-is-a-file", lambda tmp, pool: (tmp / "notes").write_text("x") and _run_train(pool, tmp / "notes"),
         r"run directory '.*/notes' exists and is not a directory; use another --out",
         fixed=lambda tmp, pool: _run_train(pool, tmp / "run")),
    Case("run-out-inside-a-file", lambda tmp, pool: (tmp / "notes").write_text("x") and toy_eval(pool, tmp / "notes"),
         r"run directory '.*/notes/random' cannot be made: '.*/notes' is a file; use another --out",
         fixed=lambda tmp, pool: toy_eval(pool, tmp / "runs")),
    Case("run-compare-other-episodes-same-settings", _scored_on_other_episodes,
         r"'.*/a/random' and '.*/other/run/random' were scored on different meta-test episodes \(5way_1shot: the "
         r"episode files differ\)",
         fixed=lambda tmp, pool: ["compare", str(tmp / "a" / "random"), str(tmp / "same" / "run" / "random")]),
    Case("run-compare-old-results-other-folders", _old_results_other_folders,
         r"different meta-test protocols \(eval: episodes_dir\)"),
    Case("run-copied-run-other-episodes", _copied_run,
         r"differs in: eval.episodes_dir\) \(its episode files test_5w1s_5.json are missing or differ there\)",
         fixed=lambda tmp, pool: toy_eval(pool, tmp / "copy", "--set", f"eval.episodes_dir={tmp / 'moved'}")),
    Case("run-checkpoint-minutes-not-positive",
         lambda tmp, pool: _run_train(pool, tmp / "run", "--set", "train.checkpoint_minutes=0"),
         r"train.checkpoint_minutes must be a number of minutes > 0, got 0",
         fixed=lambda tmp, pool: _run_train(pool, tmp / "run", "--set", "train.checkpoint_minutes=0.5")),
    Case("export-missing-run", lambda tmp, pool: _export(tmp / "nope", tmp / "m.pt"),
         r"run directory '.*/nope' does not exist; give a directory written by `dfml train` or `dfml eval`",
         fixed=lambda tmp, pool: _export(_finished(pool, tmp / "ev") / "random", tmp / "m.pt")),
    Case("export-run-without-a-selected-model", _untrained,
         r"'.*/tr' has no selected meta-model yet \(no model.pt\): the run has not finished training; run its "
         r"command again to finish it", fixed=lambda tmp, pool: toy_train(pool, tmp / "tr")),
    Case("export-out-exists",
         lambda tmp, pool: _export(_finished(pool, tmp / "ev") / "random", _file(tmp, "m.pt")),
         r"'.*/m.pt' already exists; nothing was written. Pass --force to replace it, or choose another file name$",
         fixed=lambda tmp, pool: _export(tmp / "ev" / "random", tmp / "m.pt", "--force")),
    Case("export-torchscript-exists",
         lambda tmp, pool: _export(_finished(pool, tmp / "ev") / "random", tmp / "m.pt", "--torchscript",
                                   str(_file(tmp, "m.ts"))),
         r"'.*/m.ts' already exists; nothing was written",
         fixed=lambda tmp, pool: _export(tmp / "ev" / "random", tmp / "m.pt", "--torchscript", str(tmp / "m2.ts"))),
    Case("eval-model-not-an-export",
         lambda tmp, pool: _exported(tmp, pool) and _eval_model(tmp / "ev" / "random" / "model.pt", tmp / "scored"),
         r"'.*/model.pt' is not a dfml export \(a state dict without format 'dfml.meta_model', e.g. a run's bare "
         r"model.pt\); write one with `dfml export RUN --out FILE`$",
         fixed=lambda tmp, pool: _eval_model(tmp / "model.pt", tmp / "scored")),
    Case("eval-model-pickle-that-runs-code",
         lambda tmp, pool: (tmp / "m.pt").write_bytes(_runs_code(tmp)) and _eval_model(tmp / "m.pt", tmp / "scored"),
         r"m.pt: not a plain tensor file; refusing to load it \(give a file written by `dfml export`\)$"),
    Case("eval-model-other-n-way",
         lambda tmp, pool: _eval_model(_exported(tmp, pool), tmp / "scored", "--set", "eval.n_way=3",
                                       "--set", "train.n_way=3"),
         r"holds a meta-model with 5 outputs, but eval.n_way=3; score it on 5-way episodes: --set train.n_way=5 "
         r"--set eval.n_way=5$", fixed=lambda tmp, pool: _eval_model(tmp / "model.pt", tmp / "scored")),
    Case("eval-model-setting-it-does-not-read",
         lambda tmp, pool: _eval_model(_exported(tmp, pool), tmp / "scored", "--set", "train.steps=5"),
         r"--set train.steps=5: scoring an exported model \(--model\) does not read train.steps",
         fixed=lambda tmp, pool: _eval_model(tmp / "model.pt", tmp / "scored", "--set", "eval.steps=5")),
]

# --- budgets, black-box access and diverged fine-tunes -----------------------------------------------
def _as(recipe: str, argv: Argv) -> Argv:
    """``argv`` with another ``--recipe``."""
    argv = list(argv)
    argv[argv.index("--recipe") + 1] = recipe
    return argv


def _bidf(pool: Path, out: Path, *extra: str) -> Argv:
    """``dfml train --recipe bidf_mkd`` with 2 zeroth-order steps of q=2 per task: one costs 321 to 641 queries
    (a probe, 2 steps of 80 x 3, scoring 80, teacher logits 80), four a step."""
    return toy_train(pool, out, "--set", "datafree.blackbox.steps=2", "--set", "datafree.blackbox.q=2", *extra,
                     recipe="bidf_mkd")


_CALIBRATE = ("--set", "eval.calibration.enabled=true", "--set", "eval.calibration.steps=3",
              "--set", "eval.calibration.inversion.steps=2", "--set", "eval.calibration.inversion.per_class=2")

BUDGET_CASES: list[Case] = [
    Case("eval-lr-diverges", lambda tmp, pool: toy_eval(pool, tmp / "out", "--set", "eval.lr=1000000.0"),
         r"fine-tuning diverged: .* not finite after 10 steps at lr 1e\+06; "
         r"lower eval\.lr \(now 1e\+06\), e\.g\. to 100000",
         lambda tmp, pool: toy_eval(pool, tmp / "fixed")),
    Case("eval-lr-diverges-on-some-episodes", lambda tmp, pool: toy_eval(pool, tmp / "out", "--set", "eval.lr=10"),
         r"fine-tuning diverged: .* lower eval\.lr \(now 10\)", lambda tmp, pool: toy_eval(pool, tmp / "fixed")),
    Case("average-baseline-eval-lr-diverges",
         lambda tmp, pool: _as("average", toy_eval(pool, tmp / "out", "--set", "eval.lr=1000000.0")),
         r"fine-tuning diverged: .* lower eval\.lr", lambda tmp, pool: _as("average", toy_eval(pool, tmp / "fixed"))),
    Case("calibration-lr-diverges",
         lambda tmp, pool: toy_eval(pool, tmp / "out", *_CALIBRATE, "--set", "eval.calibration.lr=1e30"),
         r"fine-tuning diverged: .* lower eval\.calibration\.lr \(now 1e\+30\)",
         lambda tmp, pool: toy_eval(pool, tmp / "fixed", *_CALIBRATE, "--set", "eval.calibration.lr=0.01")),
    Case("calibration-follows-a-diverging-eval-lr",
         lambda tmp, pool: toy_eval(pool, tmp / "out", *_CALIBRATE, "--set", "eval.steps=0", "--set", "eval.lr=1e30"),
         r"lower eval\.calibration\.lr \(unset: it follows eval\.lr\) \(now 1e\+30\)",
         lambda tmp, pool: toy_eval(pool, tmp / "fixed", *_CALIBRATE, "--set", "eval.steps=0", "--set", "eval.lr=1e30",
                                    "--set", "eval.calibration.lr=0.01")),
    Case("meta-validation-lr-diverges",
         lambda tmp, pool: toy_train(pool, tmp / "out", "--set", "eval.val_lr=1000000.0"),
         r"fine-tuning diverged: .* lower eval\.val_lr \(or eval\.lr when unset\) \(now 1e\+06\)",
         lambda tmp, pool: toy_train(pool, tmp / "fixed")),
    Case("query-budget-cannot-fund-one-task",
         lambda tmp, pool: _bidf(pool, tmp / "out", "--set", "datafree.access.total=300"),
         r"meta-training cannot take its first step: the query budgets cannot fund another task: one costs at least "
         r"321 queries .* raise datafree\.access\.total to at least 321",
         lambda tmp, pool: _bidf(pool, tmp / "fixed", "--set", "datafree.access.total=1000")),
    Case("per-model-budget-cannot-fund-one-task",
         lambda tmp, pool: _bidf(pool, tmp / "out", "--set", "datafree.access.per_model=300"),
         r"no model's own budget \(datafree\.access\.per_model\) .* raise datafree\.access\.per_model to at least 321",
         lambda tmp, pool: _bidf(pool, tmp / "fixed", "--set", "datafree.access.per_model=700")),
    Case("on-budget-raise-keeps-the-budget-error",
         lambda tmp, pool: _bidf(pool, tmp / "out", "--set", "datafree.access.total=3000",
                                 "--set", "datafree.blackbox.on_budget=raise"),
         r"query budget 'pool total' exceeded: .* let the inverter stop gracefully with on_budget='stop' "
         r"\(datafree\.blackbox\.on_budget\)$",
         lambda tmp, pool: _bidf(pool, tmp / "fixed", "--set", "datafree.access.total=3000")),
]

CASES = POOL_CASES + DATA_CASES + CONFIG_CASES + RUN_CASES + BUDGET_CASES


@pytest.fixture(scope="module")
def toy_pool(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bad") / "pool"
    assert main(["pool", "build", "--dataset", "toy", "--arch", "mlp", "--out", str(out),
                 "--n-models", "3", "--epochs", "5", "--lr", "0.01"]) == 0
    return out


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_table_covers_at_least_forty_bad_inputs() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    assert len(CASES) >= 40, len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_a_bad_input_is_one_line_exit_2_nothing_lost_and_the_fix_is_accepted(
    case: Case, toy_pool: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pool_before = _snapshot(toy_pool)
    argv = case.bad(tmp_path, toy_pool)
    before = _snapshot(tmp_path)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("dfml: error"), err
    assert "Traceback" not in err
    assert re.search(case.match, lines[0]), (case.match, lines[0])
    after = _snapshot(tmp_path)
    lost = {k for k, v in before.items() if after.get(k) != v}
    assert not lost, f"the bad command changed or removed {sorted(lost)}"
    if case.fixed is not None:
        assert main(case.fixed(tmp_path, toy_pool)) == 0, capsys.readouterr().err
    assert _snapshot(toy_pool) == pool_before, "a case modified the shared toy pool: copy it with copy_pool"
