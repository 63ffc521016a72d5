"""Estimated skull shape: the template skull surface warped to predicted 3D landmarks by a
regularised thin-plate spline (3D kernel U(r) = r). Points in RAS mm."""

from __future__ import annotations

import numpy as np


class ThinPlateSpline:
    """Maps ``source`` (N, 3) landmarks onto ``target`` (N, 3). ``smoothing`` (scalar or (N,),
    mm) relaxes the interpolation per landmark: give low-confidence landmarks a larger value and
    they pull the surface less (0 = exact interpolation)."""

    def __init__(self, source: np.ndarray, target: np.ndarray, smoothing: float | np.ndarray = 0.0):
        source, target = np.asarray(source, float), np.asarray(target, float)
        if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 3 or len(source) < 4:
            raise ValueError("thin-plate spline needs matching (N, 3) landmark arrays with N >= 4")
        n = len(source)
        k = np.linalg.norm(source[:, None] - source[None], axis=-1) + np.diag(np.broadcast_to(smoothing, n))
        p = np.concatenate([np.ones((n, 1)), source], 1)
        system = np.zeros((n + 4, n + 4))
        system[:n, :n], system[:n, n:], system[n:, :n] = k, p, p.T
        rhs = np.zeros((n + 4, 3))
        rhs[:n] = target
        solution = np.linalg.lstsq(system, rhs, rcond=None)[0]
        self.source, self.weights, self.affine = source, solution[:n], solution[n:]

    def __call__(self, points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, float)
        u = np.linalg.norm(points[:, None] - self.source[None], axis=-1)
        return u @ self.weights + self.affine[0] + points @ self.affine[1:]


def warp_template(template_vertices: np.ndarray, template_landmarks: np.ndarray, predicted_landmarks: np.ndarray,
                  confidence: np.ndarray | None = None, smoothing_mm: float = 5.0) -> np.ndarray:
    """Template surface vertices (V, 3) moved so that the template landmarks go to the predicted
    ones; ``confidence`` in (0, 1] scales each landmark's pull (smoothing_mm / confidence)."""
    c = np.ones(len(predicted_landmarks)) if confidence is None else np.clip(confidence, 0.05, 1.0)
    return ThinPlateSpline(template_landmarks, predicted_landmarks, smoothing_mm * (1.0 / c - 1.0))(template_vertices)
