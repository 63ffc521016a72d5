"""Real lateral cephalograms: sim-to-real with the DRR-trained model, and the same architecture
trained on real images (Noothout et al.'s cephalometric experiment).

    python Testing/Benchmarks/cephalograms.py --data DIR [--model DIR] [--input-blur PX] [--edge-padding] [--[no-]mirror] [--json FILE]
    python Testing/Benchmarks/cephalograms.py --cv 5 --data DIR [--local-zoom Z] [--json FILE]
    python Testing/Benchmarks/cephalograms.py --train DIR --test DIR [--json FILE]

DIR has the layout of ../shared/data/cephalograms (images/NNN.png, landmarks.csv with LabelMe
corner-origin pixel coordinates of two annotators, spacing.csv in mm per pixel). The ground truth
is the mean of the annotators' points; errors are in mm with each image's spacing (mid-sagittal
scale, as the ISBI 2015 convention). Models trained here are never written to disk: the data
has no licence.
"""

import argparse
import csv
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "FluoroLandmarks"))
from FluoroLandmarksLib.dataset import IMAGE_SIZE  # noqa: E402
from FluoroLandmarksLib.inference import (DRR_FRAME, REAL_IMAGE_BLUR_PX, SHIPPED_MODEL,  # noqa: E402
                                          FramePreparation, LandmarkModel, image_estimates, to_network_frame)
from FluoroLandmarksLib.landmarks import load_catalogue  # noqa: E402
from FluoroLandmarksLib.training import train_global, train_local  # noqa: E402

ISBI = ["sella", "nasion", "orbitale", "porion", "subspinale_A_point", "supramentale_B_point", "pogonion", "menton",
        "gnathion", "gonion", "lower_incisal_incision", "upper_incisal_incision", "upper_lip", "lower_lip",
        "subnasale", "soft_tissue_pogonion", "posterior_nasal_spine", "anterior_nasal_spine", "articulare"]
SDR_MM = (2.0, 2.5, 3.0, 4.0, 10.0)
# The global network the cross-validation figures in the README were measured with (0.35 M parameters).
CEPH_ARCHITECTURE = dict(widths=(16, 32, 48, 64, 96), strides=(2, 2, 2, 2, 1), dilations=(2,))


def load_folder(folder: Path):
    """ids, images (list of arrays), truth (N, 19, 2) px (pixel centres at integers; NaN if
    unknown), per-annotator points (2, N, 19, 2), spacing (N,) mm/px."""
    points = defaultdict(list)
    for row in csv.DictReader((folder / "landmarks.csv").open()):
        points[(row["image"], row["annotator"], row["name"])].append((float(row["x"]) - 0.5, float(row["y"]) - 0.5))
    spacing = {r["image"]: float(r["mm_per_pixel"]) for r in csv.DictReader((folder / "spacing.csv").open())
               if r.get("ok", "true").lower() == "true"}
    annotators = sorted({a for _, a, _ in points})
    ids = sorted(i for i in {i for i, _, _ in points} if i in spacing)
    each = np.full((len(annotators), len(ids), len(ISBI), 2), np.nan)
    for (image, annotator, name), pts in points.items():
        if image in spacing and len(pts) == 1 and name in ISBI:  # duplicated labels are ambiguous
            each[annotators.index(annotator), ids.index(image), ISBI.index(name)] = pts[0]
    truth = np.nanmean(each, axis=0)
    images = [sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "images" / f"{i}.png"))).astype(np.float32)
              for i in ids]
    return ids, images, truth, each, np.array([spacing[i] for i in ids])


def sdr_table(errors_mm: np.ndarray, names: list[str]) -> dict:
    table = {}
    for n, name in enumerate(names):
        e = errors_mm[:, n][np.isfinite(errors_mm[:, n])]
        table[name] = dict(n=int(e.size), mre_mm=float(e.mean()), sd_mm=float(e.std()),
                           **{f"sdr_{t:g}mm": float((e <= t).mean()) for t in SDR_MM})
    e = errors_mm[np.isfinite(errors_mm)]
    overall = dict(n=int(e.size), mre_mm=float(e.mean()), sd_mm=float(e.std()),
                   **{f"sdr_{t:g}mm": float((e <= t).mean()) for t in SDR_MM})
    return dict(overall=overall, per_landmark=table)


def print_table(title: str, result: dict, inter: dict | None = None) -> None:
    print(title)
    print(f"  {'landmark':24s} {'MRE mm':>12s} " + " ".join(f"{'<=' + format(t, 'g'):>6s}" for t in SDR_MM)
          + ("   inter-annotator MRE / <=2" if inter else ""))
    rows = list(result["per_landmark"].items()) + [("ALL", result["overall"])]
    for name, r in rows:
        line = f"  {name:24s} {r['mre_mm']:6.2f}±{r['sd_mm']:5.2f} " + " ".join(
            f"{100 * r[f'sdr_{t:g}mm']:5.1f}%" for t in SDR_MM)
        if inter:
            i = inter["per_landmark"].get(name, inter["overall"]) if name != "ALL" else inter["overall"]
            line += f"   {i['mre_mm']:5.2f} / {100 * i['sdr_2mm']:5.1f}%"
        print(line)


