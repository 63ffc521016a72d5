"""How the shape-model fit's two settings were chosen: the Huber error scale (mm) and the power
of the network confidence that weights each 2D estimate, on a validation set (not the test set).

    python Testing/Benchmarks/landmark_fit_settings.py --data VAL_DIR [--model DIR] [--sigma 5 10 20 40]
        [--power 1 2 3 4] [--json FILE]

VAL_DIR: a dataset made with another seed than the training and test sets, e.g.
``fluoro-landmarks make-dataset ... --count 512 --seed 3001 --per-variant 32 --out VAL_DIR``.
The network runs once per image; every (sigma, power) pair is fitted to the same estimates.
Prints the 2D (isocenter plane) and 3D errors per pair; the chosen pair maximises the mean of
the 2D and 3D shares within 10 mm.
"""

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "FluoroLandmarks"))
from FluoroLandmarksLib.dataset import geometry_from_arrays, load_dataset  # noqa: E402
from FluoroLandmarksLib.evaluation import predict_images  # noqa: E402
from FluoroLandmarksLib.inference import SHIPPED_MODEL, LandmarkModel  # noqa: E402
from FluoroLandmarksLib.metrics import error_2d_mm  # noqa: E402
from FluoroLandmarksLib.shape_model import CONFIDENCE_POWER, FIT_SIGMA_MM  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="validation dataset folder (make-dataset, its own seed)")
    parser.add_argument("--model", default=str(SHIPPED_MODEL))
    parser.add_argument("--sigma", type=float, nargs="+", default=[5.0, 10.0, 20.0, 40.0], metavar="MM")
    parser.add_argument("--power", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0])
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    model = LandmarkModel.load(args.model)
    if model.shape is None:
        parser.error(f"{args.model} has no shape model (fluoro-landmarks shape-model adds one)")
    meta, data = load_dataset(args.data)
    if list(meta["labels"]) != list(model.labels):
        parser.error(f"{args.data}: its landmarks differ from the model's")
    torch.set_num_threads(2)
    p = predict_images(model, data["images"])
    uv, confidence = p["uv"], p["confidence"]
    geometries = [geometry_from_arrays(data, n) for n in range(len(uv))]
    magnification = data["sid_sod"][:, 0] / data["sid_sod"][:, 1]
    rows = []
    print(f"{len(uv)} validation images ({args.data}), model {args.model}; shipped: sigma {FIT_SIGMA_MM} mm, "
          f"power {CONFIDENCE_POWER}")
    print(f"{'sigma mm':>8} {'power':>5} | {'2D MRE':>7} {'2D<=10':>7} | {'3D MRE':>7} {'3D<=10':>7}")
    for sigma, power in itertools.product(args.sigma, args.power):
        fits = [model.shape.fit(uv[n], confidence[n] ** power, geometries[n], sigma_mm=sigma) for n in range(len(uv))]
        e2 = error_2d_mm(np.stack([f.uv for f in fits]), data["uv"], data["spacing"][:, 0], magnification)
        e3 = np.linalg.norm(np.stack([f.points_ras for f in fits]) - data["xyz_ras"], axis=-1)
        row = dict(sigma_mm=sigma, power=power, mre_2d_mm=float(e2.mean()), within_10mm_2d=float((e2 <= 10).mean()),
                   mre_3d_mm=float(e3.mean()), within_10mm_3d=float((e3 <= 10).mean()))
        rows.append(row)
        print(f"{sigma:8.1f} {power:5.1f} | {row['mre_2d_mm']:7.2f} {100 * row['within_10mm_2d']:6.1f}% | "
              f"{row['mre_3d_mm']:7.2f} {100 * row['within_10mm_3d']:6.1f}%")
    best = max(rows, key=lambda r: r["within_10mm_2d"] + r["within_10mm_3d"])
    print(f"best (mean of the 2D and 3D shares within 10 mm): sigma {best['sigma_mm']} mm, power {best['power']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(dict(samples=len(uv), data=str(args.data), model=str(args.model),
                                                   settings=rows, best=best), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
