"""Whole-CT speed and memory of ``femur-segment`` (segmentation + measurements + all output files),
one fresh process per CT so that each peak memory is its own.

    python Testing/Benchmarks/femur_speed.py CT.nrrd [CT.nrrd ...] [--model M] [--ensemble] [--json FILE]

``--ensemble`` also runs every CT with ``femur-segment --ensemble`` (the shipped two-model ensemble), side by side.

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

import SimpleITK as sitk


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cts", nargs="+", type=Path)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--ensemble", action="store_true", help="also time femur-segment --ensemble, side by side")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    exe = Path(sys.executable).with_name("femur-segment")
    rows = {}
    variants = {"": ["--model", str(args.model)] if args.model else []}
    if args.ensemble:
        variants[" --ensemble"] = ["--ensemble"]
    for ct in args.cts:
        for variant, options in variants.items():
            with tempfile.TemporaryDirectory() as out:
                start = time.perf_counter()
                done = subprocess.run([str(exe), str(ct), "--out", out, *options], capture_output=True, text=True)
                wall = time.perf_counter() - start
                if done.returncode:
                    print(done.stderr, file=sys.stderr)
                    return done.returncode
                m = json.loads((Path(out) / "measurements.json").read_text())
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(ct))
            reader.ReadImageInformation()
            name = ct.name + variant
            rows[name] = {"variant": variant, "size": list(reader.GetSize()), "runtime_s": m["runtime_s"],
                          "peak_memory_mb": m["peak_memory_mb"], "timings_s": m["timings_s"], "process_wall_s": wall,
                          "volumes_cm3": {s: m[f"{s}_volume_cm3"] for s in m["sides"]}}
            r = rows[name]
            print(f"{name}: {'x'.join(map(str, r['size']))} voxels, {r['runtime_s']:.1f} s in the pipeline "
                  f"({r['process_wall_s']:.1f} s for the whole process with imports, reading and writing), peak "
                  f"{r['peak_memory_mb']:.0f} MB (" + ", ".join(f"{k[:-2]} {v:.1f}" for k, v in r["timings_s"].items())
                  + ")" + ("" if not variant else f"; {r['runtime_s'] / rows[ct.name]['runtime_s']:.2f} x the "
                                                   "single model's time"), flush=True)
    summary = {"cases": rows}
    for variant in variants:
        runs = [r for r in rows.values() if r["variant"] == variant]
        key = variant.strip(" -") + "_" if variant else ""
        summary[f"{key}max_runtime_s"] = max(r["runtime_s"] for r in runs)
        summary[f"{key}max_peak_memory_mb"] = max(r["peak_memory_mb"] for r in runs)
        print(f"{variant.strip() or 'one model'}: slowest {summary[f'{key}max_runtime_s']:.1f} s (goal 20 s), largest "
              f"peak {summary[f'{key}max_peak_memory_mb']:.0f} MB (goal 3072 MB)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