def inter_annotator(each: np.ndarray, spacing: np.ndarray) -> dict:
    return sdr_table(np.linalg.norm(each[0] - each[1], axis=-1) * spacing[:, None], ISBI)


def predict(model: LandmarkModel, images: list[np.ndarray], preparation: FramePreparation = DRR_FRAME) -> np.ndarray:
    """(N, 19 or L, 2) px, each image padded and blurred as ``preparation`` says (as detect does; a
    local network with ``local_zoom`` > 1 reads that much finer a frame resampled from the image)."""
    return np.stack([image_estimates(model, image, preparation)["uv"] for image in images])


def sim_to_real(args) -> dict:
    model = LandmarkModel.load(args.model, args.mirror)
    ids, images, truth, each, spacing = load_folder(args.data)
    catalogue = load_catalogue()
    # bone-bright radiographs: padded as a collimator blade reads in them (and in the DRRs)
    pred = predict(model, images, FramePreparation("edge" if args.edge_padding else "brightest", args.input_blur))
    # Catalogue landmarks of the model -> ISBI names; bilateral ones (orbitale) are averaged.
    groups = defaultdict(list)
    for n, label in enumerate(model.labels):
        name = catalogue[label].cephalometric if label in catalogue else None
        if name:
            groups[name].append(n)
    names = [n for n in ISBI if n in groups]
    mapped = np.stack([pred[:, groups[n]].mean(1) for n in names], 1)
    truth_m = truth[:, [ISBI.index(n) for n in names]]
    errors = np.linalg.norm(mapped - truth_m, axis=-1) * spacing[:, None]
    result = sdr_table(errors, names)
    inter = inter_annotator(each, spacing)
    print_table(f"Sim-to-real: DRR-trained model {args.model} on {len(ids)} real cephalograms ({args.data}); "
                f"{len(names)} shared landmarks; padding {'edge' if args.edge_padding else 'brightest'}, blur "
                f"{args.input_blur:g} px, mirror averaging {'on' if model.mirror else 'off'}", result, inter)
    return dict(mode="sim_to_real", images=len(ids), landmarks=names, padding="edge" if args.edge_padding else
                "brightest", input_blur_px=args.input_blur, mirror=model.mirror, **result, inter_annotator=inter["overall"],
                mre_mm=result["overall"]["mre_mm"], sdr_2mm=result["overall"]["sdr_2mm"],
                sdr_4mm=result["overall"]["sdr_4mm"])


def augmented_set(images, truth, copies: int, rng, size: int = IMAGE_SIZE) -> dict:
    """Training images of ``size`` px (the network frame, or a finer local frame) with random affine +
    intensity augmentation."""
    out_images, out_uv = [], []
    for image, uv in zip(images, truth):
        square, scale, offset = to_network_frame(image, size=size)
        uv_net = (uv + offset) / scale
        base = torch.from_numpy(square)[None, None]
        for _ in range(copies):
            angle, zoom = np.radians(rng.uniform(-8, 8)), rng.uniform(0.9, 1.1)
            shift = rng.uniform(-0.08, 0.08, 2)
            a = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) / zoom
            theta = torch.tensor(np.concatenate([a, shift[:, None]], 1), dtype=torch.float32)[None]
            grid = F.affine_grid(theta, (1, 1, size, size), align_corners=False)
            warped = F.grid_sample(base, grid, align_corners=False, padding_mode="border")[0, 0].numpy()
            # output normalised coordinate x_out maps to input a x_out + shift: invert for landmarks
            norm_in = (uv_net + 0.5) / (size / 2) - 1.0
            norm_out = (norm_in - shift) @ np.linalg.inv(a).T
            lo, hi = np.percentile(warped, [1, 99])
            w = np.clip((warped - lo) / max(hi - lo, 1e-6), 0, 1) ** rng.uniform(0.7, 1.4)
            out_images.append((w * 255).astype(np.uint8))
            out_uv.append((norm_out + 1.0) * (size / 2) - 0.5)
    uv = np.stack(out_uv).astype(np.float32)
    return dict(images=np.stack(out_images), uv=uv,
                in_image=((uv >= 0) & (uv <= size - 1)).all(-1))


