"""``fluoro-landmarks``: the FluoroLandmarks logic from the command line, on a headless MRML scene."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from .geometry import Collimation
from .inference import PADDINGS, REAL_IMAGE_BLUR_PX, SHIPPED_MODEL
from .network import DEPTH_LOSS_WEIGHT
from .synthesis import OUTPUT_KINDS, DRRParameters
from .training import TrainingError


MIRROR_HELP = ("also read the frame mirrored left-right, both passes voting (default: as the model card's "
               "mirror_averaging says)")


def _views(primary: list[float], secondary: list[float]) -> tuple[tuple[float, float], ...]:
    if len(secondary) == 1:
        secondary = secondary * len(primary)
    if len(primary) == 1:
        primary = primary * len(secondary)
    if len(primary) != len(secondary):
        raise ValueError(f"{len(primary)} primary angles but {len(secondary)} secondary angles: give one "
                         "of each per view, or a single value to use for every view")
    return tuple(zip(primary, secondary))


def _collimation(args) -> Collimation:
    if args.collimation_rect and args.collimation_circle:
        raise ValueError("give either --collimation-rect or --collimation-circle, not both")
    if args.collimation_rect:
        u, v, w, h = args.collimation_rect
        return Collimation("rect", (u, v), (w, h))
    if args.collimation_circle:
        u, v, r = args.collimation_circle
        return Collimation("circle", (u, v), radius_px=r)
    return Collimation()


def drr_parameters(args) -> DRRParameters:
    return DRRParameters(
        views=_views(args.primary_angle, args.secondary_angle), sid_mm=args.sid, sod_mm=args.sod,
        detector_size_px=tuple(args.detector_size), pixel_spacing_mm=(args.pixel_spacing, args.pixel_spacing),
        isocenter_ras=tuple(args.isocenter) if args.isocenter else None, collimation=_collimation(args),
        output=args.output, photons_per_pixel=args.photons, seed=args.seed)


def run_drr(args) -> list[Path]:
    from . import mrml
    from .headless import HeadlessApplication
    from .synthesis import export_views, synthesize

    params = drr_parameters(args)
    app = HeadlessApplication()
    try:
        ct = mrml.load_volume(app.app_logic, args.ct, "CT")
        landmarks = mrml.load_markups(app.app_logic, args.landmarks) if args.landmarks else None
        start = time.perf_counter()
        views = synthesize(app.app_logic, ct, landmarks, params)
        elapsed = time.perf_counter() - start
        written = export_views(app.scene, views, args.out)
    finally:
        app.close()
    print(f"{len(views)} view(s) rendered in {elapsed:.2f} s; wrote {len(written)} files to {args.out}")
    for v in views:
        inside = int(v.in_field.sum())
        print(f"  LAO/RAO {v.geometry.primary_deg:+.1f} CRAN/CAUD {v.geometry.secondary_deg:+.1f}: "
              f"{inside}/{len(v.labels)} landmarks in the field")
    return written


def run_make_dataset(args) -> dict:
    from .dataset import write_dataset
    from .headless import read_ct_and_landmarks
    from .population import DEFAULT_VARIATION, ShapeVariation

    variation = ShapeVariation(tuple(args.scale_range) if args.scale_range else DEFAULT_VARIATION.scale,
                               DEFAULT_VARIATION.elastic_mm if args.elastic_mm is None else args.elastic_mm)
    hu, ijk_to_ras, labels, points = read_ct_and_landmarks(args.ct, args.landmarks)
    if not labels:
        raise ValueError(f"{args.landmarks} has no landmarks")
    meta = write_dataset(hu, ijk_to_ras, labels, points, args.count, args.seed, args.out, per_variant=args.per_variant,
                         vessel_probability=args.vessel_share, coarse=args.coarse, lower_head_mm=args.lower_head,
                         workers=args.workers, cephalogram_share=args.cephalogram_share, variation=variation,
                         zoom=args.zoom, progress=lambda m: print(m, end="\r", flush=True))
    print(f"\nwrote {meta['samples']} samples ({meta['shards']} head variants) to {args.out} in "
          f"{meta['seconds']:.1f} s: {meta['samples_per_second']:.1f} samples/s with {args.workers} worker(s)")
    return meta


def run_relabel(args) -> dict:
    from . import mrml
    from .dataset import relabel_dataset
    from .headless import HeadlessApplication

    app = HeadlessApplication()
    try:
        labels, points = mrml.markups_to_numpy(mrml.load_markups(app.app_logic, args.landmarks))
    finally:
        app.close()
    meta = relabel_dataset(args.data, labels, points, args.out, source=str(args.landmarks))
    print(f"relabelled {meta['samples']} samples of {args.data} for {args.landmarks}: {args.out}")
    return meta


SAMPLE_DIR = Path(__file__).resolve().parents[1] / "Resources" / "SampleData"
SAMPLE_CT = SAMPLE_DIR / "ProMED_CT_0051.nrrd"
SAMPLE_LANDMARKS = SAMPLE_DIR / "ProMED_CT_0051_landmarks.mrk.json"


def _template(app, ct_path, landmarks_path, labels: list[str]):
    """Template CT node and its landmarks (RAS mm) in the order of ``labels``."""
    from . import mrml

    ct = mrml.load_volume(app.app_logic, ct_path, "template CT")
    names, points = mrml.markups_to_numpy(mrml.load_markups(app.app_logic, landmarks_path))
    missing = [n for n in labels if n not in names]
    if missing:
        raise ValueError(f"template landmarks {landmarks_path} lack {missing}")
    return ct, np.array([points[names.index(n)] for n in labels])


def _write_json(path, payload) -> None:
    if path:
        from .synthesis import write_text_atomic

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(Path(path), json.dumps(payload, indent=2))


def print_report(report: dict) -> None:
    def line(name, s):
        if s.get("n", 0) == 0:
            return f"{name:26s} (none)"
        return (f"{name:26s} n={s['n']:6d}  MRE {s['mre_mm']:6.2f} ± {s['sd_mm']:5.2f} mm  median {s['median_mm']:5.2f}"
                f"  <=10 mm {100 * s['within_10mm']:5.1f} %  <=4 mm {100 * s['within_4mm']:5.1f} %")

    for key in ("2d", "2d_in_image", "2d_out_of_image", "3d", "3d_in_image", "3d_out_of_image", "skull_surface"):
        if key in report:
            print(line(key.replace("_", " "), report[key]))
    if "network_without_shape_fit" in report:
        print("the network's own estimates, without the shape-model fit:")
        for key in ("2d", "2d_in_image", "2d_out_of_image", "3d", "3d_in_image", "3d_out_of_image"):
            print(line("  " + key.replace("_", " "), report["network_without_shape_fit"][key]))
        print(line("3d fit to the true 2d", report["3d_from_true_2d"]) + "  (bound of this 3D method)")
        known = report["3d_known_head_depth"]
        note = f"the true head depth ± {known['head_depth_sd_mm']:g} mm given to the fit"
        print(line("3d, head depth known", known) + f"  ({note})")
        print(line("3d from true 2d and depth", report["3d_from_true_2d_known_head_depth"]) + f"  ({note})")
    if "two_views" in report:
        two = report["two_views"]
        angle = two["beam_angle_deg"]
        note = (f"each frame fitted with a second frame of the same head, beams {angle['min']:.0f}-{angle['max']:.0f}° "
                f"apart (median {angle['median']:.0f}°), as a biplane C-arm")
        print(line("2d, two views", two["2d"]) + f"  ({note})")
        print(line("3d, two views", two["3d"]))
    if "eye_lens_in_field_accuracy" in report:
        print(f"eye lens in-field flag accuracy {100 * report['eye_lens_in_field_accuracy']:.1f} % (lenses in the beam "
              f"flagged out: {100 * report['eye_lens_missed']:.1f} %, out of it flagged in: "
              f"{100 * report['eye_lens_false_alarm']:.1f} %)")
    print("per landmark: MRE mm / <=10 mm of all, in the image and outside it (2D, then 3D), share in image:")
    for label, r in report["per_landmark"].items():
        cells = [_cell(r[f"{d}{part}"]) for d in ("2d", "3d") for part in ("", "_in_image", "_out_of_image")]
        print(f"  {label:24s} 2D {' '.join(cells[:3])}   3D {' '.join(cells[3:])}   {100 * r['in_image_share']:5.1f} %")


def _cell(s: dict) -> str:
    """'MRE / share within 10 mm' of a :func:`metrics.summary`, dashes when it is empty."""
    return f"{s['mre_mm']:5.2f}/{100 * s['within_10mm']:5.1f}%" if s["n"] else f"{'-':>5s}/{'-':>5s} "


def run_train(args) -> Path:
    import torch

    from .dataset import load_dataset
    from .detection import write_skull_template
    from .evaluation import evaluate
    from .headless import HeadlessApplication
    from .inference import LandmarkModel
    from .shape_model import ShapeModel
    from .network import densified
    from .landmarks import mirror_permutation
    from .training import GLOBAL_ARCHITECTURE, train_global, train_local

    meta, data = load_dataset(args.data)
    labels = meta["labels"]
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    init = None
    if args.init:
        init = LandmarkModel.load(args.init)
        if init.labels != labels:
            raise ValueError(f"{args.init}: its landmarks differ from the dataset's")
    start_net = init.global_net if init else None
    if args.atrous and start_net is not None:
        start_net = densified(start_net, args.atrous)
    global_net, g_info = train_global(data, len(labels), args.global_steps, args.batch, lr=args.lr, seed=args.seed,
                                      architecture=dict(GLOBAL_ARCHITECTURE, atrous=args.atrous), init=start_net,
                                      bf16=args.bf16, depth_weight=args.depth_weight,
                                      mirror=mirror_permutation(labels) if args.mirror_augment else None)
    if init:
        g_info = dict(g_info, continued_from=dict(model=str(args.init), training=init.card.get("training"),
                                                  **{k: init.card[k] for k in ("averaged_from",) if k in init.card}))
    local_net, l_info = train_local(data, len(labels), args.local_steps, seed=args.seed) if args.local_steps else (None, {})
    seconds = time.perf_counter() - start
    app = HeadlessApplication()
    try:
        ct, template_landmarks = _template(app, args.template_ct, args.template_landmarks, labels)
        Path(args.out).mkdir(parents=True, exist_ok=True)
        write_skull_template(app.app_logic, ct, args.out)
    finally:
        app.close()
    kept = init is not None and init.shape is not None  # a continuation keeps its population model
    shape = init.shape if kept else ShapeModel.build(data["xyz_ras"], data["def_centre"])
    model = LandmarkModel(labels, global_net, local_net, {}, shape, bf16=args.bf16)
    selection = _choose_local(model, args.val) if local_net is not None and args.val else None
    card = dict(
        name="FluoroLandmarks global-to-local landmark FCNN",
        data=dict(meta, folder=" ".join(map(str, args.data)), template_ct=Path(args.template_ct).name,
                  note="synthetic DRRs of random head variants of the GPL-2 sample CT; no patient images"),
        command=_command(),
        training=dict(global_=g_info, local=l_info, seconds=seconds, threads=args.threads, device="cpu"),
        template_landmarks_ras=template_landmarks.tolist(),
        shape_model=dict(init.card["shape_model"], **_fit_settings()) if kept else _shape_card(shape, args.data))
    if selection:
        card["local_selection"] = selection
    model.save(args.out, card)
    print(f"trained in {seconds / 60:.1f} min; model written to {args.out}")
    if args.test:
        test_meta, test_data = load_dataset(args.test)
        from .detection import read_skull_template
        from . import mrml

        vertices = mrml.polydata_points(read_skull_template(args.out))
        report = evaluate(model, test_meta, test_data, vertices, template_landmarks)
        print_report(report)
        _record_metrics(model, args.out, report, test_meta, args.test)
    return Path(args.out)


def _choose_local(model, val_folder) -> dict:
    """Keep local refinement for the landmarks it improves on the validation set (sets the model's)."""
    from .dataset import load_dataset
    from .evaluation import choose_local_landmarks

    val_meta, val_data = load_dataset(val_folder)
    if list(val_meta["labels"]) != list(model.labels):
        raise ValueError(f"{val_folder}: its landmarks differ from the model's")
    selection = choose_local_landmarks(model, val_data)
    model.local_landmarks = selection["local_landmarks"]
    print(f"local refinement kept for {len(model.local_landmarks)}/{len(model.labels)} landmarks (mean in-image 2D "
          f"error lowered on {val_folder}): {', '.join(model.local_landmarks) or 'none'}")
    return dict(selection, data=str(val_folder), samples=int(val_meta["samples"]))


def _fit_settings() -> dict:
    from .shape_model import CONFIDENCE_POWER, FIT_SIGMA_MM

    return dict(fit_sigma_mm=FIT_SIGMA_MM, confidence_power=CONFIDENCE_POWER)


def _shape_card(shape, data_folders: list) -> dict:
    return dict(modes=len(shape.variances), mode_sd_mm=np.sqrt(shape.variances).round(2).tolist(),
                source="3D landmark labels of " + " ".join(map(str, data_folders)), **_fit_settings())


def run_shape_model(args) -> Path:
    from .dataset import load_dataset
    from .inference import LandmarkModel
    from .shape_model import ShapeModel

    model = LandmarkModel.load(args.model)
    meta, data = load_dataset(args.data, keys=("xyz_ras", "def_centre"))
    if list(meta["labels"]) != list(model.labels):
        raise ValueError("the dataset's landmarks differ from the model's")
    model.shape = ShapeModel.build(data["xyz_ras"], data["def_centre"], args.modes)
    model.save(args.model, dict(model.card, shape_model=dict(_shape_card(model.shape, args.data), command=_command())))
    print(f"shape model ({len(model.shape.variances)} modes, sd {np.sqrt(model.shape.variances[:3]).round(1)} ... mm) "
          f"from {len(data['xyz_ras'])} labelled samples written into {args.model}")
    return Path(args.model)


def run_add_local(args) -> Path:
    """A copy of a model with a local network trained on a dataset (of the same views at any --zoom:
    the local network then reads that much finer a frame than the global one)."""
    import torch

    from .dataset import load_dataset
    from .inference import LandmarkModel
    from .training import train_local

    model = LandmarkModel.load(args.model)
    meta, data = load_dataset(args.data, keys=("images", "uv", "in_image"))
    if list(meta["labels"]) != list(model.labels):
        raise ValueError(f"{args.data}: its landmarks differ from the model's")
    if Path(args.out).resolve() == Path(args.model).resolve():
        raise ValueError("add-local writes a new model folder: --out must differ from --model")
    torch.set_num_threads(args.threads)
    model.local_net, info = train_local(data, len(model.labels), args.steps, lr=args.lr, seed=args.seed)
    model.local_zoom, model.local_landmarks = int(meta.get("zoom", 1)), None
    print(f"local network trained in {info['seconds'] / 60:.1f} min on {args.data} (zoom {model.local_zoom})")
    card = {k: v for k, v in model.card.items() if k not in ("metrics", "sha256", "local_selection")}
    card["local_training"] = dict(info, data=dict(meta, folder=str(args.data)), threads=args.threads, command=_command())
    if args.val:
        card["local_selection"] = _choose_local(model, args.val)
    _copy_skull_template(args.model, args.out)
    model.save(args.out, card)
    print(f"model with a local stage written to {args.out}")
    return Path(args.out)


def _command() -> str | None:
    return "fluoro-landmarks " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("fluoro-landmarks") else None


def _copy_skull_template(model_folder, out) -> None:
    import shutil

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".skull_template.vtp.tmp"
    shutil.copyfile(Path(model_folder) / "skull_template.vtp", tmp)
    os.replace(tmp, out / "skull_template.vtp")


def run_average(args) -> Path:
    """A model whose networks are the element-wise mean of the given models' (:func:`network.averaged`);
    shape model, skull template, fit settings and precision from the first model."""
    from .inference import LandmarkModel
    from .network import averaged

    models = [LandmarkModel.load(m) for m in args.models]
    if len(models) < 2:
        raise ValueError("give at least two models to average")
    first = models[0]
    if any(m.labels != first.labels for m in models):
        raise ValueError("the models' landmarks differ")
    if any((m.local_net is None) != (first.local_net is None) or m.local_zoom != first.local_zoom for m in models):
        raise ValueError("either all models or none must have a local network, of one resolution")
    global_net = averaged([m.global_net for m in models])
    local_net = averaged([m.local_net for m in models]) if first.local_net is not None else None
    out = Path(args.out)
    _copy_skull_template(args.models[0], out)
    card = {k: v for k, v in first.card.items() if k not in ("metrics", "sha256")}
    card["averaged_from"] = [dict(model=str(path), sha256=m.card["sha256"], command=m.card.get("command"),
                                  data=m.card.get("data"), training=m.card.get("training"))
                             for path, m in zip(args.models, models)]
    card["command"] = _command()
    model = LandmarkModel(first.labels, global_net, local_net, {}, first.shape, first.local_landmarks, first.bf16,
                          first.mirror, first.local_zoom)
    model.save(out, card)
    print(f"the mean of {len(models)} models written to {out}")
    return out


def _record_metrics(model, folder, report: dict, meta: dict, data_folder) -> None:
    """Write the headline figures of ``report`` into the model card (the weights are unchanged)."""
    card = dict(model.card)
    card["metrics"] = {k: report[k] for k in ("samples", "within_10mm_2d", "within_10mm_3d", "mre_2d_mm", "mre_3d_mm",
                                              "2d", "3d", "2d_in_image", "2d_out_of_image", "3d_in_image",
                                              "3d_out_of_image", "skull_surface", "eye_lens_in_field_accuracy",
                                              "eye_lens_missed", "eye_lens_false_alarm", "network_without_shape_fit",
                                              "3d_from_true_2d", "3d_known_head_depth",
                                              "3d_from_true_2d_known_head_depth", "two_views")
                       if k in report}
    card["metrics"]["test_data"] = dict(meta, folder=str(data_folder))
    model.save(folder, card)


def run_evaluate(args) -> dict:
    from . import mrml
    from .dataset import load_dataset
    from .detection import read_skull_template
    from .evaluation import evaluate
    from .inference import LandmarkModel

    model = LandmarkModel.load(args.model, args.mirror)
    if args.global_only:
        model.local_net = None
    meta, data = load_dataset(args.data)
    vertices = mrml.polydata_points(read_skull_template(args.model))
    report = evaluate(model, meta, data, vertices, np.asarray(model.card["template_landmarks_ras"]))
    print(f"{report['samples']} held-out synthetic images ({args.data}), model {args.model}")
    print_report(report)
    print(f"2D within 10 mm {100 * report['within_10mm_2d']:.1f} % (Fum et al. 96.4 %), "
          f"3D within 10 mm {100 * report['within_10mm_3d']:.1f} % (Fum et al. 92.5 %), "
          f"2D MRE {report['mre_2d_mm']:.2f} mm, 3D MRE {report['mre_3d_mm']:.2f} mm")
    _write_json(args.json, report)
    if args.update_card:
        _record_metrics(model, args.model, report, meta, args.data)
    return report


def _detect_run(args, run: np.ndarray, geometry, source: dict, preparation) -> list[Path]:
    """``detect --all-frames``: every frame of a run, with one geometry."""
    from .detection import detect_run, export_run, run_eye_lenses
    from .headless import HeadlessApplication
    from .inference import LandmarkModel

    model = LandmarkModel.load(args.model, args.mirror)
    app = HeadlessApplication()
    try:
        start = time.perf_counter()
        results = detect_run(app.app_logic, run, geometry, model, args.model, Path(args.image).stem, args.head_depth,
                             preparation)
        elapsed = time.perf_counter() - start
        written = export_run(app.scene, results, args.out)
    finally:
        app.close()
    print(f"geometry from {source}; {len(run)} frames detected and added to the scene in {elapsed:.1f} s "
          f"({1000 * elapsed / len(run):.0f} ms per frame, scene nodes included); wrote {len(written)} files to {args.out}")
    for lens, report in run_eye_lenses(results).items():
        print(f"  {lens}: in the beam in {report['count_in_beam']} of {len(run)} frames")
    return written


def run_detect(args) -> list[Path]:
    from .detection import detect_frame, detect_frames, export_frame
    from .frames import geometry_from_tags, read_frame, read_frames
    from .geometry import CArmGeometry
    from .headless import HeadlessApplication
    from .inference import FramePreparation, LandmarkModel

    preparation = FramePreparation(args.pad_with, args.input_blur)
    options = dict(sid_mm=args.sid, sod_mm=args.sod, pixel_spacing_mm=args.pixel_spacing, primary_deg=args.primary_angle,
                   secondary_deg=args.secondary_angle, isocenter_ras=tuple(args.isocenter))
    if args.all_frames and (args.second_image or args.frame):
        raise ValueError("--all-frames reads every frame of one run; it does not combine with --frame or --second-image")
    if args.all_frames:
        run, tags = read_frames(args.image)
        image = run[0]
    else:
        image, tags = read_frame(args.image, args.frame)
    if args.geometry:
        geometry = CArmGeometry.from_dict(json.loads(Path(args.geometry).read_text()))
        source = {"all": "geometry file"}
    else:
        geometry, source = geometry_from_tags(tags, image.shape, options)
    if args.collimation_rect or args.collimation_circle:
        geometry = replace(geometry, collimation=_collimation(args))
        source["collimation"] = "options"
    if args.all_frames:
        return _detect_run(args, run, geometry, source, preparation)
    frames = [(image, geometry, Path(args.image).stem)]
    if args.second_image:
        if args.head_depth is not None:
            raise ValueError("--head-depth is for one frame: a second view places the head along the beam itself")
        second, second_tags = read_frame(args.second_image, args.second_frame)
        if args.second_geometry:
            second_geometry = CArmGeometry.from_dict(json.loads(Path(args.second_geometry).read_text()))
        else:
            second_geometry, second_source = geometry_from_tags(second_tags, second.shape, options)
            if second_source["primary_deg"] != "dicom":
                raise ValueError(f"{args.second_image}: no C-arm angles in its DICOM tags; give --second-geometry FILE")
        name = Path(args.second_image).stem
        frames.append((second, second_geometry, name if name != frames[0][2] else f"{name} (second view)"))
    model = LandmarkModel.load(args.model, args.mirror)
    app = HeadlessApplication()
    try:
        start = time.perf_counter()
        if len(frames) == 1:
            results = [detect_frame(app.app_logic, image, geometry, model, args.model, frames[0][2], args.head_depth,
                                    preparation)]
        else:
            results = detect_frames(app.app_logic, frames, model, args.model, preparation)
        elapsed = time.perf_counter() - start
        written = export_frame(app.scene, results[0], args.out)
        if len(results) > 1:
            written += export_frame(app.scene, results[1], Path(args.out) / "second_view", head=False)
    finally:
        app.close()
    print(f"geometry from {source}; detected and added to the scene in {1000 * elapsed:.0f} ms "
          f"({len(frames)} frame{'s' if len(frames) > 1 else ''}); wrote {len(written)} files to {args.out}")
    for result, (_, _, name) in zip(results, frames):
        d = result.detection
        print(f"{name}: {int(d.in_image.sum())}/{len(d.labels)} landmarks in the image and its collimated field")
        for lens, report in result.eye_lenses.items():
            print(f"  {lens}: {'IN the beam' if report['in_field'] else 'not in the beam'} "
                  f"(confidence {report['confidence']:.2f})")
    return written


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fluoro-landmarks", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    drr = sub.add_parser("drr", help="synthesize DRRs of a CT with its 3D landmarks projected as 2D markups")
    drr.add_argument("ct", help="CT volume in HU (NRRD, NIfTI, MHA, ...)")
    drr.add_argument("--out", required=True, help="output folder")
    drr.add_argument("--landmarks", help="3D landmarks (.mrk.json or .fcsv)")
    drr.add_argument("--primary-angle", type=float, nargs="+", default=[0.0], metavar="DEG",
                     help="LAO (+) / RAO (-) angle(s), degrees; one view per value")
    drr.add_argument("--secondary-angle", type=float, nargs="+", default=[0.0], metavar="DEG",
                     help="CRAN (+) / CAUD (-) angle(s), degrees")
    drr.add_argument("--sid", type=float, default=1000.0, metavar="MM", help="source-detector distance (mm)")
    drr.add_argument("--sod", type=float, default=750.0, metavar="MM", help="source-isocenter distance (mm)")
    drr.add_argument("--detector-size", type=int, nargs=2, default=[256, 256], metavar=("NU", "NV"),
                     help="detector columns and rows (px)")
    drr.add_argument("--pixel-spacing", type=float, default=1.2, metavar="MM", help="detector pixel size (mm)")
    drr.add_argument("--isocenter", type=float, nargs=3, metavar=("X", "Y", "Z"),
                     help="isocenter in RAS mm (default: centre of the CT volume)")
    drr.add_argument("--output", choices=OUTPUT_KINDS, default="line-integral",
                     help="line-integral: integral of mu dl (dimensionless); image: -ln(I/I0) detector image")
    drr.add_argument("--photons", type=float, metavar="N", help="quanta per pixel for Poisson noise (image output)")
    drr.add_argument("--seed", type=int, default=0, help="noise seed")
    drr.add_argument("--collimation-rect", type=float, nargs=4, metavar=("U", "V", "W", "H"),
                     help="rectangular collimation: centre and size in px")
    drr.add_argument("--collimation-circle", type=float, nargs=3, metavar=("U", "V", "R"),
                     help="circular collimation: centre and radius in px")
    drr.set_defaults(func=run_drr)

    make = sub.add_parser("make-dataset", help="write a synthetic training set (random head variants and views)")
    make.add_argument("--ct", required=True, help="template CT in HU")
    make.add_argument("--landmarks", required=True, help="the CT's 3D landmarks (.mrk.json)")
    make.add_argument("--count", type=int, required=True, help="number of images")
    make.add_argument("--seed", type=int, default=0, help="random seed (use another one for a test set)")
    make.add_argument("--per-variant", type=int, default=64, help="views per random head variant (one shard each)")
    make.add_argument("--vessel-share", type=float, default=0.3, help="share of head variants with contrast vessels")
    make.add_argument("--coarse", type=int, choices=(1, 2), default=2,
                      help="head variants and rays this many times coarser than the CT and detector (1: full resolution)")
    make.add_argument("--lower-head", type=float, default=0.0, metavar="MM",
                      help="add MM of random synthetic mandible, lower teeth, cervical spine, airway and neck below "
                           "the CT's inferior edge (for a head CT that ends at the upper teeth, as the sample CT)")
    make.add_argument("--cephalogram-share", type=float, default=0.0, metavar="F",
                      help="share of the views drawn as lateral radiographs (cephalogram-like: lateral, head in the "
                           "field, low magnification, high dose, bone bright) instead of from the whole C-arm range")
    make.add_argument("--scale-range", type=float, nargs=2, metavar=("LO", "HI"),
                      help="per-axis scale factors of the head variants, drawn uniformly (default 0.9 1.1)")
    make.add_argument("--elastic-mm", type=float, metavar="MM",
                      help="elastic deformation of the head variants: grid nodes (about 60 mm apart) move by "
                           "N(0, (MM/2)^2) mm per axis (default 3; at most 15)")
    make.add_argument("--zoom", type=int, choices=(1, 2, 3, 4), default=1,
                      help="images of ZOOM x 256 px, ZOOM times finer pixels over the same views (default 1), e.g. "
                           "for a local network on a finer frame (`add-local`); use with --coarse 1")
    make.add_argument("--workers", type=int, default=2,
                      help="processes drawing head variants (the output does not depend on it; default: 2 cores)")
    make.add_argument("--out", required=True, help="output folder")
    make.set_defaults(func=run_make_dataset)

    relabel = sub.add_parser("relabel", help="recompute a dataset's labels for corrected template landmarks (the "
                                             "images are kept; each shard stores its deformation and geometry)")
    relabel.add_argument("--data", required=True, help="dataset folder from make-dataset")
    relabel.add_argument("--landmarks", default=str(SAMPLE_LANDMARKS),
                         help="corrected landmarks of the CT the dataset was made from (.mrk.json, same labels)")
    relabel.add_argument("--out", required=True, help="new dataset folder")
    relabel.set_defaults(func=run_relabel)

    train = sub.add_parser("train", help="train the global and local landmark networks on a dataset (CPU)")
    train.add_argument("--data", required=True, nargs="+", help="dataset folder(s) from make-dataset")
    train.add_argument("--out", required=True, help="model folder to write")
    train.add_argument("--test", help="held-out dataset folder: evaluate and record the metrics in the model card")
    train.add_argument("--global-steps", type=int, default=4000)
    train.add_argument("--local-steps", type=int, default=1500, help="0: no local refinement")
    train.add_argument("--val", help="validation dataset folder (own seed): refine locally only the landmarks "
                                     "whose in-image error the local network lowers there (default: all)")
    train.add_argument("--batch", type=int, default=24)
    train.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (warm-up, then cosine decay)")
    train.add_argument("--init", help="continue training this model folder's global network (same landmarks; "
                                      "its shape model is kept)")
    train.add_argument("--atrous", type=int, default=0, choices=(0, 1, 2),
                       help="run the global network's last N strided blocks at stride 1 with dilated convolutions "
                            "after them: an output 2^N times denser per axis (with --init: that network converted, "
                            "same weights)")
    train.add_argument("--bf16", action="store_true",
                       help="train the global network's convolutions in bfloat16 autocast (float32 weights): about "
                            "2x faster on CPUs with AVX512-BF16/AMX (0.40 vs 0.85 s per stride-8 step here), slower without")
    train.add_argument("--depth-weight", type=float, default=DEPTH_LOSS_WEIGHT,
                       help="weight of the network's per-landmark depth loss (0: not trained; the shipped pipeline "
                            "takes 3D from the shape-model fit)")
    train.add_argument("--mirror-augment", action="store_true",
                       help="mirror half the training samples left-right, left and right landmarks swapped")
    train.add_argument("--threads", type=int, default=2)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--template-ct", default=str(SAMPLE_CT), help="the CT the dataset was made from")
    train.add_argument("--template-landmarks", default=str(SAMPLE_LANDMARKS))
    train.set_defaults(func=run_train)

    evaluate = sub.add_parser("evaluate", help="landmark and skull errors on a held-out synthetic dataset")
    evaluate.add_argument("--model", default=str(SHIPPED_MODEL), help="model folder (default: the shipped model)")
    evaluate.add_argument("--data", required=True, help="dataset folder from make-dataset (other seed)")
    evaluate.add_argument("--json", help="also write the figures to this JSON file")
    evaluate.add_argument("--update-card", action="store_true", help="record the figures in the model card")
    evaluate.add_argument("--global-only", action="store_true", help="skip the local refinement (with --update-card: the model folder keeps only the global network)")
    evaluate.add_argument("--mirror", action=argparse.BooleanOptionalAction, help=MIRROR_HELP)
    evaluate.set_defaults(func=run_evaluate)

    shape = sub.add_parser("shape-model", help="(re)build a model's landmark shape model from a dataset's 3D labels "
                                              "(the networks are unchanged)")
    shape.add_argument("--data", required=True, nargs="+", help="training dataset folder(s) from make-dataset")
    shape.add_argument("--model", required=True, help="model folder to update")
    shape.add_argument("--modes", type=int, default=24, help="principal modes kept")
    shape.set_defaults(func=run_shape_model)

    average = sub.add_parser("average", help="a model whose networks are the element-wise mean of several models' "
                                             "(same architecture, e.g. fine-tuned from one start)")
    average.add_argument("--models", required=True, nargs="+", help="model folders; the first gives the shape model")
    average.add_argument("--out", required=True, help="model folder to write")
    average.set_defaults(func=run_average)

    add_local = sub.add_parser("add-local", help="a copy of a model with a local refinement network trained on a "
                                                 "dataset (a --zoom set: the local stage reads a finer frame)")
    add_local.add_argument("--model", default=str(SHIPPED_MODEL), help="model folder (default: the shipped model)")
    add_local.add_argument("--data", required=True, help="dataset folder from make-dataset (its zoom is the local frame's)")
    add_local.add_argument("--out", required=True, help="model folder to write")
    add_local.add_argument("--val", help="validation dataset folder (same zoom): refine locally only the landmarks "
                                         "whose in-image error the local network lowers there (default: all)")
    add_local.add_argument("--steps", type=int, default=3000)
    add_local.add_argument("--lr", type=float, default=3e-3)
    add_local.add_argument("--threads", type=int, default=2)
    add_local.add_argument("--seed", type=int, default=0)
    add_local.set_defaults(func=run_add_local)

    det = sub.add_parser("detect", help="landmarks, 3D landmarks, skull and eye-lens exposure of one 2D frame")
    det.add_argument("image", help="2D image: NRRD, NIfTI, PNG, TIFF or DICOM (XA/RF tags give the geometry)")
    det.add_argument("--out", required=True)
    det.add_argument("--frame", type=int, default=0, help="frame of a multi-frame file (fluoroscopy run)")
    det.add_argument("--all-frames", action="store_true",
                     help="every frame of a multi-frame file (one geometry for the run): run_landmarks_2d.csv, "
                          "run_landmarks_3d.csv, run_eye_lenses.json and a scene.mrb with a sequence browser")
    det.add_argument("--model", default=str(SHIPPED_MODEL))
    det.add_argument("--mirror", action=argparse.BooleanOptionalAction, help=MIRROR_HELP)
    det.add_argument("--geometry", help="geometry.json (as written by the drr command); overrides the options")
    det.add_argument("--sid", type=float, default=1000.0, help="source-detector distance, mm")
    det.add_argument("--sod", type=float, default=750.0, help="source-isocenter distance, mm")
    det.add_argument("--pixel-spacing", type=float, default=1.2, help="detector pixel spacing, mm")
    det.add_argument("--primary-angle", type=float, default=0.0, help="LAO (+) / RAO (-), degrees")
    det.add_argument("--secondary-angle", type=float, default=0.0, help="CRAN (+) / CAUD (-), degrees")
    det.add_argument("--head-depth", type=float, metavar="MM",
                     help="the head centre's distance from the source along the central ray, if known (e.g. from "
                          "the table height; taken as ±2 mm): pins the 3D landmarks along the beam, which one view "
                          "cannot tell (default: the head centred on the isocenter)")
    det.add_argument("--pad-with", choices=PADDINGS, default="edge",
                     help="how a non-square frame is padded to the network's square: its repeated edges, or its "
                          "brightest / darkest value, as collimator blades read in a bone-bright radiograph (e.g. "
                          "a cephalogram) / bone-dark fluoroscopy; the DRR-trained model does better on "
                          "cephalograms with brightest")
    det.add_argument("--input-blur", type=float, default=REAL_IMAGE_BLUR_PX, metavar="PX",
                     help="Gaussian blur (SD, in the network's 256-px frame) before the network: real radiographs "
                          "and fluoroscopy are sharper than the DRRs it learned from (default %(default)s, chosen on "
                          "real cephalograms); 0 for DRRs such as the drr command's")
    det.add_argument("--isocenter", type=float, nargs=3, default=(0.0, 0.0, 0.0), metavar=("R", "A", "S"),
                     help="isocenter in patient RAS mm (3D results are relative to it)")
    det.add_argument("--collimation-rect", type=float, nargs=4, metavar=("U", "V", "W", "H"),
                     help="the collimated field, rectangular: centre and size in px (the eye-lens flag uses it)")
    det.add_argument("--collimation-circle", type=float, nargs=3, metavar=("U", "V", "R"),
                     help="the collimated field, circular: centre and radius in px")
    det.add_argument("--second-image", metavar="IMAGE",
                     help="a second frame of the same, unmoved head (e.g. a biplane C-arm's other plane): both are "
                          "fitted at once, which fixes the 3D landmarks along the beam; its 2D results go to "
                          "OUT/second_view/")
    det.add_argument("--second-frame", type=int, default=0, help="frame of a multi-frame second image")
    det.add_argument("--second-geometry", help="geometry.json of the second frame (else its DICOM XA/RF tags)")
    det.set_defaults(func=run_detect)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, OSError, TrainingError) as error:
        print(f"fluoro-landmarks: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
