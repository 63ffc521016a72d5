"""Global-to-local landmark FCNNs (Noothout et al. 2020), extended for out-of-image and 3D
landmarks (Fum et al. 2024).

Each network divides its input into square patches (the network stride). For every patch and
landmark it outputs a displacement from the patch centre to the landmark (px, may point outside
the image), a presence logit (is the landmark inside this patch) and, for the global network, the
landmark's depth offset from the isocenter plane along the principal ray (units of
``DEPTH_UNIT_MM``; depth = SOD + offset). The head's own position along the beam is not
observable in one view: the model assumes it near the isocenter (training: within +-10 mm).

Aggregation (:func:`aggregate`): estimate = sum_p w_p (centre_p + displacement_p) with
w = softmax over patches of the presence logits, i.e. weights proportional to the presence
odds p / (1 - p), which is the presence-weighted average when presences are small. A landmark
outside the image has no present patch; the weights are then the relative odds of all patches,
and the aggregate loss trains them to favour patches whose votes are accurate (in practice those
nearest to the landmark), so the estimate stays defined and continuous across the border.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.experimental.optimization import fuse

OUTPUTS_PER_LANDMARK = 4  # dx, dy, presence logit, depth offset
DEPTH_UNIT_MM = 100.0
DEPTH_LOSS_WEIGHT = 10.0  # default weight of the depth-offset loss


def _block(cin: int, cout: int, stride: int, first: int = 1, second: int = 1) -> nn.Sequential:
    """Two 3x3 convolutions (dilations ``first``, ``second``), the first with ``stride``."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=first, dilation=first, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=second, dilation=second, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class PatchFCNN(nn.Module):
    """Fully convolutional: (B, 1, H, W) image -> (B, L, 4, H/stride, W/stride).

    ``atrous``: the last ``atrous`` strided blocks run at stride 1 with the convolutions after them
    dilated instead (DeepLab's conversion): the same weights then give an output twice as dense per
    converted block, whose every other patch is exactly the strided network's output."""

    def __init__(self, n_landmarks: int, widths: tuple[int, ...] = (16, 32, 48, 64, 96),
                 strides: tuple[int, ...] = (2, 2, 2, 2, 1), displacement_scale: float = 64.0,
                 dilations: tuple[int, ...] = (2,), atrous: int = 0):
        super().__init__()
        layers, cin, rate = [], 1, 1
        strided = [n for n, s in enumerate(strides) if s > 1]
        converted = strided[len(strided) - atrous:]
        for n, (width, stride) in enumerate(zip(widths, strides)):
            if n in converted:
                layers.append(_block(cin, width, 1, rate, rate * stride))
                rate *= stride
            else:
                layers.append(_block(cin, width, stride, rate, rate))
            cin = width
        for dilation in dilations:  # context at the output resolution
            d = dilation * rate
            layers.append(nn.Sequential(nn.Conv2d(cin, cin, 3, padding=d, dilation=d, bias=False),
                                        nn.BatchNorm2d(cin), nn.ReLU(inplace=True)))
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(cin, n_landmarks * OUTPUTS_PER_LANDMARK, 1)
        self.n_landmarks = n_landmarks
        self.stride = int(np.prod(strides)) // rate
        self.config = dict(n_landmarks=n_landmarks, widths=list(widths), strides=list(strides),
                           displacement_scale=displacement_scale, dilations=list(dilations), atrous=atrous)
        self.displacement_scale = displacement_scale  # px per unit of the raw displacement output

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = self.features(image)
        with torch.autocast(features.device.type, enabled=False):  # px displacements need float32, not bf16
            out = self.head(features.float())
        b, _, h, w = out.shape
        out = out.reshape(b, self.n_landmarks, OUTPUTS_PER_LANDMARK, h, w)
        return torch.cat([out[:, :, :2] * self.displacement_scale, out[:, :, 2:]], dim=2)


def densified(net: PatchFCNN, atrous: int = 1) -> PatchFCNN:
    """A copy of ``net`` with its last ``atrous`` strided blocks converted (same weights, an output
    2**atrous times denser per axis; see :class:`PatchFCNN`)."""
    dense = PatchFCNN(**dict(net.config, atrous=atrous))
    dense.load_state_dict(net.state_dict())
    return dense


