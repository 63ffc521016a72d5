"""The head landmark catalogue (Resources/landmark_catalogue.json): names, definitions, groups."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

CATALOGUE_PATH = Path(__file__).resolve().parents[1] / "Resources" / "landmark_catalogue.json"
EYE_LENSES = ("eye_lens_right", "eye_lens_left")


@dataclass(frozen=True)
class Landmark:
    name: str
    group: str
    definition: str
    cephalometric: str | None = None  # matching name in the 19-landmark ISBI 2015 cephalometric set


def load_catalogue(path: str | Path = CATALOGUE_PATH) -> dict[str, Landmark]:
    """Catalogue entries by name; raises ValueError on duplicate names or a missing eye lens."""
    entries = json.loads(Path(path).read_text())["landmarks"]
    catalogue = {}
    for entry in entries:
        landmark = Landmark(**entry)
        if landmark.name in catalogue:
            raise ValueError(f"duplicate landmark {landmark.name!r} in {path}")
        catalogue[landmark.name] = landmark
    missing = [n for n in EYE_LENSES if n not in catalogue]
    if missing:
        raise ValueError(f"catalogue {path} lacks the mandatory {missing}")
    return catalogue
