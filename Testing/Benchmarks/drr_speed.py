"""DRR speed and agreement: this renderer vs plastimatch (exact CPU mode) and DiffDRR, same geometry.

    python Testing/Benchmarks/drr_speed.py [--ct CT ...] [--json FILE]

Renders 256x256 AP, lateral and oblique line-integral DRRs of each CT (default: the sample head
CT, and ../shared/data/hip_ct/Pelvic-Ref005_ct.nrrd (512x512x137) if present), prints ms per DRR
and the ratios, and the relative RMS difference of the line integrals against ours.
plastimatch is fed the same attenuation volume (-P none) and reports mu*cm, scaled to mu*mm.
DiffDRR (`pip install --no-deps diffdrr` + fastcore einops scipy torchio, see `make bench`) runs
its default Siddon renderer on the same attenuation volume and the same rays, in voxel space as
its ``DRR.render`` does after the affine; its camera set-up is bypassed so that only the
geometry, not its pose convention, is shared.
"""

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "FluoroLandmarks"))
from FluoroLandmarksLib.drr import DRRRenderer, hu_to_mu  # noqa: E402
from FluoroLandmarksLib.geometry import CArmGeometry  # noqa: E402

VIEWS = {"AP": (0.0, 0.0), "lateral": (90.0, 0.0), "oblique": (30.0, 15.0)}


def read_pfm(path):
    with open(path, "rb") as f:
        f.readline()
        w, h = map(int, f.readline().split())
        scale = float(f.readline())
        return np.fromfile(f, "<f4" if scale < 0 else ">f4").reshape(h, w)[::-1]


def plastimatch(mu_path, g: CArmGeometry, workdir):
    """plastimatch drr in LPS: nrm points from the detector to the source, vup to image top."""
    to_lps = np.array([-1.0, -1.0, 1.0])
    iso = np.array(g.isocenter_ras) * to_lps
    nrm, vup = g.source_direction * to_lps, -g.v_axis * to_lps
    nu, nv = g.detector_size_px
    cmd = ["plastimatch", "drr", "-i", "exact", "-P", "none", "-t", "pfm", "--sad", str(g.sod_mm),
           "--sid", str(g.sid_mm), "-r", f"{nv} {nu}", "-z", f"{nv * g.pixel_spacing_mm[1]} {nu * g.pixel_spacing_mm[0]}",
           "-o", " ".join(map(str, iso)), "--nrm", " ".join(map(str, nrm)), "--vup", " ".join(map(str, vup)),
           "-O", f"{workdir}/pm_", str(mu_path)]
    log = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    seconds = float(re.search(r"Total time:\s*([0-9.eE+-]+)", log).group(1))
    image = read_pfm(f"{workdir}/pm_0000.pfm") * 10.0  # mu*cm -> mu*mm
    return image[::-1, ::-1], seconds  # plastimatch rows run up and columns along -u


def diffdrr_renderer():
    """DiffDRR's default renderer, or None when DiffDRR is not installed."""
    try:
        from diffdrr.renderers import Siddon
    except ImportError:
        return None
    return Siddon()


