"""The evaluation's output folder: results.json (every number and its settings), results.md (the paper's table
layout), a per-frame plot and a picture of the worst frames per protocol. Written atomically: the folder appears
complete or not at all.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window; set before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mcnet_rt.io.atomic import atomic_directory  # noqa: E402

from .motion_metrics import AU_PROXIES, AU_THRESHOLD, summary  # noqa: E402
from .protocols import ProtocolResult, Settings  # noqa: E402


@dataclass(frozen=True)
class Metric:
    label: str
    better: str  # "↑" or "↓"
    scale: float = 1.0  # shown ×scale in the table (SSIM in %)
    aggregate: str = "mean"


METRICS = {
    "ssim": Metric("SSIM (%)", "↑", 100.0),
    "psnr": Metric("PSNR", "↑"),
    "lpips": Metric("LPIPS", "↓"),
    "l1": Metric("L1", "↓"),
    "akd_dlib": Metric("AKD dlib-68", "↓"),
    "akd_facemesh": Metric("AKD FaceMesh", "↓"),
    "aed": Metric("AED dlib", "↓"),
    "au_proxy": Metric("AU proxy (not AUCON)", "↑"),
    "prmse": Metric("PRMSE (°)", "↓", aggregate="rms"),
}
# Columns in the order of the paper's Table 1.
TABLES = {"same_identity": ("ssim", "psnr", "lpips", "l1", "akd_dlib", "akd_facemesh", "aed"),
          "cross_identity": ("aed", "au_proxy", "prmse")}
TITLES = {"same_identity": "Same-identity reconstruction", "cross_identity": "Cross-identity animation"}
WORST_COLUMNS = {"same_identity": "source | driving (= real) | generated | real",
                 "cross_identity": "source | driving | generated"}


def definitions(settings: Settings) -> dict[str, str]:
    """What each number is, with the settings that shape it."""
    akd = ("mean absolute x/y difference (released cmp_akd)" if settings.akd_released
           else "mean Euclidean distance")
    return {
        "l1": "mean |generated - real| over pixels and channels, images in [0, 1], at the model's resolution",
        "psnr": "10 log10(1 / MSE), images in [0, 1] (as the released compare_psnr)",
        "ssim": (f"SSIM mode '{settings.ssim_mode}': " + (
            "7x7 uniform window, data_range 2 (old scikit-image compare_ssim, as released)"
            if settings.ssim_mode == "released" else "11x11 Gaussian window sigma 1.5, data_range 1 (Wang et al.)")),
        "lpips": "LPIPS v0.1 AlexNet, inputs " + ("[0, 1] as the released metrics.py (unscaled)"
                                                  if settings.lpips_released_scaling else "scaled to [-1, 1]"),
        "akd_dlib": f"{akd} between dlib's 68 landmarks (paper: face-alignment FAN), pixels at 256x256",
        "akd_facemesh": f"{akd} between MediaPipe FaceMesh's 478 landmarks (x, y), pixels at 256x256",
        "aed": ("squared" if settings.aed_squared else "Euclidean") + " distance between dlib 128-d identity "
               "embeddings (paper: OpenFace nn4.small2; not comparable in scale); same identity: generated vs "
               "real frame, cross identity: generated vs source",
        "au_proxy": ("PROXY for AUCON (no action-unit model ships in any installable package): fraction of "
                     f"{len(AU_PROXIES)} geometric AU stand-ins ({', '.join(p.name for p in AU_PROXIES)}) whose "
                     f"on/off state (moved > {AU_THRESHOLD} inter-ocular distances from the reference face: the "
                     "source for generated frames, the motion anchor for driving frames) agrees between generated "
                     "and driving frame"),
        "prmse": "root mean square over frames and angles of the yaw/pitch/roll difference (degrees) between "
                 "generated and driving frame; pose by cv2.solvePnP of FaceMesh against MediaPipe's canonical "
                 "mesh (paper: py-feat's pose model)",
    }


def _finite(x):
    """JSON has no NaN or infinity: those (no face found; PSNR of identical images) become null."""
    return x if isinstance(x, float) and math.isfinite(x) else None


def _summaries(result: ProtocolResult) -> dict[str, dict]:
    return {name: summary(np.array(values), METRICS[name].aggregate) for name, values in result.values.items()}


def _json(header: dict, settings: Settings, results: list[ProtocolResult]) -> dict:
    document = {**header, "settings": {k: str(v) if k == "dtype" else v
                                       for k, v in dataclasses.asdict(settings).items()},
                "definitions": definitions(settings), "protocols": {}}
    for result in results:
        frames = len(result.frame_ids)
        document["protocols"][result.name] = {
            "clips": result.clips,
            "frames": frames,
            "faces_not_found": result.faces_not_found,
            "notes": result.notes,
            "metrics": _summaries(result),
            "per_frame": {"clip_and_frame": result.frame_ids,
                          **{k: [_finite(v) for v in values] for k, values in result.values.items()}},
        }
    return document


def _markdown(header: dict, settings: Settings, results: list[ProtocolResult]) -> str:
    lines = [f"# mcnet_rt evaluation: {header['model']}", ""]
    if header.get("warning"):
        lines += [f"**{header['warning']}**", ""]
    for result in results:
        summaries = _summaries(result)
        columns = TABLES[result.name]
        cells = []
        for name in columns:
            value = summaries[name]["value"]
            cells.append("n/a" if value is None else f"{value * METRICS[name].scale:.4g}")
        lines += [f"## {TITLES[result.name]}", "",
                  f"{len(result.clips)} clips, {len(result.frame_ids)} frames.", "",
                  "| " + " | ".join(f"{METRICS[c].label} {METRICS[c].better}" for c in columns) + " |",
                  "|" + "---|" * len(columns),
                  "| " + " | ".join(cells) + " |", ""]
        missing = ", ".join(f"{k}: {v}" for k, v in result.faces_not_found.items())
        lines += [f"Faces not found (frames): {missing}.", ""]
        lines += [f"- {METRICS[c].label}: {summaries[c]['frames']} frames scored, "
                  f"{summaries[c]['no_face']} without a face" for c in columns if c not in ("ssim", "psnr",
                                                                                             "lpips", "l1")]
        lines += [f"- note: {n}" for n in result.notes]
        lines += ["", f"![per-frame metrics]({result.name}_per_frame.png)",
                  f"![worst frames]({result.name}_worst_frames.png)", ""]
    lines += ["## Definitions", ""]
    lines += [f"- **{METRICS[k].label}**: {v}" for k, v in definitions(settings).items()
              if any(k in r.values for r in results)]
    return "\n".join(lines) + "\n"


def _plot_per_frame(result: ProtocolResult, path: Path) -> None:
    names = TABLES[result.name]
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 1.8 * len(names)), sharex=True, squeeze=False)
    x = np.arange(len(result.frame_ids))
    starts = [i for i, (clip, frame) in enumerate(result.frame_ids) if frame == 0 and i > 0]
    for ax, name in zip(axes[:, 0], names):
        ax.plot(x, np.array(result.values[name]) * METRICS[name].scale, ".-", markersize=3, linewidth=0.8)
        for start in starts:
            ax.axvline(start - 0.5, color="0.7", linewidth=0.8)
        ax.set_ylabel(f"{METRICS[name].label}\n{METRICS[name].better}", fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("frame (all clips in order; grey lines separate clips; gaps: no face found)")
    fig.suptitle(f"{TITLES[result.name]}: metrics per frame")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_worst(result: ProtocolResult, path: Path) -> None:
    worst = sorted(result.worst, reverse=True)
    fig, axes = plt.subplots(max(1, len(worst)), 1, figsize=(2.2 * (4 if result.name == "same_identity" else 3),
                                                             2.5 * max(1, len(worst))), squeeze=False)
    for ax in axes[:, 0]:
        ax.axis("off")
    if not worst:
        axes[0, 0].text(0.5, 0.5, "no frame could be scored (no face found)", ha="center")
    for ax, (_, _, caption, panel) in zip(axes[:, 0], worst):
        ax.imshow(panel)
        ax.set_title(caption, fontsize=8)
    fig.suptitle(f"Worst frames: {WORST_COLUMNS[result.name]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(output: str | Path, header: dict, settings: Settings, results: list[ProtocolResult]) -> dict:
    """Write the output folder atomically; returns the JSON document. `header` names the model and run."""
    document = _json(header, settings, results)
    with atomic_directory(output) as tmp:
        (tmp / "results.json").write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n")
        (tmp / "results.md").write_text(_markdown(header, settings, results))
        for result in results:
            _plot_per_frame(result, tmp / f"{result.name}_per_frame.png")
            _plot_worst(result, tmp / f"{result.name}_worst_frames.png")
    return document
