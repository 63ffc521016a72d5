"""Evaluation of a landmark model on a synthetic dataset: 2D error at the isocenter plane, 3D
error, in/out-of-image split, per landmark, and the estimated skull's surface error."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch

from .dataset import IMAGE_SIZE, geometry_from_arrays
from .inference import PRESENCE_THRESHOLD, LandmarkModel, place, place_views, predict_network_frame, resized
from .metrics import error_2d_mm, landmark_report, summary
from .population import Deformation
from .shape_model import HEAD_DEPTH_SD_MM
from .shape import TemplateWarp


def predict_images(model: LandmarkModel, images: np.ndarray, batch: int = 64) -> dict[str, np.ndarray]:
    """:func:`predict_network_frame` over (N, S, S) images (S = 256, or a multiple of it: a finer set that
    is resampled to the network frame, and read as it is by a local network of that resolution),
    ``batch`` at a time; ``uv`` in the images' px."""
    size = images.shape[-1]
    parts = []
    for s in range(0, len(images), batch):
        chunk = torch.from_numpy(images[s:s + batch]).float()
        fine = chunk if model.local_net is not None and size == IMAGE_SIZE * model.local_zoom else None
        parts.append(predict_network_frame(model, resized(chunk, IMAGE_SIZE), fine=fine))
    out = {key: np.concatenate([q[key] for q in parts]) for key in parts[0]}
    out["uv"] = (out["uv"] + 0.5) * (size / IMAGE_SIZE) - 0.5
    return out


def predict_dataset(model: LandmarkModel, data: dict, batch: int = 64, shape_fit: bool = True) -> dict[str, np.ndarray]:
    """Predictions for every sample: ``uv`` (B, L, 2) px, ``depth`` (B, L) mm, ``xyz_ras`` (B, L, 3)
    mm, ``confidence`` (B, L); also the network's own ``uv_network``, ``depth_network``, ``xyz_ras_network``."""
    p = predict_images(model, data["images"], batch)
    out: dict[str, list] = {}
    for n in range(len(p["uv"])):
        g = geometry_from_arrays(data, n)
        for suffix, fit in (("", shape_fit), ("_network", False)):
            uv, depth, xyz = place(model, p["uv"][n], p["depth_offset"][n], p["confidence"][n], g, fit)
            for key, value in (("uv", uv), ("depth", depth), ("xyz_ras", xyz)):
                out.setdefault(key + suffix, []).append(value)
    return dict({key: np.stack(v) for key, v in out.items()}, confidence=p["confidence"])


def choose_local_landmarks(model: LandmarkModel, data: dict, batch: int = 64) -> dict:
    """On a validation ``data`` set: per landmark, the mean 2D error (mm, isocenter plane) of the
    network's estimates of the landmarks in the image, global only and locally refined; the
    model's local landmarks are those the refinement improves. Returns ``local_landmarks`` and
    ``per_landmark`` {label: {global_mm, local_mm, n}} (None when never in the image)."""
    if model.local_net is None:
        raise ValueError("the model has no local network")
    magnification = data["sid_sod"][:, 0] / data["sid_sod"][:, 1]
    errors, variants = {}, dict(global_mm=replace(model, local_net=None), local_mm=replace(model, local_landmarks=None))
    for name, variant in variants.items():
        uv = predict_images(variant, data["images"], batch)["uv"]
        errors[name] = error_2d_mm(uv, data["uv"], data["spacing"][:, 0], magnification)
    inside = data["in_image"].astype(bool)
    per_landmark = {label: dict({name: float(e[inside[:, n], n].mean()) if inside[:, n].any() else None
                                 for name, e in errors.items()}, n=int(inside[:, n].sum()))
                    for n, label in enumerate(model.labels)}
    chosen = [label for label, r in per_landmark.items() if r["n"] and r["local_mm"] < r["global_mm"]]
    return dict(local_landmarks=chosen, per_landmark=per_landmark)


