from dataclasses import dataclass, field

import pytest

from dfml.config import (
    apply_mapping,
    apply_overrides,
    config_changes,
    from_dict,
    load_yaml,
    lookup,
    save_yaml,
    to_dict,
)
from dfml.registry import Registry


@dataclass(frozen=True)
class Inner:
    lr: float = 0.01
    steps: int = 5


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    shots: tuple[int, ...] = (1, 5)
    inner: Inner = field(default_factory=Inner)


def test_dotted_override_reaches_nested_fields_and_keeps_types():
    cfg = apply_overrides(Outer(), ["inner.lr=1", "inner.steps=3", "shots=[5]", "name=demo"])
    assert cfg == Outer(name="demo", shots=(5,), inner=Inner(lr=1.0, steps=3))
    assert isinstance(cfg.inner.lr, float)


def test_unknown_override_key_names_valid_fields():
    with pytest.raises(ValueError, match=r"unknown config key 'inner.lrr'.*\['lr', 'steps'\]"):
        apply_overrides(Outer(), ["inner.lrr=1"])


def test_malformed_override_says_the_expected_form():
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides(Outer(), ["inner.lr"])


def test_dict_round_trip_through_yaml(tmp_path):
    cfg = Outer(name="a", shots=(1,), inner=Inner(lr=0.5, steps=2))
    save_yaml(cfg, tmp_path / "c.yaml")
    assert from_dict(Outer, load_yaml(tmp_path / "c.yaml")) == cfg
    assert to_dict(cfg) == {"name": "a", "shots": [1], "inner": {"lr": 0.5, "steps": 2}}


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match=r"unknown Outer field\(s\) \['bogus'\]"):
        from_dict(Outer, {"bogus": 1})


