"""Drawing over output frames: burned-in labels, and panels side by side at one height."""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from PIL import Image, ImageDraw


def burn_label(frame: np.ndarray, text: str, bottom: bool = False, colour: tuple[int, int, int] = (255, 64, 64)
               ) -> np.ndarray:
    """Write `text` on a black band across the top (or bottom) of the frame, wrapped at word breaks so that all of
    it shows on narrow frames (a cut-off "NOT A RESULT" would defeat the label)."""
    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    lines = [""]
    for word in text.split():
        joined = f"{lines[-1]} {word}".strip()
        if lines[-1] and draw.textlength(joined) > frame.shape[1] - 8:
            lines.append(word)
        else:
            lines[-1] = joined
    line_height = draw.textbbox((0, 0), "Ag")[3] + 2
    band = max(12, frame.shape[0] // 16, line_height * len(lines) + 2)
    top = frame.shape[0] - band if bottom else 0
    draw.rectangle((0, top, frame.shape[1], top + band), fill=(0, 0, 0))
    draw.multiline_text((4, top + 1), "\n".join(lines), fill=colour, spacing=2)
    return np.asarray(image)


def to_height(image: np.ndarray, height: int, resample: int = Image.BILINEAR) -> np.ndarray:
    """`image` scaled to `height` rows, aspect kept (Image.NEAREST for maps whose cells should stay visible)."""
    if image.shape[0] == height:
        return image
    width = max(1, round(image.shape[1] * height / image.shape[0]))
    return np.asarray(Image.fromarray(image).resize((width, height), resample))


def compose(source: np.ndarray, driving: Iterable[np.ndarray], results: list[np.ndarray], panels: bool = False,
            label: str | None = None) -> list[np.ndarray]:
    """The frames to write: results alone, or source | driving | result panels at the result's height;
    labelled when asked."""
    out = results
    if panels:
        height = results[0].shape[0]
        out = [np.concatenate([to_height(source, height, Image.BICUBIC), to_height(frame, height, Image.BICUBIC),
                               result], axis=1)
               for frame, result in zip(driving, results)]
    if label:
        out = [burn_label(f, label) for f in out]
    return out