def true_2d_bound(model: LandmarkModel, data: dict, sigma_mm: float = 1.0,
                  head_depth_mm: np.ndarray | None = None) -> np.ndarray:
    """(B, L) 3D errors (mm) of the shape-model fit to the true 2D positions of the landmarks in
    the image, trusted to ``sigma_mm``: what this 3D method gives with a perfect 2D detector (the
    head's unknown place along the beam remains, unless its (B,) ``head_depth_mm`` are given,
    taken as known to ``HEAD_DEPTH_SD_MM``)."""
    fits = [model.shape.fit(data["uv"][n], data["in_image"][n].astype(float), geometry_from_arrays(data, n), sigma_mm,
                            head_depth_mm=None if head_depth_mm is None else head_depth_mm[n])
            for n in range(len(data["uv"]))]
    return np.linalg.norm(np.stack([f.points_ras for f in fits]) - data["xyz_ras"], axis=-1)


def head_depths_mm(data: dict) -> np.ndarray:
    """(B,) true distance (mm) from the source to each sample's head centre along the principal ray."""
    out = []
    for n in range(len(data["def_centre"])):
        g = geometry_from_arrays(data, n)
        out.append(g.world_to_camera[2, :3] @ data["def_centre"][n] + g.world_to_camera[2, 3])
    return np.array(out)


def noisy_head_depths_mm(data: dict, sd_mm: float = HEAD_DEPTH_SD_MM, seed: int = 0) -> np.ndarray:
    """(B,) head depths as a user would know them: the true ones plus Gaussian noise of ``sd_mm``."""
    return head_depths_mm(data) + np.random.default_rng(seed).normal(0.0, sd_mm, len(data["uv"]))


def known_depth_errors(model: LandmarkModel, data: dict, pred: dict, known: np.ndarray) -> np.ndarray:
    """(B, L) 3D errors (mm) when each sample's head depth is given as ``known`` (B,) mm (as to
    ``detect --head-depth``), from the network's own estimates in ``pred`` (:func:`predict_dataset`)."""
    xyz = []
    for n in range(len(known)):
        g = geometry_from_arrays(data, n)
        xyz.append(place(model, pred["uv_network"][n], pred["depth_network"][n] - g.sod_mm, pred["confidence"][n], g,
                         head_depth_mm=known[n])[2])
    return np.linalg.norm(np.stack(xyz) - data["xyz_ras"], axis=-1)


def second_views(data: dict) -> np.ndarray:
    """(B,) for each sample, another sample of the same head variant: the one whose beam is closest
    to perpendicular to its own, as a biplane C-arm's second plane (-1 when the head has no other)."""
    heads = np.unique(data["def_matrix"].reshape(len(data["uv"]), -1), axis=0, return_inverse=True)[1].ravel()
    beams = np.stack([geometry_from_arrays(data, n).beam_direction for n in range(len(heads))])
    out = np.full(len(heads), -1)
    for n in range(len(heads)):
        others = np.flatnonzero((heads == heads[n]) & (np.arange(len(heads)) != n))
        if len(others):
            out[n] = others[np.argmin(np.abs(beams[others] @ beams[n]))]
    return out


