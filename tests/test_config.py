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
    from dfml.meta.trainer import TrainConfig

    # bank_per_class >= n_shot + n_query is checked when TrainConfig is built: one field at a time
    # would fail on the first of these, whichever order a YAML file or the command line gives
    small = {"bank_per_class": 4, "n_query": 3}
    assert apply_mapping(TrainConfig(), small) == TrainConfig(**small)
    assert apply_mapping(TrainConfig(), dict(reversed(small.items()))) == TrainConfig(**small)
    assert apply_overrides(TrainConfig(), ["bank_per_class=4", "n_query=3"]) == TrainConfig(**small)
    assert apply_overrides(TrainConfig(), ["n_query=2", "bank_per_class=4", "n_query=3"]).n_query == 3
    with pytest.raises(ValueError, match="smaller than n_shot"):
        apply_overrides(TrainConfig(), ["bank_per_class=4"])


def test_a_dotted_override_must_walk_through_sections():
    from dfml.meta.trainer import TrainConfig

    with pytest.raises(ValueError, match=r"config key 'steps.x': 'steps' is not a section"):
        apply_overrides(TrainConfig(), ["steps.x=1"])
    with pytest.raises(ValueError, match=r"unknown config key 'nope.x': TrainConfig has fields"):
        apply_overrides(TrainConfig(), ["nope.x=1"])
