"""Training of the global and local landmark networks on a synthetic dataset (CPU)."""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from .network import DEPTH_LOSS_WEIGHT, DEPTH_UNIT_MM, PatchFCNN, landmark_loss

LOCAL_CROP = 64  # px, crop side of the local networks
LOCAL_JITTER = 16  # px, training offset of crop centres (covers most of the global network's errors)
GLOBAL_ARCHITECTURE = dict(widths=(16, 32, 64, 96, 128), strides=(2, 2, 2, 2, 1), dilations=(2, 4))
LOCAL_ARCHITECTURE = dict(widths=(16, 32, 48, 64), strides=(1, 2, 2, 2), displacement_scale=16.0)


def normalize(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(B, H, W) images (any range) -> (B, 1, H, W) float32, zero mean and unit SD per image."""
    x = torch.as_tensor(images).float()
    x = x - x.mean(dim=(1, 2), keepdim=True)
    return (x / (x.std(dim=(1, 2), keepdim=True) + 1e-6))[:, None]


def depth_offset(depth_mm: np.ndarray, sod_mm: np.ndarray) -> np.ndarray:
    """(B, L) depth offsets from the isocenter plane, in DEPTH_UNIT_MM."""
    return (depth_mm - sod_mm[:, None]) / DEPTH_UNIT_MM


def crops(images: torch.Tensor, centres: torch.Tensor, size: int = LOCAL_CROP) -> tuple[torch.Tensor, torch.Tensor]:
    """Square crops (N, 1, size, size) of (B, 1, H, W) images around integer-rounded centres
    (B, L, 2) px, zero outside the image; returns crops for every (b, l) and their origins (N, 2)."""
    b, n = centres.shape[:2]
    origin = torch.round(centres.reshape(-1, 2)).long() - size // 2
    height, width = images.shape[-2:]
    u0 = origin[:, 0].clamp(-size, width) + size  # in the padded image
    v0 = origin[:, 1].clamp(-size, height) + size
    padded = torch.nn.functional.pad(images[:, 0], (size, size, size, size))
    steps = torch.arange(size)
    batch = torch.arange(b).repeat_interleave(n)
    out = padded[batch[:, None, None], (v0[:, None] + steps)[:, :, None], (u0[:, None] + steps)[:, None, :]]
    return out[:, None], origin.float()


def mirrored_samples(images: torch.Tensor, labels: dict[str, torch.Tensor], partners: list[int],
                     chosen: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The ``chosen`` (B,) samples of a batch mirrored left-right: (B, H, W) images flipped; every
    per-landmark label (B, L, ...) takes its mirror partner's entry (``partners``:
    :func:`landmarks.mirror_permutation`), and ``labels["uv"]`` (B, L, 2) px becomes (W - 1 - u, v)."""
    images, labels = images.clone(), {k: v.clone() for k, v in labels.items()}
    images[chosen] = images[chosen].flip(-1)
    for value in labels.values():
        value[chosen] = value[chosen][:, partners]
    labels["uv"][chosen, :, 0] = images.shape[-1] - 1 - labels["uv"][chosen, :, 0]
    return images, labels


def _schedule(optimizer, step: int, total: int, lr: float) -> None:
    warm = max(1, total // 20)
    factor = step / warm if step < warm else 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
    for group in optimizer.param_groups:
        group["lr"] = lr * factor


MAX_SKIPPED_SHARE = 0.1  # more steps with non-finite gradients than this share (and than one): training fails


class TrainingError(RuntimeError):
    """Training could not produce a network (no model is written)."""


def _update(optimizer, loss, name: str, step: int, steps: int, parts: dict, start: float, log) -> bool:
    """One optimizer step; a step whose gradients are not finite is skipped (returns False): bfloat16
    convolution backward passes gave NaN weight gradients now and then on an AMD EPYC CPU (README)."""
    optimizer.zero_grad()
    loss.backward()
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    finite = bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))
    if finite:
        optimizer.step()
    if step % 100 == 0 or step == steps - 1:
        log(f"{name} {step}/{steps} loss {float(loss.detach()):.3f} " + " ".join(f"{k} {v:.3f}" for k, v in parts.items())
            + f" ({time.perf_counter() - start:.0f} s)")
    return finite


def _check_skipped(skipped: int, steps: int, name: str) -> None:
    if skipped > max(1.0, MAX_SKIPPED_SHARE * steps):
        raise TrainingError(f"{name} training: non-finite gradients in {skipped} of {steps} steps; "
                           "train without --bf16 (float32)")


