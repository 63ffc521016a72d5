"""Per-frame speed of the landmark pipeline: preprocess -> global -> local -> shape fit (3D) -> skull.

    python Testing/Benchmarks/landmark_speed.py [--model DIR] [--frames N] [--threads N] [--json FILE]

Frames are DRR images of the sample head CT (32 random views), processed one at a time as a
fluoroscopy stream would be; prints ms per stage and frames per second.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "FluoroLandmarks"))
from FluoroLandmarksLib import mrml  # noqa: E402
from FluoroLandmarksLib.dataset import appearance, random_geometry  # noqa: E402
from FluoroLandmarksLib.detection import read_skull_template  # noqa: E402
from FluoroLandmarksLib.drr import DRRRenderer, hu_to_mu  # noqa: E402
from FluoroLandmarksLib.headless import HeadlessApplication  # noqa: E402
from FluoroLandmarksLib.inference import (REAL_IMAGE_BLUR_PX, SHIPPED_MODEL, LandmarkModel, place,  # noqa: E402
                                          network_frames, predict_network_frame)
from FluoroLandmarksLib.shape import TemplateWarp  # noqa: E402
from FluoroLandmarksLib.synthesis import volume_center_ras  # noqa: E402

SAMPLE_CT = ROOT / "FluoroLandmarks/Resources/SampleData/ProMED_CT_0051.nrrd"


def frames(count: int, seed: int = 0):
    app = HeadlessApplication()
    hu, ijk_to_ras = mrml.volume_to_numpy(mrml.load_volume(app.app_logic, SAMPLE_CT))
    app.close()
    rng = np.random.default_rng(seed)
    renderer = DRRRenderer(hu_to_mu(hu), ijk_to_ras)
    geometries = [random_geometry(rng, volume_center_ras(hu.shape, ijk_to_ras)) for _ in range(count)]
    return [(appearance(line, g, rng), g) for line, g in zip(renderer.render(geometries), geometries)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch threads (default: torch's, one per core)")
    parser.add_argument("--input-blur", type=float, default=REAL_IMAGE_BLUR_PX,
                        help="px, the blur before the network (as detect's default for real frames; in its stage)")
    parser.add_argument("--mirror", action=argparse.BooleanOptionalAction,
                        help="also read each frame mirrored left-right (default: as the model card says)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = LandmarkModel.load(args.model, args.mirror)
    template = mrml.polydata_points(read_skull_template(args.model))
    warp = TemplateWarp(template, np.asarray(model.card["template_landmarks_ras"]))  # once per model
    stream = frames(32)
    stages = {"preprocess": 0.0, "blur + global+local networks": 0.0, "shape fit (3D)": 0.0, "skull": 0.0}
    for n in range(args.frames + 5):
        image, g = stream[n % len(stream)]
        t0 = time.perf_counter()
        square, fine, scale, offset = network_frames(model, image)
        t1 = time.perf_counter()
        p = predict_network_frame(model, square[None], args.input_blur, None if fine is None else fine[None])
        t2 = time.perf_counter()
        _, _, xyz = place(model, p["uv"][0] * scale - offset, p["depth_offset"][0], p["confidence"][0], g)
        t3 = time.perf_counter()
        warp(xyz, p["confidence"][0])
        t4 = time.perf_counter()
        if n >= 5:  # warm-up frames excluded
            for key, dt in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                stages[key] += dt
    total = sum(stages.values())
    fps = args.frames / total
    for key, seconds in stages.items():
        print(f"{key:24s} {1000 * seconds / args.frames:7.2f} ms/frame ({100 * seconds / total:4.1f} %)")
    print(f"{'whole pipeline':24s} {1000 * total / args.frames:7.2f} ms/frame = {fps:.1f} frames/s "
          f"({args.threads} threads, skull template {len(template)} vertices, mirror averaging "
          f"{'on' if model.mirror else 'off'}); goal >= 30 frames/s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(dict(frames_per_second=fps, threads=args.threads, frames=args.frames,
                                             input_blur_px=args.input_blur, mirror=model.mirror,
                                             ms_per_frame={k: 1000 * v / args.frames for k, v in stages.items()},
                                             skull_vertices=int(len(template))), indent=2))


if __name__ == "__main__":
    main()