def fused(net: PatchFCNN) -> PatchFCNN:
    """An inference copy of ``net`` (eval mode): each BatchNorm of its features folded into the
    convolution before it (torch.fx; the head stays outside the trace, with its float32 autocast
    guard) and the weights in channels-last layout (oneDNN's fast path on CPU): the same outputs to
    float rounding, faster (Testing/Benchmarks/landmark_speed.py)."""
    out = copy.deepcopy(net).eval()
    out.features = fuse(out.features, inplace=True)
    return out.to(memory_format=torch.channels_last)


def averaged(nets: list[PatchFCNN]) -> PatchFCNN:
    """A network whose weights and BatchNorm statistics are the element-wise mean of ``nets``' (checkpoint
    averaging: useful for networks fine-tuned from one start, which stay in one basin); integer buffers
    (BatchNorm's step count) from the first. ``ValueError`` unless all share one architecture."""
    if not nets or any(n.config != nets[0].config for n in nets):
        raise ValueError("only networks of one architecture can be averaged")
    states = [n.state_dict() for n in nets]
    mean = {k: torch.stack([s[k].double() for s in states]).mean(0).to(v.dtype) if v.is_floating_point() else v
            for k, v in states[0].items()}
    out = PatchFCNN(**nets[0].config)
    out.load_state_dict(mean)
    return out.eval()


def gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, C, H, W) images blurred with a separable Gaussian of ``sigma`` px (edges replicated), as
    two products with 1-D blur matrices (the same cost for any ``sigma``)."""
    h, w = img.shape[-2:]
    return _blur_matrix(h, sigma, img) @ img @ _blur_matrix(w, sigma, img).T


def _blur_matrix(n: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    """(n, n) matrix of a 1-D Gaussian blur of ``sigma`` px whose taps beyond the ends fall on the end samples."""
    r = int(np.ceil(3 * sigma))
    taps = torch.arange(-r, r + 1, device=like.device)
    k = torch.exp(-taps.to(like.dtype) ** 2 / (2 * sigma ** 2))
    rows = torch.arange(n, device=like.device)[:, None].expand(n, 2 * r + 1)
    m = torch.zeros(n, n, dtype=like.dtype, device=like.device)
    m.index_put_((rows, (rows + taps).clamp(0, n - 1)), (k / k.sum()).expand(n, -1), accumulate=True)
    return m


def patch_centres(h: int, w: int, stride: int, device=None) -> torch.Tensor:
    """(h*w, 2) pixel (u, v) centres of the patch grid (pixel centres at integers)."""
    v, u = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return torch.stack([u, v], -1).reshape(-1, 2).float() * stride + (stride - 1) / 2.0


def aggregate(output: torch.Tensor, stride: int) -> dict[str, torch.Tensor]:
    """Presence-weighted estimates from a (B, L, 4, h, w) output: ``uv`` (B, L, 2) px,
    ``depth_offset`` (B, L) in DEPTH_UNIT_MM, ``presence`` (B, L) = probability that the landmark
    is in the image (sum of the 4 largest patch presences, capped at 1: a landmark near a patch
    corner splits its presence between up to 4 patches), ``weights``
    (B, L, h*w)."""
    b, n, _, h, w = output.shape
    flat = output.reshape(b, n, OUTPUTS_PER_LANDMARK, h * w)
    weights = torch.softmax(flat[:, :, 2], dim=-1)
    votes = patch_centres(h, w, stride, output.device)[None, None] + flat[:, :, :2].transpose(2, 3)
    uv = (weights[..., None] * votes).sum(2)
    depth_offset = (weights * flat[:, :, 3]).sum(2)
    presence = torch.sigmoid(flat[:, :, 2]).topk(min(4, h * w), -1).values.sum(-1).clamp(max=1.0)
    return dict(uv=uv, depth_offset=depth_offset, presence=presence, weights=weights,
                votes=votes)


def mirrored(output: torch.Tensor, partners: list[int]) -> torch.Tensor:
    """A (B, L, 4, h, w) output of the left-right mirrored images expressed in the images' own frame:
    patch columns reversed, horizontal displacements negated, each landmark taking its mirror
    partner's channels (``partners``: :func:`landmarks.mirror_permutation`). Exact because the patch
    grid is symmetric: the centres (stride - 1) / 2 + k stride, k < w, mirror onto each other in an
    image of w * stride columns."""
    out = output.flip(-1)[:, partners].clone()
    out[:, :, 0] = -out[:, :, 0]
    return out


def aggregate_passes(outputs: list[torch.Tensor], stride: int) -> dict[str, torch.Tensor]:
    """:func:`aggregate` over several passes of one image on one patch grid (e.g. the image and its
    :func:`mirrored` pass): one softmax over all passes' patches, so each pass's estimate weighs in
    by its total presence odds; ``presence`` is the passes' mean."""
    passes = [aggregate(o, stride) for o in outputs]
    mass = torch.stack([torch.logsumexp(o.flatten(3)[:, :, 2], -1) for o in outputs])  # (P, B, L)
    w = torch.softmax(mass, 0)
    return dict(uv=sum(wp[..., None] * e["uv"] for wp, e in zip(w, passes)),
                depth_offset=sum(wp * e["depth_offset"] for wp, e in zip(w, passes)),
                presence=torch.stack([e["presence"] for e in passes]).mean(0))


