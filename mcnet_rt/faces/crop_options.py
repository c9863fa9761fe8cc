"""What decides a crop: one frozen value held by `SessionOptions.crop` and hashed whole by the prepared-source store
(`pipeline.source_store`), so a new crop setting is part of the store's key without being named there."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError
from .finding import check_choice
from .tracking import ALIGNS

CROPS = ("auto", "centre", "none")


@dataclass(frozen=True)
class CropOptions:
    """mode: auto (the face, found and tracked), centre (the centre square) or none (the whole frame, resized).
    margin: crop side = face box × (1 + 2·margin). face: which face when several are found (largest, centre, left,
    right or N from the left; the avatar's and the first driving face's; a driving frame with fewer than N faces
    uses its largest). align: roll (level the crops by the eyes, turned back on paste-back) or none."""

    mode: str = "auto"
    margin: float = 0.4
    face: str = "largest"
    align: str = "roll"

    def __post_init__(self):
        if self.mode not in CROPS:
            raise InputError(f"crop must be one of {', '.join(CROPS)}, got {self.mode!r}", options=("crop",))
        if self.align not in ALIGNS:
            raise InputError(f"align must be one of {', '.join(ALIGNS)}, got {self.align!r}", options=("align",))
        try:
            check_choice(self.face)
        except ValueError as e:
            raise InputError(str(e), options=("face",)) from None
