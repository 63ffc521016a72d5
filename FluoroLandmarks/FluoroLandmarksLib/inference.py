"""The landmark model: weights I/O (sha256-checked, ``torch.load(weights_only=True)``) and the
per-frame pipeline preprocess -> global -> local -> shape-model fit (3D).

Image frame: pixel (u, v) = (column, row) of the input image, 0 = centre of the first pixel.
3D: RAS mm through the frame's :class:`CArmGeometry`.
"""

from __future__ import annotations

import hashlib
import json
import os
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .dataset import IMAGE_SIZE
from .geometry import CArmGeometry
from .landmarks import mirror_permutation
from .network import DEPTH_UNIT_MM, PatchFCNN, aggregate, aggregate_passes, fused, gaussian_blur, mirrored
from .shape_model import CONFIDENCE_POWER, ShapeModel, View
from .training import crops, normalize

WEIGHTS_FILE, CARD_FILE = "weights.pt", "model_card.json"
PRESENCE_THRESHOLD = 0.5  # a landmark counts as seen (e.g. an eye lens in the beam) above this confidence
SHIPPED_MODEL = Path(__file__).resolve().parents[1] / "Resources" / "Models" / "landmarks"
PADDINGS = ("edge", "brightest", "darkest")  # how a non-square frame is padded to the network's square
# Gaussian blur (SD, network px) before the network for real frames: the training DRRs come from a CT
# of ~1 mm voxels, real radiographs are sharper and finer-textured. On the real cephalograms
# (Testing/Benchmarks/cephalograms.py) 1.5-2.5 px were best for every model tried; on DRRs it costs.
REAL_IMAGE_BLUR_PX = 2.0


