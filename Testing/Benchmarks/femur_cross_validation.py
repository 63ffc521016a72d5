"""Leave-one-case-out V-Net on the shared pelvis CTs, against both reference label sets.

    python Testing/Benchmarks/femur_cross_validation.py --data ../shared/data/hip_ct [--steps N] [--seed S] [--bf16]
        [--json FILE] [--models DIR]
        [--held-out CASE ...] [--thresholds T ...] [--observer-steps N] [--mirror] [--ensemble DIR ...]

For each case: train on the other case's MIT-licensed whole-femur labels (yuta-hi label 2) plus the
project's sample head CT as a femur-free negative (the shipped model's recipe), segment
the held-out CT, and compare per side with
  * the MIT labels, both cut to this project's proximal-femur definition (100 mm below the apex);
  * the clinician radiotherapy contours (no licence), on the axial slices each contour covers,
    with Ref002-right also reported without its four defective slices (k 71..74, data README).
Each held-out CT is segmented twice, with the boundary snapped to the cortex (the shipped pipeline) and with the
network's own boundary. With ``--observer-steps N`` each fold model is also fine-tuned for N steps on the training
CT's clinician contours (its MIT femur on the slices they leave out), a second observer in the clinicians' style,
and scored against the held-out CT's clinician contours. With ``--mirror`` the shipped pipeline is also scored with
the mirrored second pass (``femur-segment --mirror``); with ``--ensemble DIR ...``, on the mean probability of the fold
model and those kept in other runs' ``--models`` folders (e.g. other seeds), the ensemble ``femur-segment --model A B``
takes. Models trained here are never written to the repository.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "FemurSegment"))
from FemurSegmentLib import anatomy  # noqa: E402
from FemurSegmentLib.evaluation import compare, reference_sides, summarize  # noqa: E402
from FemurSegmentLib.inference import THRESHOLD, femur_probability, labels_from_probability  # noqa: E402
from FemurSegmentLib.model import FemurModel  # noqa: E402
from FemurSegmentLib.training import prepare_case, train  # noqa: E402
from FemurSegmentLib.volumes import InputError  # noqa: E402

CASES = ("Pelvic-Ref002", "Pelvic-Ref005")
HEAD_CT = ROOT / "FluoroLandmarks" / "Resources" / "SampleData" / "ProMED_CT_0051.nrrd"  # femur-free negative
MIT_FEMUR = 2
DEFECTIVE = {"Pelvic-Ref002": {"right": [71, 72, 73, 74]}}


def table(title: str, results: dict) -> None:
    print(f"\n{title}")
    print(f"  {'case':15s} {'side':6s} {'Dice':>6s} {'sens':>6s} {'spec':>7s} {'HD95 mm':>8s} "
          f"{'V pred':>8s} {'V true':>8s} {'dV %':>6s}")
    for case, sides in results.items():
        for side, m in sides.items():
            print(f"  {case:15s} {side:6s} {m['dice']:6.3f} {m['sensitivity']:6.3f} {m['specificity']:7.4f} "
                  f"{m['hd95_mm']:8.1f} {m['volume_pred_cm3']:8.1f} {m['volume_true_cm3']:8.1f} "
                  f"{100 * (m['volume_pred_cm3'] / m['volume_true_cm3'] - 1):6.1f}")
    s = summarize(results)
    print(f"  mean Dice {s['mean_dice']:.3f}, sensitivity {s['mean_sensitivity']:.3f}, specificity "
          f"{s['mean_specificity']:.4f}, HD95 {s['mean_hd95_mm']:.1f} mm, volume R² {s['volume_r2']:.3f}")


def labels_at(probability: sitk.Image, ct: sitk.Image, snap: bool, threshold: float, timings: dict | None = None):
    """Labels (whole femur) and warnings; no femur found at all is scored as an empty segmentation."""
    try:
        seg = labels_from_probability(probability, ct, proximal=False, snap=snap, threshold=threshold, timings=timings)
        return seg.labels, seg.warnings
    except InputError as error:
        return np.zeros(sitk.GetArrayViewFromImage(ct).shape, np.uint8), [str(error)]


def scores(labels: np.ndarray, references: dict, ct: sitk.Image, case: str) -> dict:
    return {"mit_proximal": compare(anatomy.proximal_labels(labels, ct), references["mit_proximal"], ct),
            "clinician": compare(labels, references["clinician"], ct, reference_slices=True),
            "clinician_without_defect": compare(labels, references["clinician"], ct, reference_slices=True,
                                                exclude=DEFECTIVE.get(case))}


def _cell(m: dict) -> str:
    return f"{m['dice']:.3f}/{100 * (m['volume_pred_cm3'] / m['volume_true_cm3'] - 1):+.0f}"


def sweep_table(sweep: dict) -> dict:
    """Prints the snapped pipeline's MIT and clinician Dice / volume error (%) per threshold, case
    and side; for each case, the threshold the *other* fold would choose (its best mean MIT Dice)
    and the Dice that choice gives here. Returns those choices."""
    print("\nThreshold sweep, boundary snapped: MIT proximal Dice/dV %, clinician Dice/dV %")
    mean_dice = {t: {c: float(np.mean([m["dice"] for m in r["mit_proximal"].values()])) for c, r in by_case.items()}
                 for t, by_case in sweep.items()}
    for t, by_case in sweep.items():
        cells = [f"{case[-3:]} {side[0].upper()} {_cell(m)} {_cell(r['clinician'][side])}"
                 for case, r in by_case.items() for side, m in r["mit_proximal"].items() if side in r["clinician"]]
        print(f"  {float(t):<5g}: " + "   ".join(cells))
    cases = list(next(iter(sweep.values())))
    chosen = {}
    for case in cases:
        others = [c for c in cases if c != case]
        if others:
            pick = max(sweep, key=lambda t: np.mean([mean_dice[t][c] for c in others]))
            chosen[case] = {"threshold": float(pick), "mit_dice": mean_dice[pick][case]}
            print(f"  {case}: the other fold's best threshold {float(pick):g} gives mean MIT Dice "
                  f"{mean_dice[pick][case]:.3f} here")
    if chosen:
        print(f"  leave-one-case-out mean MIT Dice, threshold chosen on the other fold: "
              f"{np.mean([v['mit_dice'] for v in chosen.values()]):.3f}")
    return chosen


def clinician_style(manual: sitk.Image, mit: sitk.Image, ct: sitk.Image) -> sitk.Image:
    """A training label in the clinicians' style: per side, their contour on the axial slices it covers and the
    MIT femur on the others (the shaft below their arbitrary lower end, the head's top slice)."""
    contours = sitk.GetArrayFromImage(manual)
    whole = anatomy.split_sides(sitk.GetArrayFromImage(mit) == MIT_FEMUR, ct,
                                anatomy.midline(sitk.GetArrayViewFromImage(ct), ct))
    label = np.zeros(contours.shape, np.uint8)
    for side, value in anatomy.LABEL_VALUES.items():
        drawn = contours == value
        covered = drawn.any(axis=(1, 2))
        label[drawn | (whole[side] & ~covered[:, None, None])] = 1
    image = sitk.GetImageFromArray(label)
    image.CopyInformation(ct)
    return image


def second_observer(model: FemurModel, training: list, steps: int, ct: sitk.Image, references: dict, case: str,
                    kept: Path | None) -> dict:
    """Fine-tune ``model`` on clinician-style ``training`` cases; its scores against the clinician contours of the
    held-out ``ct`` at the shipped threshold and at 0.5, boundary snapped and the network's own."""
    if kept and (kept / "model_card.json").exists() and FemurModel.load(kept).card.get("steps") == steps:
        observer = FemurModel.load(kept)
        print(f"reusing the second-observer model in {kept}", flush=True)
    else:
        net, summary = train(training, steps=steps, lr=5e-4, seed=2, init=model.net)
        observer = FemurModel(net, {})
        if kept:
            observer.save(kept, summary)
    probability = femur_probability(observer, ct, {})
    out = {"training": {k: v for k, v in observer.card.items() if k not in ("architecture", "sha256", "parameters")}}
    for threshold in (THRESHOLD, 0.5):
        for snap in (True, False):
            labels, warnings = labels_at(probability, ct, snap, threshold)
            key = f"{'snapped' if snap else 'network_boundary'}_{threshold:g}"
            out[key] = {name: value for name, value in scores(labels, references, ct, case).items() if name != "mit_proximal"}
            out[key]["warnings"] = warnings
    return out


def same_recipe(card: dict, args) -> bool:
    """Whether a kept fold model was trained with this run's steps, seed and precision."""
    precision = "bfloat16 autocast" if args.bf16 else "float32"
    return (card.get("steps"), card.get("seed"), card.get("precision", "float32")) == (args.steps, args.seed, precision)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="hip_ct folder")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=1, help="training seed of the fold models")
    parser.add_argument("--bf16", action="store_true", help="train the fold models in bfloat16 autocast (femur-segment "
                        "train --bf16)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--models", type=Path, help="keep each fold's model here (never in the repository) and reuse "
                        "one already there that was trained with the same --steps, --seed and --bf16")
    parser.add_argument("--held-out", nargs="+", choices=CASES, default=list(CASES),
                        help="run only these folds (default: both)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[],
                        help="also score the snapped pipeline at these probability thresholds (e.g. 0.5 0.4 0.3 0.2) "
                             "and pick each fold's threshold on the other fold")
    parser.add_argument("--observer-steps", type=int, default=0,
                        help="also fine-tune each fold model this many steps on the training CT's clinician contours "
                             "and score it against the held-out CT's (a second observer in their style)")
    parser.add_argument("--mirror", action="store_true",
                        help="also score the pipeline with the mirrored second pass (femur-segment --mirror)")
    parser.add_argument("--ensemble", type=Path, nargs="+", default=[],
                        help="also score the mean probability of each fold's model and the fold models kept in these "
                             "--models folders of other runs (DIR/CASE)")
    args = parser.parse_args()
    if not all((args.data / f"{c}_ct.nrrd").is_file() for c in CASES):
        parser.error(f"{args.data} does not hold {', '.join(CASES)} (see ../shared/data/hip_ct)")
    cts = {c: sitk.ReadImage(str(args.data / f"{c}_ct.nrrd")) for c in CASES}
    mit = {c: sitk.ReadImage(str(args.data / f"{c}_yutahi_28labels.nrrd")) for c in CASES}
    manual = {c: sitk.ReadImage(str(args.data / f"{c}_femur_manual.nrrd")) for c in CASES}
    prepared = {c: prepare_case(c, cts[c], mit[c] == MIT_FEMUR) for c in CASES}
    negative = prepare_case("head CT (no femur)", sitk.ReadImage(str(HEAD_CT)), None)
    results = {"training": {}, "runtime": {}, "warnings": {}}
    variants = {"": True, "network_boundary_": False}  # key prefix -> snap the boundary to the cortex
    for held_out in args.held_out:
        train_on = [c for c in CASES if c != held_out]
        print(f"\n== held out {held_out}: training on {train_on} for {args.steps} steps", flush=True)
        kept = args.models / held_out if args.models else None
        if kept and (kept / "model_card.json").exists() and same_recipe(FemurModel.load(kept).card, args):
            model = FemurModel.load(kept)  # this fold's model from an earlier run of the same recipe
            summary = {k: v for k, v in model.card.items() if k not in ("architecture", "sha256", "parameters")}
            print(f"reusing the fold model in {kept}", flush=True)
        else:
            net, summary = train([prepared[c] for c in train_on] + [negative], steps=args.steps, seed=args.seed,
                                 bf16=args.bf16)
            model = FemurModel(net, {})
            if kept:
                model.save(kept, {"trained_on": train_on, **summary})
        results["training"][held_out] = summary
        ct = cts[held_out]
        middle = anatomy.midline(sitk.GetArrayViewFromImage(ct), ct)
        references = {"mit_proximal": reference_sides(mit[held_out], MIT_FEMUR, True, middle),
                      "clinician": reference_sides(manual[held_out], None, False, middle)}
        t = time.perf_counter()
        timings = {}
        probability = femur_probability(model, ct, timings)
        for prefix, snap in variants.items():
            labels, warnings = labels_at(probability, ct, snap, THRESHOLD, timings)
            if snap:
                results["runtime"][held_out] = {"seconds": time.perf_counter() - t, **timings}
            results["warnings"][prefix + held_out] = warnings
            print(f"{held_out} ({'cortex-snapped' if snap else 'network'} boundary): warnings {warnings}", flush=True)
            for key, value in scores(labels, references, ct, held_out).items():
                results.setdefault(prefix + key, {})[held_out] = value
        for threshold in args.thresholds:
            labels, _ = labels_at(probability, ct, True, threshold)
            sweep = scores(labels, references, ct, held_out)
            results.setdefault("threshold_sweep", {}).setdefault(str(threshold), {})[held_out] = sweep
        extra = {}  # key prefix -> probability of a variant of the shipped pipeline
        if args.mirror:
            extra["mirrored_"] = femur_probability(model, ct, {}, mirror=True)
        if args.ensemble:
            members = [probability] + [femur_probability(FemurModel.load(d / held_out), ct, {}) for d in args.ensemble]
            extra["ensemble_"] = sum(members[1:], members[0]) / len(members)
        for prefix, variant in extra.items():
            labels, warnings = labels_at(variant, ct, True, THRESHOLD)
            results["warnings"][prefix + held_out] = warnings
            for key, value in scores(labels, references, ct, held_out).items():
                results.setdefault(prefix + key, {})[held_out] = value
        if args.observer_steps:
            print(f"fine-tuning on the clinician contours of {train_on} for {args.observer_steps} steps", flush=True)
            training = [prepare_case(f"{c} (clinician style)", cts[c], clinician_style(manual[c], mit[c], cts[c]))
                        for c in train_on] + [negative]
            results.setdefault("second_observer", {})[held_out] = second_observer(
                model, training, args.observer_steps, ct, references, held_out,
                kept / f"observer_{args.observer_steps}" if kept else None)
    for prefix, snap in variants.items():
        boundary = "boundary snapped to the cortex (shipped)" if snap else "the network's own boundary"
        table(f"MIT whole-femur labels cut to the proximal definition (leave-one-case-out), {boundary}",
              results[prefix + "mit_proximal"])
        table(f"Clinician contours, on the contours' slices, {boundary}", results[prefix + "clinician"])
        table(f"Clinician contours, Ref002-right without slices k 71..74, {boundary}",
              results[prefix + "clinician_without_defect"])
        for key in ("mit_proximal", "clinician", "clinician_without_defect"):
            results[f"{prefix}{key}_summary"] = summarize(results[prefix + key])
    for prefix, what in (("mirrored_", "with the mirrored second pass"),
                         ("ensemble_", f"the mean probability of {1 + len(args.ensemble)} fold models")):
        if prefix + "mit_proximal" in results:
            for key in ("mit_proximal", "clinician", "clinician_without_defect"):
                table(f"{key.replace('_', ' ')}, boundary snapped, {what}", results[prefix + key])
                results[f"{prefix}{key}_summary"] = summarize(results[prefix + key])
    if args.thresholds:
        results["threshold_choice_by_other_fold"] = sweep_table(results["threshold_sweep"])
    if args.observer_steps:
        observer = results["second_observer"]
        for key in next(iter(observer.values())):
            if key != "training":
                for reference in ("clinician", "clinician_without_defect"):
                    per_case = {case: r[key][reference] for case, r in observer.items()}
                    table(f"Second observer (fine-tuned {args.observer_steps} steps on the other CT's clinician contours), "
                          f"{key}, against the {reference.replace('_', ' ')}", per_case)
                    results[f"second_observer_{key}_{reference}_summary"] = summarize(per_case)
    for case, r in results["runtime"].items():
        print(f"segmentation of {case}: {r['seconds']:.1f} s "
              f"({', '.join(f'{k} {v:.1f}' for k, v in r.items() if k != 'seconds')})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
