"""Features -> cached sequences: one ``.npz`` per video under ``<root>/<extractor key>/``.

An entry is named after the video's path relative to the data root, its size and a hash of three
64 KiB samples of its bytes (start, middle, end): an edited video is extracted again, a copied or re-synced
one (new mtime, same bytes) is not. Entries are written to a temporary file, flushed and renamed into place: a
killed extraction leaves at most a stray ``*.tmp`` (never read, removed on the next run), so the next
run resumes with exactly the videos that are missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data.tracking import main_track, track_sequence
from pipeline.data.video import is_truncated
from pipeline.errors import UserError


@dataclass(frozen=True)
class Sequence:
    """A video's cached tracks: one row per tracked person and frame, ``features`` (N, D) float32, with the
    row's sampled frame ``frame`` (N,) and its ``track`` id (N,); ``frame_index`` (T,) maps the sampled
    frames (at ``fps``) to source frames. Every track is kept, so the main-subject rule can change
    without decoding again."""

    features: np.ndarray
    frame: np.ndarray
    track: np.ndarray
    frame_index: np.ndarray
    fps: float
    source_fps: float
    declared_frames: int = 0  # the container's frame count (0: unknown)
    frame_size: tuple[int, int] = (0, 0)  # the decoded frames' width and height (0: unknown, an entry from before)

    @property
    def aspect(self) -> float | None:
        """The frames' width over height, which the features' box and keypoints are relative to; None if unknown."""
        return self.frame_size[0] / self.frame_size[1] if self.frame_size[0] > 0 and self.frame_size[1] > 0 else None

    @property
    def frames_read(self) -> int:
        """Source frames decoded, up to the last one sampled."""
        return int(self.frame_index[-1]) + 1 if len(self.frame_index) else 0

    @property
    def truncated(self) -> bool:
        return is_truncated(self.frames_read, self.declared_frames)

    def subject(self) -> np.ndarray:
        """The main subject's feature sequence (``pipeline.data.tracking``), or zeros for every frame when
        nobody was tracked."""
        tid = main_track(self.track, self.features)
        if tid is None:
            return np.zeros((len(self.frame_index), self.features.shape[1]), np.float32)
        return track_sequence(self.frame, self.track, self.features, tid)

    def track_ids(self) -> list[int]:
        return sorted(int(t) for t in np.unique(self.track))


class CacheError(UserError, RuntimeError):
    """A feature cache folder that cannot be made or written."""


class FeatureCache:
    def __init__(self, root: str | Path, key: str, config: dict | None = None):
        self.dir = Path(root) / key
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CacheError(f"cannot make the feature cache {self.dir}: {e.strerror or e}; give a writable --data.cache_dir") from None
        if not os.access(self.dir, os.W_OK):
            raise CacheError(f"feature cache {self.dir} is not writable; give a writable --data.cache_dir")
        now = time.time()
        for tmp in self.dir.glob(".*.tmp"):  # left by a killed run; a live write takes milliseconds
            if now - tmp.stat().st_mtime > 3600:
                tmp.unlink(missing_ok=True)
        self.feature_dim: int | None = (config or {}).get("feature_dim")
        if config is not None:
            info = self.dir / "extractor.json"
            if not info.exists():
                atomic_write_bytes(info, json.dumps(config, indent=2, sort_keys=True).encode())

    def entry(self, video: str | Path, data_root: str | Path | None = None) -> Path:
        video = Path(video)
        try:
            rel = video.resolve().relative_to(Path(data_root).resolve()) if data_root else Path(video.name)
        except ValueError:
            rel = video.resolve()
        tag = hashlib.sha1(f"{rel.as_posix()}|{fingerprint(video)}".encode()).hexdigest()[:10]
        name = "__".join(p for p in rel.with_suffix("").parts if p not in ("/", ".."))
        return self.dir / f"{name}.{tag}.npz"

    def readable(self, path: Path) -> bool:
        """Whether an entry loads whole, with consistent arrays of this cache's feature size."""
        try:
            seq = self.load(path)
        except Exception:  # noqa: BLE001 - truncated zip, missing member, bad header: all mean "extract again"
            return False
        n = len(seq.frame)
        return (
            seq.features.ndim == 2 and len(seq.features) == n == len(seq.track)
            and (self.feature_dim is None or seq.features.shape[1] == self.feature_dim)
            and (n == 0 or (seq.frame.min() >= 0 and seq.frame.max() < len(seq.frame_index)))
        )  # fmt: skip

    def save(self, path: Path, seq: Sequence) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                np.savez(
                    f,
                    features=seq.features.astype(np.float32),
                    frame=seq.frame.astype(np.int64),
                    track=seq.track.astype(np.int64),
                    frame_index=seq.frame_index.astype(np.int64),
                    fps=np.float64(seq.fps),
                    source_fps=np.float64(seq.source_fps),
                    declared_frames=np.int64(seq.declared_frames),
                    frame_size=np.asarray(seq.frame_size, np.int64),
                )
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a full disk or an interrupt: no half entry, not even a hidden one
            raise

    @staticmethod
    def load(path: Path) -> Sequence:
        with np.load(path) as z:
            declared = int(z["declared_frames"]) if "declared_frames" in z.files else 0
            size = tuple(int(v) for v in z["frame_size"]) if "frame_size" in z.files else (0, 0)
            return Sequence(
                z["features"], z["frame"], z["track"], z["frame_index"], float(z["fps"]), float(z["source_fps"]), declared, size
            )  # fmt: skip


def fingerprint(path: Path, sample: int = 1 << 16) -> str:
    """Size and a hash of the first, middle and last ``sample`` bytes: cheap on any size, blind to mtime."""
    size = path.stat().st_size
    h = hashlib.sha1(str(size).encode())
    with open(path, "rb") as f:
        for offset in sorted({0, max(size // 2 - sample // 2, 0), max(size - sample, 0)}):
            f.seek(offset)
            h.update(f.read(sample))
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