def sha256(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass
class LandmarkModel:
    labels: list[str]
    global_net: PatchFCNN
    local_net: PatchFCNN | None
    card: dict
    shape: ShapeModel | None = None
    local_landmarks: list[str] | None = None  # refined by the local network (None: all)
    bf16: bool = False  # trained in bfloat16 autocast (card: inference_precision)
    mirror: bool = False  # also read the left-right mirrored frame (card: mirror_averaging)
    local_zoom: int = 1  # the local network reads a frame this many times finer than the global one (card)

    @property
    def autocast_bf16(self) -> bool:
        """bfloat16 inference: for a bf16-trained model on a CPU with native bf16 (AVX512-BF16/AMX);
        elsewhere float32 (same weights; emulated bf16 would be slower)."""
        return self.bf16 and torch.ops.mkldnn._is_mkldnn_bf16_supported()

    def save(self, folder: str | os.PathLike, card: dict) -> Path:
        """Write weights and model card (with the weights' sha256) atomically into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {"global": self.global_net.state_dict()}
        if self.local_net is not None:
            state["local"] = self.local_net.state_dict()
        if self.shape is not None:
            state["shape"] = {key: torch.from_numpy(np.asarray(value, np.float64))
                              for key, value in vars(self.shape).items()}
        tmp = folder / f".{WEIGHTS_FILE}.tmp"
        torch.save(state, tmp)
        os.replace(tmp, folder / WEIGHTS_FILE)
        self.card = dict(card, labels=self.labels, global_architecture=self.global_net.config,
                         local_architecture=self.local_net.config if self.local_net else None,
                         local_landmarks=self.local_landmarks if self.local_net else None,
                         local_zoom=self.local_zoom if self.local_net else None,
                         inference_precision="bfloat16" if self.bf16 else "float32",
                         mirror_averaging=self.mirror,
                         parameters=sum(p.numel() for net in (self.global_net, self.local_net) if net is not None
                                        for p in net.parameters()),
                         sha256=sha256(folder / WEIGHTS_FILE))
        tmp = folder / f".{CARD_FILE}.tmp"
        tmp.write_text(json.dumps(self.card, indent=2))
        os.replace(tmp, folder / CARD_FILE)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike = SHIPPED_MODEL, mirror: bool | None = None) -> "LandmarkModel":
        """The model in ``folder`` (sha256-checked); ``mirror`` overrides its card's mirror_averaging."""
        folder = Path(folder)
        if not (folder / CARD_FILE).exists() or not (folder / WEIGHTS_FILE).exists():
            raise FileNotFoundError(f"{folder} is not a landmark model folder ({CARD_FILE} + {WEIGHTS_FILE})")
        card = json.loads((folder / CARD_FILE).read_text())
        digest = sha256(folder / WEIGHTS_FILE)
        if digest != card.get("sha256"):
            raise ValueError(f"{folder / WEIGHTS_FILE}: sha256 {digest} does not match the model card; refusing to load")
        state = torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        global_net = PatchFCNN(**card["global_architecture"])
        global_net.load_state_dict(state["global"])
        local_net = None
        if card.get("local_architecture"):
            local_net = PatchFCNN(**card["local_architecture"])
            local_net.load_state_dict(state["local"])
        for net in (global_net, local_net):
            if net is not None:
                net.eval()
        shape = ShapeModel(**{key: value.numpy() for key, value in state["shape"].items()}) if "shape" in state else None
        return cls(card["labels"], global_net, local_net, card, shape, card.get("local_landmarks"),
                   card.get("inference_precision") == "bfloat16",
                   card.get("mirror_averaging", False) if mirror is None else mirror, card.get("local_zoom") or 1)


@dataclass
class Detection:
    """Per landmark: ``uv`` (L, 2) input-image px, ``confidence`` (L,) max patch presence,
    ``in_image`` (L,) on the image and inside the geometry's collimated field, ``depth_mm`` (L,),
    ``xyz_ras`` (L, 3) mm."""

    labels: list[str]
    uv: np.ndarray
    confidence: np.ndarray
    in_image: np.ndarray
    depth_mm: np.ndarray
    xyz_ras: np.ndarray


def to_network_frame(image: np.ndarray, fill: float | None = None,
                     size: int = IMAGE_SIZE) -> tuple[np.ndarray, float, np.ndarray]:
    """Pad a (rows, columns) image to a square and resize it to ``size`` px (the network's
    IMAGE_SIZE; a multiple of it for a finer local frame). The padding repeats
    the edge values, or is the constant ``fill``: the value a collimator blade reads in the image
    (training DRRs read their brightest value there if bone is bright, their darkest if bone is dark).
    Returns the image, the scale (input px per network px) and the offset (px) so that
    uv_input = uv_network * scale - offset."""
    image = np.asarray(image, np.float32)
    if image.ndim != 2 or min(image.shape) < 16 or not np.isfinite(image).all():
        raise ValueError(f"expected a finite 2D image of at least 16x16 pixels, got shape {image.shape}")
    rows, cols = image.shape
    side = max(rows, cols)
    pad_v, pad_u = (side - rows) // 2, (side - cols) // 2
    pad = ((pad_v, side - rows - pad_v), (pad_u, side - cols - pad_u))
    square = np.pad(image, pad, mode="edge") if fill is None else np.pad(image, pad, constant_values=fill)
    square = resized(torch.from_numpy(square)[None], size)[0].numpy()
    scale = side / size
    # network pixel centre n maps to input pixel (n + 0.5) * scale - 0.5 - pad
    return square, scale, np.array([pad_u + 0.5 - 0.5 * scale, pad_v + 0.5 - 0.5 * scale])


def resized(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, S, S) square images resampled to (B, size, size) (bilinear, antialiased when shrinking;
    pixel centre n of the output lies at input px (n + 0.5) * S / size - 0.5)."""
    if images.shape[-1] == size:
        return images
    return F.interpolate(images.float()[:, None], size=(size, size), mode="bilinear", align_corners=False,
                         antialias=images.shape[-1] > size)[:, 0]


def network_frames(model: LandmarkModel, image: np.ndarray,
                   fill: float | None = None) -> tuple[np.ndarray, np.ndarray | None, float, np.ndarray]:
    """What ``model`` reads of one (rows, columns) image: the network frame (:func:`to_network_frame`),
    its local network's finer frame (IMAGE_SIZE x ``model.local_zoom`` px, resampled from the image; None
    when the local stage reads the network frame or there is none), and the network frame's scale and
    offset (uv_input = uv_network * scale - offset)."""
    square, scale, offset = to_network_frame(image, fill)
    fine = None
    if model.local_net is not None and model.local_zoom > 1:
        fine = to_network_frame(image, fill, IMAGE_SIZE * model.local_zoom)[0]
    return square, fine, scale, offset


_FUSED: "weakref.WeakKeyDictionary[PatchFCNN, tuple[tuple[int, ...], PatchFCNN]]" = weakref.WeakKeyDictionary()


def inference_net(net: PatchFCNN) -> PatchFCNN:
    """``net``'s :func:`network.fused` copy for inference, made once per network and made again when
    its weights or statistics have changed in place since (training, ``load_state_dict``)."""
    stamp = tuple(t._version for t in net.state_dict().values())
    if net not in _FUSED or _FUSED[net][0] != stamp:
        _FUSED[net] = stamp, fused(net)
    return _FUSED[net][1]


def _blurred(images: torch.Tensor, blur_px: float) -> torch.Tensor:
    return gaussian_blur(images[:, None], blur_px)[:, 0] if blur_px > 0 else images


@torch.no_grad()
def predict_network_frame(model: LandmarkModel, images: np.ndarray, blur_px: float = 0.0,
                          fine: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """(B, 256, 256) images, first blurred by a Gaussian of SD ``blur_px`` (network px) if > 0 ->
    ``uv`` (B, L, 2) network px, ``depth_offset`` (B, L) mm from the isocenter plane,
    ``confidence`` (B, L); local refinement of the model's local landmarks estimated inside the image.
    With ``model.mirror`` the global network also reads each image mirrored left-right (a mirrored
    head, left and right landmarks swapped) and both passes' patches vote together
    (:func:`network.aggregate_passes`). A model whose local network reads a finer frame
    (``local_zoom`` > 1) refines on ``fine`` (B, 256 z, 256 z), the same images at z times finer
    pixels (blurred by z x ``blur_px``); without it, on ``images`` resampled to that size."""
    x = normalize(_blurred(torch.as_tensor(images).float(), blur_px))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=model.autocast_bf16):
        out = inference_net(model.global_net)(torch.cat([x, x.flip(-1)]) if model.mirror else x)
    if model.mirror:
        est = aggregate_passes([out[:len(x)], mirrored(out[len(x):], mirror_permutation(model.labels))],
                               model.global_net.stride)
    else:
        est = aggregate(out, model.global_net.stride)
    uv = est["uv"]
    if model.local_net is not None:
        refined_labels = model.labels if model.local_landmarks is None else model.local_landmarks
        chosen = torch.tensor([label in refined_labels for label in model.labels])
        z = model.local_zoom
        if z == 1:
            uv = refine_local(model.local_net, x, uv, chosen)
        else:
            frames = resized(torch.as_tensor(images), IMAGE_SIZE * z) if fine is None else torch.as_tensor(fine)
            frames = normalize(_blurred(frames.float(), blur_px * z))
            uv = (refine_local(model.local_net, frames, (uv + 0.5) * z - 0.5, chosen) + 0.5) / z - 0.5
    return dict(uv=uv.numpy(), depth_offset=est["depth_offset"].numpy() * DEPTH_UNIT_MM,
                confidence=est["presence"].numpy())


def refine_local(local_net: PatchFCNN, frames: torch.Tensor, uv: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """The local stage: each ``chosen`` (L,) landmark estimated inside its frame re-estimated by
    ``local_net`` on the crop around it. ``frames`` (B, 1, H, W) normalized images and ``uv`` (B, L, 2)
    px in the same frame (the network frame, or a finer one for a local network trained at that
    resolution); returns the refined (B, L, 2) px, the others unchanged."""
    height, width = frames.shape[-2:]
    inside = (((uv >= -0.5) & (uv[..., :1] <= width - 0.5) & (uv[..., 1:] <= height - 0.5)).all(-1)
              & chosen).reshape(-1)
    if not inside.any():
        return uv
    patches, origin = crops(frames, uv)
    keep = inside.nonzero()[:, 0]
    out = inference_net(local_net)(patches[keep])[torch.arange(len(keep)), keep % uv.shape[1]][:, None]
    refined = uv.reshape(-1, 2).clone()
    refined[keep] = aggregate(out, local_net.stride)["uv"][:, 0] + origin[keep]
    return refined.reshape(uv.shape)


def place(model: LandmarkModel, uv: np.ndarray, depth_offset_mm: np.ndarray, confidence: np.ndarray,
          geometry: CArmGeometry, shape_fit: bool = True,
          head_depth_mm: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Final (L, 2) px, (L,) depth mm and (L, 3) RAS mm of one frame's network estimates: the
    model's shape model fitted to them (confidence-weighted), or without one (or ``shape_fit``
    False) the estimates back-projected at their own depths. ``head_depth_mm``: the head centre's
    known distance from the source along the principal ray (taken as known to ``HEAD_DEPTH_SD_MM``);
    None = unknown, assumed at the isocenter."""
    if model.shape is None or not shape_fit:
        depth = geometry.sod_mm + depth_offset_mm
        return uv, depth, geometry.backproject(uv, depth)
    fit = model.shape.fit(uv, confidence ** CONFIDENCE_POWER, geometry, head_depth_mm=head_depth_mm)
    return fit.uv, fit.depth_mm, fit.points_ras


