"""A synthetic head population from one CT: random shape (per-axis scaling, small affine, smooth
elastic deformation), intensity variation and optional contrast-filled vessels; the landmarks move
by exactly the same transform.

Frames: patient RAS in mm; arrays are indexed ``[k, j, i]`` with a 4x4 IJK->RAS matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .lower_head import LowerHead

IODINE_HU = (350.0, 700.0)  # contrast-filled vessel, typical arterial-phase range


def _rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    return (np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
            @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]))


@dataclass(frozen=True)
class ShapeVariation:
    """How far head variants depart from the template: per-axis scale factors drawn from ``scale``
    (lo, hi) and an elastic field whose grid nodes move by N(0, (``elastic_mm`` / 2)²) mm per axis."""

    scale: tuple[float, float] = (0.9, 1.1)
    elastic_mm: float = 3.0

    def __post_init__(self):
        lo, hi = self.scale
        if not 0.5 <= lo <= hi <= 1.5:
            raise ValueError(f"scale range must satisfy 0.5 <= lo <= hi <= 1.5, not {self.scale}")
        if not 0.0 <= self.elastic_mm <= 15.0:  # the fixed-point inverse is tested up to 15 mm
            raise ValueError(f"elastic deformation must be within 0..15 mm, not {self.elastic_mm}")


DEFAULT_VARIATION = ShapeVariation()


@dataclass
class Deformation:
    """Maps a variant's RAS points to the template's: x = A (y - c) + c + b + e(y), where e is a
    smooth displacement field (mm) on a coarse grid spanning ``box`` (RAS mm, 2x3 lo/hi)."""

    matrix: np.ndarray  # (3, 3)
    centre: np.ndarray  # (3,) c
    offset: np.ndarray  # (3,) b
    field: np.ndarray  # (3, gz, gy, gx) displacement in mm, grid axes along R (x), A (y), S (z)
    box: np.ndarray  # (2, 3)

    @classmethod
    def random(cls, rng: np.random.Generator, centre_ras: np.ndarray, box: np.ndarray, scale=(0.9, 1.1),
               rotation_deg: float = 4.0, shear: float = 0.04, shift_mm: float = 3.0,
               elastic_mm: float = 3.0, grid: int = 5) -> "Deformation":
        s = np.diag(rng.uniform(*scale, size=3))
        r = _rotation(*np.radians(rng.uniform(-rotation_deg, rotation_deg, size=3)))
        h = np.eye(3) + rng.uniform(-shear, shear, size=(3, 3)) * (1 - np.eye(3))
        field = rng.normal(0.0, elastic_mm / 2, size=(3, grid, grid, grid))
        field[:, [0, -1]] = field[:, :, [0, -1]] = field[:, :, :, [0, -1]] = 0.0  # fixed far boundary
        return cls(r @ h @ s, np.asarray(centre_ras, float), rng.uniform(-shift_mm, shift_mm, size=3), field,
                   np.asarray(box, float))

    @classmethod
    def identity(cls, centre_ras, box) -> "Deformation":
        return cls(np.eye(3), np.asarray(centre_ras, float), np.zeros(3), np.zeros((3, 2, 2, 2)), np.asarray(box, float))

    def _elastic(self, y: torch.Tensor) -> torch.Tensor:
        """Displacement (N, 3) mm at RAS points y (N, 3), cubic-smooth trilinear on the grid."""
        lo, hi = (torch.from_numpy(v).to(y.dtype) for v in self.box)
        g = (2 * (y - lo) / (hi - lo) - 1).to(torch.float32)
        out = F.grid_sample(torch.from_numpy(self.field).float()[None], g[None, :, None, None],
                            mode="bilinear", padding_mode="zeros", align_corners=True)
        return out[0, :, :, 0, 0].T.to(y.dtype)

    def to_template(self, points_ras: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Template RAS (N, 3) mm of variant points: float64 numpy in and out, or a tensor in its own dtype."""
        y = points_ras if torch.is_tensor(points_ras) else torch.from_numpy(np.asarray(points_ras, float))
        a, c, b = (torch.from_numpy(v).to(y.dtype) for v in (self.matrix, self.centre, self.offset))
        x = (y - c) @ a.T + c + b + self._elastic(y)
        return x if torch.is_tensor(points_ras) else x.numpy()

    def to_variant(self, points_ras: np.ndarray, iterations: int = 12) -> np.ndarray:
        """Inverse of :meth:`to_template` by fixed-point iteration (the elastic part is small)."""
        x = np.asarray(points_ras, float)
        a_inv = np.linalg.inv(self.matrix)
        y = (x - self.centre - self.offset) @ a_inv.T + self.centre
        for _ in range(iterations):
            e = self._elastic(torch.from_numpy(y)).numpy()
            y = (x - self.centre - self.offset - e) @ a_inv.T + self.centre
        return y


@dataclass
class HeadVariant:
    hu: np.ndarray  # [k, j, i] float32
    ijk_to_ras: np.ndarray  # 4x4
    landmarks_ras: np.ndarray  # (L, 3)
    deformation: Deformation
    vessels: bool


