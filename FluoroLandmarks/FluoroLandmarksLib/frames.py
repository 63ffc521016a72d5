"""Reading one 2D X-ray / fluoroscopy frame (NRRD, NIfTI, PNG, TIFF, DICOM) and its C-arm
geometry, collimated field included, from DICOM XA/RF tags where present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .geometry import CArmGeometry, Collimation

_TAGS = {"sid": "0018|1110", "sod": "0018|1111", "primary": "0018|1510", "secondary": "0018|1511",
         "imager_spacing": "0018|1164", "pixel_spacing": "0028|0030", "collimator_shape": "0018|1700",
         "left": "0018|1702", "right": "0018|1704", "upper": "0018|1706", "lower": "0018|1708",
         "circle_centre": "0018|1710", "circle_radius": "0018|1712"}


def read_frames(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, str]]:
    """(frames, rows, columns) float32 images of a 2D image (one frame) or a multi-frame file such as
    a fluoroscopy run, and its DICOM tags (empty for other formats)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} not found")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        image = reader.Execute()
    except RuntimeError as error:
        raise ValueError(f"cannot read image {path}: {str(error).strip().splitlines()[-1]}") from None
    tags = {key: reader.GetMetaData(key).strip() for key in reader.GetMetaDataKeys()}
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    if image.GetNumberOfComponentsPerPixel() > 1:
        array = array[..., :3].mean(-1)  # RGB(A) -> grey
    while array.ndim > 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"{path} is not a 2D image or a run of 2D frames (shape {array.shape})")
    return array, tags


def read_frame(path: str | os.PathLike, index: int = 0) -> tuple[np.ndarray, dict[str, str]]:
    """(rows, columns) float32 image: frame ``index`` of :func:`read_frames`, and the file's tags."""
    frames, tags = read_frames(path)
    if not 0 <= index < len(frames):
        raise ValueError(f"{path} has {len(frames)} frames; frame {index} does not exist")
    return frames[index], tags


def geometry_from_tags(tags: dict[str, str], image_shape: tuple[int, int], defaults: dict) -> tuple[CArmGeometry, dict]:
    """Geometry from DICOM XA/RF tags, else from ``defaults`` (keys sid_mm, sod_mm,
    pixel_spacing_mm, primary_deg, secondary_deg, isocenter_ras). Returns it and where each value
    came from ("dicom" or "option")."""
    values, source = dict(defaults), {key: "option" for key in defaults}

    def number(tag, index=0):
        try:
            return float(tags[tag].split("\\")[index])
        except (KeyError, ValueError, IndexError):
            return None

    for key, tag in (("sid_mm", _TAGS["sid"]), ("sod_mm", _TAGS["sod"]), ("primary_deg", _TAGS["primary"]),
                     ("secondary_deg", _TAGS["secondary"])):
        if number(tag) is not None:
            values[key], source[key] = number(tag), "dicom"
    spacing = number(_TAGS["imager_spacing"]) or number(_TAGS["pixel_spacing"])
    if spacing:
        values["pixel_spacing_mm"], source["pixel_spacing_mm"] = spacing, "dicom"
    rows, cols = image_shape
    collimation = _collimation(tags.get(_TAGS["collimator_shape"], "").upper(), number)
    if collimation.shape != "none":
        source["collimation"] = "dicom"
    geometry = CArmGeometry(tuple(values["isocenter_ras"]), values["primary_deg"], values["secondary_deg"],
                            values["sid_mm"], values["sod_mm"], (cols, rows),
                            (values["pixel_spacing_mm"], values["pixel_spacing_mm"]), collimation)
    return geometry, source


def _collimation(shape: str, number) -> Collimation:
    """The X-Ray Collimator module's field in pixels (u = column, v = row, 0 = first pixel; the
    tags count columns and rows from 1). Rectangular: left/right column and upper/lower row edges;
    circular: centre (row, column) and radius."""
    t = _TAGS
    if shape == "RECTANGULAR" and None not in (edges := [number(t[k]) for k in ("left", "right", "upper", "lower")]):
        left, right, upper, lower = (e - 1 for e in edges)
        return Collimation("rect", ((left + right) / 2, (upper + lower) / 2), (right - left, lower - upper))
    if shape == "CIRCULAR" and None not in (c := [number(t["circle_centre"], 0), number(t["circle_centre"], 1),
                                                  number(t["circle_radius"])]):
        return Collimation("circle", (c[1] - 1, c[0] - 1), radius_px=c[2])
    return Collimation()
