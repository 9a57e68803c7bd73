"""Resolve YOLO pose weights the Ultralytics way and record their identity.

A weights *name* (``yolo11n-pose.pt``) resolves like ``YOLO(name)`` does: the path as given, then
``$ACTIONS_WEIGHTS_DIR`` or Ultralytics' ``weights_dir`` setting, then a download from the Ultralytics
release assets. A YAML name
(``yolo11n-pose.yaml``) builds a random-initialised model with a fixed seed, for fast tests.
The identity (name + sha256) goes into every cache key and checkpoint so features from different
weights are never mixed.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pipeline.errors import UserError


class WeightsError(UserError, RuntimeError):
    """The weights cannot be found, fetched or used."""


@dataclass(frozen=True)
class WeightsIdentity:
    name: str
    sha256: str


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _sha256_state(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def is_yaml(name: str) -> bool:
    return str(name).lower().endswith((".yaml", ".yml"))


WEIGHTS_DIR_ENV = "ACTIONS_WEIGHTS_DIR"


def weights_dir() -> Path:
    """Where bare weights names are looked up: ``$ACTIONS_WEIGHTS_DIR`` when set (this project only), else
    Ultralytics' ``weights_dir`` setting (``yolo settings weights_dir=DIR``, for every Ultralytics user of
    this account)."""
    if os.environ.get(WEIGHTS_DIR_ENV):
        return Path(os.environ[WEIGHTS_DIR_ENV]).expanduser()
    from ultralytics.utils import SETTINGS

    return Path(SETTINGS["weights_dir"])


def resolve_weights(name: str) -> Path:
    """Return a local path for a ``.pt`` weights name or path, downloading it when allowed."""
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES, attempt_download_asset

    path = Path(name).expanduser()
    if path.is_file():
        return path
    local = weights_dir() / path.name
    if local.is_file():
        return local
    if path.parent != Path("."):  # an explicit path that is not there: never download
        raise WeightsError(f"weights file not found: {path}")
    if path.name not in GITHUB_ASSETS_NAMES:  # no release asset by that name: do not probe GitHub
        raise WeightsError(
            f"weights '{name}' not found locally and not an Ultralytics release asset; "
            f"put the file at {local} or pass its path"
        )
    try:
        got = Path(attempt_download_asset(path.name))
    except Exception as e:  # ultralytics raises ConnectionError, HTTPError, ... when offline
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(
            f"weights '{name}' are not on this machine and could not be downloaded ({reason}); "
            f"put the file at {local} (or run `yolo settings weights_dir=DIR` with DIR holding it), "
            "or pass its path"
        ) from None
    if not got.is_file():
        raise WeightsError(
            f"weights '{name}' not found locally and not an Ultralytics release asset; "
            f"put the file at {local} or pass its path"
        )
    return got


def load_pose_model(name: str) -> tuple[nn.Module, WeightsIdentity]:
    """Load an Ultralytics pose model (``PoseModel``) and its identity, in eval mode on the CPU."""
    from ultralytics import YOLO

    if is_yaml(name):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # same YAML -> same random weights -> same identity and cache key
            try:
                model = YOLO(name).model
            except Exception as e:
                raise WeightsError(f"cannot build a model from '{name}': {e}") from None
        ident = WeightsIdentity(Path(name).name, _sha256_state(model))
    else:
        path = resolve_weights(name)
        try:
            model = YOLO(str(path)).model
        except Exception:  # Ultralytics' own message is long and decorated: say it in our words
            raise WeightsError(
                f"{path}: not a loadable Ultralytics checkpoint (empty, truncated or corrupt); download it again or give another file"
            ) from None
        ident = WeightsIdentity(Path(name).name, sha256_file(path))
    head = model.model[-1]
    if not hasattr(head, "kpt_shape"):
        raise WeightsError(
            f"'{name}' is a {type(head).__name__} model, not a pose model; use pose weights such as yolo11n-pose.pt"
        )
    if tuple(head.kpt_shape) != (17, 3):
        raise WeightsError(f"'{name}' predicts {tuple(head.kpt_shape)} keypoints; 17 COCO keypoints with visibility are required")
    model = model.float().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, ident
