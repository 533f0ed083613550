"""``dfml train|eval|compare|export|plot|demo``: commands that make, score and read run directories."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..config import apply_overrides, dotted_keys, load_yaml, override_keys, to_dict
from ..experiment import ExperimentConfig, experiment_config, run_experiment
from ..upgrade import upgrade_config, upgrade_overrides
from .common import ProgressBars, data_options, one_process


def _experiment_configs(args: argparse.Namespace, recipes: list[str], models: bool = False) -> list[ExperimentConfig]:
    """Each recipe's resolved configuration; what the user set that none of them reads is refused.

    ``models``: exported models are scored too (``dfml eval --model``), which read
    :data:`dfml.export.score.READS`.
    """
    from ..export.score import READS
    from ..recipes.base import check_reads

    cfgs = [_experiment_config(args, recipe) for recipe in recipes]
    given = {}
    if args.config:
        given = {key: f"{key} in --config {args.config}" for key in _config_keys(args, recipes)}
    for item in args.set or []:  # named as typed; a key that moved, with its place now
        (new,) = upgrade_overrides([item])
        shown = f"--set {item}" if new == item else f"--set {item} (now {new.partition('=')[0].strip()})"
        given.update(dict.fromkeys(override_keys([new]), shown))
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
    layer = _config_layer(args)
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
        cfg = replace(cfg, data_options=data_options(args, cfg.dataset, cfg.data_options))
    if args.episodes is not None:
        cfg = replace(cfg, eval=replace(cfg.eval, episodes=args.episodes))
    if args.shots:
        cfg = replace(cfg, eval=replace(cfg.eval, shots=tuple(args.shots)))
    return apply_overrides(cfg, upgrade_overrides(args.set))


def _config_layer(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--config`` file's settings (``{}`` without one); fields that moved go to their place when
    it is applied (:func:`dfml.experiment.experiment_config`)."""
    return load_yaml(args.config) if args.config else {}


def _config_keys(args: argparse.Namespace, recipes: list[str]) -> list[str]:
    """The dotted keys the ``--config`` file sets for any of ``recipes``: a field that moved by its new
    name, one the recipe never read (:func:`dfml.upgrade.upgrade_config`) by its old one."""
    layer, keys = _config_layer(args), {}
    for recipe in recipes or [None]:
        unread: list[str] = []
        under = to_dict(experiment_config(recipe)) if recipe is not None else None
        keys.update(dict.fromkeys(dotted_keys(upgrade_config(layer, recipe, under, unread)) + unread))
    return list(keys)


def cmd_train(args: argparse.Namespace) -> int:
    (cfg,) = _experiment_configs(args, [args.recipe])
    results = run_experiment(cfg, args.out, progress=ProgressBars(), extend=args.extend)
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
        all_results[cfg.recipe] = run_experiment(_shared_episodes(cfg, out), out / cfg.recipe, progress=ProgressBars())
    for name, path in models.items():
        from ..export import score_exported

        all_results[name] = score_exported(path, model_cfg, out / name, progress=ProgressBars())
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
    from ..demo import results_table

    names = [Path(path).name for path in args.runs]
    if len(set(names)) < len(names):  # e.g. runs/a/maml and runs/b/maml: tell them apart by their paths
        names = list(args.runs)
    results = {}
    for name, path in zip(names, args.runs):
        f = Path(path) / "results.json"
        if not f.is_file():
            raise FileNotFoundError(f"{str(f)!r} does not exist: is {path!r} a finished run directory?")
        results[name] = json.loads(f.read_text())
    from ..config import config_changes
    from ..eval.config import meta_test_protocol
    from ..experiment import saved_defaults

    # a run saved before a field existed had its default; before eval.protocol, the earlier protocol
    defaults = saved_defaults()["eval"]
    (first, base), *others = list(results.items())
    for name, other in others:
        # the meta-test protocol: meta-validation's fine-tuning (eval.val_*) selected each run's model, like train.*
        ev_a, ev_b = (meta_test_protocol(r["config"]["eval"]) for r in (base, other))
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
    one_process("export")
    from ..export import export_meta_model

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


def cmd_plot(args: argparse.Namespace) -> int:
    one_process("plot")
    from ..plots import plot_runs

    for path in plot_runs(args.runs, args.out, overwrite=args.force):
        print(path)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    one_process("demo")
    import time

    from ..demo import results_table, run_demo

    start = time.perf_counter()
    results = run_demo(args.out, progress=ProgressBars(), episodes=args.episodes)
    pool = results["_pool"]
    print(f"toy pool: {pool['n_models']} MLPs, mean held-out accuracy {100 * pool['mean_heldout_acc']:.1f}%")
    print(f"meta-test: {args.episodes} fixed episodes of unseen toy classes, mean ± 95% interval; the "
          "last columns are paired differences to 'average' on the same episodes\n")
    print(results_table(results))
    print(f"\ndone in {time.perf_counter() - start:.1f} s; runs in {args.out}/")
    return 0


def _print_results(results: dict[str, Any]) -> None:
    from ..demo import results_table

    print(results_table(results))
