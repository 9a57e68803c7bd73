"""Detections -> tracks: Ultralytics' own trackers (ByteTrack, BoT-SORT) fed with the extractor's detections.

The extractor's single forward pass gives every person's box, score and features; the tracker gives each
person a stable id from frame to frame, and says which detection each track took (``idx``), so that a
track's features are always that person's own, never a Kalman prediction.

Two rules live here because training and inference must share them:

* ``track_sequences``: a track's feature sequence runs from its first to its last frame; frames where the
  tracker held the track but did not see the person are all-zero vectors (the "nobody" vector).
* ``main_track``: the main subject of a video is the track with the largest sum, over its frames, of
  ``score * sqrt(w * h) * (1 - |cx - 0.5|)`` (box size and centre relative to the frame): the person seen
  longest, largest, surest and nearest the centre. Training follows this track; ``infer.py`` reports it
  as the video's label.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from pipeline.data.features import POSE_DIM
from pipeline.options import TRACKERS


@dataclass(frozen=True)
class TrackerConfig:
    """Args:
    kind: ``bytetrack`` (motion and overlap) or ``botsort`` (adds camera-motion compensation: slower).
    conf: score from which a detection starts or firmly continues a track (weaker ones down to the
        extractor's ``LOW_CONF`` can only continue one).
    lost_s: seconds a track is kept without its person before it (and its GRU state) is dropped.
    match_iou: association threshold (1 - IoU cost) of the first matching stage.
    """

    kind: str = "bytetrack"
    conf: float = 0.25
    lost_s: float = 1.0
    match_iou: float = 0.8

    def __post_init__(self):
        if self.kind not in TRACKERS:
            raise ValueError(f"tracker '{self.kind}' is not one of {', '.join(TRACKERS)}")
        if not 0 < self.conf <= 1:
            raise ValueError(f"tracker conf must be in (0, 1], got {self.conf}")
        if self.lost_s < 0:
            raise ValueError(f"lost time must be >= 0 s, got {self.lost_s}")


class _Boxes:
    """The results-like view Ultralytics' trackers read: ``conf``, ``cls``, ``xywh``, boolean indexing."""

    def __init__(self, xyxy: np.ndarray, conf: np.ndarray):
        self.xyxy, self.conf = xyxy, conf
        self.cls = np.zeros_like(conf)
        self.xywh = np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], 1)

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, i) -> _Boxes:
        return _Boxes(self.xyxy[i], self.conf[i])


class PersonTracker:
    """``update(boxes, scores)`` once per frame (in time order, at ``fps``) -> ``(track ids, detection
    indices)`` of the tracks that took a detection in this frame."""

    def __init__(self, config: TrackerConfig = TrackerConfig(), fps: float = 25.0):
        from ultralytics.trackers.track import TRACKER_MAP

        self.config, self.fps = config, fps
        self.lost_frames = max(int(round(config.lost_s * fps)), 0)
        args = SimpleNamespace(
            tracker_type=config.kind, track_high_thresh=config.conf, track_low_thresh=0.1, new_track_thresh=config.conf,
            # fuse_score off: matching by IoU times score asks IoU 0.67 of a person scoring 0.3 whose box changes
            # shape (a jumping jack), and gave them a new id (benchmarks/multiperson.py)
            track_buffer=self.lost_frames, match_thresh=config.match_iou, fuse_score=False,
            gmc_method="sparseOptFlow", proximity_thresh=0.5, appearance_thresh=0.8, with_reid=False, model="auto",
        )  # fmt: skip
        self._tracker = TRACKER_MAP[config.kind](args)
        self.needs_images = config.kind == "botsort"  # camera-motion compensation looks at the frames

    def update(self, boxes: np.ndarray, scores: np.ndarray, frame: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        out = self._tracker.update(_Boxes(boxes.astype(np.float32), scores.astype(np.float32)), frame if self.needs_images else None)
        if len(out) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return out[:, 4].astype(np.int64), out[:, 7].astype(np.int64)


def subject_weight(features):
    """Per-row weight of the main-subject rule (module docstring) from the pose block of features (N, D)."""
    pose = features[:, -POSE_DIM:]
    score, cx, w, h = pose[:, 1], pose[:, 2], pose[:, 4], pose[:, 5]
    return score * (w * h).clip(0, None) ** 0.5 * (1 - abs(cx - 0.5)).clip(0, 1)  # numpy or torch alike


def main_track(track: np.ndarray, features: np.ndarray) -> int | None:
    """The main subject's track id among rows ``(track (N,), features (N, D))``; None when there is none."""
    if len(track) == 0:
        return None
    ids, inverse = np.unique(track, return_inverse=True)
    return int(ids[np.argmax(np.bincount(inverse, weights=subject_weight(features)))])


def track_sequence(frame: np.ndarray, track: np.ndarray, features: np.ndarray, track_id: int) -> np.ndarray:
    """The (T_track, D) sequence of one track: its rows in frame order from its first to its last frame,
    zeros where it was not seen."""
    rows = np.flatnonzero(track == track_id)
    f = frame[rows]
    out = np.zeros((f.max() - f.min() + 1, features.shape[1]), np.float32)
    out[f - f.min()] = features[rows]
    return out


def track_batch(
    tracker: PersonTracker, frame: np.ndarray, boxes: np.ndarray, scores: np.ndarray, n_frames: int, images=None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Track a batch's detections (rows grouped by ``frame``, the frame's position in the batch), frame by
    frame in order: for each of the ``n_frames`` frames, ``(track ids, row indices into the batch)``.
    ``images`` (the batch's uint8 BGR frames) serve BoT-SORT's camera-motion compensation."""
    starts = np.searchsorted(frame, np.arange(n_frames + 1))
    out = []
    for i in range(n_frames):
        a, b = starts[i], starts[i + 1]
        ids, idx = tracker.update(boxes[a:b], scores[a:b], images[i] if images is not None and tracker.needs_images else None)
        out.append((ids, idx + a))
    return out
