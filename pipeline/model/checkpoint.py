"""Read this pipeline's checkpoints: the model's settings, class names and extractor record."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from pipeline.errors import UserError


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that is missing, unreadable, foreign, or does not fit the data or extractor."""


def check_exists(path: str | Path) -> None:
    """A checkpoint (or exported folder) that is not there, or a file that cannot be one, said before torch
    and the models load (seconds)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} not found")
    if path.is_file():
        _sniff(path)


LEGACY_MAGIC = b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")  # torch.save's first pickle, before zip files


def _sniff(path: Path) -> None:
    """Refuse a file that cannot be a checkpoint from its first and last bytes (no torch): ``torch.save``
    writes a zip archive; older releases a pickle that opens with torch's magic number (left to ``torch.load``)."""
    try:
        with path.open("rb") as f:
            head = f.read(32)
        whole = zipfile.is_zipfile(path) if head.startswith(b"PK") else False
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None
    if not head:
        raise CheckpointError(f"{path}: not a readable checkpoint (empty file); {WHAT_TO_GIVE}")
    if head.startswith(b"PK") and not whole:
        raise CheckpointError(f"{path}: not a readable checkpoint (damaged or cut short: copy it again); {WHAT_TO_GIVE}")
    if not (head.startswith(b"PK") or (head.startswith(b"\x80") and LEGACY_MAGIC in head)):
        raise CheckpointError(f"{path}: not a readable checkpoint (not a PyTorch file); {WHAT_TO_GIVE}")


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict, after checking it is one of ours (hyper-parameters with classes and extractor)."""
    import torch  # here, so that this module's error and checks load in an instant

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    _sniff(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: {_unreadable(e)}; {WHAT_TO_GIVE}") from None
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not hp or "extractor" not in hp or "class_names" not in hp:
        raise CheckpointError(f"{path}: not a checkpoint of this pipeline (no class names or extractor record); {WHAT_TO_GIVE}")
    return ckpt


WHAT_TO_GIVE = "give a .ckpt that train.py wrote (runs/NAME/version_N/checkpoints/best-*.ckpt)"


def _unreadable(e: Exception) -> str:
    """What torch.load's failure means for a user, in a few words instead of its page of advice."""
    text = str(e)
    foreign = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if foreign:  # a pickle of Python objects (a YOLO .pt, a whole pickled model), never loaded unsafely here
        return f"not a checkpoint of this pipeline (it holds Python objects such as {foreign.group(1)}: another tool's model file?)"
    if isinstance(e, EOFError) and not text:
        return "not a readable checkpoint (empty file)"
    if isinstance(e, EOFError) or "zip archive" in text or "corrupted" in text:
        return "not a readable checkpoint (damaged or cut short: copy it again)"
    return "not a readable checkpoint (not a PyTorch file)"


def check_extractor(record: dict, identity, feature_dim: int, source: str = "the checkpoint") -> None:
    """Refuse features that differ from training: other weights, or another feature size."""
    if record.get("weights_sha256") and record["weights_sha256"] != identity.sha256:
        raise CheckpointError(
            f"{source} was trained with weights {record.get('weights_name')} (sha256 {record['weights_sha256'][:12]}...), "
            f"but {identity.name} here has sha256 {identity.sha256[:12]}...; use the same weights file"
        )
    if record.get("feature_dim") != feature_dim:
        raise CheckpointError(
            f"{source} expects {record.get('feature_dim')} features per frame but the extractor gives {feature_dim}; "
            f"use the extractor it was trained with (layers {record.get('layers')}, imgsz {record.get('imgsz')})"
        )
