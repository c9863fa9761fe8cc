"""The meta-memory, seen (the paper's Fig. 7/12 and the identity-conditioned memory of Fig. 6): the learned bank's
channels, and for one source the memory conditioned on its identity at each compensated scale with where the
queries attend in it.

The source is animated by itself (driving keypoints = source keypoints: no motion), so that the warped features the
memory conditions on and compensates are the source's own. Attention is recomputed from the model's layers
(`query_key_value`, `attention_weights`): the fused kernel never forms it.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from ..io.overlay import burn_label, to_height
from ..io.image import read_image, write_png
from ..models import MCNet
from ..ops.memory_attention import attention_weights
from ..pipeline.step import FrameStep, MotionReference, prepare_source
from ..pipeline.session import Session, SessionOptions
from .panels import heat_colours, labelled, mosaic, pca_rgb, to_image

CHANNELS_SHOWN = 64  # the bank's first channels, one grey tile each
CELLS_SHOWN = 6  # memory cells per scale whose attention is drawn: the ones the source's queries attend to most


def channel_tiles(memory: torch.Tensor, count: int = CHANNELS_SHOWN) -> np.ndarray:
    """The first `count` channels of a (C, S, S) memory, each stretched to its own range, as a grey mosaic."""
    tiles = []
    for channel in memory[:count]:
        low, high = channel.min(), channel.max()
        tiles.append(to_image(((channel - low) / (high - low).clamp_min(1e-12))[None]))
    return mosaic(tiles)


def bank_row(model: MCNet, height: int) -> np.ndarray:
    """The learned meta-memory: its first three principal components over its cells as RGB, and its channels."""
    bank = model.generator.memory.meta_memory[0].detach().float().cpu()
    c, s, _ = bank.shape
    return np.concatenate([labelled(to_height(pca_rgb(bank), height, Image.NEAREST), f"meta-memory {c}ch"),
                           labelled(to_height(channel_tiles(bank), height, Image.NEAREST),
                                    f"channels 0-{min(c, CHANNELS_SHOWN) - 1}")], axis=1)


def mark_cells(image: np.ndarray, cells: list[int], side: int) -> np.ndarray:
    """Number the memory cells `cells` (flat indices on a side×side memory) on its drawing."""
    out = Image.fromarray(image)
    draw = ImageDraw.Draw(out)
    scale = image.shape[0] / side
    for n, cell in enumerate(cells):
        y, x = divmod(cell, side)
        box = (x * scale, y * scale, (x + 1) * scale - 1, (y + 1) * scale - 1)
        draw.rectangle(box, outline=(255, 255, 255))
        draw.text((box[2] + 2, box[1]), str(n), fill=(255, 255, 255), stroke_width=1, stroke_fill=(0, 0, 0))
    return np.asarray(out)


@torch.no_grad()
def attention_rows(model: MCNet, source: torch.Tensor, height: int, cells: int = CELLS_SHOWN) -> list[np.ndarray]:
    """Per compensated scale, coarse to fine: the memory conditioned on `source`'s identity (PCA), and for the
    memory cells the source attends to most, the attention each image position gives that cell as a heat map
    over the source (each map stretched between its own minimum and maximum)."""
    cache = prepare_source(model, source)
    step = FrameStep(model, relative=False)
    outputs = step.render_outputs(*cache.keypoints, *step.inputs(cache, MotionReference(cache.keypoints,
                                                                                        torch.ones(1))))
    unit = model.generator.memory
    image = to_image(source[0].float().cpu())
    rows = []
    for projected in outputs.decoded.projected:
        memory = unit.iicm(unit.meta_memory, projected, cache.keypoints.value)
        query, key, _ = unit.mcm.query_key_value(projected, memory)
        weights = attention_weights(query, key, unit.mcm.attention_scale)[0].float()  # (h·w, S·S)
        h, w = projected.shape[-2:]
        side = memory.shape[-1]
        top = weights.sum(0).topk(min(cells, weights.shape[1])).indices.tolist()
        cells_drawn = mark_cells(to_height(pca_rgb(memory[0].float().cpu()), height, Image.NEAREST), top, side)
        panels = [labelled(to_height(cells_drawn, height), f"M_s, scale {h}")]
        for n, cell in enumerate(top):
            heat = weights[:, cell].view(1, 1, h, w)
            heat = (heat - heat.min()) / (heat.max() - heat.min()).clamp_min(1e-12)
            heat = F.interpolate(heat, size=image.shape[:2], mode="bilinear", align_corners=False)[0, 0].numpy()
            blend = (0.45 * image + 0.55 * heat_colours(heat)).astype(np.uint8)
            y, x = divmod(cell, side)
            panels.append(labelled(to_height(blend, height), f"cell {n} ({y},{x})"))
        rows.append(np.concatenate(panels, axis=1))
    return rows


def memory_figure(model: MCNet, source: torch.Tensor, height: int | None = None) -> np.ndarray:
    """The bank row above the per-scale attention rows, left-aligned on black."""
    height = height or model.config.image_size
    rows = [bank_row(model, height), *attention_rows(model, source, height)]
    width = max(r.shape[1] for r in rows)
    return np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows], axis=0)


def write_memory_figure(model: MCNet, source_path, output_path, options: SessionOptions = SessionOptions(),
                        height: int | None = None, label: str | None = None) -> None:
    """`memory_figure` for the source image cropped as `animate` crops it (`options`: crop, face, align), written
    as PNG (labelled when asked)."""
    with contextlib.closing(Session(model, read_image(source_path), options, source_name=str(source_path))) as source:
        figure = memory_figure(model, source.source.image, height)
    write_png(burn_label(figure, label, bottom=True) if label else figure, output_path)