def place_views(model: LandmarkModel, frames: list[tuple[np.ndarray, np.ndarray, CArmGeometry]]
                ) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """One head seen in several frames that it did not move between (e.g. the two planes of a
    biplane C-arm): the shape model fitted to every frame's network estimates ((L, 2) px,
    (L,) confidence, geometry) at once. Returns each frame's (L, 2) px and (L,) depth mm from
    the source, and the (L, 3) RAS mm landmarks."""
    if model.shape is None:
        raise ValueError("fitting several frames needs a model with a shape model")
    fit = model.shape.fit_views([View(uv, c ** CONFIDENCE_POWER, g, g.sod_mm) for uv, c, g in frames])
    projected = [g.project(fit.points_ras) for _, _, g in frames]
    return [uv for uv, _ in projected], [depth for _, depth in projected], fit.points_ras


@dataclass(frozen=True)
class FramePreparation:
    """How a frame reaches the network: ``padding`` of a non-square frame (one of :data:`PADDINGS`,
    see :meth:`fill`) and a Gaussian blur of SD ``blur_px`` (network px; real radiographs:
    :data:`REAL_IMAGE_BLUR_PX`, DRRs: 0)."""

    padding: str = "edge"
    blur_px: float = 0.0

    def __post_init__(self):
        if self.padding not in PADDINGS:
            raise ValueError(f"padding must be one of {', '.join(PADDINGS)}, got {self.padding!r}")
        if not (0.0 <= self.blur_px <= 16.0):
            raise ValueError(f"blur must be 0-16 px, got {self.blur_px}")

    def fill(self, image: np.ndarray) -> float | None:
        """The constant ``image`` is padded with (:func:`to_network_frame`; None: its edges):
        "brightest" / "darkest" is its value where a collimator blade would be in a bone-bright
        radiograph (a cephalogram) / bone-dark fluoroscopy."""
        if self.padding == "edge":
            return None
        return float(np.max(image) if self.padding == "brightest" else np.min(image))


