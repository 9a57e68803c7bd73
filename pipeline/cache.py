"""Features -> cached sequences: one ``.npz`` per video under ``<root>/<extractor key>/``.

An entry is named after the video's path relative to the data root, its size and its mtime, so an edited
video is extracted again. Entries are written to a temporary file, flushed and renamed into place: a
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

from pipeline.tracking import main_track, track_sequence


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

    def subject(self) -> np.ndarray:
        """The main subject's feature sequence (``pipeline.tracking``), or zeros for every frame when
        nobody was tracked."""
        tid = main_track(self.track, self.features)
        if tid is None:
            return np.zeros((len(self.frame_index), self.features.shape[1]), np.float32)
        return track_sequence(self.frame, self.track, self.features, tid)

    def track_ids(self) -> list[int]:
        return sorted(int(t) for t in np.unique(self.track))


class FeatureCache:
    def __init__(self, root: str | Path, key: str, config: dict | None = None):
        self.dir = Path(root) / key
        self.dir.mkdir(parents=True, exist_ok=True)
        now = time.time()
        for tmp in self.dir.glob(".*.tmp"):  # left by a killed run; a live write takes milliseconds
            if now - tmp.stat().st_mtime > 3600:
                tmp.unlink(missing_ok=True)
        if config is not None:
            info = self.dir / "extractor.json"
            if not info.exists():
                _atomic_write_bytes(info, json.dumps(config, indent=2, sort_keys=True).encode())

    def entry(self, video: str | Path, data_root: str | Path | None = None) -> Path:
        video = Path(video)
        try:
            rel = video.resolve().relative_to(Path(data_root).resolve()) if data_root else Path(video.name)
        except ValueError:
            rel = video.resolve()
        st = video.stat()
        tag = hashlib.sha1(f"{rel.as_posix()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:10]
        name = "__".join(p for p in rel.with_suffix("").parts if p not in ("/", ".."))
        return self.dir / f"{name}.{tag}.npz"

    def has(self, video: str | Path, data_root: str | Path | None = None) -> bool:
        return self.entry(video, data_root).is_file()

    def save(self, path: Path, seq: Sequence) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(
                f,
                features=seq.features.astype(np.float32),
                frame=seq.frame.astype(np.int64),
                track=seq.track.astype(np.int64),
                frame_index=seq.frame_index.astype(np.int64),
                fps=np.float64(seq.fps),
                source_fps=np.float64(seq.source_fps),
            )
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @staticmethod
    def load(path: Path) -> Sequence:
        with np.load(path) as z:
            return Sequence(z["features"], z["frame"], z["track"], z["frame_index"], float(z["fps"]), float(z["source_fps"]))


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
