"""``fluoro-landmarks``: the FluoroLandmarks logic from the command line, on a headless MRML scene."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .geometry import Collimation
from .synthesis import OUTPUT_KINDS, DRRParameters


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, OSError) as error:
        print(f"fluoro-landmarks: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