def train_and_test(train, test, args, rng, log) -> np.ndarray:
    _, images, truth, _, _ = train
    keep = np.isfinite(truth).all(axis=(1, 2))
    data = augmented_set([im for im, k in zip(images, keep) if k], truth[keep], args.copies, rng)
    global_net, _ = train_global(data, len(ISBI), args.global_steps, batch=16, log=log, architecture=CEPH_ARCHITECTURE)
    if args.local_zoom > 1:  # Noothout et al.'s local stage: crops at a finer resolution than the global network's
        data = augmented_set([im for im, k in zip(images, keep) if k], truth[keep], args.local_copies, rng,
                             IMAGE_SIZE * args.local_zoom)
    local_net, _ = train_local(data, len(ISBI), args.local_steps, log=log)
    _, test_images, test_truth, _, test_spacing = test
    pred = predict(LandmarkModel(ISBI, global_net, local_net, {}, local_zoom=args.local_zoom), test_images)
    return np.linalg.norm(pred - test_truth, axis=-1) * test_spacing[:, None]


def real_training(args) -> dict:
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    log = (lambda m: None) if not args.verbose else print
    if args.train:
        train, test = load_folder(args.train), load_folder(args.test)
        errors, each, spacing = train_and_test(train, test, args, rng, log), test[3], test[4]
        title = f"Trained on {args.train} ({len(train[0])} images), tested on {args.test} ({len(test[0])})"
    else:
        ids, images, truth, each, spacing = load_folder(args.data)
        # Pixel-identical duplicate radiographs must stay in one fold: group by image content.
        keys = {}
        groups = np.array([keys.setdefault(hash(im.tobytes()), len(keys)) for im in images])
        fold_of_group = rng.permutation(len(keys)) % args.cv
        folds = fold_of_group[groups]
        errors = np.full(truth.shape[:2], np.nan)
        for fold in range(min(args.cv, args.max_folds or args.cv)):
            tr, te = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
            subset = lambda idx: ([ids[i] for i in idx], [images[i] for i in idx], truth[idx], each[:, idx], spacing[idx])  # noqa: E731
            errors[te] = train_and_test(subset(tr), subset(te), args, rng, log)
            print(f"fold {fold + 1}/{args.cv}: MRE {np.nanmean(errors[te]):.2f} mm ({time.perf_counter() - start:.0f} s)")
        title = f"{args.cv}-fold cross-validation on {args.data} ({len(ids)} images; folds run: " \
                f"{min(args.cv, args.max_folds or args.cv)})"
    result = sdr_table(errors, ISBI)
    inter = inter_annotator(each, spacing)
    minutes = (time.perf_counter() - start) / 60
    print_table(f"{title}; local stage at {args.local_zoom} x the network frame's resolution; CPU training + "
                f"testing {minutes:.1f} min", result, inter)
    return dict(mode="real_training", minutes=minutes, local_zoom=args.local_zoom, **result, inter_annotator=inter["overall"],
                mre_mm=result["overall"]["mre_mm"], sdr_2mm=result["overall"]["sdr_2mm"],
                sdr_4mm=result["overall"]["sdr_4mm"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="cephalogram folder (sim-to-real, or with --cv)")
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL, help="DRR-trained model (sim-to-real)")
    parser.add_argument("--input-blur", type=float, default=REAL_IMAGE_BLUR_PX,
                        help="sim-to-real: px, Gaussian blur before the network (detect's default for real frames)")
    parser.add_argument("--edge-padding", action="store_true",
                        help="sim-to-real: pad the non-square images with their edges (detect --pad-with edge) "
                             "instead of their brightest value (--pad-with brightest)")
    parser.add_argument("--mirror", action=argparse.BooleanOptionalAction,
                        help="sim-to-real: also read each image mirrored left-right (default: as the model card says)")
    parser.add_argument("--train", type=Path)
    parser.add_argument("--test", type=Path)
    parser.add_argument("--cv", type=int, help="k-fold cross-validation on --data with real-image training")
    parser.add_argument("--max-folds", type=int, help="run only the first N folds (time budget)")
    parser.add_argument("--copies", type=int, default=40, help="augmented copies per training image")
    parser.add_argument("--global-steps", type=int, default=1500)
    parser.add_argument("--local-steps", type=int, default=600)
    parser.add_argument("--local-zoom", type=int, default=3,
                        help="the local stage's crops this many times finer than the 256-px network frame, "
                             "resampled from the original image (1: crops of the network frame; README)")
    parser.add_argument("--local-copies", type=int, default=20,
                        help="augmented copies per training image for a finer local stage (--local-zoom > 1)")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    for folder in [p for p in (args.data, args.train, args.test) if p]:
        if not (folder / "landmarks.csv").exists():
            sys.exit(f"{folder}: not a cephalogram folder (images/, landmarks.csv, spacing.csv)")
    if args.train or args.cv:
        if args.train and not args.test:
            sys.exit("--train needs --test")
        result = real_training(args)
    elif args.data:
        result = sim_to_real(args)
    else:
        sys.exit("give --data DIR (sim-to-real), --cv K --data DIR, or --train DIR --test DIR")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
