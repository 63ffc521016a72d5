"""Synthetic lower head and neck below a head CT that ends at the upper teeth.

The sample CT stops at the upper teeth, so its DRRs end in a flat cut that no patient has, and
real radiographs show a mandible, lower teeth, cervical spine, airway and neck there. This draws a
random one per head variant from anthropometric proportions of the CT's own landmarks: mandible
(rami, body and symphysis as a bony plate along a parabolic arch), lower teeth, cervical vertebral
bodies with spinous processes, a pharyngeal airway, and neck / chin soft tissue tapering from the
CT's lowest slice. No landmark lies in it; it teaches the network what lies below the face.

Frames: patient RAS in mm; arrays ``[k, j, i]`` with a 4x4 IJK->RAS matrix whose k axis points
superior (k = 0 is the CT's inferior edge).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch

ANCHORS = ("dens_tip", "a_point", "anterior_nasal_spine", "zygion_right", "zygion_left")


@dataclass(frozen=True)
class LowerHead:
    """Anchors: RAS mm positions of :data:`ANCHORS` on the template; ``depth_mm`` below its edge."""

    anchors_ras: dict
    depth_mm: float = 100.0

    @classmethod
    def from_landmarks(cls, labels: list[str], points_ras: np.ndarray, depth_mm: float = 100.0) -> "LowerHead":
        missing = [a for a in ANCHORS if a not in labels]
        if missing:
            raise ValueError(f"a synthetic lower head needs the landmarks {', '.join(missing)}")
        return cls({a: np.asarray(points_ras[labels.index(a)], float) for a in ANCHORS}, float(depth_mm))

    def extend(self, hu: np.ndarray, ijk_to_ras: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(hu [k, j, i] with ``depth_mm`` of random lower head prepended along k, its IJK->RAS)."""
        axis = ijk_to_ras[:3, 2]
        if not (np.allclose(ijk_to_ras[2, :2], 0.0, atol=1e-6) and axis[2] > 0 and np.allclose(axis[:2], 0.0)):
            raise ValueError("a synthetic lower head needs an axial template whose k axis points superior")
        nk = int(np.ceil(self.depth_mm / axis[2]))
        shift = np.eye(4)
        shift[2, 3] = -nk
        m = ijk_to_ras @ shift
        nj, ni = hu.shape[1:]
        kk, jj, ii = np.meshgrid(np.arange(nk), np.arange(nj), np.arange(ni), indexing="ij")
        ras = (np.stack([ii, jj, kk, np.ones_like(ii)], -1) @ m.T)[..., :3]
        ext = _anatomy(ras, _edge_body(hu[0], ijk_to_ras), self.anchors_ras, float(ras[..., 2].max()), rng)
        return np.concatenate([ext.astype(np.float32), hu.astype(np.float32)]), m


def _edge_body(edge_slice: np.ndarray, ijk_to_ras: np.ndarray):
    """Membership test f(xy (..., 2) RAS mm) -> (...) bool of the head in the CT's lowest slice (its
    largest region above -300 HU: not the head rest)."""
    regions = sitk.GetArrayFromImage(sitk.RelabelComponent(sitk.ConnectedComponent(
        sitk.GetImageFromArray((edge_slice > -300).astype(np.uint8)))))
    inside = regions == 1
    to_ij = np.linalg.inv(ijk_to_ras[:2, :2])

    def contains(xy: np.ndarray) -> np.ndarray:
        i, j = np.moveaxis(np.round((xy - ijk_to_ras[:2, 3]) @ to_ij.T).astype(int), -1, 0)
        ok = (i >= 0) & (i < inside.shape[1]) & (j >= 0) & (j < inside.shape[0])
        out = np.zeros(xy.shape[:-1], bool)
        out[ok] = inside[j[ok], i[ok]]
        return out
    return contains