DRR_FRAME = FramePreparation()  # edges repeated, no blur: for DRRs (the default of the functions below)


def frame_estimates(model: LandmarkModel, image: np.ndarray, geometry: CArmGeometry,
                    preparation: FramePreparation = DRR_FRAME) -> dict[str, np.ndarray]:
    """The network's estimates on one frame (rows, columns) whose acquisition is ``geometry`` (its
    detector size must be the image's (columns, rows)), prepared as ``preparation`` says:
    ``uv`` (L, 2) input-image px, ``depth_offset`` (L,) mm, ``confidence`` (L,)."""
    rows, cols = np.asarray(image).shape[:2]
    if tuple(geometry.detector_size_px) != (cols, rows):
        raise ValueError(f"geometry detector {geometry.detector_size_px} does not match the image (columns, rows)="
                         f"({cols}, {rows})")
    return image_estimates(model, image, preparation)


def image_estimates(model: LandmarkModel, image: np.ndarray, preparation: FramePreparation = DRR_FRAME
                    ) -> dict[str, np.ndarray]:
    """:func:`frame_estimates` without a geometry (the image alone)."""
    square, fine, scale, offset = network_frames(model, image, preparation.fill(image))
    p = predict_network_frame(model, square[None], preparation.blur_px, None if fine is None else fine[None])
    return dict(uv=p["uv"][0] * scale - offset, depth_offset=p["depth_offset"][0], confidence=p["confidence"][0])


def detect(model: LandmarkModel, image: np.ndarray, geometry: CArmGeometry,
           head_depth_mm: float | None = None, preparation: FramePreparation = DRR_FRAME) -> Detection:
    """Landmarks of one frame (see :func:`frame_estimates`); ``head_depth_mm`` as in :func:`place`."""
    e = frame_estimates(model, image, geometry, preparation)
    uv, depth, xyz = place(model, e["uv"], e["depth_offset"], e["confidence"], geometry, head_depth_mm=head_depth_mm)
    return Detection(list(model.labels), uv, e["confidence"], geometry.in_field_px(uv), depth, xyz)


def detect_views(model: LandmarkModel, frames: list[tuple[np.ndarray, CArmGeometry]],
                 preparation: FramePreparation = DRR_FRAME) -> list[Detection]:
    """Landmarks of one head seen in several frames (image, geometry) that it did not move between,
    e.g. a biplane C-arm's two planes: one Detection per frame, all with the same 3D landmarks."""
    estimates = [frame_estimates(model, image, g, preparation) for image, g in frames]
    uvs, depths, xyz = place_views(model, [(e["uv"], e["confidence"], g) for e, (_, g) in zip(estimates, frames)])
    return [Detection(list(model.labels), uv, e["confidence"], g.in_field_px(uv), depth, xyz)
            for uv, depth, e, (_, g) in zip(uvs, depths, estimates, frames)]
