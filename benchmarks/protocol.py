"""The paper protocol, shared by ``cifar_fs.py`` and ``mini_imagenet.py``: pool -> every recipe -> one table.

For one dataset and scale (``presets/<dataset>_<scale>.yaml``): build the pool if it is not there
(resumable), optionally a corrupted copy, run every recipe with ``dfml.experiment.run_experiment``
(each resumes from its checkpoint when interrupted; finished runs are reused), all scored on the same
fixed meta-test episodes, and write ``results.md`` / ``results.json`` with mean ± 95% interval, each
recipe's paired difference to ``average`` and its cost.

A preset's ``scenarios:`` section names variants of it (``--scenario NAME``): each is merged over the
preset (mappings field by field, ``null`` removes a field, anything else replaced) and may list the
runs to keep in ``only:``.
Scenario keys beyond the preset's: ``extra_pools`` (pools of other datasets, built and merged into
the clean pool: ``{dataset, root (relative to --data-root), options (dataset arguments), pool}``)
and ``corruption.kinds`` / ``corruption.poor_epochs``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from dfml.data import get_dataset
from dfml.eval import paired
from dfml.experiment import experiment_config, run_experiment
from dfml.locks import DirectoryInUseError
from dfml.pool import UNTRUSTWORTHY_KINDS, ModelPool, PretrainConfig, add_untrustworthy, merge_pools, pretrain_pool
from dfml.runs import atomic_write_text

PRESETS = Path(__file__).parent / "presets"


def load_preset(dataset: str, scale: str, scenario: str | None = None,
                path: str | Path | None = None) -> dict[str, Any]:
    """The preset ``presets/<dataset>_<scale>.yaml`` (or ``path``), with ``scenario`` applied."""
    path = Path(path) if path is not None else PRESETS / f"{dataset}_{scale}.yaml"
    if not path.is_file():
        have = sorted(p.stem for p in PRESETS.glob(f"{dataset}_*.yaml"))
        raise FileNotFoundError(f"no preset {path}; presets for {dataset}: {have}")
    p = yaml.safe_load(path.read_text())
    return apply_scenario(p, scenario) if scenario else p


def _merge(base: Any, over: Any) -> Any:
    """``over`` merged into ``base``: mappings key by key (``null`` removes a key), anything else replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        merged = {**base, **{k: _merge(base.get(k), v) for k, v in over.items()}}
        return {k: v for k, v in merged.items() if not (v is None and k in over)}
    return over


def apply_scenario(p: dict[str, Any], name: str) -> dict[str, Any]:
    """The preset ``p`` as scenario ``name`` sees it (see the module docstring).

    Raises:
        KeyError: an unknown scenario (the message lists the preset's).
        ValueError: ``only`` names a run the scenario does not have.
    """
    scenarios = p.get("scenarios") or {}
    if name not in scenarios:
        raise KeyError(f"unknown scenario {name!r}; this preset has {sorted(scenarios) or 'none'}")
    over = dict(scenarios[name] or {})
    only = over.pop("only", None)
    out = _merge({k: v for k, v in p.items() if k != "scenarios"}, over)
    if only is not None:
        missing = [r for r in only if r not in out["runs"]]
        if missing:
            raise ValueError(
                f"scenario {name!r} keeps runs {missing} that it does not define; runs: {sorted(out['runs'])}"
            )
        out["runs"] = {r: out["runs"][r] for r in only}
    out["scenario"] = name
    return out