def _tube(grid: np.ndarray, curves: list[np.ndarray], reach_mm: float, piece: int = 16) -> np.ndarray:
    """Distance (mm) of each grid point (nk, nj, ni, 3) RAS to the nearest of densely sampled curves
    (each (M, 3) RAS); exact up to ``reach_mm``, inf or an upper bound beyond it. Each piece of
    ``piece`` consecutive curve points is compared only with the grid's index box within reach of it."""
    out = torch.full(grid.shape[:3], float("inf"))
    points = torch.from_numpy(grid).float()
    origin, step = grid[0, 0, 0], np.stack([grid[0, 0, 1], grid[0, 1, 0], grid[1, 0, 0]]) - grid[0, 0, 0]
    to_ijk = np.linalg.inv(step)  # rows: RAS step per i, j, k
    for curve in curves:
        for part in np.array_split(curve, max(1, len(curve) // piece)):
            lo, hi = part.min(0) - reach_mm, part.max(0) + reach_mm
            corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
            ijk = (corners - origin) @ to_ijk
            a = np.clip(np.floor(ijk.min(0)).astype(int), 0, None)
            b = np.minimum(np.ceil(ijk.max(0)).astype(int) + 1, grid.shape[2::-1])
            if (b <= a).any():
                continue
            box = (slice(a[2], b[2]), slice(a[1], b[1]), slice(a[0], b[0]))
            near = torch.cdist(points[box].reshape(-1, 3), torch.from_numpy(part).float(),
                               compute_mode="donot_use_mm_for_euclid_dist").min(1).values
            out[box] = torch.minimum(out[box], near.reshape(out[box].shape))
    return out.numpy()


def _anatomy(ras: np.ndarray, edge_body, a: dict, z_edge: float, rng: np.random.Generator) -> np.ndarray:
    """HU at the grid points (nk, nj, ni, 3) RAS of the extension, whose top slice ``z_edge`` adjoins the CT."""
    u = rng.uniform
    x, y, z = np.moveaxis(ras, -1, 0)
    mid = (a["zygion_right"][0] + a["zygion_left"][0]) / 2
    width = abs(a["zygion_left"][0] - a["zygion_right"][0])
    spine_y = a["dens_tip"][1]  # anterior is +y
    chin_y = a["a_point"][1] - u(0, 8)
    menton_z = a["anterior_nasal_spine"][2] - u(60, 75)
    occlusal_z = z_edge - u(0, 5)
    gonion = np.array([width * u(0.36, 0.42), spine_y + u(15, 30), z_edge - u(20, 35)])

    hu = np.full(ras.shape[:3], -1000.0)
    submental_z = menton_z - u(5, 12)
    # Soft tissue: the lowest slice's head outline shrinking about the neck's centre into the neck
    # (to 60-75 % over 25-45 mm), and around the mandible down to below the chin.
    centre = np.array([mid, spine_y + u(0, 10)])
    shrink = 1 - np.clip((z_edge - z) / u(25, 45), 0, 1) * (1 - u(0.6, 0.75))
    source = centre + (ras[..., :2] - centre) / shrink[..., None]
    soft = edge_body(source)
    # Airway: anterior to the spine.
    airway_y = spine_y + u(18, 28)
    airway = ((x - mid) / u(9, 14)) ** 2 + ((y - airway_y) / u(5, 9)) ** 2 <= 1
    # Cervical vertebral bodies (C2 continues below the dens) and spinous processes.
    body_hu, top = u(250, 450), a["dens_tip"][2] - u(18, 24)
    rx, ry = u(8, 10), u(7, 9)
    vertebrae, processes = np.zeros(ras.shape[:3], bool), np.zeros(ras.shape[:3], bool)
    while top > z.min() - 20:
        height = u(12, 16)
        inside = (((x - mid) / rx) ** 2 + ((y - spine_y) / ry) ** 2 <= 1) & (z <= top) & (z > top - height)
        vertebrae |= inside
        t = np.linspace(0, 1, 40)  # along the process, backwards and down
        process = np.c_[np.full(40, mid), spine_y - ry - 8 - t * u(20, 30), top - height / 2 - t * 8]
        processes |= _tube(ras, [process], 5) <= u(3, 4.5)
        top -= height + u(3, 5)
    # Mandible: a plate from the inferior border to the alveolar crest along a parabolic arch,
    # and the rami from the gonial angles up to the CT's edge; lower teeth on the arch.
    s = np.linspace(-1, 1, 161)

    def arch(height_z: np.ndarray) -> np.ndarray:
        return np.c_[mid + s * gonion[0], chin_y + (gonion[1] - chin_y) * s ** 2, height_z]

    inferior = menton_z + (gonion[2] - menton_z) * s ** 2
    crest = occlusal_z - u(8, 11)
    curves = [arch(inferior + f * np.maximum(crest - inferior, 0)) for f in np.linspace(0, 1, 8)]
    for side in (-1, 1):
        t = np.linspace(0, 1, 40)[:, None]
        for offset in (0.0, 10.0, 20.0):
            start = np.array([mid + side * gonion[0], gonion[1] + offset * 0.6, gonion[2] + offset * 0.5])
            end = np.array([mid + side * gonion[0] * u(0.95, 1.05), gonion[1] + offset + u(-4, 4), z_edge + 3])
            curves.append(start + t * (end - start))
    mandible = _tube(ras, curves, 18)
    soft |= (mandible <= u(12, 18)) & (z > submental_z)
    hu[soft] = u(20, 55) + rng.normal(0, 8, int(soft.sum()))
    hu[airway & (z > submental_z - 30)] = -1000.0
    hu[vertebrae] = body_hu
    hu[processes] = u(500, 800)
    hu[mandible <= u(4, 6)] = u(900, 1400)
    teeth = arch(np.full_like(s, occlusal_z - 4))[np.abs(s) <= 0.8][::12]
    hu[_tube(ras, [teeth, teeth - [0, 0, 5]], 4) <= u(3, 4)] = u(1800, 2800)
    return hu
