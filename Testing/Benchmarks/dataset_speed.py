"""Synthetic training-set rate: samples/s of `make-dataset` on the sample head CT, side by side.

    python Testing/Benchmarks/dataset_speed.py [--count 1024] [--full-count 256] [--json FILE]

Writes 256x256 training sets (to a temporary folder) with the shipped recipe's settings, each with
one and with two worker processes: rays and head variants at half resolution (the default
``--coarse 2``) without and with the 100 mm synthetic lower head, and at full resolution
(``--coarse 1``, lower head) with fewer samples. The rates include starting the workers and
writing the shards; the goal of issue 3 is 50 samples/s.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "FluoroLandmarks"))
from FluoroLandmarksLib.cli import SAMPLE_CT, SAMPLE_LANDMARKS  # noqa: E402
from FluoroLandmarksLib.dataset import write_dataset  # noqa: E402
from FluoroLandmarksLib.headless import read_ct_and_landmarks  # noqa: E402

GOAL = 50.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1024, help="samples per half-resolution run")
    parser.add_argument("--full-count", type=int, default=256, help="samples per full-resolution run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    hu, ijk_to_ras, labels, points = read_ct_and_landmarks(SAMPLE_CT, SAMPLE_LANDMARKS)
    runs = []
    print(f"{'setting':<34} {'workers':>7} {'samples':>7} {'s':>7} {'samples/s':>9} {'/ goal':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, coarse, lower, count in (("half resolution", 2, 0.0, args.count),
                                           ("half resolution, lower head 100 mm", 2, 100.0, args.count),
                                           ("full resolution, lower head 100 mm", 1, 100.0, args.full_count)):
            for workers in (1, 2):
                out = Path(tmp) / f"c{coarse}_l{lower:.0f}_w{workers}"
                meta = write_dataset(hu, ijk_to_ras, labels, points, count, args.seed, out, coarse=coarse,
                                     lower_head_mm=lower, workers=workers, progress=lambda _: None)
                rate = meta["samples_per_second"]
                runs.append(dict(setting=name, coarse=coarse, lower_head_mm=lower, workers=workers,
                                 samples=meta["samples"], seconds=meta["seconds"], samples_per_second=rate))
                print(f"{name:<34} {workers:>7} {meta['samples']:>7} {meta['seconds']:>7.1f} {rate:>9.1f} "
                      f"{rate / GOAL:>6.2f}", flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(dict(goal_samples_per_second=GOAL, runs=runs), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
