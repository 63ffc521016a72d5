"""DRR synthesis on MRML nodes: CT + 3D landmarks in, DRRs + projected 2D landmarks out.

Used by the FluoroLandmarks module's logic, the ``fluoro-landmarks`` command line and the tests.
Input nodes are only read. All positions are RAS mm, detector positions are pixels.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import mrml
from .drr import MU_WATER_PER_MM, DRRRenderer, detector_image, hu_to_mu, validate_volume
from .geometry import CArmGeometry, Collimation

OUTPUT_KINDS = ("line-integral", "image")
GEOMETRY_ATTRIBUTE = "FluoroLandmarks.geometry"  # node attribute: the C-arm geometry (JSON) of a 2D frame


def parse_views(text: str) -> tuple[tuple[float, float], ...]:
    """Angle pairs from text such as ``"0/0, 90/0, 30/15"`` (primary/secondary, degrees)."""
    views = []
    for item in text.replace(";", ",").split(","):
        if item.strip():
            parts = item.split("/")
            try:
                primary, secondary = (float(x) for x in parts)
            except ValueError:
                raise ValueError(f"view {item.strip()!r} is not PRIMARY/SECONDARY in degrees, e.g. 90/0") from None
            views.append((primary, secondary))
    return tuple(views)


@dataclass(frozen=True)
class DRRParameters:
    """What to render. ``views`` = (primary, secondary) angle pairs in degrees (LAO+/CRAN+);
    ``isocenter_ras`` = None uses the centre of the CT volume (RAS mm)."""

    views: tuple[tuple[float, float], ...] = ((0.0, 0.0),)
    sid_mm: float = 1000.0
    sod_mm: float = 750.0
    detector_size_px: tuple[int, int] = (256, 256)
    pixel_spacing_mm: tuple[float, float] = (1.2, 1.2)
    isocenter_ras: tuple[float, float, float] | None = None
    collimation: Collimation = field(default_factory=Collimation)
    output: str = "line-integral"
    photons_per_pixel: float | None = None
    seed: int = 0
    mu_water_per_mm: float = MU_WATER_PER_MM

    def __post_init__(self):
        if self.output not in OUTPUT_KINDS:
            raise ValueError(f"output must be one of {OUTPUT_KINDS}, got {self.output!r}")
        if not self.views:
            raise ValueError("at least one view (primary, secondary angle pair) is needed")

    def geometries(self, isocenter_ras) -> list[CArmGeometry]:
        return [CArmGeometry(tuple(float(x) for x in isocenter_ras), float(p), float(s), self.sid_mm, self.sod_mm,
                             tuple(self.detector_size_px), tuple(self.pixel_spacing_mm), self.collimation)
                for p, s in self.views]


@dataclass
class DRRView:
    """One rendered view and its MRML nodes."""

    geometry: CArmGeometry
    image: np.ndarray  # (nv, nu) float32
    labels: list[str]
    landmarks_px: np.ndarray  # (N, 2) u, v in pixels
    depth_mm: np.ndarray  # (N,) distance from the source along the principal ray
    in_field: np.ndarray  # (N,) bool
    nodes: dict = field(default_factory=dict)


def volume_center_ras(shape_kji: tuple[int, int, int], ijk_to_ras: np.ndarray) -> np.ndarray:
    centre_ijk = (np.array(shape_kji[::-1], dtype=float) - 1.0) / 2.0
    return ijk_to_ras[:3, :3] @ centre_ijk + ijk_to_ras[:3, 3]


def render_views(ct_hu: np.ndarray, ijk_to_ras: np.ndarray, params: DRRParameters,
                 labels: list[str] | None = None, landmarks_ras: np.ndarray | None = None) -> list[DRRView]:
    """Pure part: DRRs and projected landmarks for each view (no MRML)."""
    validate_volume(ct_hu, ijk_to_ras, "CT")
    iso = volume_center_ras(ct_hu.shape, ijk_to_ras) if params.isocenter_ras is None else params.isocenter_ras
    geometries = params.geometries(iso)
    renderer = DRRRenderer(hu_to_mu(ct_hu, params.mu_water_per_mm), ijk_to_ras)
    lines = renderer.render(geometries)
    rng = np.random.default_rng(params.seed)
    labels = list(labels or [])
    points = np.zeros((0, 3)) if landmarks_ras is None else np.asarray(landmarks_ras, dtype=float).reshape(-1, 3)
    views = []
    for g, line in zip(geometries, lines):
        image = line if params.output == "line-integral" else detector_image(line, g, params.photons_per_pixel, rng)
        uv, depth = g.project(points)
        views.append(DRRView(g, image, labels, uv, depth, g.in_field(points) if len(points) else np.zeros(0, bool)))
    return views


def synthesize(app_logic, ct_node, landmarks_node, params: DRRParameters, name: str = "DRR") -> list[DRRView]:
    """Render the views of ``ct_node`` (HU) and add their nodes to the scene: DRR volume on the
    detector plane, 2D landmarks on that plane, X-ray source, beam model and geometry (JSON text).
    With several views the nodes are also gathered in a sequence browser."""
    if ct_node is None:
        raise ValueError("No CT volume selected")
    ct, ijk_to_ras = mrml.volume_to_numpy(ct_node)
    labels, points = ([], None)
    if landmarks_node is not None:
        if landmarks_node.GetNumberOfControlPoints() == 0:
            raise ValueError(f"Landmarks node '{landmarks_node.GetName()}' has no control points")
        labels, points = mrml.markups_to_numpy(landmarks_node)
    views = render_views(ct, ijk_to_ras, params, labels, points)
    scene = app_logic.GetMRMLScene()
    for n, view in enumerate(views):
        g = view.geometry
        suffix = f" {n:03d}" if len(views) > 1 else ""
        nodes = view.nodes
        nodes["drr"] = mrml.add_image_volume(scene, f"{name}{suffix}", view.image, g.detector_ijk_to_ras)
        nodes["drr"].SetAttribute(GEOMETRY_ATTRIBUTE, json.dumps(g.to_dict()))
        nodes["source"] = mrml.add_points(scene, f"{name} source{suffix}", ["X-ray source"], g.source_ras[None],
                                          color=(1.0, 1.0, 0.3), glyph_scale=4.0)
        nodes["beam"] = mrml.add_beam_model(scene, f"{name} beam{suffix}", g)
        nodes["geometry"] = mrml.add_text(scene, f"{name} geometry{suffix}", json.dumps(g.to_dict()))
        if labels:
            nodes["landmarks_2d"] = mrml.add_points(scene, f"{name} landmarks 2D{suffix}", labels,
                                                    g.detector_point_ras(view.landmarks_px), view.in_field)
    if len(views) > 1:
        roles = {role: [v.nodes[role] for v in views] for role in views[0].nodes if role != "geometry"}
        browser = mrml.add_view_sequences(app_logic, f"{name} views", roles)
        for v in views:
            v.nodes["browser"] = browser
    return views


def landmarks_csv(view: DRRView) -> str:
    """CSV text: label,u,v,in_field (u = column, v = row of the DRR; 0 = centre of first pixel)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["label", "u", "v", "in_field"])
    for label, (u, v), inside in zip(view.labels, view.landmarks_px, view.in_field):
        writer.writerow([label, f"{u:.4f}", f"{v:.4f}", int(inside)])
    return out.getvalue()


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    tmp.write_text(text)
    os.replace(tmp, path)


def export_views(scene, views: list[DRRView], out_dir: str | os.PathLike) -> list[Path]:
    """Write each view's drr.nrrd, landmarks_2d.mrk.json/.csv, geometry.json (``_NNN`` suffixes
    when there are several views) and scene.mrb into ``out_dir``. Returns the written paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for n, view in enumerate(views):
        sfx = f"_{n:03d}" if len(views) > 1 else ""
        mrml.save_node(view.nodes["drr"], out / f"drr{sfx}.nrrd")
        written.append(out / f"drr{sfx}.nrrd")
        write_text_atomic(out / f"geometry{sfx}.json", json.dumps(view.geometry.to_dict(), indent=2))
        written.append(out / f"geometry{sfx}.json")
        if "landmarks_2d" in view.nodes:
            mrml.save_node(view.nodes["landmarks_2d"], out / f"landmarks_2d{sfx}.mrk.json")
            write_text_atomic(out / f"landmarks_2d{sfx}.csv", landmarks_csv(view))
            written += [out / f"landmarks_2d{sfx}.mrk.json", out / f"landmarks_2d{sfx}.csv"]
    mrml.save_bundle(scene, out / "scene.mrb")
    written.append(out / "scene.mrb")
    return written


