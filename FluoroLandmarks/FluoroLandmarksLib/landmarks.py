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


def mirror_permutation(labels: list[str]) -> list[int]:
    """For each label, the index of its left-right mirror image in ``labels``: the "_left" /
    "_right" partner of a bilateral landmark, itself for a midline one. Raises ValueError when a
    bilateral landmark's partner is missing (the mirrored frame could not be read back)."""
    swap = {"_right": "_left", "_left": "_right"}
    partners = []
    for label in labels:
        side = next((s for s in swap if label.endswith(s)), None)
        partner = label if side is None else label[: -len(side)] + swap[side]
        if partner not in labels:
            raise ValueError(f"{label!r} has no mirror partner {partner!r} among the model's landmarks")
        partners.append(labels.index(partner))
    return partners