def train_global(data: dict, n_landmarks: int, steps: int, batch: int = 24, lr: float = 3e-3, seed: int = 0,
                 log=print, architecture: dict | None = None, init: PatchFCNN | None = None,
                 bf16: bool = False, depth_weight: float = DEPTH_LOSS_WEIGHT,
                 mirror: list[int] | None = None) -> tuple[PatchFCNN, dict]:
    """Global network (``architecture``: PatchFCNN options, default GLOBAL_ARCHITECTURE) on whole
    images; ``init``: continue from this network instead (its architecture, trained further in place).
    ``bf16``: convolutions in bfloat16 autocast (float32 weights, head and loss; ~2x faster on CPUs
    with AVX512-BF16 or AMX). ``depth_weight``: of the per-landmark depth loss (0: depth not trained).
    ``mirror``: each sample is mirrored left-right with probability 1/2 (:func:`mirrored_samples`
    with these partners), so the network sees mirrored heads too."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = init if init is not None else PatchFCNN(n_landmarks, **(GLOBAL_ARCHITECTURE if architecture is None
                                                                  else architecture))
    net.to(memory_format=torch.channels_last)  # oneDNN's faster layout (a float32 step ~10 % faster on an AVX2 CPU)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    depth = None  # depth labels exist for synthetic data only
    if "depth" in data and depth_weight > 0:
        depth = torch.from_numpy(depth_offset(data["depth"], data["sid_sod"][:, 1]).astype(np.float32))
    start, n, skipped = time.perf_counter(), len(data["images"]), 0
    net.train()
    for step in range(steps):
        idx = rng.integers(0, n, batch)
        _schedule(optimizer, step, steps, lr)
        images = torch.as_tensor(data["images"][idx]).float()
        labels = dict(uv=torch.from_numpy(data["uv"][idx]), in_image=torch.from_numpy(data["in_image"][idx]))
        if depth is not None:
            labels["depth"] = depth[idx]
        if mirror is not None:
            images, labels = mirrored_samples(images, labels, mirror, torch.from_numpy(rng.random(batch) < 0.5))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(normalize(images))
        loss, parts = landmark_loss(out, net.stride, labels["uv"], labels.get("depth"), labels["in_image"],
                                    depth_weight=depth_weight)
        skipped += not _update(optimizer, loss, "global", step, steps, parts, start, log)
    _check_skipped(skipped, steps, "global")
    net.eval()
    return net, dict(steps=steps, batch=batch, seconds=time.perf_counter() - start, skipped_steps=skipped,
                     precision="bfloat16 autocast" if bf16 else "float32",
                     depth_weight=0.0 if depth is None else depth_weight, mirror_augmentation=mirror is not None)


def train_local(data: dict, n_landmarks: int, steps: int, batch: int = 8, lr: float = 3e-3, seed: int = 0,
                log=print) -> tuple[PatchFCNN, dict]:
    """Local network on crops around jittered true positions of visible landmarks; each crop
    uses its landmark's output channels."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed + 1)
    net = PatchFCNN(n_landmarks, **LOCAL_ARCHITECTURE).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    start, n, skipped = time.perf_counter(), len(data["images"]), 0
    net.train()
    for step in range(steps):
        idx = rng.integers(0, n, batch)
        _schedule(optimizer, step, steps, lr)
        uv = torch.from_numpy(data["uv"][idx])
        centres = uv + torch.from_numpy(rng.uniform(-LOCAL_JITTER, LOCAL_JITTER, uv.shape).astype(np.float32))
        patches, origin = crops(normalize(data["images"][idx]), centres)
        visible = torch.from_numpy(data["in_image"][idx]).reshape(-1)
        keep = visible.nonzero()[:, 0]
        if len(keep) == 0:
            continue
        landmark = keep % n_landmarks
        out = net(patches[keep])[torch.arange(len(keep)), landmark][:, None]  # (K, 1, 4, h, w)
        local_uv = (uv.reshape(-1, 2)[keep] - origin[keep])[:, None]
        loss, parts = landmark_loss(out, net.stride, local_uv, size=float(LOCAL_CROP))
        skipped += not _update(optimizer, loss, "local", step, steps, parts, start, log)
    _check_skipped(skipped, steps, "local")
    net.eval()
    return net, dict(steps=steps, batch=batch, seconds=time.perf_counter() - start, skipped_steps=skipped)
