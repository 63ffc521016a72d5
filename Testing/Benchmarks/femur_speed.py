"""Whole-CT speed and memory of ``femur-segment`` (segmentation + measurements + all output files),
one fresh process per CT so that each peak memory is its own.

    python Testing/Benchmarks/femur_speed.py CT.nrrd [CT.nrrd ...] [--model M ...] [--single]
        [--precision float32 bfloat16] [--json FILE]

The first variant is ``femur-segment``'s default (the shipped two-model ensemble, or ``--model``); ``--single`` also
runs every CT with ``femur-segment --single`` (one model), side by side.
``--precision`` runs each variant in each of the network arithmetics given (default: auto, femur-segment's default);
the labels of every later one are compared with the first one's (Dice per side, volume difference).

Goal (issue 4): a 512 x 512 x ~150 CT in <= 20 s with peak memory <= 3 GB on 2 cores.
Reference: TotalSegmentator's fast mode, 57 s on a 10-core CPU (its paper); not run here.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk


def side_masks(seg_file: Path, ct: sitk.Image) -> dict[str, np.ndarray]:
    """{"left"/"right": mask on ``ct``'s grid} from a segmentation.seg.nrrd (whose extent may be cropped)."""
    seg = sitk.ReadImage(str(seg_file))
    labels = sitk.GetArrayFromImage(sitk.Resample(seg, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0))
    segments = {seg.GetMetaData(k): int(seg.GetMetaData(k.replace("_Name", "_LabelValue")))
                for k in seg.GetMetaDataKeys() if k.startswith("Segment") and k.endswith("_Name")}
    return {name.split()[0].lower(): labels == value for name, value in segments.items()}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cts", nargs="+", type=Path)
    parser.add_argument("--model", type=Path, nargs="+")
    parser.add_argument("--single", action="store_true", help="also time femur-segment --single, side by side")
    parser.add_argument("--precision", nargs="+", default=["auto"], choices=("auto", "float32", "bfloat16"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    exe = Path(sys.executable).with_name("femur-segment")
    rows = {}
    models = {"": ["--model", *map(str, args.model)] if args.model else []}
    if args.single:
        models[" --single"] = ["--single"]
    variants = {}  # name (the options beyond the default) -> (name of its models' first variant, options)
    for m, o in models.items():
        names = [m + ("" if p == "auto" else f" --precision {p}") for p in args.precision]
        variants.update({n: (names[0], [*o, "--precision", p]) for n, p in zip(names, args.precision)})
    first_variant = next(iter(variants))
    for ct in args.cts:
        labels, image = {}, sitk.ReadImage(str(ct))
        for variant, (base, options) in variants.items():
            with tempfile.TemporaryDirectory() as out:
                start = time.perf_counter()
                done = subprocess.run([str(exe), str(ct), "--out", out, *options], capture_output=True, text=True)
                wall = time.perf_counter() - start
                if done.returncode:
                    print(done.stderr, file=sys.stderr)
                    return done.returncode
                m = json.loads((Path(out) / "measurements.json").read_text())
                labels[variant] = side_masks(Path(out) / "segmentation.seg.nrrd", image)
            name = ct.name + variant
            rows[name] = {"variant": variant, "size": list(image.GetSize()), "runtime_s": m["runtime_s"],
                          "peak_memory_mb": m["peak_memory_mb"], "timings_s": m["timings_s"], "process_wall_s": wall,
                          "network_precision": m["network_precision"],
                          "volumes_cm3": {s: m[f"{s}_volume_cm3"] for s in m["sides"]}}
            r = rows[name]
            note = "" if variant == first_variant else \
                f"; {r['runtime_s'] / rows[ct.name + first_variant]['runtime_s']:.2f} x the first variant's time"
            if base != variant:  # another arithmetic: its labels against the first one's
                first = rows[ct.name + base]
                r["agreement_with_first"] = {
                    s: {"dice": dice(labels[variant][s], labels[base][s]),
                        "volume_difference_percent": 100 * (r["volumes_cm3"][s] / first["volumes_cm3"][s] - 1)}
                    for s in r["volumes_cm3"] if s in first["volumes_cm3"]}
                note += "".join(f"; {s} Dice {a['dice']:.4f} and volume {a['volume_difference_percent']:+.2f} % "
                               f"against {first['network_precision']}" for s, a in r["agreement_with_first"].items())
            print(f"{name}: {'x'.join(map(str, r['size']))} voxels, {r['network_precision']}, {r['runtime_s']:.1f} s in "
                  f"the pipeline ({r['process_wall_s']:.1f} s for the whole process with imports, reading and writing), "
                  f"peak {r['peak_memory_mb']:.0f} MB (" + ", ".join(f"{k[:-2]} {v:.1f}" for k, v in r["timings_s"].items())
                  + ")" + note, flush=True)
    summary = {"cases": rows}
    for variant in variants:
        runs = [r for r in rows.values() if r["variant"] == variant]
        key = variant.strip(" -").replace(" --", "_").replace(" ", "_") + "_" if variant else ""
        summary[f"{key}max_runtime_s"] = max(r["runtime_s"] for r in runs)
        summary[f"{key}max_peak_memory_mb"] = max(r["peak_memory_mb"] for r in runs)
        print(f"{variant.strip() or 'default'}: slowest {summary[f'{key}max_runtime_s']:.1f} s (goal 20 s), largest "
              f"peak {summary[f'{key}max_peak_memory_mb']:.0f} MB (goal 3072 MB)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