def test_load_yaml_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_yaml(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping"):
        load_yaml(tmp_path / "list.yaml")


def test_registry_lists_valid_names_on_unknown_key():
    reg: Registry[int] = Registry("thing")
    reg.register("b")(2)
    reg.register("A")(1)
    assert reg.get("a") == 1 and reg.names() == ["a", "b"] and "B" in reg
    with pytest.raises(KeyError, match="unknown thing 'c'; valid names: a, b"):
        reg.get("c")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(3)


def test_config_changes_names_every_differing_dotted_key():
    saved = {"a": 1, "s": {"x": 1, "y": [1, 2]}, "gone": 3}
    now = {"a": 1, "s": {"x": 2, "y": [1, 2]}, "new": None}
    assert config_changes(saved, now) == ["gone", "new", "s.x"]  # absent and None are not the same
    assert lookup(now, "s.x") == 2 and lookup(now, "s.z", "none") == "none" and lookup(now, "a.b") is None


def test_a_field_added_since_a_config_was_saved_is_no_change_at_its_default():
    saved = {"a": 1, "s": {"x": 1}}
    defaults = {"a": 0, "s": {"x": 0, "new": 5, "sub": {"k": 1}}, "top": "d"}
    assert config_changes(saved, {"a": 1, "s": {"x": 1, "new": 5, "sub": {"k": 1}}, "top": "d"}, defaults) == []
    assert config_changes(saved, {"a": 1, "s": {"x": 1, "new": 6, "sub": {"k": 2}}, "top": "d"}, defaults) == [
        "s.new", "s.sub"]
    # a saved value is compared as saved, even when it equals the default
    assert config_changes({"a": 0}, {"a": 1}, defaults) == ["a"]


def test_fields_checked_against_each_other_change_together_in_any_order():
    from dfml.experiment import ExperimentConfig
    from dfml.datafree import TrainConfig

    # meta_arch_kwargs needs meta_arch (checked when TrainConfig is built), and train.n_way must equal
    # eval.n_way (checked when ExperimentConfig is built): one field at a time would fail on the
    # first of these, whichever order a YAML file or the command line gives
    arch = {"meta_arch_kwargs": {"hidden": [8]}, "meta_arch": "mlp"}
    assert apply_mapping(TrainConfig(), arch) == TrainConfig(**arch)
    assert apply_mapping(TrainConfig(), dict(reversed(arch.items()))) == TrainConfig(**arch)
    assert apply_overrides(TrainConfig(), ["meta_arch_kwargs={hidden: [8]}", "meta_arch=mlp"]) == TrainConfig(**arch)
    both = ["train.n_way=3", "eval.n_way=3"]
    assert apply_overrides(ExperimentConfig(), both) == apply_overrides(ExperimentConfig(), both[::-1])
    assert apply_overrides(ExperimentConfig(), ["eval.n_way=4", *both]).eval.n_way == 3
    with pytest.raises(ValueError, match="meta_arch_kwargs is set but train.meta_arch is not"):
        apply_overrides(TrainConfig(), ["meta_arch_kwargs={hidden: [8]}"])


def test_a_dotted_override_must_walk_through_sections():
    from dfml.datafree import TrainConfig

    with pytest.raises(ValueError, match=r"config key 'steps.x': 'steps' is not a section"):
        apply_overrides(TrainConfig(), ["steps.x=1"])
    with pytest.raises(ValueError, match=r"unknown config key 'nope.x': TrainConfig has fields"):
        apply_overrides(TrainConfig(), ["nope.x=1"])


# --- values are parsed and checked against the field's type annotation (issue 12) -----------------
@dataclass(frozen=True)
class Typed:
    steps: int = 300
    lr: float = 1e-3
    on: bool = False
    name: str = "x"
    shots: tuple[int, ...] = (1, 5)
    pair: tuple[float, float] = (0.5, 0.5)
    limit: int | None = None
    maybe_lr: float | None = None
    kwargs: dict = field(default_factory=dict)
    inner: Inner = field(default_factory=Inner)


@pytest.mark.parametrize("text, value", [("1e-3", 1e-3), ("1E-3", 1e-3), ("1e6", 1e6), ("2", 2.0), ("0.5", 0.5),
                                         ("-1.5e+2", -150.0), (".5", 0.5)])
def test_a_float_field_reads_every_spelling_of_a_number(text, value):
    cfg = apply_overrides(Typed(), [f"lr={text}"])
    assert cfg.lr == value and type(cfg.lr) is float


def test_yaml_files_float_spellings_that_yaml_1_1_reads_as_strings_are_numbers(tmp_path):
    (tmp_path / "c.yaml").write_text("lr: 1e-3\nmaybe_lr: 1E6\ninner: {lr: 5e-2}\n")
    cfg = apply_mapping(Typed(), load_yaml(tmp_path / "c.yaml"))
    assert (cfg.lr, cfg.maybe_lr, cfg.inner.lr) == (1e-3, 1e6, 5e-2)
    assert from_dict(Typed, load_yaml(tmp_path / "c.yaml")).lr == 1e-3


def test_an_integer_field_takes_whole_numbers_only():
    assert apply_overrides(Typed(), ["steps=7"]).steps == 7
    assert apply_overrides(Typed(), ["steps=1e4"]).steps == 10000 and type(apply_overrides(Typed(), ["steps=1e4"]).steps) is int
    with pytest.raises(ValueError, match=r"steps=1\.5 is not an integer; write e\.g\. steps=300"):
        apply_overrides(Typed(), ["steps=1.5"])
    with pytest.raises(ValueError, match=r"inner\.steps='abc' is not an integer; write e\.g\. inner\.steps=5"):
        apply_overrides(Typed(), ["inner.steps=abc"])
    with pytest.raises(ValueError, match=r"steps=true is not an integer"):
        apply_overrides(Typed(), ["steps=true"])
    with pytest.raises(ValueError, match=r"steps=1\.5 is not an integer"):
        apply_mapping(Typed(), {"steps": 1.5})


def test_a_float_field_refuses_what_is_not_a_number():
    for bad in ("abc", "e", "true", "[1]", "1e-3x"):
        with pytest.raises(ValueError, match=r"lr=.* is not a number; write e\.g\. lr=0\.001"):
            apply_overrides(Typed(), [f"lr={bad}"])


def test_a_boolean_field_takes_true_or_false_only():
    assert apply_overrides(Typed(), ["on=true"]).on is True
    assert apply_overrides(Typed(), ["on=False"]).on is False
    for bad in ("maybe", "1", "yes", "0"):
        with pytest.raises(ValueError, match=r"on='?\w+'? is not true or false; write e\.g\. on=false"):
            apply_overrides(Typed(), [f"on={bad}"])
    with pytest.raises(ValueError, match="is not true or false"):
        apply_mapping(Typed(), {"on": "maybe"})
    with pytest.raises(ValueError, match="is not true or false"):
        apply_mapping(Typed(), {"on": 1})


def test_strings_lists_optionals_and_mappings_follow_their_annotations():
    cfg = apply_overrides(Typed(), ["name=123", "shots=[5]", "pair=[1, 2]", "limit=null", "maybe_lr=1e-2",
                                    "kwargs={hidden: [8]}"])
    assert cfg.name == "123" and cfg.shots == (5,) and cfg.pair == (1.0, 2.0) and cfg.limit is None
    assert cfg.maybe_lr == 0.01 and cfg.kwargs == {"hidden": [8]}
    assert apply_overrides(Typed(), ["limit=4"]).limit == 4
    with pytest.raises(ValueError, match=r"shots=\[1, 'x'\] is not a list of integers; write e\.g\. shots=\[1, 5\]"):
        apply_overrides(Typed(), ["shots=[1, x]"])
    with pytest.raises(ValueError, match=r"shots=5 is not a list of integers"):
        apply_overrides(Typed(), ["shots=5"])
    with pytest.raises(ValueError, match=r"pair=\[1\] is not a list of 2 numbers"):
        apply_overrides(Typed(), ["pair=[1]"])
    with pytest.raises(ValueError, match=r"limit='many' is not an integer or null"):
        apply_overrides(Typed(), ["limit=many"])
    with pytest.raises(ValueError, match=r"kwargs=3 is not a mapping"):
        apply_overrides(Typed(), ["kwargs=3"])
    with pytest.raises(ValueError, match=r"name=\[1\] is not a string"):
        apply_mapping(Typed(), {"name": [1]})


def test_a_section_takes_a_mapping_of_its_fields():
    assert apply_overrides(Typed(), ["inner={lr: 1e-3}"]).inner == Inner(lr=1e-3, steps=5)
    with pytest.raises(ValueError, match=r"config key 'inner' is a section \(Inner\); set its fields, e\.g\. inner\.lr="):
        apply_overrides(Typed(), ["inner=3"])
    with pytest.raises(ValueError, match=r"config key 'inner' is a section"):
        apply_mapping(Typed(), {"inner": 3})


def test_saved_configs_are_checked_like_overrides():
    assert from_dict(Typed, {"shots": [1], "limit": None, "inner": {"lr": "1e-2"}}) == Typed(shots=(1,), inner=Inner(lr=0.01))
    with pytest.raises(ValueError, match=r"on='maybe' is not true or false"):
        from_dict(Typed, {"on": "maybe"})
    with pytest.raises(ValueError, match=r"inner\.steps=2\.5 is not an integer"):
        from_dict(Typed, {"inner": {"steps": 2.5}})


def test_a_check_of_a_nested_section_names_where_it_is():
    from dfml.experiment import ExperimentConfig

    with pytest.raises(ValueError, match=r"^datafree\.pixel: .*steps must be"):
        apply_overrides(ExperimentConfig(), ["datafree.pixel.steps=0"])


# --- every experiment setting is range-checked when the configuration is resolved (issue 12) ----------
@pytest.mark.parametrize("override, match", [
    ("eval.episodes=-5", r"eval\.episodes must be an integer >= 1, got -5"),
    ("eval.episodes=0", r"eval\.episodes must be an integer >= 1, got 0"),
    ("eval.n_query=0", r"eval\.n_query must be an integer >= 1"),
    ("eval.shots=[]", r"eval\.shots must list at least one shot"),
    ("eval.shots=[1, 0]", r"eval\.shots must be integers >= 1, got \[1, 0\]"),
    ("eval.steps=-1", r"eval\.steps must be an integer >= 0"),
    ("eval.lr=0", r"eval\.lr must be a finite number > 0, got 0"),
    ("eval.lr=-0.1", r"eval\.lr must be a finite number > 0"),
    ("eval.n_way=1", r"eval\.n_way must be an integer >= 2"),
    ("train.n_way=1", r"train\.n_way must be an integer >= 2"),
    ("train.inner_lr=0", r"train\.inner_lr must be a finite number > 0"),
    ("train.outer_lr=-1e-3", r"train\.outer_lr must be a finite number > 0"),
    ("eval.val_lr=0", r"eval\.val_lr must be a finite number > 0"),
    ("train.inner_steps=-1", r"train\.inner_steps must be an integer >= 0"),
    ("eval.val_steps=-1", r"eval\.val_steps must be an integer >= 0"),
    ("train.val_episodes=0", r"train\.val_episodes must be an integer >= 1"),
    ("train.checkpoint_every=0", r"train\.checkpoint_every must be an integer >= 1"),
    ("datafree.pixel.bn_weight=-1", r"datafree\.pixel: .*bn_weight must be a finite number >= 0"),
    ("datafree.pixel.init_std=0", r"datafree\.pixel: .*init_std must be a finite number > 0"),
    ("datafree.pixel.l2_weight=-1", r"datafree\.pixel: .*l2_weight must be a finite number >= 0"),
    ("datafree.generator.nz=0", r"datafree\.generator: .*nz must be an integer >= 1"),
    ("datafree.generator.width=0", r"datafree\.generator: .*width must be an integer >= 1"),
    ("datafree.generator.bn_weight=-1", r"datafree\.generator: .*bn_weight must be a finite number >= 0"),
    ("datafree.blackbox.width=0", r"datafree\.blackbox: .*width must be an integer >= 1"),
    ("datafree.distill.temperature=0", r"datafree\.distill: .*temperature must be a positive finite number"),
    ("datafree.access.per_model=0", r"datafree\.access\.per_model must be an integer >= 1 or null"),
    ("datafree.access.total=-1", r"datafree\.access\.total must be an integer >= 1 or null"),
    ("datafree.reward=bogus", r"datafree\.reward must be one of \('heldout', 'agreement', 'none'\), got 'bogus'"),
    ("datafree.bank.bn_weight=-1", r"datafree\.bank: .*bn_weight must be a finite number >= 0"),
    ("datafree.bank.augment_pad=-1", r"datafree\.bank: .*augment_pad must be an integer >= 0"),
    ("datafree.memory_config.capacity_per_class=0", r"datafree\.memory_config: .*capacity_per_class"),
    ("recipe=bogus", r"recipe 'bogus' is not a recipe; valid: .*maml"),
    ("dataset=bogus", r"dataset 'bogus' is not a dataset; valid: .*toy"),
    ("device=gpu", r"device 'gpu' is not a device; write cpu, cuda or cuda:K"),
    ("train.n_way=10", r"train\.n_way=10 but eval\.n_way=5"),
])
def test_a_setting_out_of_its_range_is_refused_when_the_configuration_is_resolved(override, match):
    from dfml.experiment import ExperimentConfig

    with pytest.raises(ValueError, match=match):
        apply_overrides(ExperimentConfig(), [override])


@pytest.mark.parametrize("section, values, match", [
    ("eval", {"lr": float("inf")}, r"eval\.lr must be a finite number > 0, got inf"),
    ("train", {"outer_lr": float("nan")}, r"train\.outer_lr must be a finite number > 0, got nan"),
    ("datafree", {"metagen": {"meta_lr": float("inf")}}, r"meta_lr must be a finite number > 0"),
    ("datafree", {"reliability": {"lr": float("inf")}}, r"reliability\.lr must be a positive"),
])
def test_yaml_infinities_and_nans_are_refused(section, values, match):
    from dfml.experiment import ExperimentConfig

    with pytest.raises(ValueError, match=match):
        apply_mapping(ExperimentConfig(), {section: values})


def test_n_way_changes_together_in_train_and_eval():
    from dfml.experiment import ExperimentConfig

    cfg = apply_overrides(ExperimentConfig(), ["train.n_way=3", "eval.n_way=3"])
    assert (cfg.train.n_way, cfg.eval.n_way) == (3, 3)


@pytest.mark.parametrize(("text", "where", "problem"), [
    ("a: 1\nb: c: d\n", "line 2, column 5", "mapping values are not allowed here"),
    ("a: 1\nb: [1, 2\nc: 3\n", "line 3, column 2", r"expected ',' or '\]', but got ':' \(while parsing a flow sequence "
                                                   r"from line 2\)"),
    ("x: !!python/object/apply:os.system ['echo hi']\n", "line 1, column 4", "could not determine a constructor .*"),
])
def test_a_yaml_syntax_error_is_one_line_naming_the_file_line_and_column(tmp_path, text, where, problem):
    import re

    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        load_yaml(path)
    msg = str(info.value)
    assert "\n" not in msg and info.value.__cause__ is None and info.value.__suppress_context__
    assert re.fullmatch(rf"config file '{re.escape(str(path))}', {where}: not valid YAML: {problem}; fix the file "
                        r"there", msg), msg


def test_a_yaml_file_that_is_not_text_is_one_line_naming_it(tmp_path):
    (tmp_path / "c.yaml").write_bytes(b"\xff\xfe\x00a: 1")
    with pytest.raises(ValueError, match=r"^config file '.*c.yaml' is not UTF-8 text"):
        load_yaml(tmp_path / "c.yaml")


def test_a_preset_with_a_yaml_syntax_error_is_one_line_naming_it(tmp_path, monkeypatch):
    from dfml.recipes import base

    (tmp_path / "maml.yaml").write_text("train:\n  steps: [1\n")
    monkeypatch.setattr(base, "PRESET_DIR", tmp_path)
    with pytest.raises(ValueError, match=r"^preset '.*maml.yaml', line 3, column 1: not valid YAML"):
        base.preset("maml")


def test_override_keys_name_every_leaf_an_override_sets():
    from dfml.config import override_keys

    got = override_keys(["train.steps=5", "datafree={pixel: {steps: 3}, memory: true}", "eval.shots=[1, 5]", "x=[1"])
    assert got == {"train.steps": "train.steps=5", "datafree.pixel.steps": "datafree={pixel: {steps: 3}, memory: true}",
                   "datafree.memory": "datafree={pixel: {steps: 3}, memory: true}", "eval.shots": "eval.shots=[1, 5]",
                   "x": "x=[1"}
