"""``femur-segment``: proximal-femur segmentation and measurement on CT/QCT.

    femur-segment CT --out DIR [--side both|left|right] [--proximal | --whole] [--calibration FILE.json]
                  [--model M [M ...] | --single] [--mirror] [--precision auto|float32|bfloat16]
    femur-segment train --images CT... --labels LABELS... [--label-value V] [--negatives CT...] --out MODEL_DIR
    femur-segment evaluate [--model M [M ...] | --single] --images CT... --labels LABELS... [--label-value V]
                  [--mirror] [--precision auto|float32|bfloat16] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import SimpleITK as sitk

from .calibration import CalibrationError
from .inference import PRECISIONS, segment
from .model import SHIPPED_ENSEMBLE, SHIPPED_MODEL, FemurModel, load_models
from .training import TrainingError
from .volumes import InputError


def _read(path: str) -> sitk.Image:
    if not Path(path).is_file():
        raise FileNotFoundError(f"file not found: {path}")
    return sitk.ReadImage(str(path))


def _femur(labels: sitk.Image, value: int | None) -> sitk.Image:
    return labels == value if value is not None else labels > 0


def run_segment(args) -> dict:
    from FluoroLandmarksLib.headless import HeadlessApplication
    from FluoroLandmarksLib.mrml import load_volume

    from .pipeline import run, write_outputs

    model = load_models(args.model)
    app = HeadlessApplication()
    try:
        node = load_volume(app.app_logic, args.ct)
        result = run(app.scene, node, model, args.side, not args.whole, args.calibration, mirror=args.mirror,
                     precision=args.precision)
        t = time.perf_counter()
        paths = write_outputs(app.scene, result, args.out)
        m = result.measurements
        m["timings_s"]["write_s"] = time.perf_counter() - t
    finally:
        app.close()
    for row in m["sides"].values():
        extra = f", vBMD {row['vbmd_mg_cm3']:.1f} mg/cm³, BMC {row['bmc_mg'] / 1000:.2f} g" if "bmc_mg" in row else ""
        print(f"{row['segment']}: {row['volume_cm3']:.2f} cm³ ({row['voxel_count']} voxels), "
              f"{row['hu_mean']:.0f} ± {row['hu_sd']:.0f} HU{extra}")
    if m["calibration"]:
        c = m["calibration"]
        print(f"calibration: HU = {c['slope_hu_per_mg_cm3']:.4f} x density + {c['intercept_hu']:.1f} "
              f"(R² {c['r2']:.5f}, {len(c['rods'])} rods)")
    for warning in m["warnings"]:
        print(f"warning: {warning}")
    stages = ", ".join(f"{k[:-2]} {v:.1f}" for k, v in m["timings_s"].items())
    print(f"runtime {m['runtime_s']:.1f} s, network in {m['network_precision']} ({stages}), "
          f"peak memory {m['peak_memory_mb']:.0f} MB")
    print("wrote " + ", ".join(str(p) for p in paths))
    return m


def run_train(args) -> Path:
    from .training import prepare_case, train

    if len(args.images) != len(args.labels):
        raise InputError("give one --labels file per --images file")
    cases = [prepare_case(Path(i).name, _read(i), _femur(_read(lab), args.label_value))
             for i, lab in zip(args.images, args.labels)]
    cases += [prepare_case(Path(n).name, _read(n), None) for n in args.negatives]
    net, summary = train(cases, steps=args.steps, seed=args.seed, bf16=args.bf16)
    card = {"name": "FemurSegment proximal-femur V-Net",
            "method": "Zhao et al.: V-Net with a Dice + L2 compound loss (see training.loss)",
            "data": {"images": [Path(i).name for i in args.images], "labels": [Path(lab).name for lab in args.labels],
                     "label_value": args.label_value, "negatives": [Path(n).name for n in args.negatives]},
            "command": "femur-segment " + shlex.join(args.argv),
            "training": summary, "training_minutes": summary["seconds"] / 60}
    if args.cross_validation_json:
        card["metrics"] = json.loads(Path(args.cross_validation_json).read_text())
    folder = FemurModel(net, {}).save(args.out, card)
    print(f"trained {summary['steps']} steps in {summary['seconds'] / 60:.1f} min; model written to {folder}")
    return folder


def run_evaluate(args) -> dict:
    from . import anatomy
    from .evaluation import compare, reference_sides, summarize

    if len(args.images) != len(args.labels):
        raise InputError("give one --labels file per --images file")
    model = load_models(args.model)
    per_case = {}
    for image_path, label_path in zip(args.images, args.labels):
        ct, reference = _read(image_path), _read(label_path)
        seg = segment(model, ct, "both", proximal=not (args.whole or args.reference_slices), mirror=args.mirror,
                      precision=args.precision)
        ref = reference_sides(reference, args.label_value, not (args.whole or args.reference_slices),
                              anatomy.midline(sitk.GetArrayViewFromImage(ct), ct))
        per_case[Path(image_path).name] = compare(seg.labels, ref, ct, reference_slices=args.reference_slices)
    summary = summarize(per_case)
    print(f"{'case':28s} {'side':6s} {'Dice':>6s} {'sens':>6s} {'spec':>7s} {'HD95 mm':>8s} {'V pred':>8s} {'V true':>8s}")
    for case, sides in per_case.items():
        for side, m in sides.items():
            print(f"{case:28s} {side:6s} {m['dice']:6.3f} {m['sensitivity']:6.3f} {m['specificity']:7.4f} "
                  f"{m['hd95_mm']:8.1f} {m['volume_pred_cm3']:8.1f} {m['volume_true_cm3']:8.1f}")
    print(f"volume R² {summary['volume_r2']:.4f}, mean Dice {summary.get('mean_dice', float('nan')):.4f}")
    report = {"cases": per_case, **summary}
    if args.json:
        from FluoroLandmarksLib.synthesis import write_text_atomic

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(Path(args.json), json.dumps(report, indent=2))
    return report


def build_parsers() -> dict[str, argparse.ArgumentParser]:
    seg = argparse.ArgumentParser(prog="femur-segment", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    seg.add_argument("ct", help="CT or QCT volume in HU (NRRD, NIfTI, MHA, ...)")
    seg.add_argument("--out", required=True, help="output folder")
    seg.add_argument("--side", choices=("both", "left", "right"), default="both")
    region = seg.add_mutually_exclusive_group()
    region.add_argument("--proximal", action="store_true", default=True,
                        help="proximal femur: apex to 100 mm below it (default)")
    region.add_argument("--whole", action="store_true", help="the whole femur in the field of view")
    seg.add_argument("--calibration", help="QCT calibration JSON (phantom rods and their mg/cm³ K2HPO4)")

    train = argparse.ArgumentParser(prog="femur-segment train")
    train.add_argument("--images", nargs="+", required=True)
    train.add_argument("--labels", nargs="+", required=True, help="femur labelmaps, one per image")
    train.add_argument("--label-value", type=int, help="femur label value (default: any nonzero)")
    train.add_argument("--negatives", nargs="*", default=[], help="CTs without femurs (e.g. a head CT)")
    train.add_argument("--out", required=True, help="model folder to write")
    train.add_argument("--steps", type=int, default=1500)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--bf16", action="store_true",
                       help="forward pass in bfloat16 autocast (float32 weights and loss): about 3x faster per step "
                            "on CPUs with native bf16 (AVX512-BF16/AMX)")
    train.add_argument("--cross-validation-json", help="benchmark JSON to record in the model card")

    evaluate = argparse.ArgumentParser(prog="femur-segment evaluate")
    evaluate.add_argument("--images", nargs="+", required=True)
    evaluate.add_argument("--labels", nargs="+", required=True)
    evaluate.add_argument("--label-value", type=int,
                          help="both-sides femur label value; default: sided labels 1 = left, 2 = right")
    evaluate.add_argument("--whole", action="store_true", help="compare whole femurs (no proximal cut)")
    evaluate.add_argument("--reference-slices", action="store_true",
                          help="compare only on the axial slices each reference side covers")
    evaluate.add_argument("--json")
    for parser in (seg, evaluate):
        models = parser.add_mutually_exclusive_group()
        models.add_argument("--model", nargs="+", default=list(SHIPPED_ENSEMBLE),
                            help="model folder(s); several: their ensemble, the mean probability (default: the "
                                 "shipped two-model ensemble, seeds 0 and 1)")
        models.add_argument("--single", dest="model", action="store_const", const=[SHIPPED_MODEL],
                            help="only the shipped seed-0 model: half the network time, less robust on unseen CTs")
        parser.add_argument("--mirror", action="store_true",
                            help="also run the network on the left-right mirrored CT and average the two "
                                 "(twice the network time)")
        parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                            help="the network's arithmetic; auto: bfloat16 on CPUs with native bf16 (AVX512-BF16/AMX, "
                                 "about 1.8x faster), else float32 (default: auto)")
    return {"segment": seg, "train": train, "evaluate": evaluate}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parsers = build_parsers()
    command = argv[0] if argv and argv[0] in ("train", "evaluate") else "segment"
    args = parsers[command].parse_args(argv[1:] if command != "segment" else argv)
    args.argv = argv
    try:
        {"segment": run_segment, "train": run_train, "evaluate": run_evaluate}[command](args)
    except (InputError, CalibrationError, FileNotFoundError, ValueError, TrainingError) as error:
        print(f"femur-segment: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