class HeadPopulation:
    """Draws head variants of a template CT on a grid ``factor`` times coarser (default 2: the
    DRRs of the training set are rendered from it), shaped as ``variation`` says; with
    ``lower_head`` each variant also gets a random synthetic mandible and neck below the CT's
    inferior edge. ``centre`` (RAS mm) is the CT's own centre either way."""

    def __init__(self, hu: np.ndarray, ijk_to_ras: np.ndarray, landmarks_ras: np.ndarray, factor: int = 2,
                 lower_head: LowerHead | None = None, variation: ShapeVariation = DEFAULT_VARIATION):
        hu_t = torch.from_numpy(np.asarray(hu, np.float32))[None, None]
        self._template = (F.avg_pool3d(hu_t, factor, ceil_mode=True) if factor > 1 else hu_t)[0, 0].numpy()
        half = (factor - 1) / 2.0
        scale = np.diag([factor, factor, factor, 1.0])
        scale[:3, 3] = half
        self.ijk_to_ras = np.asarray(ijk_to_ras, float) @ scale  # coarse grid
        self.landmarks_ras = np.asarray(landmarks_ras, float)
        self.lower_head = lower_head
        self.variation = variation
        self.centre = _box(self._template.shape, self.ijk_to_ras).mean(0)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self._template.shape)

    def sample(self, rng: np.random.Generator, vessel_probability: float = 0.3, identity: bool = False) -> HeadVariant:
        template, ijk_to_ras = self._template, self.ijk_to_ras
        if self.lower_head is not None:
            template, ijk_to_ras = self.lower_head.extend(template, ijk_to_ras, rng)
        box = _box(template.shape, ijk_to_ras)
        d = (Deformation.identity(self.centre, box) if identity else
             Deformation.random(rng, self.centre, box, self.variation.scale, elastic_mm=self.variation.elastic_mm))
        nk, nj, ni = template.shape
        kji = torch.meshgrid(torch.arange(nk), torch.arange(nj), torch.arange(ni), indexing="ij")
        ijk = torch.stack(kji[::-1], -1).reshape(-1, 3).float()
        m = torch.from_numpy(ijk_to_ras).float()
        x = d.to_template(torch.addmm(m[:3, 3], ijk, m[:3, :3].T))  # float32: 1e-4 mm at 300 mm
        scale = 2.0 / torch.tensor([ni - 1, nj - 1, nk - 1])  # RAS -> grid_sample's [-1, 1] (align_corners)
        inv = torch.from_numpy(np.linalg.inv(ijk_to_ras)).float()
        grid = torch.addmm(inv[:3, 3] * scale - 1, x, inv[:3, :3].T * scale).reshape(1, nk, nj, ni, 3)
        hu = F.grid_sample(torch.from_numpy(template)[None, None], grid, mode="bilinear", padding_mode="border",
                           align_corners=True)[0, 0].numpy()
        if not identity:
            hu = self._vary_intensity(hu, rng)
        vessels = (not identity) and rng.random() < vessel_probability
        if vessels:
            hu = add_vessels(hu, rng)
        return HeadVariant(hu.astype(np.float32), ijk_to_ras, d.to_variant(self.landmarks_ras), d, vessels)

    @staticmethod
    def _vary_intensity(hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        soft = hu * rng.uniform(0.95, 1.05) + rng.uniform(-20, 20)
        bone = 300.0 + (hu - 300.0) * rng.uniform(0.85, 1.15)
        return np.where(hu > 300.0, bone, soft)


def _box(shape_kji: tuple[int, ...], ijk_to_ras: np.ndarray) -> np.ndarray:
    """(2, 3) RAS mm bounds of a grid's voxel centres."""
    nk, nj, ni = shape_kji
    corners = np.array([[i, j, k, 1.0] for i in (0, ni - 1) for j in (0, nj - 1) for k in (0, nk - 1)]) @ ijk_to_ras.T
    return np.stack([corners[:, :3].min(0), corners[:, :3].max(0)])


def add_vessels(hu: np.ndarray, rng: np.random.Generator, count: tuple[int, int] = (3, 7)) -> np.ndarray:
    """Tubes of iodine-like HU (``IODINE_HU``) along smooth random walks through soft tissue
    inside the head (voxels 0..80 HU), 1-2 voxels in radius."""
    shape = np.array(hu.shape)
    inside = np.argwhere((hu > 0) & (hu < 80))
    if len(inside) == 0:
        return hu
    mask = np.zeros(hu.shape, bool)
    for _ in range(rng.integers(*count)):
        p = inside[rng.integers(len(inside))].astype(float)
        direction = rng.normal(size=3)
        for _ in range(rng.integers(40, 120)):
            direction = direction / np.linalg.norm(direction) + rng.normal(0, 0.25, size=3)
            p = np.clip(p + direction / np.linalg.norm(direction), 0, shape - 1)
            mask[tuple(np.round(p).astype(int))] = True
    tubes = F.max_pool3d(torch.from_numpy(mask)[None, None].float(), 3, stride=1, padding=1)[0, 0].numpy() > 0
    return np.where(tubes & (hu > -200), np.maximum(hu, rng.uniform(*IODINE_HU)), hu)
