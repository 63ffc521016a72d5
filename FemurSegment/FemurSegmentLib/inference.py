"""CT -> left/right femur label array on the CT's own grid.

Pipeline (each stage timed): check the input -> resample to the working grid and crop to the
body -> sliding-window V-Net (MONAI) -> femur probability back on the CT grid -> boundary snapped
to the cortex at full resolution (:mod:`.boundary`) -> split by patient side, keep each side's
largest component -> optional proximal cut (:mod:`.anatomy`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import SimpleITK as sitk
import torch
from monai.inferers import sliding_window_inference

from . import anatomy
from .boundary import close_notches, snap_to_cortex
from .model import FemurModel
from .network import for_inference
from .volumes import InputError, body_box, check_ct, normalize, resample, working_grid

# Sliding windows of 48 working-grid slices (72 mm) spanning the body's whole cross-section (up to
# MAX_WINDOW_PX = 576 mm, rounded up to the V-Net's multiple of 8): no seams across the body and
# 1.3-2.2 times fewer voxels through the network than tiles of 128 x 128 on the two pelvis CTs (README).
WINDOW_SLICES, MAX_WINDOW_PX, NETWORK_MULTIPLE = 48, 384, 8
OVERLAP = 0.125
# Femur where the network's probability exceeds this. On unseen CTs the network's probability is
# far too low (sensitivity < precision in every leave-one-case-out fold), but its ordering is good:
# with the 3500-step recipe both folds score best at 0.005 and collapse at 0.002 (pelvis taken as
# femur); 0.01 is within 0.004 Dice of the best and five times above the collapse (README).
THRESHOLD = 0.01
CONFIDENT = 0.5  # the network's confident femur, the reference of the pelvis guard
FALLBACK_THRESHOLDS = (0.05, 0.2, 0.5)  # tried in turn when the femur at THRESHOLD has joined the pelvis
# The V-Net's arithmetic. "auto": bfloat16 autocast on CPUs with native bf16 (AVX512-BF16/AMX: the network
# 1.5-1.8x faster, labels within Dice 0.998 of float32; README), float32 elsewhere (emulated bf16 is slower).
PRECISIONS = ("auto", "float32", "bfloat16")
Progress = Callable[[float, str], bool]  # (fraction done, stage) -> False to cancel


class Cancelled(RuntimeError):
    pass


@dataclass
class Segmentation:
    """``labels`` [k, j, i] on the input CT's grid: 0 background, 1 left femur, 2 right femur."""
    labels: np.ndarray
    sides: list[str]
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    precision: str = "float32"  # the network's arithmetic, see PRECISIONS


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16/AMX), as oneDNN reports it."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: str) -> str:
    """``precision`` (one of PRECISIONS) -> "float32" or "bfloat16" on this CPU."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "auto":
        return "bfloat16" if native_bf16() else "float32"
    return precision


def window_for(shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """Sliding-window size [k, j, i] (working-grid voxels) for a body box of ``shape``."""
    side = [min(MAX_WINDOW_PX, -(-n // NETWORK_MULTIPLE) * NETWORK_MULTIPLE) for n in shape[1:]]
    return (WINDOW_SLICES, *side)


class _Windows:
    """Runs a network per sliding window and counts the windows, reporting progress so that a
    cancel is honoured within the network stage."""

    def __init__(self, progress: Progress | None, shape: tuple[int, ...], passes: int):
        self.progress, self.done, self.window = progress, 0, window_for(shape)
        steps = [max(1, int(w * (1 - OVERLAP))) for w in self.window]
        self.total = passes * int(np.prod([max(0, -(-(n - w) // s)) + 1
                                           for n, w, s in zip(shape, self.window, steps)]))

    def probability(self, model: FemurModel, x: torch.Tensor, mirror: bool) -> torch.Tensor:
        """Femur probability [k, j, i] of ``model`` on ``x`` [1, 1, k, j, i]; with ``mirror`` the mean
        with its pass on the left-right mirrored input (the working grid is LPS-aligned: i runs right
        to left)."""
        net = for_inference(model.net)

        def predictor(window: torch.Tensor) -> torch.Tensor:
            if self.progress and self.progress(0.2 + 0.6 * min(self.done / self.total, 1.0), "network") is False:
                raise Cancelled("cancelled")
            self.done += len(window)
            # float32 logits whatever the arithmetic: MONAI blends the windows in the predictor's dtype
            return net(window.contiguous(memory_format=torch.channels_last_3d)).float().contiguous()

        def femur(image: torch.Tensor) -> torch.Tensor:
            logits = sliding_window_inference(image, self.window, sw_batch_size=1, predictor=predictor, overlap=OVERLAP,
                                              mode="gaussian")
            return torch.softmax(logits, 1)[0, 1]

        return (femur(x) + femur(x.flip(-1)).flip(-1)) / 2 if mirror else femur(x)


def femur_probability(models: FemurModel | Sequence[FemurModel], ct: sitk.Image, timings: dict,
                      progress: Progress | None = None, mirror: bool = False,
                      precision: str = "float32") -> sitk.Image:
    """Femur probability (float32, 0..1) on ``ct``'s grid: the mean over ``models`` (an ensemble;
    each one runs over the whole body, the network time times their number). ``mirror``: every model
    also on the left-right mirrored CT (the training augmentation's mirroring; twice the network time).
    ``precision``: "float32" or "bfloat16" (autocast; weights stay float32)."""
    models = [models] if isinstance(models, FemurModel) else list(models)
    t = time.perf_counter()
    grid = working_grid(ct)
    hu = sitk.GetArrayFromImage(resample(ct, grid))
    box = body_box(hu)
    x = torch.from_numpy(normalize(hu[box]))[None, None]
    timings["resample_s"] = time.perf_counter() - t
    t = time.perf_counter()
    windows = _Windows(progress, x.shape[2:], (2 if mirror else 1) * len(models))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
        femur = sum(windows.probability(m, x, mirror) for m in models) / len(models)
    femur = femur.numpy()
    timings["network_s"] = time.perf_counter() - t
    if progress and progress(0.8, "post-processing") is False:
        raise Cancelled("cancelled")
    t = time.perf_counter()
    full = np.zeros(hu.shape, np.float32)
    full[box] = femur
    probability = sitk.GetImageFromArray(full)
    probability.CopyInformation(grid)
    out = resample(probability, ct, default=0.0)
    timings["resample_back_s"] = time.perf_counter() - t
    return out


def segment(model: FemurModel | Sequence[FemurModel], ct: sitk.Image, side: str = "both", proximal: bool = True,
            progress: Progress | None = None, snap: bool = True, threshold: float = THRESHOLD,
            mirror: bool = False, precision: str = "auto") -> Segmentation:
    """Segment the femur(s) of ``ct`` (HU). Raises :class:`InputError` for unusable input or
    when no requested femur is found, :class:`Cancelled` if ``progress`` returns False.
    ``snap`` False keeps the network's own boundary (benchmarks compare the two); ``mirror``: see
    :func:`femur_probability`; ``precision``: one of PRECISIONS."""
    if side not in ("both", *anatomy.SIDES):
        raise ValueError(f"side must be both, left or right, not {side!r}")
    timings: dict[str, float] = {}
    t = time.perf_counter()
    check_ct(ct)
    precision = resolve_precision(precision)
    timings["check_s"] = time.perf_counter() - t
    probability = femur_probability(model, ct, timings, progress, mirror, precision)
    result = labels_from_probability(probability, ct, side, proximal, snap, threshold, timings)
    result.precision = precision
    return result


def labels_from_probability(probability: sitk.Image, ct: sitk.Image, side: str = "both", proximal: bool = True,
                            snap: bool = True, threshold: float = THRESHOLD,
                            timings: dict | None = None) -> Segmentation:
    """The post-processing of :func:`segment`: femur where ``probability`` (on ``ct``'s grid)
    exceeds ``threshold``, boundary snapped to the cortex, sides, proximal cut. When a requested
    side's femur reaches more than ``anatomy.MAX_RISE_MM`` above the network's confident femur
    (probability > CONFIDENT) it has joined the pelvis: then that side takes the next of
    FALLBACK_THRESHOLDS (with a warning); the other side keeps its own."""
    timings = {} if timings is None else timings
    begin = time.perf_counter()
    wanted = anatomy.SIDES if side == "both" else (side,)
    p = sitk.GetArrayViewFromImage(probability)
    hu = sitk.GetArrayViewFromImage(ct)
    mid = anatomy.midline(hu, ct)
    half_grid = ct[::2, ::2, :]  # the confident femur's top, on every second column and row (faster)
    confident = anatomy.split_sides(np.asarray(p[:, ::2, ::2]) > CONFIDENT, half_grid, mid)
    warnings: list[str] = []
    timings["boundary_s"] = 0.0
    parts: dict[str, np.ndarray] = {}
    thresholds = (threshold, *[f for f in FALLBACK_THRESHOLDS if f > threshold])
    for t in thresholds:
        start = time.perf_counter()
        mask = snap_to_cortex(p > t, ct) if snap else p > t
        timings["boundary_s"] += time.perf_counter() - start
        candidates = anatomy.split_sides(mask, ct, mid)
        rises = {n: anatomy.top_mm(candidates[n], ct) - anatomy.top_mm(confident[n], half_grid)
                 for n in wanted if n not in parts and candidates[n].any() and confident[n].any()}
        joined = {n for n, rise in rises.items() if rise > anatomy.MAX_RISE_MM} if t != thresholds[-1] else set()
        for name in joined:
            warnings.append(f"the {name} femur at probability > {t:g} reached {rises[name]:.0f} mm above the "
                            "network's confident femur (joined to the pelvis); a higher threshold was used")
        for name in [n for n in wanted if n not in parts and n not in joined]:
            if candidates[name].any() or not joined:  # an empty side may lie in the other side's joined region
                parts[name] = candidates[name]
        if len(parts) == len(wanted):
            break
    voxel_cm3 = float(np.prod(ct.GetSpacing())) / 1000.0
    labels = np.zeros(mask.shape, np.uint8)
    found = []
    for name in wanted:
        if snap:
            start = time.perf_counter()
            parts[name] = close_notches(parts[name], ct)
            timings["boundary_s"] += time.perf_counter() - start
        part = anatomy.proximal(parts[name], ct)  # the plausibility rules are about the proximal femur
        if part.sum() * voxel_cm3 < anatomy.MIN_FEMUR_CM3:
            warnings.append(f"no {name} femur found")
            continue
        mean_hu = float(hu[part].mean())
        if mean_hu > anatomy.MAX_FEMUR_MEAN_HU:
            warnings.append(f"no {name} femur found (the candidate's mean {mean_hu:.0f} HU is too dense for a femur: "
                            "dense bone such as skull, or a metal implant)")
            continue
        labels[part if proximal else parts[name]] = anatomy.LABEL_VALUES[name]
        found.append(name)
    timings["postprocess_s"] = time.perf_counter() - begin - timings["boundary_s"]
    if not found:
        raise InputError("no femur found in the field of view" + ("" if side == "both" else f" ({side} side)")
                         + "".join(f"; {w}" for w in warnings if "(" in w))
    return Segmentation(labels, found, timings, warnings)
