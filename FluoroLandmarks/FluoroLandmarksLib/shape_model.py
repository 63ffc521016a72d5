"""Landmark shape model of the head population and its fit to the 2D estimates of one or more frames.

Model (a point distribution model): landmark positions relative to the head centre, in patient
RAS mm, = mean + sum_k b_k mode_k, with the modes and their variances from the principal
components of a head population's 3D landmarks (the training set's labels).

Fit (:meth:`ShapeModel.fit`, one frame; :meth:`ShapeModel.fit_views`, several frames of the same
unmoved head, e.g. a biplane C-arm's two planes): the maximum a-posteriori mode weights b and
head-centre position T (patient RAS mm) given the 2D landmark estimates (detector px), under each
frame's perspective projection. Each 2D estimate counts with a weight in [0, 1] (the network's
confidence to the power ``CONFIDENCE_POWER``) and a Huber-robust Gaussian error of ``sigma_mm``
at the isocenter plane; the prior is N(0, variance_k) on b_k and, per frame, N(SOD, depth_sd_mm^2)
on T's distance from that frame's source along its principal ray (the head centred on the
isocenter along the beam, the one thing a single view cannot tell); T across the beam is free.
The patient is assumed in the frames' reference orientation (RAS as the C-arm angles are
defined). The result is a consistent 3D landmark set: every landmark, seen or not, gets a 3D
position and a projection, and scale and depth are tied together by the population's head sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import CArmGeometry

DEPTH_SD_MM = 10.0 / np.sqrt(3.0)  # sd of U(-10, 10) mm: the training views' head offset along the beam
# Fit settings chosen on a validation set (seed 3001, not the test set): the network's per-landmark
# errors are large and heavy-tailed, so the population prior should dominate and confident
# landmarks count most (`Testing/Benchmarks/landmark_fit_settings.py`, rerun for each shipped network).
FIT_SIGMA_MM = 7.5
CONFIDENCE_POWER = 3.0
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
        if depth_sd_mm is None:
            depth_sd_mm = DEPTH_SD_MM if head_depth_mm is None else HEAD_DEPTH_SD_MM
        depth0 = geometry.sod_mm if head_depth_mm is None else float(head_depth_mm)
        return self.fit_views([View(uv_px, weight, geometry, depth0, depth_sd_mm)], sigma_mm, huber, iterations)

    def fit_views(self, views: list["View"], sigma_mm: float = FIT_SIGMA_MM, huber: float = 2.0,
                  iterations: int = 8) -> ShapeFit:
        """MAP fit of one head to the 2D estimates of several frames of it (e.g. the two planes of a
        biplane C-arm; the head does not move between them). The centre is solved in patient RAS;
        each view adds its depth prior. ``uv`` and ``depth_mm`` of the result are for ``views[0]``."""
        k = len(self.variances)
        for v in views:
            if v.uv_px.shape != (len(self.mean), 2) or v.weight.shape != (len(self.mean),):
                raise ValueError(f"expected ({len(self.mean)}, 2) estimates and ({len(self.mean)},) weights per view")
        first = views[0].geometry
        rotation0, translation0 = first.world_to_camera[:, :3], first.world_to_camera[:, 3]
        start = np.array([0.0, 0.0, views[0].depth_mm])
        start[:2] = _centre_across(self.mean @ rotation0.T, views[0].uv_px, views[0].weight, start[2],
                                   first.intrinsics[0, 0], first.intrinsics[1, 1], first.principal_point_px)
        b, centre = np.zeros(k), (start - translation0) @ rotation0  # centre in RAS
        precision = np.zeros((3, 3))  # of the centre (RAS), from each view's depth prior
        mean_at = np.zeros(3)
        for v in views:
            r = v.geometry.world_to_camera[:, :3]
            p = r.T @ np.diag([ACROSS_PRIOR, ACROSS_PRIOR, 1.0 / v.depth_sd_mm ** 2]) @ r
            target = (np.array([0.0, 0.0, v.depth_mm]) - v.geometry.world_to_camera[:, 3]) @ r
            precision, mean_at = precision + p, mean_at + p @ target
        centre_prior = np.linalg.solve(precision, mean_at)  # the prior's mean centre (RAS mm)
        prior = np.zeros((k + 3, k + 3))
        prior[:k, :k], prior[k:, k:] = np.diag(1.0 / self.variances), precision
        for _ in range(iterations):
            points = self.shape(b) + centre  # (L, 3) RAS
            jac, res = zip(*[v.linearize(points, self.modes, sigma_mm, huber) for v in views])
            jac, res = np.concatenate(jac), np.concatenate(res)
            theta = np.concatenate([b, centre - centre_prior])
            step = np.linalg.solve(jac.T @ jac + prior, -(jac.T @ res + prior @ theta))
            b, centre = b + step[:k], centre + step[k:]
        points = self.shape(b) + centre
        uv, depth = first.project(points)
        return ShapeFit(points, uv, depth, centre, b)


@dataclass
class View:
    """One frame's evidence for :meth:`ShapeModel.fit_views`: (L, 2) detector-pixel estimates,
    (L,) weights in [0, 1], the frame's geometry, and the prior on the head centre's distance from
    the source along the principal ray (mean ``depth_mm`` and sd ``depth_sd_mm``, mm)."""

    uv_px: np.ndarray
    weight: np.ndarray
    geometry: CArmGeometry
    depth_mm: float
    depth_sd_mm: float = DEPTH_SD_MM

    def __post_init__(self):
        self.uv_px = np.asarray(self.uv_px, float)
        self.weight = np.clip(np.asarray(self.weight, float), 0.0, 1.0)

    def linearize(self, points_ras: np.ndarray, modes: np.ndarray, sigma_mm: float,
                  huber: float) -> tuple[np.ndarray, np.ndarray]:
        """Whitened, Huber-reweighted residuals (2L,) of the projections of ``points_ras`` (L, 3)
        and their Jacobian (2L, K + 3) in the mode weights and the RAS centre."""
        g = self.geometry
        rotation = g.world_to_camera[:, :3]
        fu, fv = g.intrinsics[0, 0], g.intrinsics[1, 1]
        sigma_px = sigma_mm * g.magnification / np.asarray(g.pixel_spacing_mm, float)
        y = points_ras @ rotation.T + g.world_to_camera[:, 3]  # (L, 3) camera frame
        z = y[:, 2]
        uv = np.stack([fu * y[:, 0] / z, fv * y[:, 1] / z], 1) + g.principal_point_px
        norm = np.linalg.norm((uv - self.uv_px) / sigma_px, axis=1)
        robust = np.where(norm > huber, huber / np.maximum(norm, 1e-12), 1.0)
        sw = np.sqrt(self.weight * robust)[:, None] / sigma_px  # (L, 2) per-coordinate sqrt weight / sigma
        duv = np.zeros((len(y), 2, 3))  # d uv / d y (camera), per landmark
        duv[:, 0, 0], duv[:, 1, 1] = fu / z, fv / z
        duv[:, 0, 2], duv[:, 1, 2] = -fu * y[:, 0] / z ** 2, -fv * y[:, 1] / z ** 2
        dras = np.concatenate([modes.transpose(1, 2, 0), np.broadcast_to(np.eye(3), (len(y), 3, 3))], 2)
        jac = np.einsum("lij,jk,lkp->lip", duv, rotation, dras) * sw[:, :, None]
        return jac.reshape(-1, dras.shape[2]), ((uv - self.uv_px) * sw).reshape(-1)


def _centre_across(mean_c: np.ndarray, uv_px: np.ndarray, w: np.ndarray, depth: float, fu: float, fv: float,
                   principal: np.ndarray) -> np.ndarray:
    """Start value of the centre's camera (x, y) mm: the weighted mean back-projected shift at ``depth``."""
    if w.sum() <= 0:
        return np.zeros(2)
    ray = (uv_px - principal) / [fu, fv]  # (L, 2) = (x, y) / z
    shift = ray * (depth + mean_c[:, 2:3]) - mean_c[:, :2]
    return (w[:, None] * shift).sum(0) / w.sum()
