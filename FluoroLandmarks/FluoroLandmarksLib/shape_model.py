"""Landmark shape model of the head population and its fit to one frame's 2D estimates.

Model (a point distribution model): landmark positions relative to the head centre, in patient
RAS mm, = mean + sum_k b_k mode_k, with the modes and their variances from the principal
components of a head population's 3D landmarks (the training set's labels).

Fit (:meth:`ShapeModel.fit`): the maximum a-posteriori mode weights b and head-centre position
T (C-arm camera frame, mm) given the 2D landmark estimates (detector px) of one frame, under the
frame's perspective projection. Each 2D estimate counts with a weight in [0, 1] (the network's
confidence to the power ``CONFIDENCE_POWER``) and a Huber-robust Gaussian error of ``sigma_mm``
at the isocenter plane; the prior is N(0, variance_k) on b_k and N(SOD, depth_sd_mm^2) on T's
depth (the head centred on the isocenter along the beam, the one thing a single view cannot
tell); T across the beam is free. The patient is
assumed in the frame's reference orientation (RAS as the C-arm angles are defined). The result
is a consistent 3D landmark set: every landmark, seen or not, gets a 3D position and a
projection, and scale and depth are tied together by the population's head sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import CArmGeometry

DEPTH_SD_MM = 10.0 / np.sqrt(3.0)  # sd of U(-10, 10) mm: the training views' head offset along the beam
# Fit settings chosen on a validation set (seed 3001, not the test set): the network's per-landmark
# errors are large and heavy-tailed, so the population prior should dominate and confident
# landmarks count most.
FIT_SIGMA_MM = 10.0
CONFIDENCE_POWER = 4.0
HEAD_DEPTH_SD_MM = 2.0  # uncertainty assumed for a head depth the user knows (e.g. from the table height)
ACROSS_PRIOR = 1e-8  # 1/mm^2: keeps the centre defined across the beam when no landmark counts


@dataclass
class ShapeFit:
    """``points_ras`` (L, 3) mm, their projections ``uv`` (L, 2) px and ``depth_mm`` (L,) from the
    source along the principal ray; ``centre_ras`` (3,) mm; ``weights`` (K,) mode weights (mm)."""

    points_ras: np.ndarray
    uv: np.ndarray
    depth_mm: np.ndarray
    centre_ras: np.ndarray
    weights: np.ndarray


@dataclass
class ShapeModel:
    mean: np.ndarray  # (L, 3) mm, RAS, relative to the head centre
    modes: np.ndarray  # (K, L, 3) orthonormal as (K, 3L) rows
    variances: np.ndarray  # (K,) mm^2

    @classmethod
    def build(cls, points_ras: np.ndarray, centres_ras: np.ndarray, n_modes: int = 24) -> "ShapeModel":
        """From (N, L, 3) population landmarks (RAS mm) and each head's (N, 3) centre."""
        x = np.asarray(points_ras, float) - np.asarray(centres_ras, float)[:, None]
        if x.ndim != 3 or x.shape[2] != 3 or len(x) < 2:
            raise ValueError("a shape model needs (N >= 2, L, 3) landmark sets")
        mean = x.mean(0)
        _, s, vt = np.linalg.svd((x - mean).reshape(len(x), -1), full_matrices=False)
        k = min(n_modes, len(s))
        return cls(mean, vt[:k].reshape(k, *mean.shape), s[:k] ** 2 / (len(x) - 1))

    def shape(self, weights: np.ndarray) -> np.ndarray:
        """(L, 3) landmarks relative to the centre (RAS mm) for mode weights (K,)."""
        return self.mean + np.tensordot(weights, self.modes, axes=1)

    def fit(self, uv_px: np.ndarray, weight: np.ndarray, geometry: CArmGeometry, sigma_mm: float = FIT_SIGMA_MM,
            depth_sd_mm: float | None = None, huber: float = 2.0, iterations: int = 8,
            head_depth_mm: float | None = None) -> ShapeFit:
        """MAP fit to (L, 2) detector-pixel estimates with (L,) weights in [0, 1] (0 = ignore).
        ``head_depth_mm``: the prior's head-centre distance from the source along the principal
        ray (mm; None = the isocenter, ``geometry.sod_mm``), e.g. known from the table height;
        ``depth_sd_mm``: its sd (None = ``HEAD_DEPTH_SD_MM`` for a known depth, else ``DEPTH_SD_MM``)."""
        uv_px = np.asarray(uv_px, float)
        w = np.clip(np.asarray(weight, float), 0.0, 1.0)
        if uv_px.shape != (len(self.mean), 2) or w.shape != (len(self.mean),):
            raise ValueError(f"expected ({len(self.mean)}, 2) estimates and ({len(self.mean)},) weights")
        rotation, translation = geometry.world_to_camera[:, :3], geometry.world_to_camera[:, 3]
        fu, fv = geometry.intrinsics[0, 0], geometry.intrinsics[1, 1]
        principal = geometry.principal_point_px
        sigma_px = sigma_mm * geometry.magnification / np.asarray(geometry.pixel_spacing_mm, float)
        mean_c = self.mean @ rotation.T  # (L, 3) camera frame
        modes_c = self.modes @ rotation.T  # (K, L, 3)
        k = len(self.variances)
        depth0 = geometry.sod_mm if head_depth_mm is None else float(head_depth_mm)
        if depth_sd_mm is None:
            depth_sd_mm = DEPTH_SD_MM if head_depth_mm is None else HEAD_DEPTH_SD_MM
        b, centre = np.zeros(k), np.array([0.0, 0.0, depth0])
        centre[:2] = _centre_across(mean_c, uv_px, w, centre[2], fu, fv, principal)
        prior = np.concatenate([1.0 / self.variances, [ACROSS_PRIOR, ACROSS_PRIOR, 1.0 / depth_sd_mm ** 2]])
        robust = np.ones_like(w)
        for _ in range(iterations):
            y = mean_c + np.tensordot(b, modes_c, axes=1) + centre  # (L, 3)
            z = y[:, 2]
            uv = np.stack([fu * y[:, 0] / z, fv * y[:, 1] / z], 1) + principal
            r = (uv - uv_px) / sigma_px  # (L, 2) in units of sigma
            norm = np.linalg.norm(r, axis=1)
            robust = np.where(norm > huber, huber / np.maximum(norm, 1e-12), 1.0)
            sw = np.sqrt(w * robust)[:, None] / sigma_px  # (L, 2) per-coordinate sqrt weight / sigma
            # d uv / d y per landmark: (L, 2, 3)
            duv = np.zeros((len(y), 2, 3))
            duv[:, 0, 0], duv[:, 1, 1] = fu / z, fv / z
            duv[:, 0, 2], duv[:, 1, 2] = -fu * y[:, 0] / z ** 2, -fv * y[:, 1] / z ** 2
            dy = np.concatenate([modes_c.transpose(1, 2, 0), np.broadcast_to(np.eye(3), (len(y), 3, 3))], 2)
            jac = (np.einsum("lij,ljp->lip", duv, dy) * sw[:, :, None]).reshape(-1, k + 3)
            res = ((uv - uv_px) * sw).reshape(-1)
            theta = np.concatenate([b, centre - [0.0, 0.0, depth0]])
            step = np.linalg.solve(jac.T @ jac + np.diag(prior), -(jac.T @ res + prior * theta))
            b, centre = b + step[:k], centre + step[k:]
        y = mean_c + np.tensordot(b, modes_c, axes=1) + centre
        points = (y - translation) @ rotation
        uv, depth = geometry.project(points)
        return ShapeFit(points, uv, depth, (centre - translation) @ rotation, b)


def _centre_across(mean_c: np.ndarray, uv_px: np.ndarray, w: np.ndarray, depth: float, fu: float, fv: float,
                   principal: np.ndarray) -> np.ndarray:
    """Start value of the centre's camera (x, y) mm: the weighted mean back-projected shift at ``depth``."""
    if w.sum() <= 0:
        return np.zeros(2)
    ray = (uv_px - principal) / [fu, fv]  # (L, 2) = (x, y) / z
    shift = ray * (depth + mean_c[:, 2:3]) - mean_c[:, :2]
    return (w[:, None] * shift).sum(0) / w.sum()
