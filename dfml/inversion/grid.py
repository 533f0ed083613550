"""Pictures of inversion: recover images from pool models and save one labelled grid per model.

:func:`image_grid` renders ``[rows, cols, C, H, W]`` images (rows = classes) into a Pillow image
with the class names on the left; :func:`invert_pool` runs a :class:`~dfml.inversion.bank.PixelBankInverter`
over chosen pool models (models of one architecture refined together, batched) and writes
``model_<i>.png`` grids plus ``invert.json`` (teacher accuracy on the recovered images, cost).
It is the work behind ``dfml invert``.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw
from torch import Tensor

from ..pool.manifest import PoolEntry, write_atomic
from ..pool.pool import ModelPool
from .bank import PixelBankInverter, PixelBankConfig
from .base import InversionCost

logger = logging.getLogger(__name__)

__all__ = ["image_grid", "invert_pool"]


def image_grid(
    images: Tensor,
    *,
    row_labels: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    pad: int = 2,
    scale: int = 1,
    label_width: int = 80,
) -> Image.Image:
    """Render images ``[rows, cols, C, H, W]`` (``C`` = 1 or 3) as one RGB grid.

    With ``mean``/``std`` the images are un-normalised (``x * std + mean``) and clipped to
    ``[0, 1]``; without them each image is min-max scaled on its own.

    Args:
        images: ``[rows, cols, C, H, W]``, e.g. a bank entry ``[n_classes, per_class, C, H, W]``.
        row_labels: one label per row, drawn in a left margin of ``label_width`` pixels (cut to fit).
        mean, std: the dataset's per-channel normalisation.
        pad: pixels between images.
        scale: integer upscaling (nearest neighbour) of every image.

    Returns:
        A Pillow image of width ``label_width * bool(row_labels) + pad + cols * (W * scale + pad)``
        and height ``pad + rows * (H * scale + pad)``.

    Raises:
        ValueError: a shape other than ``[rows, cols, 1 or 3, H, W]``, or a label count that differs from rows.
    """
    if images.dim() != 5 or images.shape[2] not in (1, 3):
        raise ValueError(
            f"image_grid expects images [rows, cols, C, H, W] with C = 1 or 3, got shape {tuple(images.shape)}; "
            "grids need image inputs"
        )
    rows, cols, c, h, w = images.shape
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"got {len(row_labels)} row labels for {rows} rows; give one label per row (class)")
    x = images.detach().double().cpu()
    if mean is not None and std is not None:
        x = x * torch.tensor(std, dtype=x.dtype).view(1, 1, -1, 1, 1) + torch.tensor(mean, dtype=x.dtype).view(1, 1, -1, 1, 1)
        x = x.clamp(0, 1)
    else:
        lo = x.flatten(2).min(-1).values[..., None, None, None]
        hi = x.flatten(2).max(-1).values[..., None, None, None]
        x = (x - lo) / (hi - lo).clamp_min(1e-12)
    x = x.expand(rows, cols, 3, h, w) if c == 1 else x
    pixels = (x * 255).round().to(torch.uint8).permute(0, 1, 3, 4, 2).numpy()  # [rows, cols, H, W, 3]
    left = label_width if row_labels is not None else 0
    sh, sw = h * scale, w * scale
    canvas = Image.new("RGB", (left + pad + cols * (sw + pad), pad + rows * (sh + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for r in range(rows):
        top = pad + r * (sh + pad)
        if row_labels is not None:
            draw.text((2, top + max(sh // 2 - 5, 0)), _fit(draw, str(row_labels[r]), label_width - 4), fill="black")
        for k in range(cols):
            tile = Image.fromarray(pixels[r, k]).resize((sw, sh), Image.NEAREST)
            canvas.paste(tile, (left + pad + k * (sw + pad), top))
    return canvas


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int) -> str:
    while text and draw.textlength(text) > width:
        text = text[:-1]
    return text


def input_shape_of(entry: PoolEntry, image_size: int | None = None) -> tuple[int, ...]:
    """The shape of one input of pool model ``entry``: its recorded ``input_shape``, else from its
    ``arch_kwargs`` (``image_size`` when those record none)."""
    if entry.input_shape is not None:
        return tuple(int(s) for s in entry.input_shape)
    kw = entry.arch_kwargs
    if "in_features" in kw:
        return (int(kw["in_features"]),)
    size = kw.get("image_size", image_size)
    if size is None:
        raise ValueError(
            f"pool model {entry.index} ({entry.arch}) records no image_size; pass image_size= "
            "(dfml invert --image-size) with the side length its images have"
        )
    return (int(kw.get("in_channels", 3)), int(size), int(size))


def invert_pool(
    pool: ModelPool | str | Path,
    out_dir: str | Path,
    *,
    models: Sequence[int] | None = None,
    per_class: int = 8,
    steps: int = 200,
    config: PixelBankConfig | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    image_size: int | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    force: bool = False,
) -> dict[str, Any]:
    """Recover ``per_class`` images per class from pool models; write one grid per model and ``invert.json``.

    Models sharing an architecture (``arch`` and ``arch_kwargs``) are refined together with
    :meth:`PixelBankInverter.refine_many`. Grids are ``out_dir/model_<i:04d>.png`` (rows = classes,
    labelled with the manifest's class names; columns = recovered images). ``invert.json`` holds
    every model's teacher accuracy on its recovered images, its classes, the cost of each batch
    and the total cost.

    Args:
        pool: a :class:`ModelPool` or its directory.
        out_dir: where the files go (created if missing).
        models: pool indices (default: all).
        per_class, steps: images per class and Adam steps (override ``config``'s ``per_class``/``steps``).
        config: the bank's other hyper-parameters.
        mean, std: the dataset's normalisation, to show images in colour (default: each model's
            recorded normalisation; else per-image min-max).
        image_size: side length for models that record no input shape (pools built before dfml
            recorded it) and whose ``arch_kwargs`` record none (ResNets).
        seed: seed of every random draw.
        device: where teachers and images live.
        force: overwrite existing files.

    Returns:
        The content written to ``invert.json``.

    Raises:
        FileExistsError: an output file exists and ``force`` is false (nothing is written).
        ValueError: a bad model index, or models that take vectors (``invert.json`` is written
            first; grids need image inputs ``[C, H, W]``).
    """
    pool = pool if isinstance(pool, ModelPool) else ModelPool(pool)
    ids = list(range(len(pool))) if models is None else [int(i) for i in models]
    bad = [i for i in ids if not 0 <= i < len(pool)] + [i for i in set(ids) if ids.count(i) > 1]
    if not ids or bad:
        raise ValueError(f"models must be distinct pool indices in 0..{len(pool) - 1}, got {ids}")
    shapes = {i: input_shape_of(pool.entry(i), image_size) for i in ids}
    out = Path(out_dir)
    targets = [out / "invert.json"] + [out / f"model_{i:04d}.png" for i in ids if len(shapes[i]) == 3]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not force:
        raise FileExistsError(f"refusing to overwrite {existing}; choose another --out or pass --force (force=True)")
    base = config or PixelBankConfig()
    cfg = PixelBankConfig(**{**base.__dict__, "per_class": per_class, "steps": steps})
    report: dict[str, Any] = {"pool": str(pool.root), "seed": seed, "config": dict(cfg.__dict__)}
    banks, records, batches, total = _recover(pool, ids, shapes, cfg, torch.Generator().manual_seed(seed), device)
    report.update(models=[records[i] for i in ids], batches=batches, cost=total.as_dict())
    for i in ids:
        if len(shapes[i]) == 3:
            e = pool.entry(i)  # the model's own normalisation unless one was given
            img = image_grid(banks[i], row_labels=e.classes, mean=mean if mean is not None else e.input_mean,
                             std=std if std is not None else e.input_std, scale=max(1, 32 // shapes[i][-1]))
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            write_atomic(out / f"model_{i:04d}.png", buf.getvalue())
    write_atomic(out / "invert.json", (json.dumps(report, indent=2) + "\n").encode())
    vectors = [i for i in ids if len(shapes[i]) != 3]
    if vectors:
        raise ValueError(
            f"grids need image inputs [C, H, W]; pool model(s) {vectors} take vectors of shape {shapes[vectors[0]]} "
            f"({pool.entry(vectors[0]).arch}); wrote {out / 'invert.json'} with their teacher accuracies and cost"
        )
    return report


def _recover(
    pool: ModelPool,
    ids: list[int],
    shapes: dict[int, tuple[int, ...]],
    cfg: PixelBankConfig,
    generator: torch.Generator,
    device: torch.device | str,
) -> tuple[dict[int, Tensor], dict[int, dict[str, Any]], list[dict[str, Any]], InversionCost]:
    """Refine a bank per group of same-architecture models; score each teacher on its images."""
    groups: dict[tuple, list[int]] = {}
    for i in ids:
        e = pool.entry(i)
        groups.setdefault((e.architecture_key, shapes[i]), []).append(i)
    banks, records, batches, total = {}, {}, [], InversionCost()
    for (_, shape), members in groups.items():
        bank = PixelBankInverter(shape, cfg)
        teachers = [pool.load(i, device) for i in members]
        bank.refine_many(teachers, members, generator)
        batches.append({"models": members, "cost": bank.cost.as_dict()})
        total.add(bank.cost)
        for i, t in zip(members, teachers):
            x = bank.images(i)
            with torch.no_grad():
                pred = t(x.reshape(-1, *shape)).argmax(1)
            labels = torch.arange(x.shape[0], device=x.device).repeat_interleave(x.shape[1])
            banks[i] = x
            records[i] = {"index": i, "arch": pool.entry(i).arch, "classes": list(pool.entry(i).classes),
                          "teacher_acc": float((pred == labels).double().mean()), "n_images": int(labels.numel()),
                          "grid": f"model_{i:04d}.png" if len(shape) == 3 else None}
    logger.info("inverted %d pool models in %d batch(es)", len(ids), len(batches))
    return banks, records, batches, total