def build_pools(p: dict[str, Any], data_root: str, out: Path, device: str, existing: str | None,
                needed: set[str], extra_roots: dict[str, str] | None = None) -> dict[str, Path]:
    """The clean pool (built, or an existing one; merged with ``extra_pools``) and, when the preset
    asks, a corrupted copy; resumable."""
    train = get_dataset(p["dataset"], data_root, "train")
    pools = {"clean": Path(existing) if existing else out / "pool"}
    start = time.perf_counter()
    if existing:
        pool = ModelPool(existing)
    else:
        pool = pretrain_pool(train, pools["clean"], PretrainConfig(**p["pool"]), device=device)
    if p.get("extra_pools"):
        parts = [pool] + [_extra_pool(k, spec, data_root, out, device, extra_roots or {})
                          for k, spec in enumerate(p["extra_pools"])]
        pools["clean"] = out / "pool-merged"
        pool = merge_pools(parts, pools["clean"])
    accs = [e.heldout_acc for e in pool.entries]
    print(f"pool: {len(pool)} models of {pool.architectures()} on {pool.datasets()}, mean held-out accuracy "
          f"{100 * sum(accs) / len(pool):.1f}% ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    if p.get("corruption"):
        c = p["corruption"]
        pools["corrupted"] = out / f"pool-corrupted-{int(round(100 * c['ratio']))}"
        if "corrupted" in needed and not (pools["corrupted"] / "pool.json").is_file():
            add_untrustworthy(pool, pools["corrupted"], ratio=c["ratio"], source_dataset=train,
                              kinds=tuple(c.get("kinds", UNTRUSTWORTHY_KINDS)), seed=c.get("seed", 0),
                              poor_epochs=c.get("poor_epochs", 0),
                              config=PretrainConfig(**{**p["pool"], **c.get("pool", {})}), device=device)
    return pools


def _extra_pool(k: int, spec: dict[str, Any], data_root: str, out: Path, device: str,
                roots: dict[str, str]) -> ModelPool:
    """One pool of ``extra_pools``: its dataset's train split (``root`` under ``data_root`` unless
    ``--extra-data-root DATASET=PATH`` says otherwise)."""
    name = spec["dataset"]
    root = roots.get(name) or (str(Path(data_root) / spec["root"]) if spec.get("root") else data_root)
    train = get_dataset(name, root, "train", **spec.get("options", {}))
    return pretrain_pool(train, out / f"pool-extra{k}-{name}", PretrainConfig(**spec["pool"]), device=device)


def with_seed(p: dict[str, Any], seed: int) -> dict[str, Any]:
    """``p`` for another replicate: its pool (``pool.seed``, used when the pool is built here) and
    ``train.seed`` set to ``seed``; ``eval.seed`` is kept, so every replicate meets the same
    meta-test episodes."""
    out = {**p, "train": {**p.get("train", {}), "seed": seed}}
    if isinstance(p.get("pool"), dict):
        out["pool"] = {**p["pool"], "seed": seed}
    return out


def select_runs(runs: dict[str, dict], tokens: list[str] | None) -> dict[str, dict]:
    """The preset's runs that ``--recipes`` asks for (all when none): a token names a run, or a recipe
    that no run is named after (that recipe's runs on the clean pool). ``free`` selects the run
    ``free`` only, not ``free@5shot``, which has the same recipe."""
    by_recipe = {t for t in tokens or () if t not in runs}
    return {n: s for n, s in runs.items()
            if not tokens or n in tokens or (s["recipe"] in by_recipe and s.get("pool", "clean") == "clean")}


def run_all(p: dict[str, Any], data_root: str, out: Path, device: str, recipes: list[str] | None,
            pool: str | None = None, extra_roots: dict[str, str] | None = None, extend: bool = False) -> dict:
    selected = select_runs(p["runs"], recipes)
    pools = build_pools(p, data_root, out, device, pool, {s.get("pool", "clean") for s in selected.values()},
                        extra_roots)
    common = {"dataset": p["dataset"], "data_root": data_root, "device": device,
              "eval": {**p.get("eval", {}), "episodes_dir": str(out / "episodes")}, "train": p.get("train", {}),
              "datafree": p.get("datafree", {})}
    runs: dict[str, dict] = {}
    for name, spec in p["runs"].items():  # the preset's order; runs finished earlier in `out` join the table
        layer = {**common, "pool": str(pools[spec.get("pool", "clean")])}
        cfg = experiment_config(spec["recipe"], layer, spec.get("set", {}))
        if name not in selected:
            if (out / "runs" / name / "results.json").is_file():
                try:
                    runs[name] = run_experiment(cfg, out / "runs" / name)  # its saved results, nothing redone
                except ValueError as err:
                    print(f"{name}: finished earlier with another configuration, left out of the table ({err})",
                          file=sys.stderr, flush=True)
                except DirectoryInUseError as err:  # another invocation is extending or re-running it
                    print(f"{name}: left out of the table ({err})", file=sys.stderr, flush=True)
            continue
        start = time.perf_counter()
        runs[name] = run_experiment(cfg, out / "runs" / name, extend=extend)
        print(f"{name}: {_scores(runs[name])} ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    return runs


def _scores(res: dict) -> str:
    return ", ".join(f"{k} {v['mean']:.2f} ± {v['ci95']:.2f}" for k, v in res["scores"].items())


def notes(runs: dict[str, dict]) -> str:
    """What a reader of the table must know: averages of part of the pool, black-box queries spent."""
    lines = []
    for name, res in runs.items():
        avg = res["info"].get("average")
        if avg and avg["averaged"] < avg["pool_size"]:
            lines.append(f"* `{name}` averages {avg['averaged']} of {avg['pool_size']} pool models, those of the "
                         f"meta-model's architecture {avg['architecture']} (models {avg['models']}).")
        if "teacher_queries_black_box" in res["info"]:
            access = res["config"]["datafree"]["access"]
            lines.append(f"* `{name}` spent {res['info']['teacher_queries_black_box']} black-box queries (budget: "
                         f"{access['per_model']} per model, {access['total']} in all).")
        stop = res["info"].get("stopped_early")
        if stop:
            lines.append(f"* `{name}` stopped meta-training early, at step {stop['step']} of "
                         f"{res['config']['train']['steps']}: {stop['reason']}.")
    return "\n".join(lines)


def table(runs: dict[str, dict], baseline: str = "average") -> str:
    shots = list(next(iter(runs.values()))["scores"])
    head = "| run | " + " | ".join(f"{s} acc %" for s in shots) + " | " + " | ".join(
        f"vs {baseline} ({s})" for s in shots) + " | train s | teacher queries |"
    lines = [head, "|" + "---|" * (2 * len(shots) + 3)]
    for name, res in runs.items():
        cells = [f"{res['scores'][s]['mean']:.2f} ± {res['scores'][s]['ci95']:.2f}" for s in shots]
        for s in shots:
            if baseline in runs and name != baseline:
                d = paired(res["scores"][s]["per_episode"], runs[baseline]["scores"][s]["per_episode"])
                cells.append(f"{d['mean_diff']:+.2f} ± {d['ci95']:.2f}")
            else:
                cells.append("-")
        cost = res["info"].get("inversion_cost", {})
        cells += [f"{res['seconds']['train']:.0f}", f"{int(cost.get('teacher_queries', 0))}"]
        label = f"{name} (uses real data)" if res["info"].get("uses_data") else name
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(dataset: str, argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=f"The DFML paper protocol on {dataset}: every recipe, one table.")
    ap.add_argument("--data-root", dest="data_root", default="../shared/data")
    ap.add_argument("--scale", default="small", help="preset: small (this machine) or paper (a GPU)")
    ap.add_argument("--out", default=None, help=f"output folder (default runs/bench-{dataset}-<scale>)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--recipes", nargs="*", help="only these runs (by name) or recipes (their clean-pool runs)")
    ap.add_argument("--pool", help="use this existing pool instead of building the preset's")
    ap.add_argument("--scenario", help="a scenario of the preset (its scenarios: section), e.g. hetero, multi, tdc40")
    ap.add_argument("--preset", help="a preset file instead of presets/<dataset>_<scale>.yaml")
    ap.add_argument("--extra-data-root", dest="extra_roots", action="append", metavar="DATASET=PATH", default=[],
                    help="where an extra pool's dataset lives (multi-dataset scenarios), e.g. mini_imagenet=/data/mini")
    ap.add_argument("--extend", action="store_true",
                    help="go on with finished runs in --out whose preset now gives a larger train.budget_minutes or "
                         "train.steps, from their last checkpoints (their results so far move to extended/<n>/)")
    ap.add_argument("--seed", type=int, help="another replicate: the preset's pool seed and train.seed (the "
                                             "meta-test episodes stay the same)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    p = load_preset(dataset, args.scale, args.scenario, args.preset)
    if args.seed is not None:
        p = with_seed(p, args.seed)
    roots = dict(item.split("=", 1) for item in args.extra_roots)
    suffix = f"-{args.scenario}" if args.scenario else ""
    out = Path(args.out or f"runs/bench-{dataset}-{args.scale}{suffix}")
    out.mkdir(parents=True, exist_ok=True)
    runs = run_all(p, args.data_root, out, args.device, args.recipes, args.pool, roots, args.extend)
    md = table(runs, p.get("baseline", "average")) + ("\n\n" + notes(runs) if notes(runs) else "")
    command = "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    atomic_write_text(out / "results.md", f"{md}\n\ncommand: `{command}`\n")
    atomic_write_text(out / "results.json", json.dumps({"command": command, "preset": p, "runs": runs}, indent=1))
    print(md)
    write_plots(out, list(runs))
    return 0


def write_plots(out: Path, names: list[str]) -> list[Path]:
    """The figures of the table's runs in ``out/plots`` (meta-val curves, reliability weights with
    trusted and corrupted models coloured, TGR groups), redrawn from the runs at every invocation;
    skipped, with the pip command, when matplotlib is missing."""
    from dfml.plots import plot_runs

    dirs = [out / "runs" / n for n in names if (out / "runs" / n / "metrics.jsonl").is_file()]
    if not dirs:
        return []
    try:
        written = plot_runs(dirs, out / "plots", overwrite=True)  # figures derived from the runs, not results
    except (ImportError, ValueError) as err:  # no matplotlib (the error names the pip command), or nothing to draw
        print(f"plots skipped: {err}", file=sys.stderr)
        return []
    print(f"plots: {', '.join(str(p) for p in written)}", file=sys.stderr)
    return written
