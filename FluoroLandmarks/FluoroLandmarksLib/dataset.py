"""Synthetic fluoroscopy / radiograph training set (Fum et al.'s recipe on this renderer).

Per image: random C-arm angles (AP, lateral, obliques), SID/SOD (magnification), table offset
(landmarks may fall outside the image), random rectangular / circular collimation, quantum noise,
detector blur, unsharp masking, gain/log windowing, gamma, additive noise, and contrast inversion
(bone dark like fluoroscopy or bright like a cephalogram). One shard (``shard_NNNNN.npz``) per head
variant; optionally with a synthetic lower head (:mod:`.lower_head`).

Labels (L landmarks): ``uv`` (L, 2) detector px (also outside the image), ``in_image`` (L,)
visible (on the detector and inside the collimated field), ``depth`` (L,) mm from the source
along the principal ray, ``xyz_ras`` (L, 3) RAS mm, ``xyz_carm`` (L, 3) C-arm camera mm, and the
geometry (``projection`` 3x4 RAS mm -> px and the parameters to rebuild a :class:`CArmGeometry`).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .drr import DRRRenderer, detector_image, hu_to_mu
from .geometry import CArmGeometry, Collimation
from .lower_head import LowerHead
from .network import gaussian_blur
from .population import DEFAULT_VARIATION, Deformation, HeadPopulation, ShapeVariation

IMAGE_SIZE = 256
COLLIMATION_SHAPES = ("none", "rect", "circle")


@dataclass(frozen=True)
class ViewRanges:
    """Ranges the views are drawn from (degrees, mm, px)."""

    primary_deg: tuple[float, float] = (-100.0, 100.0)
    secondary_deg: tuple[float, float] = (-25.0, 25.0)
    sid_mm: tuple[float, float] = (900.0, 1200.0)
    sod_fraction: tuple[float, float] = (0.6, 0.8)
    pixel_spacing_mm: tuple[float, float] = (1.1, 1.7)
    table_offset_mm: float = 60.0  # across the beam: landmarks leave the image
    depth_offset_mm: float = 10.0  # along the beam: the head is centred on the isocenter, as in isocentric work
    collimation_probability: float = 0.6
    collimation_fraction: tuple[float, float] = (0.45, 1.0)
    either_side: bool = False  # the primary angle's sign drawn at random (lateral views from the left and right)


# Cephalogram-like views (`make-dataset --cephalogram-share`): lateral (LAO or RAO 80-100 deg, within 5 deg of
# the axial plane), the head mostly in the field, low magnification (SOD 85-95 % of SID, as a cephalostat's
# long source distance gives) and a 185-320 mm field at the head (0.85-1.3 mm detector pixels at 256 px).
CEPHALOGRAM_VIEWS = ViewRanges(primary_deg=(80.0, 100.0), secondary_deg=(-5.0, 5.0), sod_fraction=(0.85, 0.95),
                               pixel_spacing_mm=(0.85, 1.3), table_offset_mm=20.0, either_side=True)


def random_geometry(rng: np.random.Generator, centre_ras: np.ndarray, r: ViewRanges = ViewRanges(),
                    size: int = IMAGE_SIZE) -> CArmGeometry:
    sid = rng.uniform(*r.sid_mm)
    spacing = rng.uniform(*r.pixel_spacing_mm)
    collimation = Collimation()
    if rng.random() < r.collimation_probability:
        frac = rng.uniform(*r.collimation_fraction, size=2)
        centre = size / 2 - 0.5 + rng.uniform(-0.15, 0.15, size=2) * size
        if rng.random() < 0.5:
            collimation = Collimation("rect", tuple(centre), tuple(frac * size))
        else:
            collimation = Collimation("circle", tuple(centre), radius_px=float(frac[0] * size / 2))
    primary = float(rng.uniform(*r.primary_deg)) * (rng.choice((-1.0, 1.0)) if r.either_side else 1.0)
    g = CArmGeometry(tuple(centre_ras), primary, float(rng.uniform(*r.secondary_deg)),
                     float(sid), float(sid * rng.uniform(*r.sod_fraction)), (size, size), (spacing, spacing), collimation)
    offset = (rng.uniform(-1, 1) * r.table_offset_mm * g.u_axis + rng.uniform(-1, 1) * r.table_offset_mm * g.v_axis
              + rng.uniform(-1, 1) * r.depth_offset_mm * g.beam_direction)
    return replace(g, isocenter_ras=tuple(float(x) for x in np.asarray(centre_ras) + offset))


def appearance(line_integral: np.ndarray, g: CArmGeometry, rng: np.random.Generator,
               cephalogram: bool = False, zoom: int = 1) -> np.ndarray:
    """uint8 image from line integrals: quantum noise, blur, in half of the images unsharp masking
    (the edge enhancement of radiograph processing), window, gamma, inversion, noise. ``cephalogram``:
    a radiograph's look: a high dose (3000-100 000 photons per pixel), unsharp masking over 8-40 px in
    80 % of the images, dynamic range compression (0-50 % of a 16-48 px low-pass subtracted), a window
    from the air up (soft tissue shown), gamma 0.7-1.2, bone bright, little additive noise.
    ``zoom``: the detector has ``zoom`` times finer pixels (:func:`finer`) than the 256-px one these
    figures are for; the same draws are scaled to it (blur and filter radii x zoom, photons per pixel
    / zoom^2, additive noise SD x zoom), so ``zoom`` x ``zoom`` binning gives back the 256-px look."""
    dose = (3e3, 1e5) if cephalogram else (300.0, 3e4)
    photons = float(np.exp(rng.uniform(np.log(dose[0]), np.log(dose[1]))))
    img = torch.from_numpy(detector_image(line_integral, g, photons / zoom ** 2, rng))[None, None]
    sigma = rng.uniform(0.0, 1.2)
    if sigma > 0.3:
        img = gaussian_blur(img, sigma * zoom)
    if rng.random() < (0.8 if cephalogram else 0.5):
        radius = rng.uniform(*(8.0, 40.0) if cephalogram else (4.0, 16.0))
        img = img + rng.uniform(0.5, 2.0) * (img - gaussian_blur(img, radius * zoom))
    head = img[0, 0].numpy() > 0.5  # window on the head, not the air around it
    if cephalogram:  # dynamic range compression, as radiograph processing does: the cranium greyer
        img = img - rng.uniform(0.0, 0.5) * gaussian_blur(img, rng.uniform(16.0, 48.0) * zoom)
    img = img[0, 0].numpy()
    field = g.collimation.field(g.detector_size_px)
    inside = field if field.any() else np.ones_like(field)
    body = img[inside & head]
    body = body if body.size > 100 else img[inside]
    q_lo, lo_factor, q_hi = rng.uniform(0, 10), rng.uniform(0.5, 1.0), rng.uniform(98, 100)
    lo, hi = (float(q) for q in np.percentile(body, [q_lo, q_hi]))
    # a radiograph shows the soft tissue down to the air: the window starts at the field's darkest 1 %
    lo = float(np.percentile(img[inside], 1.0)) if cephalogram else lo * lo_factor
    img = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1) ** rng.uniform(*((0.7, 1.2) if cephalogram else (0.6, 1.5)))
    if not cephalogram and rng.random() < 0.5:
        img = 1.0 - img  # fluoroscopy look: bone dark
    img = img + rng.normal(0, rng.uniform(0, 0.01 if cephalogram else 0.04) * zoom, img.shape)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def labels_for(g: CArmGeometry, points_ras: np.ndarray) -> dict:
    uv, depth = g.project(points_ras)
    camera = np.concatenate([points_ras, np.ones((len(points_ras), 1))], 1) @ g.world_to_camera.T
    return dict(uv=uv.astype(np.float32), in_image=g.in_field(points_ras), depth=depth.astype(np.float32),
                xyz_ras=points_ras.astype(np.float32), xyz_carm=camera.astype(np.float32))


def geometry_arrays(g: CArmGeometry) -> dict:
    c = g.collimation
    return dict(projection=g.projection_ras_to_px.astype(np.float32),
                isocenter=np.asarray(g.isocenter_ras, np.float32),
                angles=np.array([g.primary_deg, g.secondary_deg], np.float32),
                sid_sod=np.array([g.sid_mm, g.sod_mm], np.float32),
                spacing=np.asarray(g.pixel_spacing_mm, np.float32),
                detector_px=np.asarray(g.detector_size_px, np.int32),
                collimation=np.array([COLLIMATION_SHAPES.index(c.shape), *c.center_px, *c.size_px, c.radius_px],
                                     np.float32))


def geometry_from_arrays(a: dict, n: int) -> CArmGeometry:
    """Rebuild sample ``n``'s geometry from the arrays of :func:`geometry_arrays` (sets made before
    ``detector_px`` was stored have 256-px detectors)."""
    nu, nv = (int(x) for x in a["detector_px"][n]) if "detector_px" in a else (IMAGE_SIZE, IMAGE_SIZE)
    col = a["collimation"][n]
    collimation = Collimation(COLLIMATION_SHAPES[int(col[0])], (float(col[1]), float(col[2])),
                              (float(col[3]), float(col[4])), float(col[5]))
    return CArmGeometry(tuple(map(float, a["isocenter"][n])), float(a["angles"][n, 0]), float(a["angles"][n, 1]),
                        float(a["sid_sod"][n, 0]), float(a["sid_sod"][n, 1]), (nu, nv),
                        tuple(map(float, a["spacing"][n])), collimation)


def render_coarse(renderer: DRRRenderer, geometries: list[CArmGeometry], factor: int) -> list[np.ndarray]:
    """Line integrals on each detector, traced on a ``factor`` times coarser pixel grid (rays at
    about the population volume's voxel size) and bilinearly resampled to the detector; traced
    inside the collimated field and 1.5 coarse px beyond it (what the resampling reads there)."""
    if factor == 1:
        return renderer.render(geometries)
    coarse = [replace(g, detector_size_px=(g.detector_size_px[0] // factor, g.detector_size_px[1] // factor),
                      pixel_spacing_mm=(g.pixel_spacing_mm[0] * factor, g.pixel_spacing_mm[1] * factor),
                      collimation=_coarse_field(g.collimation, factor)) for g in geometries]
    lines = torch.from_numpy(np.stack(renderer.render(coarse)))[:, None]
    fine = F.interpolate(lines, scale_factor=factor, mode="bilinear", align_corners=False)[:, 0].numpy()
    return list(fine)


def _coarse_field(c: Collimation, factor: int, margin_px: float = 1.5) -> Collimation:
    """The field ``c`` on a ``factor`` times coarser detector, grown by ``margin_px`` coarse px."""
    c = c.scaled(1.0 / factor)
    if c.shape == "rect":
        return replace(c, size_px=tuple(x + 2 * margin_px for x in c.size_px))
    return replace(c, radius_px=c.radius_px + margin_px) if c.shape == "circle" else c


def finer(g: CArmGeometry, zoom: int) -> CArmGeometry:
    """The view ``g`` on a detector with ``zoom`` times as many, ``zoom`` times smaller pixels per
    side (same field of view; pixel centre u maps to (u + 0.5) * zoom - 0.5)."""
    if zoom == 1:
        return g
    return replace(g, detector_size_px=tuple(n * zoom for n in g.detector_size_px),
                   pixel_spacing_mm=tuple(s / zoom for s in g.pixel_spacing_mm), collimation=g.collimation.scaled(zoom))


def write_dataset(hu: np.ndarray, ijk_to_ras: np.ndarray, labels: list[str], points_ras: np.ndarray, count: int,
                  seed: int, out: str | os.PathLike, per_variant: int = 64, vessel_probability: float = 0.3,
                  coarse: int = 2, lower_head_mm: float = 0.0, workers: int = 1, cephalogram_share: float = 0.0,
                  variation: ShapeVariation = DEFAULT_VARIATION, zoom: int = 1, progress=print) -> dict:
    """Write ``count`` samples (``per_variant`` views of each random head variant) as shards in
    ``out``; returns the metadata incl. "samples_per_second". ``coarse``: the head variants are
    built on a grid and the rays traced on a detector that many times coarser (1 = full resolution).
    ``lower_head_mm`` > 0: each variant gets that much random synthetic mandible and neck below the
    CT's inferior edge (:mod:`.lower_head`; for a CT that ends at the upper teeth). Shard n draws
    from its own random stream (child n of ``seed``), so the output does not depend on ``workers``
    (processes, one torch thread each) and a larger ``count`` extends a smaller one.
    ``cephalogram_share``: the share of views drawn as lateral radiographs (CEPHALOGRAM_VIEWS and
    :func:`appearance`'s radiograph look) instead of from the whole C-arm range. ``variation``: how
    far the head variants' shapes depart from the CT's. ``zoom``: the images have ``zoom`` times
    finer pixels (``zoom`` x 256 px, same views: :func:`finer`), e.g. for a local network that reads
    a finer frame than the global one; the labels are in those pixels."""
    if count < 1:
        raise ValueError("count must be >= 1")
    if not 0.0 <= cephalogram_share <= 1.0:
        raise ValueError(f"cephalogram share must be within 0..1, not {cephalogram_share}")
    if workers < 1:
        raise ValueError("workers must be >= 1")
    if zoom not in (1, 2, 3, 4):
        raise ValueError(f"zoom must be 1, 2, 3 or 4, not {zoom}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lower_head = LowerHead.from_landmarks(list(labels), points_ras, lower_head_mm) if lower_head_mm > 0 else None
    population = HeadPopulation(hu, ijk_to_ras, points_ras, coarse, lower_head, variation)
    maker = _ShardMaker(population, vessel_probability, coarse, cephalogram_share, zoom)
    sizes = [min(per_variant, count - first) for first in range(0, count, per_variant)]
    jobs = list(zip(sizes, np.random.SeedSequence(seed).spawn(len(sizes))))
    start, written = time.perf_counter(), 0
    with _shard_map(maker, workers) as shard_map:
        for shard, arrays in enumerate(shard_map(jobs)):
            _save_atomic(out / f"shard_{shard:05d}.npz", arrays)
            written += len(arrays["uv"])
            progress(f"{written}/{count} samples, {written / (time.perf_counter() - start):.1f} samples/s")
    seconds = time.perf_counter() - start
    meta = dict(labels=list(labels), image_size=IMAGE_SIZE * zoom, zoom=zoom, coarse=coarse, lower_head_mm=lower_head_mm,
                cephalogram_share=cephalogram_share, scale_range=list(variation.scale),
                elastic_mm=variation.elastic_mm, samples=written, seed=seed, seconds=seconds,
                samples_per_second=written / seconds, shards=len(sizes), workers=workers)
    _save_atomic(out / "dataset.json", meta)
    return meta


@dataclass
class _ShardMaker:
    """Draws one head variant and its views: the arrays of one shard."""

    population: HeadPopulation
    vessel_probability: float
    coarse: int
    cephalogram_share: float = 0.0
    zoom: int = 1

    def __call__(self, job: tuple[int, np.random.SeedSequence]) -> dict:
        n, seed = job
        rng = np.random.default_rng(seed)
        variant = self.population.sample(rng, self.vessel_probability)
        renderer = DRRRenderer(hu_to_mu(variant.hu), variant.ijk_to_ras)
        # no draw without a share: the same seeds give the same sets as before the option existed
        looks = rng.random(n) < self.cephalogram_share if self.cephalogram_share > 0 else np.zeros(n, bool)
        geometries = [finer(random_geometry(rng, self.population.centre, CEPHALOGRAM_VIEWS if c else ViewRanges()),
                            self.zoom) for c in looks]
        lines = render_coarse(renderer, geometries, self.coarse)
        arrays = _stacked_labels(geometries, variant.landmarks_ras)
        geo = [geometry_arrays(g) for g in geometries]
        arrays.update({key: np.stack([x[key] for x in geo]) for key in geo[0]})
        d = variant.deformation
        arrays.update(images=np.stack([appearance(line, g, rng, c, self.zoom)
                                       for line, g, c in zip(lines, geometries, looks)]),
                      vessels=np.full(n, variant.vessels), def_matrix=d.matrix, def_centre=d.centre,
                      def_offset=d.offset, def_field=d.field, def_box=d.box)
        return arrays


_WORKER_MAKER: _ShardMaker | None = None  # set in each worker process by _start_worker


def _start_worker(maker: _ShardMaker) -> None:
    global _WORKER_MAKER
    torch.set_num_threads(1)
    _WORKER_MAKER = maker


def _in_worker(job):
    return _WORKER_MAKER(job)


@contextlib.contextmanager
def _shard_map(maker: _ShardMaker, workers: int):
    """A map over shard jobs, in order: in this process, or in ``workers`` spawned processes that
    each receive the population once."""
    if workers == 1:
        yield lambda jobs: map(maker, jobs)
        return
    ctx = multiprocessing.get_context("spawn")  # not fork: torch's thread pools do not survive it
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_start_worker, initargs=(maker,)) as pool:
        yield lambda jobs: pool.map(_in_worker, jobs)


def _stacked_labels(geometries: list[CArmGeometry], points_ras: np.ndarray) -> dict:
    """:func:`labels_for` of each geometry, stacked to (N, ...) arrays."""
    per = [labels_for(g, points_ras) for g in geometries]
    return {key: np.stack([p[key] for p in per]) for key in per[0]}


def _save_atomic(path: Path, content) -> None:
    """Write a shard (dict of arrays, .npz) or the metadata (dict, .json) via a temporary file."""
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    if path.suffix == ".npz":
        np.savez(tmp, **content)
    else:
        tmp.write_text(json.dumps(content, indent=2))
    os.replace(tmp, path)


def relabel_dataset(folder: str | os.PathLike, labels: list[str], points_ras: np.ndarray, out: str | os.PathLike,
                    source: str = "") -> dict:
    """Write ``folder``'s images to ``out`` with labels recomputed for corrected template landmarks
    ``points_ras`` (L, 3) RAS mm: each shard's stored deformation moves them into its head variant and
    each sample's stored geometry projects them. ``labels`` must be the dataset's, in its order.
    The images are copied unchanged (a synthetic lower head stays where the original anchors put it)."""
    folder, out = Path(folder), Path(out)
    meta_path = folder / "dataset.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{folder} is not a dataset folder (no dataset.json)")
    meta = json.loads(meta_path.read_text())
    if list(labels) != meta["labels"]:
        raise ValueError(f"the landmarks {list(labels)} are not the dataset's {meta['labels']} (same names, same order)")
    if out.resolve() == folder.resolve():
        raise ValueError("relabel writes a new dataset folder: --out must differ from --data")
    points_ras = np.asarray(points_ras, float)
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(folder.glob("shard_*.npz")):
        with np.load(path) as z:
            arrays = {key: z[key] for key in z.files}
        d = Deformation(arrays["def_matrix"], arrays["def_centre"], arrays["def_offset"], arrays["def_field"],
                        arrays["def_box"])
        variant_points = d.to_variant(points_ras)
        geometries = [geometry_from_arrays(arrays, n) for n in range(len(arrays["uv"]))]
        arrays.update(_stacked_labels(geometries, variant_points))
        _save_atomic(out / path.name, arrays)
    meta = dict(meta, relabelled=dict(from_folder=str(folder), landmarks=source))
    _save_atomic(out / "dataset.json", meta)
    return meta


def load_dataset(folders: str | os.PathLike | list, keys: tuple[str, ...] | None = None) -> tuple[dict, dict]:
    """(metadata, arrays concatenated over the shards of one dataset folder or several made with the
    same labels, only ``keys`` if given; per-variant deformation arrays are repeated per sample)."""
    folders = [Path(f) for f in (folders if isinstance(folders, (list, tuple)) else [folders])]
    metas, parts = [], {}
    for folder in folders:
        meta_path = folder / "dataset.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{folder} is not a dataset folder (no dataset.json)")
        metas.append(json.loads(meta_path.read_text()))
        if metas[-1]["labels"] != metas[0]["labels"]:
            raise ValueError(f"{folder}: its landmark labels differ from those of {folders[0]}")
        if metas[-1]["image_size"] != metas[0]["image_size"]:
            raise ValueError(f"{folder}: its images are {metas[-1]['image_size']} px, those of {folders[0]} "
                             f"{metas[0]['image_size']} px")
        for path in sorted(folder.glob("shard_*.npz")):
            with np.load(path) as z:
                n = len(z["uv"])
                for key in (z.files if keys is None else keys):
                    value = z[key] if not key.startswith("def_") else np.repeat(z[key][None], n, axis=0)
                    parts.setdefault(key, []).append(value)
    meta = metas[0]
    if len(metas) > 1:
        samples, seconds = sum(m["samples"] for m in metas), sum(m["seconds"] for m in metas)
        meta = dict(meta, samples=samples, seed=[m["seed"] for m in metas], shards=sum(m["shards"] for m in metas),
                    seconds=seconds, samples_per_second=samples / seconds)
        for key, default in (("coarse", None), ("lower_head_mm", 0.0), ("relabelled", None)):  # per folder if they differ
            values = [m.get(key, default) for m in metas]
            meta[key] = values[0] if len({json.dumps(v, sort_keys=True) for v in values}) == 1 else values
    return meta, {key: np.concatenate(v) for key, v in parts.items()}
