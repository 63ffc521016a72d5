"""Landmark and surface error statistics (mm)."""

from __future__ import annotations

import numpy as np


def error_2d_mm(uv_pred: np.ndarray, uv_true: np.ndarray, spacing_mm: np.ndarray, magnification: np.ndarray) -> np.ndarray:
    """(B, L) 2D errors in mm at the isocenter plane: pixel distance * detector spacing / (SID/SOD)."""
    return np.linalg.norm(uv_pred - uv_true, axis=-1) * (spacing_mm / magnification)[:, None]


def summary(errors_mm: np.ndarray) -> dict:
    e = np.asarray(errors_mm, float).ravel()
    if e.size == 0:
        return dict(n=0)
    return dict(n=int(e.size), mre_mm=float(e.mean()), sd_mm=float(e.std()), median_mm=float(np.median(e)),
                within_2mm=float((e <= 2).mean()), within_4mm=float((e <= 4).mean()),
                within_10mm=float((e <= 10).mean()))


def landmark_report(labels: list[str], err2d: np.ndarray, err3d: np.ndarray, in_image: np.ndarray) -> dict:
    """Overall, in-image / out-of-image and per-landmark summaries of (B, L) errors."""
    report = {"2d": summary(err2d), "3d": summary(err3d),
              "2d_in_image": summary(err2d[in_image]), "2d_out_of_image": summary(err2d[~in_image]),
              "3d_in_image": summary(err3d[in_image]), "3d_out_of_image": summary(err3d[~in_image]),
              "per_landmark": {}}
    for n, label in enumerate(labels):
        inside = in_image[:, n]
        report["per_landmark"][label] = {"2d": summary(err2d[:, n]), "3d": summary(err3d[:, n]),
                                         "2d_in_image": summary(err2d[inside, n]),
                                         "2d_out_of_image": summary(err2d[~inside, n]),
                                         "3d_in_image": summary(err3d[inside, n]),
                                         "3d_out_of_image": summary(err3d[~inside, n]),
                                         "in_image_share": float(inside.mean())}
    return report
