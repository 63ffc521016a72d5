"""The femur model on disk: ``weights.pt`` (a plain state dict, read with
``torch.load(weights_only=True)``) and ``model_card.json`` holding its sha256, architecture,
working grid, training data, command, time and metrics. A file whose sha256 differs from the
card is refused."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .network import SmallVNet

WEIGHTS_FILE, CARD_FILE = "weights.pt", "model_card.json"
SHIPPED_MODEL = Path(__file__).resolve().parents[1] / "Resources" / "Models" / "femur"
# The shipped two-model ensemble (``femur-segment --ensemble``): the same recipe and data, seeds 0 and 1.
SHIPPED_ENSEMBLE = (SHIPPED_MODEL, SHIPPED_MODEL.with_name("femur_seed1"))


def sha256(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


@dataclass
class FemurModel:
    net: SmallVNet
    card: dict

    def save(self, folder: str | os.PathLike, card: dict) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        _write_atomic(folder / WEIGHTS_FILE, lambda p: torch.save(self.net.state_dict(), p))
        self.card = dict(card, architecture=self.net.config, sha256=sha256(folder / WEIGHTS_FILE),
                         parameters=sum(p.numel() for p in self.net.parameters()))
        _write_atomic(folder / CARD_FILE, lambda p: p.write_text(json.dumps(self.card, indent=2)))
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike = SHIPPED_MODEL) -> "FemurModel":
        folder = Path(folder)
        if not (folder / CARD_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(f"{folder} is not a femur model folder ({CARD_FILE} + {WEIGHTS_FILE})")
        card = json.loads((folder / CARD_FILE).read_text())
        digest = sha256(folder / WEIGHTS_FILE)
        if digest != card.get("sha256"):
            raise ValueError(f"{folder / WEIGHTS_FILE}: sha256 {digest} does not match the model card; refusing to load")
        net = SmallVNet(**card["architecture"])
        net.load_state_dict(torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True))
        net.eval()
        return cls(net, card)


def load_models(folders) -> list[FemurModel]:
    """One :class:`FemurModel` per folder (an ensemble when several)."""
    return [FemurModel.load(f) for f in folders]


def model_available(folder: str | os.PathLike = SHIPPED_MODEL) -> bool:
    return (Path(folder) / CARD_FILE).is_file() and (Path(folder) / WEIGHTS_FILE).is_file()