def two_view_errors(model: LandmarkModel, data: dict, pred: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each sample fitted together with its :func:`second_views` frame (the network's own estimates
    in ``pred``, :func:`predict_dataset`): (B', L) 2D errors (mm, isocenter plane) in the sample's
    frame, (B', L) 3D errors (mm), and the (B',) angles between the two beams (degrees), over the
    B' samples that have a second view."""
    second = second_views(data)
    err2d, err3d, angles = [], [], []
    magnification = data["sid_sod"][:, 0] / data["sid_sod"][:, 1]
    for n in np.flatnonzero(second >= 0):
        m = second[n]
        g, h = geometry_from_arrays(data, n), geometry_from_arrays(data, m)
        (uv, _), _, xyz = place_views(model, [(pred["uv_network"][n], pred["confidence"][n], g),
                                             (pred["uv_network"][m], pred["confidence"][m], h)])
        err2d.append(error_2d_mm(uv[None], data["uv"][n:n + 1], data["spacing"][n:n + 1, 0], magnification[n:n + 1])[0])
        err3d.append(np.linalg.norm(xyz - data["xyz_ras"][n], axis=-1))
        angles.append(np.degrees(np.arccos(np.clip(abs(g.beam_direction @ h.beam_direction), 0, 1))))
    return np.stack(err2d), np.stack(err3d), np.array(angles)


def skull_errors(data: dict, xyz_pred: np.ndarray, confidence: np.ndarray, template_vertices: np.ndarray,
                 template_landmarks: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Mean distance (mm) per sample between the warped template skull and the sample's true skull
    (the template moved by the sample's head-variant deformation), vertex to corresponding vertex."""
    out, warp = [], TemplateWarp(template_vertices, template_landmarks)
    for n in samples:
        d = Deformation(data["def_matrix"][n], data["def_centre"][n], data["def_offset"][n], data["def_field"][n],
                        data["def_box"][n])
        truth = d.to_variant(template_vertices)
        warped = warp(xyz_pred[n], confidence[n])
        out.append(np.linalg.norm(warped - truth, axis=1).mean())
    return np.array(out)


def evaluate(model: LandmarkModel, meta: dict, data: dict, template_vertices: np.ndarray | None = None,
             template_landmarks: np.ndarray | None = None, skull_samples: int = 200) -> dict:
    if list(meta["labels"]) != list(model.labels):
        raise ValueError("the dataset's landmarks differ from the model's")
    start = time.perf_counter()
    pred = predict_dataset(model, data)
    seconds = time.perf_counter() - start
    magnification = data["sid_sod"][:, 0] / data["sid_sod"][:, 1]
    err2d = error_2d_mm(pred["uv"], data["uv"], data["spacing"][:, 0], magnification)
    err3d = np.linalg.norm(pred["xyz_ras"] - data["xyz_ras"], axis=-1)
    in_image = data["in_image"].astype(bool)
    report = landmark_report(list(model.labels), err2d, err3d, in_image)
    if model.shape is not None:
        net2d = error_2d_mm(pred["uv_network"], data["uv"], data["spacing"][:, 0], magnification)
        net3d = np.linalg.norm(pred["xyz_ras_network"] - data["xyz_ras"], axis=-1)
        report["network_without_shape_fit"] = {key: value for key, value in landmark_report(
            list(model.labels), net2d, net3d, in_image).items() if key != "per_landmark"}
        report["3d_from_true_2d"] = summary(true_2d_bound(model, data))
        known = noisy_head_depths_mm(data)
        report["3d_known_head_depth"] = dict(summary(known_depth_errors(model, data, pred, known)),
                                             head_depth_sd_mm=HEAD_DEPTH_SD_MM)
        report["3d_from_true_2d_known_head_depth"] = summary(true_2d_bound(model, data, head_depth_mm=known))
        if (second_views(data) >= 0).any():
            two2d, two3d, angles = two_view_errors(model, data, pred)
            report["two_views"] = {"2d": summary(two2d), "3d": summary(two3d), "beam_angle_deg": dict(
                min=float(angles.min()), median=float(np.median(angles)), max=float(angles.max()))}
    eyes = [model.labels.index(n) for n in ("eye_lens_right", "eye_lens_left") if n in model.labels]
    if eyes:
        in_field = np.stack([geometry_from_arrays(data, n).in_field_px(pred["uv"][n, eyes]) for n in range(len(err2d))])
        predicted_in = in_field & (pred["confidence"][:, eyes] > PRESENCE_THRESHOLD)
        truth = in_image[:, eyes]
        report["eye_lens_in_field_accuracy"] = float((predicted_in == truth).mean())
        report["eye_lens_missed"] = float((~predicted_in[truth]).mean()) if truth.any() else 0.0
        report["eye_lens_false_alarm"] = float(predicted_in[~truth].mean()) if (~truth).any() else 0.0
    if template_vertices is not None:
        chosen = np.linspace(0, len(err2d) - 1, min(skull_samples, len(err2d))).astype(int)
        report["skull_surface"] = summary(skull_errors(data, pred["xyz_ras"], pred["confidence"], template_vertices,
                                                       template_landmarks, chosen))
    report.update(samples=int(len(err2d)), within_10mm_2d=report["2d"]["within_10mm"],
                  within_10mm_3d=report["3d"]["within_10mm"], mre_2d_mm=report["2d"]["mre_mm"],
                  mre_3d_mm=report["3d"]["mre_mm"], frames_per_second_batched=len(err2d) / seconds)
    return report
