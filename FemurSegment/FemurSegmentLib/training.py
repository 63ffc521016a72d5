"""Patch training of the V-Net: cases on the working grid, augmentation, Dice + L2 loss.

Loss, after Zhao et al.'s "Dice + L2" compound loss: the Dice loss of the femur class (over the
batch) plus the L2 (mean squared) error of the femur probability, which keeps boundaries
calibrated where Dice alone over-segments; the weights also carry an L2 penalty (Adam's
``weight_decay``). Augmentation (all on the fly, per patch, in mm): rotation (±15° axial,
±8° tilt), scaling 0.85-1.15, smooth elastic displacement (±4 mm), left/right mirroring, HU
gain/offset, Gaussian noise. The network labels femur vs background for both sides at once, so a
mirrored patch keeps its labels; sides are assigned afterwards by patient position
(:mod:`.anatomy`).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss

from .network import SmallVNet
from .volumes import WORK_SPACING, body_box, normalize, resample, working_grid

PATCH = (32, 64, 64)  # [k, j, i] voxels on the working grid = 96 mm cube


NEGATIVE_WEIGHT = 0.25  # how often a femur-free CT is drawn, relative to a CT with femurs
MAX_SKIPPED_SHARE = 0.1  # more steps with non-finite gradients than this share (and than one): training fails


class TrainingError(RuntimeError):
    """Training could not produce a model (no model is written)."""


@dataclass
class Case:
    """One CT on the working grid, cropped to the body: normalized intensities and femur mask [k, j, i]."""
    name: str
    image: np.ndarray
    femur: np.ndarray
    weight: float = 1.0  # relative sampling frequency

    def __post_init__(self):
        self.femur_voxels = np.flatnonzero(self.femur)  # flat indices, drawn from for positive patches
        self.femur_float = torch.from_numpy(self.femur.astype(np.float32))[None, None]  # for grid sampling


def prepare_case(name: str, ct: sitk.Image, femur: sitk.Image | None) -> Case:
    """Resample a CT (HU) and its femur mask (nonzero = femur; None = a CT without femurs, e.g.
    a head, to learn what is *not* femur) to the working grid, crop to the body."""
    grid = working_grid(ct)
    hu = sitk.GetArrayFromImage(resample(ct, grid))
    box = body_box(hu, part=0.0)  # all regions above -500 HU, the table too: more background to learn from
    if femur is None:
        return Case(name, normalize(hu[box]), np.zeros(hu[box].shape, np.uint8), NEGATIVE_WEIGHT)
    mask = sitk.GetArrayFromImage(resample(sitk.Cast(femur > 0, sitk.sitkUInt8), grid, label=True))
    return Case(name, normalize(hu[box]), mask[box].astype(np.uint8))


def _rotation(rng: np.random.Generator) -> np.ndarray:
    a = math.radians(rng.uniform(-15, 15))
    b, c = (math.radians(rng.uniform(-8, 8)) for _ in range(2))
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    ry = np.array([[math.cos(c), 0, math.sin(c)], [0, 1, 0], [-math.sin(c), 0, math.cos(c)]])
    return rz @ rx @ ry


def sample_patch(case: Case, rng: np.random.Generator, augment: bool = True, positive: float = 0.7):
    """One (image, label) patch pair of ``PATCH`` voxels, as float32 / int64 arrays [k, j, i]."""
    shape = np.array(case.image.shape)
    if rng.random() < positive and len(case.femur_voxels):
        idx = case.femur_voxels
        centre = np.array(np.unravel_index(idx[rng.integers(len(idx))], shape), float)
    else:
        centre = rng.uniform(0, shape - 1)
    spacing = np.array(WORK_SPACING[::-1])  # mm per [k, j, i]
    offsets = np.stack(np.meshgrid(*[np.arange(p) - (p - 1) / 2 for p in PATCH], indexing="ij"), -1)
    mm = offsets * spacing
    if augment:
        mm = mm @ (_rotation(rng) * rng.uniform(0.85, 1.15)).T
        coarse = torch.from_numpy(rng.normal(0, 4.0 / 2, (1, 3, 3, 4, 4)).astype(np.float32))
        mm = mm + F.interpolate(coarse, size=PATCH, mode="trilinear", align_corners=True)[0].permute(1, 2, 3, 0).numpy()
    position = centre + mm / spacing                                   # [k, j, i] voxel coordinates
    grid = torch.from_numpy((position[..., ::-1] / (shape[::-1] - 1) * 2 - 1).astype(np.float32))[None]
    image = F.grid_sample(torch.from_numpy(case.image)[None, None], grid, align_corners=True,
                          padding_mode="border")[0, 0].numpy()
    label = F.grid_sample(case.femur_float, grid,
                          align_corners=True)[0, 0].numpy() > 0.5
    if augment:
        if rng.random() < 0.5:
            image, label = image[..., ::-1], label[..., ::-1]
        image = image * rng.uniform(0.9, 1.1) + rng.uniform(-0.1, 0.1) + rng.normal(0, rng.uniform(0, 0.05), image.shape)
    return np.ascontiguousarray(image, np.float32), np.ascontiguousarray(label, np.int64)


def train(cases: list[Case], steps: int = 600, batch: int = 2, lr: float = 2e-3, weight_decay: float = 1e-4,
          seed: int = 0, network: dict | None = None, log=print, init: SmallVNet | None = None,
          bf16: bool = False) -> tuple[SmallVNet, dict]:
    """Train a :class:`SmallVNet` on random augmented patches (a new one, or a copy of ``init``
    to fine-tune, which stays unchanged); returns the network and a summary. ``bf16``: the
    network's forward pass in bfloat16 autocast (float32 weights, softmax and loss; about 3x
    faster per step on CPUs with native bf16, AVX512-BF16/AMX). A step whose gradients are not
    finite is skipped and counted (``skipped_steps``): bfloat16 backward passes of the 5x5x5
    convolutions gave NaN weight gradients now and then on an AMD EPYC CPU (README)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = SmallVNet(**(network or {})) if init is None else copy.deepcopy(init)
    net.to(memory_format=torch.channels_last_3d)  # oneDNN's faster layout: a step ~1.4x faster on an AVX2 CPU
    optimizer = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    warmup = max(1, steps // 20)  # linear warm-up, then cosine decay to zero
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(
        math.pi * min(s, steps) / steps))))
    dice_loss = DiceLoss(include_background=False, to_onehot_y=True, softmax=True, batch=True)
    net.train()
    start, recent, skipped = time.perf_counter(), [], 0
    chance = np.array([c.weight for c in cases]) / sum(c.weight for c in cases)
    for step in range(steps):
        pairs = [sample_patch(cases[rng.choice(len(cases), p=chance)], rng) for _ in range(batch)]
        x = torch.from_numpy(np.stack([p[0] for p in pairs]))[:, None].contiguous(memory_format=torch.channels_last_3d)
        y = torch.from_numpy(np.stack([p[1] for p in pairs]))[:, None]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = net(x)
        logits = logits.float()
        loss = dice_loss(logits, y) + F.mse_loss(torch.softmax(logits, 1)[:, 1:], y.float())
        optimizer.zero_grad()
        loss.backward()
        if torch.isfinite(torch.nn.utils.get_total_norm([p.grad for p in net.parameters() if p.grad is not None])):
            optimizer.step()
        else:
            skipped += 1
        schedule.step()
        recent = (recent + [loss.item()])[-50:]
        if log and (step + 1) % 50 == 0:
            log(f"step {step + 1}/{steps}  Dice + L2 loss {np.mean(recent):.4f}  {time.perf_counter() - start:.0f} s")
    if skipped > max(1.0, MAX_SKIPPED_SHARE * steps):
        raise TrainingError(f"non-finite gradients in {skipped} of {steps} steps; train without --bf16 (float32)")
    net.eval()
    summary = {"steps": steps, "skipped_steps": skipped, "batch": batch, "patch_kji": list(PATCH), "lr": lr,
               "weight_decay": weight_decay, "seed": seed, "precision": "bfloat16 autocast" if bf16 else "float32",
               "cases": {c.name: c.weight for c in cases}, "fine_tuned": init is not None,
               "loss": "Dice (femur) + L2 (probability), weight decay",
               "final_loss": float(np.mean(recent)), "seconds": time.perf_counter() - start}
    return net, summary
