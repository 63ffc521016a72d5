"""Estimated skull shape: the template skull surface warped to predicted 3D landmarks by a
regularised thin-plate spline (3D kernel U(r) = r). Points in RAS mm."""

from __future__ import annotations

import numpy as np
import torch


def _system(source: np.ndarray, smoothing) -> np.ndarray:
    n = len(source)
    k = np.linalg.norm(source[:, None] - source[None], axis=-1) + np.diag(np.broadcast_to(smoothing, n))
    p = np.concatenate([np.ones((n, 1)), source], 1)
    system = np.zeros((n + 4, n + 4))
    system[:n, :n], system[:n, n:], system[n:, :n] = k, p, p.T
    return system


class ThinPlateSpline:
    """Maps ``source`` (N, 3) landmarks onto ``target`` (N, 3). ``smoothing`` (scalar or (N,),
    mm) relaxes the interpolation per landmark: give low-confidence landmarks a larger value and
    they pull the surface less (0 = exact interpolation)."""

    def __init__(self, source: np.ndarray, target: np.ndarray, smoothing: float | np.ndarray = 0.0):
        source, target = np.asarray(source, float), np.asarray(target, float)
        if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 3 or len(source) < 4:
            raise ValueError("thin-plate spline needs matching (N, 3) landmark arrays with N >= 4")
        n = len(source)
        rhs = np.zeros((n + 4, 3))
        rhs[:n] = target
        self.source = source
        self.coefficients = np.linalg.lstsq(_system(source, smoothing), rhs, rcond=None)[0]  # (N + 4, 3)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        return basis(points, self.source) @ self.coefficients


def basis(points: np.ndarray, source: np.ndarray) -> np.ndarray:
    """(V, N + 4) TPS basis of ``points``: kernel distances to the N ``source`` landmarks, 1, x, y, z."""
    points = np.asarray(points, float)
    return np.concatenate([np.linalg.norm(points[:, None] - source[None], axis=-1), np.ones((len(points), 1)), points], 1)


class TemplateWarp:
    """The template surface (V, 3) warped to predicted landmarks; the vertices' TPS basis is
    computed once, so each frame costs one small solve and one (V, N + 4) product."""

    def __init__(self, template_vertices: np.ndarray, template_landmarks: np.ndarray, smoothing_mm: float = 5.0):
        self.landmarks = np.asarray(template_landmarks, float)
        self.basis = torch.from_numpy(basis(template_vertices, self.landmarks))
        self.smoothing_mm = smoothing_mm

    def __call__(self, predicted_landmarks: np.ndarray, confidence: np.ndarray | None = None) -> np.ndarray:
        """Vertices moved so that the template landmarks go to ``predicted_landmarks`` (RAS mm);
        ``confidence`` in (0, 1] scales each landmark's pull (smoothing_mm * (1 / c - 1))."""
        c = np.ones(len(self.landmarks)) if confidence is None else np.clip(confidence, 0.05, 1.0)
        tps = ThinPlateSpline(self.landmarks, predicted_landmarks, self.smoothing_mm * (1.0 / c - 1.0))
        # torch's product, not numpy's: OpenBLAS's worker threads spin on after a product this size and
        # would take the cores from the next frame's network (the network 2.6x slower on a 2-core CPU)
        return (self.basis @ torch.from_numpy(tps.coefficients)).numpy()


def warp_template(template_vertices: np.ndarray, template_landmarks: np.ndarray, predicted_landmarks: np.ndarray,
                  confidence: np.ndarray | None = None, smoothing_mm: float = 5.0) -> np.ndarray:
    """One-off :class:`TemplateWarp`."""
    return TemplateWarp(template_vertices, template_landmarks, smoothing_mm)(predicted_landmarks, confidence)
