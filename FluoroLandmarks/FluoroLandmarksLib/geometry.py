"""C-arm projection geometry (pure numpy).

Frames and units
----------------
* Patient frame: RAS, millimetres (Slicer's world frame). Supine, head-first patient.
* Detector frame: pixels; ``u`` = column index (increasing to the image right), ``v`` = row
  index (increasing downwards); ``(0, 0)`` is the centre of the first pixel.
* Angles in degrees, DICOM XA sense: primary angle LAO +, RAO -; secondary angle CRAN +, CAUD -.
  Angles 0/0 is AP: the source is posterior of the isocenter, the detector anterior. The image is
  shown as seen from the detector side looking toward the source, so at 0/0 the patient's right
  is on the image left and the head is at the top (the usual fluoroscopy display).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import cached_property

import numpy as np

# Reference frame at 0/0 (RAS): source direction (from isocenter), detector column and row axes.
_SOURCE_DIR_AP = np.array([0.0, -1.0, 0.0])  # posterior
_U_AXIS_AP = np.array([-1.0, 0.0, 0.0])  # image right = patient left
_V_AXIS_AP = np.array([0.0, 0.0, -1.0])  # image down = inferior


def carm_rotation(primary_deg: float, secondary_deg: float) -> np.ndarray:
    """3x3 rotation (RAS) taking the AP reference frame to the given C-arm angles.

    CRAN/CAUD rotates about the patient's left-right axis, then LAO/RAO about the
    superior-inferior axis: LAO 90 puts the source on the patient's right, CRAN 30 tilts the
    source inferior.
    """
    a, b = math.radians(primary_deg), math.radians(secondary_deg)
    rz = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(b), -math.sin(b)], [0.0, math.sin(b), math.cos(b)]])
    return rz @ rx


@dataclass(frozen=True)
class Collimation:
    """Collimated (exposed) field on the detector, in detector pixels.

    ``shape`` is ``"none"`` (whole detector), ``"rect"`` (``center_px`` and ``size_px`` = full
    width and height) or ``"circle"`` (``center_px`` and ``radius_px``).
    """

    shape: str = "none"
    center_px: tuple[float, float] = (0.0, 0.0)
    size_px: tuple[float, float] = (0.0, 0.0)
    radius_px: float = 0.0

    def __post_init__(self):
        if self.shape not in ("none", "rect", "circle"):
            raise ValueError(f"collimation shape must be none, rect or circle, got {self.shape!r}")
        if self.shape == "rect" and min(self.size_px) <= 0:
            raise ValueError("rectangular collimation needs a positive size_px")
        if self.shape == "circle" and self.radius_px <= 0:
            raise ValueError("circular collimation needs a positive radius_px")

    @classmethod
    def centred(cls, shape: str, fraction: float, detector_size_px: tuple[int, int]) -> "Collimation":
        """A field centred on the detector: ``fraction`` (0, 1] of its width and height (rect) or
        of its shorter side as diameter (circle)."""
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"collimation fraction must be in (0, 1], got {fraction}")
        nu, nv = detector_size_px
        centre = ((nu - 1) / 2.0, (nv - 1) / 2.0)
        if shape == "rect":
            return cls("rect", centre, (fraction * nu, fraction * nv))
        if shape == "circle":
            return cls("circle", centre, radius_px=fraction * min(nu, nv) / 2.0)
        return cls(shape)

    def scaled(self, factor: float) -> "Collimation":
        """The same field on a detector with ``factor`` times as many pixels per side (pixel centre
        u maps to (u + 0.5) * factor - 0.5)."""
        if self.shape == "none":
            return self
        centre = tuple((x + 0.5) * factor - 0.5 for x in self.center_px)
        return Collimation(self.shape, centre, tuple(x * factor for x in self.size_px), self.radius_px * factor)

    def field(self, detector_size_px: tuple[int, int]) -> np.ndarray:
        """Boolean (nv, nu) mask of the detector pixels (centres at integer u, v) inside the field."""
        nu, nv = detector_size_px
        if self.shape == "none":
            return np.ones((nv, nu), dtype=bool)
        du = np.arange(nu, dtype=float) - self.center_px[0]
        dv = np.arange(nv, dtype=float)[:, None] - self.center_px[1]
        if self.shape == "rect":
            return (np.abs(du) <= self.size_px[0] / 2.0) & (np.abs(dv) <= self.size_px[1] / 2.0)
        return np.hypot(du, dv) <= self.radius_px

    def contains(self, uv_px: np.ndarray) -> np.ndarray:
        """Boolean mask: which (..., 2) detector points (u, v in px) are inside the field."""
        uv = np.asarray(uv_px, dtype=float)
        if self.shape == "none":
            return np.ones(uv.shape[:-1], dtype=bool)
        d = uv - np.asarray(self.center_px, dtype=float)
        if self.shape == "rect":
            half = np.asarray(self.size_px, dtype=float) / 2.0
            return np.all(np.abs(d) <= half, axis=-1)
        return np.hypot(d[..., 0], d[..., 1]) <= self.radius_px


def _read_only(a: np.ndarray) -> np.ndarray:
    """``a`` made read-only: a cached matrix of a frozen geometry, shared by every caller."""
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class CArmGeometry:
    """One C-arm view.

    Distances in mm, angles in degrees (see module docstring), detector size in pixels
    ``(nu, nv)`` = (columns, rows), pixel spacing in mm ``(du, dv)``, isocenter in RAS mm.
    The principal ray passes through the isocenter and the detector centre.
    """

    isocenter_ras: tuple[float, float, float]
    primary_deg: float = 0.0
    secondary_deg: float = 0.0
    sid_mm: float = 1000.0
    sod_mm: float = 750.0
    detector_size_px: tuple[int, int] = (256, 256)
    pixel_spacing_mm: tuple[float, float] = (1.2, 1.2)
    collimation: Collimation = field(default_factory=Collimation)

    def __post_init__(self):
        values = [*self.isocenter_ras, self.primary_deg, self.secondary_deg, self.sid_mm, self.sod_mm,
                  *self.pixel_spacing_mm]
        if not all(math.isfinite(float(x)) for x in values):
            raise ValueError("C-arm geometry values must be finite numbers")
        if self.sod_mm <= 0:
            raise ValueError(f"SOD must be > 0 mm, got {self.sod_mm}")
        if self.sid_mm <= self.sod_mm:
            raise ValueError(f"SID ({self.sid_mm} mm) must be larger than SOD ({self.sod_mm} mm)")
        if min(self.detector_size_px) < 1 or any(int(n) != n for n in self.detector_size_px):
            raise ValueError(f"detector size must be positive whole pixels, got {self.detector_size_px}")
        if min(self.pixel_spacing_mm) <= 0:
            raise ValueError(f"pixel spacing must be > 0 mm, got {self.pixel_spacing_mm}")

    # -- frame ---------------------------------------------------------------------------------
    @cached_property
    def rotation(self) -> np.ndarray:
        return _read_only(carm_rotation(self.primary_deg, self.secondary_deg))

    @property
    def source_direction(self) -> np.ndarray:
        """Unit vector (RAS) from the isocenter toward the source."""
        return self.rotation @ _SOURCE_DIR_AP

    @property
    def beam_direction(self) -> np.ndarray:
        """Unit vector (RAS) of the principal ray, source to detector."""
        return -self.source_direction

    @property
    def u_axis(self) -> np.ndarray:
        """Unit vector (RAS) of increasing detector column."""
        return self.rotation @ _U_AXIS_AP

    @property
    def v_axis(self) -> np.ndarray:
        """Unit vector (RAS) of increasing detector row."""
        return self.rotation @ _V_AXIS_AP

    @property
    def source_ras(self) -> np.ndarray:
        return np.asarray(self.isocenter_ras, dtype=float) + self.sod_mm * self.source_direction

    @property
    def principal_point_px(self) -> np.ndarray:
        """Detector pixel (u, v) hit by the principal ray: the detector centre."""
        nu, nv = self.detector_size_px
        return np.array([(nu - 1) / 2.0, (nv - 1) / 2.0])

    @property
    def detector_center_ras(self) -> np.ndarray:
        return self.source_ras + self.sid_mm * self.beam_direction

    @property
    def magnification(self) -> float:
        """Magnification at the isocenter (SID / SOD)."""
        return self.sid_mm / self.sod_mm

    # -- matrices ------------------------------------------------------------------------------
    @cached_property
    def intrinsics(self) -> np.ndarray:
        """3x3 K mapping C-arm camera coordinates (mm; x=u axis, y=v axis, z=beam) to pixels."""
        cu, cv = self.principal_point_px
        du, dv = self.pixel_spacing_mm
        return _read_only(np.array([[self.sid_mm / du, 0.0, cu], [0.0, self.sid_mm / dv, cv], [0.0, 0.0, 1.0]]))

    @cached_property
    def world_to_camera(self) -> np.ndarray:
        """3x4 [R | t] from patient RAS (mm) to the C-arm camera frame (mm, origin at the source)."""
        r = np.stack([self.u_axis, self.v_axis, self.beam_direction])
        return _read_only(np.concatenate([r, (-r @ self.source_ras)[:, None]], axis=1))

    @property
    def projection_ras_to_px(self) -> np.ndarray:
        """3x4 P with [u*w, v*w, w] = P [x, y, z, 1]; x, y, z in RAS mm, u, v in pixels, w in mm."""
        return self.intrinsics @ self.world_to_camera

    @property
    def detector_ijk_to_ras(self) -> np.ndarray:
        """4x4 IJK->RAS of a single-slice volume lying in the detector plane (i = u, j = v)."""
        du, dv = self.pixel_spacing_mm
        cu, cv = self.principal_point_px
        m = np.eye(4)
        m[:3, 0] = self.u_axis * du
        m[:3, 1] = self.v_axis * dv
        m[:3, 2] = -self.beam_direction  # unit slice normal; right-handed since u x v = -beam
        m[:3, 3] = self.detector_center_ras - cu * du * self.u_axis - cv * dv * self.v_axis
        return m

    # -- points and rays -----------------------------------------------------------------------
    def project(self, points_ras: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project (N, 3) RAS mm points. Returns (N, 2) pixel (u, v) and (N,) depth w in mm
        from the source along the principal ray (w <= 0: behind the source)."""
        x = np.atleast_2d(np.asarray(points_ras, dtype=float))
        h = np.concatenate([x, np.ones((len(x), 1))], axis=1) @ self.projection_ras_to_px.T
        w = h[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = h[:, :2] / w[:, None]
        return uv, w

    def backproject(self, uv_px: np.ndarray, depth_mm: np.ndarray) -> np.ndarray:
        """(N, 3) RAS mm points that project to pixels ``uv_px`` (N, 2) at depths ``depth_mm`` (N,)
        (distance from the source along the principal ray): the inverse of :meth:`project`."""
        uv = np.atleast_2d(np.asarray(uv_px, dtype=float))
        rays = np.concatenate([uv, np.ones((len(uv), 1))], 1) @ np.linalg.inv(self.intrinsics).T
        camera = rays * np.asarray(depth_mm, dtype=float).reshape(-1, 1)
        r, t = self.world_to_camera[:, :3], self.world_to_camera[:, 3]
        return (camera - t) @ r

    def detector_point_ras(self, uv_px: np.ndarray) -> np.ndarray:
        """(N, 3) RAS mm positions on the detector plane of (N, 2) pixel coordinates."""
        uv = np.atleast_2d(np.asarray(uv_px, dtype=float)) - self.principal_point_px
        du, dv = self.pixel_spacing_mm
        return (self.detector_center_ras + uv[:, :1] * du * self.u_axis + uv[:, 1:] * dv * self.v_axis)

    def rays(self, uv_px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inverse projection: (source RAS, (N, 3) unit directions RAS) of the rays through pixels."""
        d = self.detector_point_ras(uv_px) - self.source_ras
        return self.source_ras, d / np.linalg.norm(d, axis=1, keepdims=True)

    def in_image(self, uv_px: np.ndarray) -> np.ndarray:
        """True where pixel coordinates fall on the detector (pixel edges at -0.5 and n - 0.5)."""
        uv = np.asarray(uv_px, dtype=float)
        nu, nv = self.detector_size_px
        return ((uv[..., 0] >= -0.5) & (uv[..., 0] <= nu - 0.5) & (uv[..., 1] >= -0.5)
                & (uv[..., 1] <= nv - 0.5))

    def in_field_px(self, uv_px: np.ndarray) -> np.ndarray:
        """True where pixel coordinates fall on the detector and inside the collimated field."""
        return self.in_image(uv_px) & self.collimation.contains(uv_px)

    def in_field(self, points_ras: np.ndarray) -> np.ndarray:
        """True for RAS points in front of the source whose projection is on the detector and
        inside the collimated field."""
        uv, w = self.project(points_ras)
        return (w > 0) & self.in_field_px(uv)

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-ready description, including source_ras and projection_ras_to_px."""
        d = asdict(self)
        d.update(
            frame="RAS",
            units={"distances": "mm", "angles": "deg", "detector": "px (0 = centre of first pixel)"},
            source_ras=self.source_ras.tolist(),
            detector_center_ras=self.detector_center_ras.tolist(),
            u_axis_ras=self.u_axis.tolist(),
            v_axis_ras=self.v_axis.tolist(),
            projection_ras_to_px=self.projection_ras_to_px.tolist(),
            detector_ijk_to_ras=self.detector_ijk_to_ras.tolist(),
        )
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CArmGeometry":
        names = ("isocenter_ras", "primary_deg", "secondary_deg", "sid_mm", "sod_mm",
                 "detector_size_px", "pixel_spacing_mm")
        kwargs = {k: (tuple(d[k]) if isinstance(d[k], list) else d[k]) for k in names}
        c = d.get("collimation") or {}
        kwargs["collimation"] = Collimation(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in c.items()})
        return cls(**kwargs)