def patch_targets(uv: torch.Tensor, h: int, w: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets for landmarks ``uv`` (B, L, 2) px: displacements (B, L, h*w, 2) and presence
    (B, L, h*w) (1 for the patch that contains the landmark)."""
    centres = patch_centres(h, w, stride, uv.device)
    displacement = uv[:, :, None, :] - centres[None, None]
    cell = torch.floor(uv / stride)
    inside = (cell[..., 0] >= 0) & (cell[..., 0] < w) & (cell[..., 1] >= 0) & (cell[..., 1] < h)
    index = (cell[..., 1].clamp(0, h - 1) * w + cell[..., 0].clamp(0, w - 1)).long()
    presence = torch.zeros(uv.shape[0], uv.shape[1], h * w, device=uv.device)
    presence.scatter_(2, index[..., None], inside[..., None].float())
    return displacement, presence


def landmark_loss(output: torch.Tensor, stride: int, uv: torch.Tensor, depth_offset: torch.Tensor | None = None,
                  visible: torch.Tensor | None = None, size: float = 256.0,
                  depth_weight: float = DEPTH_LOSS_WEIGHT) -> tuple[torch.Tensor, dict]:
    """Patch displacement (smooth L1, px / 16) + presence (BCE) + aggregated estimate (L1, px / 16)
    [+ depth offset (L1 in DEPTH_UNIT_MM, x ``depth_weight``)]. ``visible`` (B, L) masks the presence
    of landmarks hidden under collimation."""
    b, n, _, h, w = output.shape
    flat = output.reshape(b, n, OUTPUTS_PER_LANDMARK, h * w)
    displacement, presence = patch_targets(uv, h, w, stride)
    if visible is not None:
        presence = presence * visible[..., None].float()
    pred_d = flat[:, :, :2].transpose(2, 3)
    # Patches far from a landmark vote with less weight in training too: their error is larger.
    distance = displacement.norm(dim=-1)
    patch_weight = 1.0 / (1.0 + distance / size)
    loss_d = (F.smooth_l1_loss(pred_d / 16, displacement / 16, reduction="none").sum(-1) * patch_weight).mean()
    loss_p = F.binary_cross_entropy_with_logits(flat[:, :, 2], presence, pos_weight=torch.tensor(16.0))
    est = aggregate(output, stride)
    loss_a = F.smooth_l1_loss(est["uv"] / 16, uv / 16)
    parts = dict(displacement=loss_d, presence=loss_p, aggregate=loss_a)
    if depth_offset is not None:
        parts["depth"] = F.l1_loss(est["depth_offset"], depth_offset) * depth_weight
    return sum(parts.values()), {k: float(v.detach()) for k, v in parts.items()}
