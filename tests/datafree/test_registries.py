"""Every part is looked up by name in its registry, declares its capabilities, and has a builder."""

from __future__ import annotations

import inspect

import pytest

from dfml.datafree import REWARDS, DataFreeConfig, Reward
from dfml.datafree.build import BUILD_INVERTER, BUILD_LEARNER, BUILD_SELECTOR, BUILD_UPDATE
from dfml.datafree.config import CHOICES, REGISTRIES
from dfml.inversion import INVERTERS, Inverter
from dfml.meta import LEARNERS, UPDATES, Learner, MetaUpdate
from dfml.selection import SELECTORS, Selector

PARTS = [(INVERTERS, Inverter, ("batched", "stateful", "black_box", "boundary", "curriculum")),
         (SELECTORS, Selector, ("learns",)),
         (LEARNERS, Learner, ("sums_over_tasks", "needs_teacher_logits")),
         (UPDATES, MetaUpdate, ("sums_over_tasks",)),
         (REWARDS, Reward, ("needs_learner",))]


@pytest.mark.parametrize("registry,base,capabilities", PARTS, ids=lambda p: getattr(p, "kind", ""))
def test_every_registered_part_derives_from_its_base_and_declares_its_capabilities(registry, base, capabilities):
    assert registry.names()
    for name in registry.names():
        part = registry.get(name)
        assert inspect.isclass(part) and issubclass(part, base), name
        for capability in capabilities:
            assert isinstance(inspect.getattr_static(part, capability), bool), (name, capability)


def test_the_parts_of_the_papers_are_found_by_name():
    assert INVERTERS.get("pixel").__name__ == "PixelInverter"
    assert INVERTERS.get("bank").stateful and INVERTERS.get("bank").curriculum
    assert INVERTERS.get("generator").batched and not INVERTERS.get("generator").stateful
    assert INVERTERS.get("metagen").stateful and INVERTERS.get("metagen").batched
    assert INVERTERS.get("blackbox").black_box and not INVERTERS.get("pixel").black_box
    assert [n for n in CHOICES["inverter"] if INVERTERS.get(n).boundary] == ["generator", "metagen", "blackbox"]
    assert SELECTORS.get("reliability").learns and not SELECTORS.get("uniform").learns
    assert LEARNERS.get("distill").needs_teacher_logits and not LEARNERS.get("maml").needs_teacher_logits
    assert UPDATES.get("maml").sums_over_tasks and not UPDATES.get("alignment").sums_over_tasks
    assert REWARDS.get("heldout").needs_learner and not REWARDS.get("agreement").needs_learner


def test_every_configurable_name_has_a_part_and_a_builder():
    builders = {"inverter": BUILD_INVERTER, "selector": BUILD_SELECTOR, "learner": BUILD_LEARNER,
                "update": BUILD_UPDATE}
    for kind, names in CHOICES.items():
        assert sorted(names) == REGISTRIES[kind].names(), kind
        if kind in builders:
            assert builders[kind].names() == REGISTRIES[kind].names(), kind


def test_an_unknown_part_name_lists_the_valid_ones():
    with pytest.raises(KeyError, match="unknown inverter 'pixels'; valid names: bank, blackbox"):
        INVERTERS.get("pixels")
    with pytest.raises(ValueError, match=r"datafree\.update must be one of \('maml', 'alignment', 'grouping'\)"):
        DataFreeConfig(update="reptile")


def test_an_inverter_must_write_invert():
    class NoInvert(Inverter):
        pass

    with pytest.raises(TypeError, match="abstract"):
        NoInvert((2,))


def test_the_earlier_names_of_renamed_parts_still_work():
    from dfml.inversion import MetaGeneratorInverter, PixelBank, PixelBankInverter
    from dfml.inversion.blackbox_inverter import BlackBoxInverter

    assert PixelBank is PixelBankInverter is INVERTERS.get("bank")
    metagen = MetaGeneratorInverter((4,), 2)
    assert metagen.generator is metagen.meta_generator  # a network; `generator` arguments are RNGs
    assert BlackBoxInverter((4,)).generator is None
