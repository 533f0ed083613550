"""`dfml invert`: labelled PNG grids and invert.json from a tiny Conv4 pool; refusal to overwrite; vector pools."""

import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dfml.cli import main
from dfml.inversion import image_grid, invert_pool
from dfml.models import MLP, Conv4
from dfml.pool import PoolEntry, PoolManifest
from dfml.pool.pool import save_state_dict


def _fit(model, x, y, steps=25, lr=0.2):
    """Full-batch gradient descent in train mode (BN running statistics follow the data); no torch.optim,
    whose first step imports dynamo (~10 s on a busy machine)."""
    model.train()
    for _ in range(steps):
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
        with torch.no_grad():
            for p, g in zip(model.parameters(), grads):
                p -= lr * g
    return model.eval()


def _write_pool(root, models, arch, arch_kwargs, classes):
    entries = []
    for i, m in enumerate(models):
        file = f"models/model_{i:04d}.pt"
        digest = save_state_dict(m.state_dict(), root / file)
        entries.append(PoolEntry(index=i, file=file, arch=arch, arch_kwargs=arch_kwargs, n_way=len(classes[i]),
                                 classes=classes[i], class_ids=list(range(len(classes[i]))), dataset="fake",
                                 split="train", seed=i, heldout_acc=None, best_epoch=None, sha256=digest,
                                 dfml_version="test"))
    PoolManifest(entries=entries).save(root)
    return root


@pytest.fixture(scope="module")
def conv_pool(tmp_path_factory):
    """Three Conv4 (hidden 8) 2-way classifiers of 16x16 colour images, written as a dfml pool."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures run before the one-thread autouse fixture
    g = torch.Generator().manual_seed(0)
    models, classes = [], []
    for i in range(3):
        colours = torch.rand(2, 3, 1, 1, generator=g) * 2 - 1
        x = (colours[:, None] + 0.3 * torch.randn(2, 8, 3, 16, 16, generator=g)).view(16, 3, 16, 16)
        y = torch.arange(2).repeat_interleave(8)
        torch.manual_seed(i)
        # PyTorch's init, under which these fixture teachers were tuned: 15 inversion steps reach 90%
        # teacher accuracy on them (the papers' init trains other teachers from the same seeds)
        models.append(_fit(Conv4(in_channels=3, num_classes=2, hidden=8, image_size=16, init="pytorch"), x, y))
        classes.append([f"class_{2 * i}", f"class_{2 * i + 1}"])
    torch.set_num_threads(threads)
    kw = {"in_channels": 3, "num_classes": 2, "hidden": 8, "image_size": 16}
    return _write_pool(tmp_path_factory.mktemp("inv") / "pool", models, "conv4", kw, classes)


@pytest.fixture(scope="module")
def vector_pool(tmp_path_factory):
    torch.manual_seed(0)
    mlp = MLP(6, num_classes=3, hidden=[8]).eval()
    kw = {"in_features": 6, "num_classes": 3, "hidden": [8], "batch_norm": False}
    return _write_pool(tmp_path_factory.mktemp("inv") / "vpool", [mlp], "mlp", kw, [["a", "b", "c"]])


def test_invert_writes_one_labelled_grid_per_model_and_a_report(conv_pool, tmp_path, capsys):
    out = tmp_path / "pics"
    args = ["invert", "--pool", str(conv_pool), "--out", str(out), "--models", "0", "2", "--per-class", "3",
            "--steps", "15"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "model 0: teacher accuracy" in printed and "model_0002.png" in printed
    for i in (0, 2):
        with Image.open(out / f"model_{i:04d}.png") as img:
            img.load()
            # 80 px of labels + 2 px pad + 3 columns of (16 * 2 + 2); 2 rows of (16 * 2 + 2) + 2
            assert img.format == "PNG" and img.mode == "RGB" and img.size == (80 + 2 + 3 * 34, 2 + 2 * 34)
    assert not (out / "model_0001.png").exists()
    report = json.loads((out / "invert.json").read_text())
    assert [m["index"] for m in report["models"]] == [0, 2]
    assert all(m["teacher_acc"] >= 0.9 and m["n_images"] == 6 for m in report["models"])
    assert report["batches"][0]["models"] == [0, 2]  # one architecture: refined together
    # exact cost: one probe per model, then 15 steps x 6 images per model
    assert report["cost"]["teacher_queries"] == 2 * (1 + 15 * 6) and report["cost"]["steps"] == 30
    assert report["cost"]["images"] == 12
    # nothing saved is overwritten silently
    before = (out / "invert.json").read_bytes()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "refusing to overwrite" in err and "--force" in err
    assert (out / "invert.json").read_bytes() == before
    assert main(args + ["--seed", "1", "--force"]) == 0
    assert (out / "invert.json").read_bytes() != before


def test_invert_is_deterministic_from_the_seed(conv_pool, tmp_path):
    a = invert_pool(conv_pool, tmp_path / "a", models=[1], per_class=2, steps=3, seed=4)
    b = invert_pool(conv_pool, tmp_path / "b", models=[1], per_class=2, steps=3, seed=4)
    assert a["models"] == b["models"]
    assert (tmp_path / "a" / "model_0001.png").read_bytes() == (tmp_path / "b" / "model_0001.png").read_bytes()


def test_a_vector_pool_gets_its_report_and_a_clear_error(vector_pool, tmp_path, capsys):
    out = tmp_path / "v"
    assert main(["invert", "--pool", str(vector_pool), "--out", str(out), "--steps", "5"]) == 2
    assert "grids need image inputs" in capsys.readouterr().err
    report = json.loads((out / "invert.json").read_text())
    assert report["models"][0]["grid"] is None and 0.0 <= report["models"][0]["teacher_acc"] <= 1.0
    assert not list(out.glob("*.png"))


def test_bad_model_indices_and_bad_image_shapes_are_refused(conv_pool, tmp_path):
    with pytest.raises(ValueError, match=r"distinct pool indices in 0\.\.2, got \[0, 5\]"):
        invert_pool(conv_pool, tmp_path, models=[0, 5])
    with pytest.raises(ValueError, match="one label per row"):
        image_grid(torch.zeros(2, 3, 3, 4, 4), row_labels=["a"])
    with pytest.raises(ValueError, match="grids need image inputs"):
        image_grid(torch.zeros(2, 3, 5))


def test_grid_unnormalises_with_the_dataset_statistics():
    x = torch.full((1, 1, 3, 2, 2), -2.0)  # (-2 * 0.25 + 0.5) = 0 -> black; clipped below 0
    x[0, 0, 0] = 2.0  # red channel: 2 * 0.25 + 0.5 = 1 -> 255
    img = image_grid(x, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), pad=0)
    assert img.size == (2, 2) and img.getpixel((0, 0)) == (255, 0, 0)


def test_a_recorded_input_shape_needs_no_image_size():
    from dfml.inversion.grid import input_shape_of
    from dfml.pool import PoolEntry

    e = PoolEntry(index=0, file="m.pt", arch="resnet10", arch_kwargs={"num_classes": 2}, n_way=2, classes=["a", "b"],
                  class_ids=[0, 1], dataset="d", split="train", seed=0, heldout_acc=None, best_epoch=None,
                  sha256="0" * 64, dfml_version="0", input_shape=[3, 24, 24])
    assert input_shape_of(e) == (3, 24, 24)
    with pytest.raises(ValueError, match="records no image_size"):
        input_shape_of(PoolEntry(**{**e.to_dict(), "input_shape": None}))