def diffdrr(siddon, volume_ijk, ras_to_ijk, g: CArmGeometry):
    """Line integrals (nv, nu) from DiffDRR's Siddon on ``volume_ijk`` (tensor [i, j, k])."""
    nu, nv = g.detector_size_px
    uu, vv = np.meshgrid(np.arange(nu), np.arange(nv))
    target = g.detector_point_ras(np.stack([uu.ravel(), vv.ravel()], 1))
    source = np.broadcast_to(g.source_ras, target.shape)
    length = torch.from_numpy(np.linalg.norm(target - source, axis=1)).float()[None, None]
    to_ijk = lambda x: torch.from_numpy(x @ ras_to_ijk[:3, :3].T + ras_to_ijk[:3, 3]).float()[None]
    with torch.no_grad():
        return siddon(volume_ijk, to_ijk(source), to_ijk(target), length)[0, 0].numpy().reshape(nv, nu)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = [ROOT / "FluoroLandmarks/Resources/SampleData/ProMED_CT_0051.nrrd",
               ROOT.parent / "shared/data/hip_ct/Pelvic-Ref005_ct.nrrd"]
    parser.add_argument("--ct", nargs="+", type=Path, default=[p for p in default if p.exists()])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not shutil.which("plastimatch"):
        sys.exit("plastimatch not found: apt-get install plastimatch (or make bench)")
    siddon = diffdrr_renderer()
    if siddon is None:
        print("DiffDRR not installed: pip install --no-deps diffdrr (see make bench); not measured")
    results = []
    for ct_path in args.ct:
        image = sitk.ReadImage(str(ct_path))
        hu = sitk.GetArrayFromImage(image)
        d = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
        ijk_to_ras = np.eye(4)
        ijk_to_ras[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ d
        ijk_to_ras[:3, 3] = np.array(image.GetOrigin()) * [-1, -1, 1]
        mu = hu_to_mu(hu)
        renderer = DRRRenderer(mu, ijk_to_ras)
        volume_ijk = torch.from_numpy(mu).permute(2, 1, 0)
        iso = ijk_to_ras[:3, :3] @ ((np.array(hu.shape[::-1]) - 1) / 2) + ijk_to_ras[:3, 3]
        extent = np.abs(ijk_to_ras[:3, :3] @ np.array(hu.shape[::-1])).max()
        spacing = round(float(extent * 1.333 / 256), 3)  # the detector covers the volume at the isocenter
        with tempfile.TemporaryDirectory() as tmp:
            mu_img = sitk.GetImageFromArray(mu)
            mu_img.CopyInformation(image)
            sitk.WriteImage(mu_img, f"{tmp}/mu.mha")
            for view, angles in VIEWS.items():
                g = CArmGeometry(tuple(iso), *angles, 1000.0, 750.0, (256, 256), (spacing, spacing))
                ours = renderer.render([g])[0]
                times = []
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    renderer.render([g])
                    times.append(time.perf_counter() - t)
                pm_image, pm_seconds = plastimatch(f"{tmp}/mu.mha", g, tmp)
                rel = float(np.sqrt(np.mean((pm_image - ours) ** 2)) / np.sqrt(np.mean(ours ** 2)))
                row = dict(ct=ct_path.name, shape_kji=list(hu.shape), view=view, ours_ms=1000 * min(times),
                           plastimatch_ms=1000 * pm_seconds, speedup_vs_plastimatch=pm_seconds / min(times),
                           rel_rms_diff_vs_plastimatch=rel)
                line = (f"{ct_path.name:28s} {view:8s} ours {row['ours_ms']:7.1f} ms | plastimatch {row['plastimatch_ms']:7.1f} ms"
                        f" x{row['speedup_vs_plastimatch']:.2f} diff {100 * rel:.2f} %")
                if siddon is not None:
                    t = time.perf_counter()
                    dd_image = diffdrr(siddon, volume_ijk, np.linalg.inv(ijk_to_ras), g)
                    dd_seconds = time.perf_counter() - t
                    dd_rel = float(np.sqrt(np.mean((dd_image - ours) ** 2)) / np.sqrt(np.mean(ours ** 2)))
                    row.update(diffdrr_ms=1000 * dd_seconds, speedup_vs_diffdrr=dd_seconds / min(times),
                               rel_rms_diff_vs_diffdrr=dd_rel)
                    line += (f" | DiffDRR {row['diffdrr_ms']:7.1f} ms x{row['speedup_vs_diffdrr']:.1f}"
                             f" diff {100 * dd_rel:.2f} %")
                results.append(row)
                print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"results": results, "diffdrr_measured": siddon is not None}, indent=2))


if __name__ == "__main__":
    main()
