"""Digitally reconstructed radiographs (pure numpy/torch).

Line integrals of linear attenuation along the diverging rays of a :class:`CArmGeometry`,
computed with Joseph's method: each ray is sampled where it crosses the volume's slice planes
along the axis most parallel to the principal ray, with bilinear interpolation inside each slice
and the slice-to-slice ray length as weight. All slices of one chunk are interpolated in one
batched ``grid_sample`` call, rays of several views sharing the same slice axis are batched
together, and air around the object is cropped away once.

Volume arrays are indexed ``[k, j, i]`` (as Slicer's ``arrayFromVolume``); ``ijk_to_ras`` is the
full 4x4 IJK->RAS matrix (mm), so oblique and flipped volumes are handled.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .geometry import CArmGeometry

MU_WATER_PER_MM = 0.02  # linear attenuation of water at ~60-70 keV effective energy, 1/mm
_SAMPLES_PER_CHUNK = 1 << 18  # bilinear samples per grid_sample call: keeps the grid in cache
MAX_SLAB_DRIFT_VOXELS = 1.0  # largest in-plane drift (voxels) of a ray across one pre-filtered slab
MAX_SLAB = 8


def hu_to_mu(hu: np.ndarray, mu_water_per_mm: float = MU_WATER_PER_MM) -> np.ndarray:
    """Linear attenuation (1/mm) from Hounsfield units: mu_w (1 + HU/1000), clipped at 0."""
    return np.clip(mu_water_per_mm * (1.0 + np.asarray(hu, dtype=np.float32) / 1000.0), 0.0, None)


def validate_volume(array: np.ndarray, ijk_to_ras: np.ndarray, what: str = "CT") -> None:
    """Raise ValueError with a clear message unless ``array`` is a finite 3D volume with a valid
    IJK->RAS matrix (non-zero, finite spacing)."""
    a = np.asarray(array)
    if a.ndim != 3:
        raise ValueError(f"{what} must be a 3D volume, got an array of shape {a.shape}")
    if min(a.shape) < 2:
        raise ValueError(f"{what} must be a 3D volume; got a single-slice image of shape {a.shape} "
                         "(k, j, i) - is this a 2D radiograph?")
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise ValueError(f"{what} must have real scalar voxels, got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        raise ValueError(f"{what} contains NaN or infinite voxel values")
    m = np.asarray(ijk_to_ras, dtype=float)
    if m.shape != (4, 4) or not np.isfinite(m).all():
        raise ValueError(f"{what} IJK->RAS matrix must be a finite 4x4 matrix")
    spacing = np.linalg.norm(m[:3, :3], axis=0)
    if (spacing <= 0).any() or abs(np.linalg.det(m[:3, :3])) < 1e-12:
        raise ValueError(f"{what} has zero or degenerate voxel spacing {spacing.tolist()} mm")


class DRRRenderer:
    """Renders line integrals (dimensionless, integral of mu dl) of one attenuation volume.

    ``mu_per_mm``: array ``[k, j, i]`` of linear attenuation in 1/mm (see :func:`hu_to_mu`);
    ``ijk_to_ras``: 4x4 matrix (mm). Voxels are treated as zero outside the array.
    """

    def __init__(self, mu_per_mm: np.ndarray, ijk_to_ras: np.ndarray, air_threshold_per_mm: float = 1e-4):
        validate_volume(mu_per_mm, ijk_to_ras, "attenuation volume")
        mu = np.asarray(mu_per_mm, dtype=np.float32)
        if (mu < 0).any():
            raise ValueError("attenuation must be >= 0 (convert HU with hu_to_mu)")
        lo, hi = _nonair_bounds(mu, air_threshold_per_mm)
        self._mu = torch.from_numpy(np.ascontiguousarray(mu[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]))
        offset = np.eye(4)
        offset[:3, 3] = lo[::-1]  # (i, j, k) offset of the crop
        self.ijk_to_ras = np.asarray(ijk_to_ras, dtype=float) @ offset  # of the cropped array
        self.ras_to_ijk = np.linalg.inv(self.ijk_to_ras)
        self._stacks: dict[tuple[int, int], torch.Tensor] = {}  # pre-filtered slice stacks

    @property
    def cropped_shape(self) -> tuple[int, int, int]:
        return tuple(self._mu.shape)

    def _stack(self, axis: int, slab: int) -> torch.Tensor:
        """Volume as a batch of 2D slices (N, 1, H, W) along index axis ``axis`` (0 = i, 1 = j,
        2 = k), pre-filtered by averaging ``slab`` consecutive slices (the last slab is padded with
        zeros, i.e. air)."""
        key = (axis, slab)
        if key not in self._stacks:
            dim = 2 - axis  # tensor dims are (k, j, i)
            rest = [d for d in range(3) if d != dim]
            stack = self._mu.permute(dim, *rest)
            if slab > 1:
                pad = (-stack.shape[0]) % slab
                stack = torch.nn.functional.pad(stack, (0, 0, 0, 0, 0, pad))
                stack = stack.reshape(-1, slab, *stack.shape[1:]).mean(1)
            self._stacks[key] = stack.unsqueeze(1).contiguous()
        return self._stacks[key]

    def render(self, geometries: list[CArmGeometry]) -> list[np.ndarray]:
        """Line integrals for each view: a list of float32 arrays of shape (nv, nu). Only the rays of
        pixels inside each view's collimated field are traced; the others read 0 (no primary beam)."""
        rays = [self._view_rays(g) for g in geometries]
        fields = [g.collimation.field(g.detector_size_px).ravel() for g in geometries]
        beams = [d if f.all() else d[torch.from_numpy(f)] for (_, _, _, d), f in zip(rays, fields)]
        out: list[np.ndarray | None] = [None] * len(geometries)
        with torch.no_grad():
            for axis, slab in {r[:2] for r in rays}:
                members = [n for n, r in enumerate(rays) if r[:2] == (axis, slab)]
                src = torch.cat([rays[n][2].expand_as(beams[n]) for n in members])
                sums = self._integrate(axis, slab, src, torch.cat([beams[n] for n in members]),
                                       [len(beams[n]) for n in members]).numpy()
                offset = 0
                for n in members:
                    nu, nv = geometries[n].detector_size_px
                    line = np.zeros(nu * nv, np.float32)
                    line[fields[n]] = sums[offset:offset + len(beams[n])]
                    out[n] = line.reshape(nv, nu)
                    offset += len(beams[n])
        return out

    def _view_rays(self, g: CArmGeometry) -> tuple[int, int, torch.Tensor, torch.Tensor]:
        """(slice axis, slab size, source (1, 3) in IJK, (nv*nu, 3) source->detector-pixel vectors
        in IJK). The slab averages slices where the view's rays drift < MAX_SLAB_DRIFT voxels.

        Computed in torch float64: numpy matmuls here would wake OpenBLAS threads that compete
        with torch's for the cores."""
        nu, nv = g.detector_size_px
        ras_to_ijk = self.ras_to_ijk[:3, :3]
        du, dv = g.pixel_spacing_mm
        cu, cv = g.principal_point_px
        # d(u, v) = (detector centre - source) + (u - cu) du U + (v - cv) dv V, mapped to IJK.
        centre = torch.from_numpy(ras_to_ijk @ (g.detector_center_ras - g.source_ras))
        step_u = torch.from_numpy(ras_to_ijk @ (g.u_axis * du))
        step_v = torch.from_numpy(ras_to_ijk @ (g.v_axis * dv))
        u = torch.arange(nu, dtype=torch.float64) - cu
        v = torch.arange(nv, dtype=torch.float64) - cv
        d = centre + v[:, None, None] * step_v + u[None, :, None] * step_u
        src = torch.from_numpy(ras_to_ijk @ g.source_ras + self.ras_to_ijk[:3, 3])[None]
        d = d.reshape(-1, 3)
        axis = int(torch.argmax(centre.abs()))
        drift = float((d[:, [a for a in range(3) if a != axis]] / d[:, axis:axis + 1]).abs().max())
        slab = int(np.clip(MAX_SLAB_DRIFT_VOXELS // max(drift, 1e-6), 1, MAX_SLAB))
        return axis, slab, src, d

    def _integrate(self, axis: int, slab: int, src: torch.Tensor, d: torch.Tensor, views: list[int]) -> torch.Tensor:
        """Joseph line integrals (float32) of rays src + t d (IJK, float64; t in [0, 1] = source
        to detector), ``views`` consecutive rays at a time from one source and detector."""
        result = torch.zeros(len(d), dtype=torch.float32)
        hits = _hits_box(src, d, torch.tensor(self._mu.shape[::-1], dtype=torch.float64))
        if not hits.any():
            return result
        bounds = np.cumsum([0] + [int(h.sum()) for h in torch.split(hits, views)])  # the views' rays after hits
        src, d = src[hits], d[hits]
        rest = [a for a in range(3) if a != axis]  # stack width (grid x), height (grid y)
        dm = d[:, axis]
        slope = d[:, rest] / dm[:, None]  # in-plane index shift per slice
        stack = self._stack(axis, slab)
        n_slabs, _, height, width = stack.shape
        # Slab s is sampled at slice position p = s * slab + (slab - 1) / 2.
        a0 = src[:, rest] + (0.5 * (slab - 1) - src[:, axis:axis + 1]) * slope
        norm = torch.tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)], dtype=torch.float64)
        g0 = (a0 * norm - 1.0).float()  # grid_sample coordinates, align_corners=True
        g1 = (slab * slope * norm).float()
        # Ray parameter t (0 = source, 1 = detector) at slab s is t0 + s * t1; only 0 < t < 1 counts.
        t0 = (0.5 * (slab - 1) - src[:, axis]) / dm
        t1 = slab / dm
        at_source, at_detector = -t0 / t1, (1.0 - t0) / t1  # slab positions of t = 0, 1
        ends = torch.minimum(at_source, at_detector), torch.maximum(at_source, at_detector)
        # Per view, the slabs where all its rays are between source and detector (the detector
        # may cut through the volume's box; the source never does in practice).
        safe = [(float(ends[0][a:b].max()), float(ends[1][a:b].min()), a, b)
                for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        t0, t1 = t0.float(), t1.float()
        total = torch.zeros(len(d), dtype=torch.float32)
        chunk = max(1, _SAMPLES_PER_CHUNK // len(d))
        grid_buffer = torch.empty((min(chunk, n_slabs), len(d), 2), dtype=torch.float32)
        for s0 in range(0, n_slabs, chunk):
            s1 = min(s0 + chunk, n_slabs)
            s = torch.arange(s0, s1, dtype=torch.float32)[:, None]
            grid = torch.addcmul(g0, s[..., None], g1, out=grid_buffer[:s1 - s0])
            for safe_lo, safe_hi, a, b in safe:
                if not (safe_lo < s0 and s1 - 1 < safe_hi):
                    t = t0[a:b] + s * t1[a:b]
                    grid[:, a:b].masked_fill_(((t <= 0) | (t >= 1))[..., None], 4.0)  # outside the volume
            vals = torch.nn.functional.grid_sample(
                stack[s0:s1], grid[:, None], mode="bilinear", padding_mode="zeros", align_corners=True)
            total += vals[:, 0, 0].sum(0)
        # Ray length per slab (mm): slab * |d_ras| / |d_m|.
        ijk_to_ras = torch.from_numpy(self.ijk_to_ras[:3, :3])
        step_mm = slab * torch.linalg.vector_norm(d @ ijk_to_ras.T, dim=1) / dm.abs()
        result[hits] = total * step_mm.float()
        return result


def _hits_box(src: torch.Tensor, d: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """Which segments src + t d, 0 < t < 1, meet the box [-1, size] (IJK): one voxel beyond the
    voxel edges, as bilinear interpolation fades to zero there."""
    inv = 1.0 / d  # +-inf for axis-parallel rays: the comparisons below still hold
    ta, tb = (-1.0 - src) * inv, (size - src) * inv
    t_near = torch.minimum(ta, tb).nan_to_num(nan=-np.inf).amax(dim=1)
    t_far = torch.maximum(ta, tb).nan_to_num(nan=np.inf).amin(dim=1)
    return (t_near < t_far) & (t_far > 0) & (t_near < 1)


def _nonair_bounds(mu: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """[lo, hi) index bounds (k, j, i) of voxels above ``threshold``, padded by one voxel."""
    mask = mu > threshold
    if not mask.any():
        return np.zeros(3, int), np.array(mu.shape)
    lo, hi = [], []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        lo.append(max(idx[0] - 1, 0))
        hi.append(min(idx[-1] + 2, mu.shape[axis]))
    return np.array(lo), np.array(hi)


def detector_image(line_integral: np.ndarray, geometry: CArmGeometry, photons_per_pixel: float | None = None,
                   rng: np.random.Generator | None = None) -> np.ndarray:
    """Log-converted detector image -ln(I / I0) (float32, bone bright), from line integrals.

    With ``photons_per_pixel`` (unattenuated quanta per pixel, I0) the detected counts are
    Poisson-sampled (quantum noise). Pixels outside the collimated field get no primary beam;
    they read the detector floor (half a quantum, or 1e-4 I0 when noiseless), i.e. they are white.
    """
    line = np.asarray(line_integral, dtype=np.float64)
    nu, nv = geometry.detector_size_px
    if line.shape != (nv, nu):
        raise ValueError(f"line integral shape {line.shape} does not match the detector (nv, nu)=({nv}, {nu})")
    transmitted = np.exp(-line) * geometry.collimation.field(geometry.detector_size_px)
    if photons_per_pixel is None:
        floor = 1e-4
    else:
        if not (photons_per_pixel > 0 and math.isfinite(photons_per_pixel)):
            raise ValueError(f"photons per pixel must be > 0, got {photons_per_pixel}")
        rng = rng or np.random.default_rng()
        transmitted = rng.poisson(transmitted * photons_per_pixel) / photons_per_pixel
        floor = 0.5 / photons_per_pixel
    return (-np.log(np.maximum(transmitted, floor))).astype(np.float32)
