from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dfml.data.base import ArrayDataset
from dfml.models import MLP
from dfml.pool import training
from dfml.pool.training import augment_images, derive_seed, init_model, split_holdout, train_classifier


def test_split_holdout_partitions_each_class(toy_world: dict[str, ArrayDataset]) -> None:
    ds = toy_world["train"]
    tr, tr_y, ho, ho_y = split_holdout(ds, [5, 2], 0.2, seed=0)
    assert len(ho) == 40 and len(tr) == 160
    assert set(tr).isdisjoint(ho)
    assert sorted(np.concatenate([tr, ho])) == sorted(np.concatenate([ds.indices_by_class()[5], ds.indices_by_class()[2]]))
    assert np.array_equal(ds.labels[ho], np.where(ho_y == 0, 5, 2))
    assert np.array_equal(ds.labels[tr], np.where(tr_y == 0, 5, 2))
    again = split_holdout(ds, [5, 2], 0.2, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip((tr, tr_y, ho, ho_y), again))
    assert not np.array_equal(split_holdout(ds, [5, 2], 0.2, seed=1)[2], ho)


def test_split_holdout_needs_two_examples_per_class() -> None:
    ds = ArrayDataset(np.zeros((3, 2), np.float32), [0, 1, 1], ["a", "b"], name="tiny")
    with pytest.raises(ValueError, match=r"class 0 \('a'\) has 1 example\(s\); a pool model needs at least 2"):
        split_holdout(ds, [0, 1], 0.5, seed=0)


def _naive_augment(x: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, flip: torch.Tensor, pad: int) -> torch.Tensor:
    out = torch.empty_like(x)
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    for i in range(x.shape[0]):
        crop = padded[i, :, oy[i] : oy[i] + x.shape[2], ox[i] : ox[i] + x.shape[3]]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out


def test_augment_images_equals_a_naive_crop_and_flip() -> None:
    x = torch.randn(6, 3, 8, 8)
    gen = torch.Generator().manual_seed(3)
    got = augment_images(x, gen, padding=2)
    ref_gen = torch.Generator().manual_seed(3)
    oy = torch.randint(0, 5, (6,), generator=ref_gen)
    ox = torch.randint(0, 5, (6,), generator=ref_gen)
    flip = torch.rand(6, generator=ref_gen) < 0.5
    torch.testing.assert_close(got, _naive_augment(x, oy, ox, flip, 2), rtol=0, atol=0)
    assert got.shape == x.shape


def test_derive_seed_depends_on_both_seed_and_index() -> None:
    assert derive_seed(0, 1) == derive_seed(0, 1)
    assert len({derive_seed(0, 0), derive_seed(0, 1), derive_seed(1, 0)}) == 3


def test_init_model_is_seeded_and_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = init_model("mlp", {"in_features": 4}, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    b = init_model("mlp", {"in_features": 4}, seed=7)
    c = init_model("mlp", {"in_features": 4}, seed=8)
    assert torch.equal(a.head.weight, b.head.weight)
    assert not torch.equal(a.head.weight, c.head.weight)


def test_train_classifier_keeps_a_copy_of_the_best_epoch(toy_world: dict[str, ArrayDataset],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    script = iter([0.5, 0.9, 0.3, 0.9])  # epoch 2 is best; epoch 4 ties and must not replace it
    monkeypatch.setattr(training, "evaluate_accuracy", lambda *a, **k: next(script))
    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def on_epoch(epoch: int, acc: float, model: nn.Module) -> None:
        snapshots[epoch] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    model = MLP(32, num_classes=3, hidden=[16])
    result = train_classifier(model, toy_world["train"], [0, 1, 2], epochs=4, batch_size=32, lr=1e-2,
                              weight_decay=0.0, holdout_frac=0.2, augment=False, seed=0, on_epoch=on_epoch)
    assert result.history == [0.5, 0.9, 0.3, 0.9]
    assert (result.best_epoch, result.heldout_acc) == (2, 0.9)
    for key, value in result.state.items():
        assert torch.equal(value, snapshots[2][key]), key
        assert value.data_ptr() != model.state_dict()[key].data_ptr()
    assert not torch.equal(result.state["head.weight"], model.head.weight)  # the live model went on training


def test_zero_epochs_keeps_the_initial_weights(toy_world: dict[str, ArrayDataset]) -> None:
    model = MLP(32, num_classes=3, hidden=[16])
    init = {k: v.clone() for k, v in model.state_dict().items()}
    result = train_classifier(model, toy_world["train"], [0, 1, 2], epochs=0, batch_size=32, lr=1e-2,
                              weight_decay=0.0, holdout_frac=0.2, augment=False, seed=0)
    assert result.best_epoch == 0 and result.history == []
    assert all(torch.equal(result.state[k], init[k]) for k in init)
    assert 0.0 <= result.heldout_acc <= 1.0
