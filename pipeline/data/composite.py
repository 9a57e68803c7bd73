"""Several people in one clip, made from single-person clips shot with one camera (as Weizmann's are).

With a fixed camera, the per-pixel median over a clip in which the person moves through the frame is the
empty scene; a pixel of another clip of the same session that differs from it belongs to that clip's
person. Lighting and framing change a little between sessions, so each clip is keyed against the empty
scene that matches it best (``best_background``). ``composite`` keys each clip's person out, moves them
sideways by a given number of pixels and lays them over one background, so the people keep their size,
speed and the frame's size: what changes is only that several are in view. It serves the
multi-person benchmark and tests (and any evaluation that needs crowds with known labels per person).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pipeline.data.video import VideoReader


def read_frames(path: str | Path, fps: float | None = None, max_frames: int | None = None) -> np.ndarray:
    """All (sampled) frames of a video as one uint8 array (T, H, W, 3)."""
    return np.stack([f for _, f in VideoReader(str(path), fps=fps, max_frames=max_frames)])


def background(clips: list[np.ndarray], per_clip: int = 12) -> np.ndarray:
    """The empty scene: per-pixel median of frames spread over many clips of one camera. Take clips in
    which people move through the frame (Weizmann's walk, run, side): where most clips have someone
    standing, the median keeps a ghost of them."""
    frames = [c[np.linspace(0, len(c) - 1, min(per_clip, len(c))).astype(int)] for c in clips]
    return np.median(np.concatenate(frames), axis=0).astype(np.uint8)


def best_background(frames: np.ndarray, candidates: list[np.ndarray]) -> np.ndarray:
    """The empty scene among ``candidates`` (e.g. ``background([clip])`` of clips where people walk
    through) closest to this clip's frames: the same session's light and framing."""
    sample = frames[:: max(len(frames) // 8, 1)].astype(np.int16)
    return candidates[int(np.argmin([np.abs(sample - c.astype(np.int16)).mean() for c in candidates]))]


def keyable(frames: np.ndarray, bg: np.ndarray, max_diff: float = 12.0, max_person: float = 0.2) -> bool:
    """Whether ``bg`` is this clip's empty scene: the frames differ from it little on average, and what
    differs (the person) covers at most ``max_person`` of the frame. A clip shot with another framing
    fails, and would paste a piece of another scene."""
    sample = frames[:: max(len(frames) // 8, 1)]
    diff = np.abs(sample.astype(np.int16) - bg.astype(np.int16)).mean()
    return bool(diff <= max_diff and np.median(foreground(sample, bg).mean(axis=(1, 2))) <= max_person)


def foreground(frames: np.ndarray, bg: np.ndarray, threshold: int = 40) -> np.ndarray:
    """(T, H, W) masks of the person: pixels that differ from the background (summed channel difference),
    closed and slightly grown so that the outline comes along, keeping only the blobs at least a fifth the
    size of the largest (specks where the lighting differs are not a person)."""
    diff = np.abs(frames.astype(np.int16) - bg.astype(np.int16)).sum(-1) > threshold
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    out = np.zeros_like(diff)
    for i, m in enumerate(diff):
        m = cv2.dilate(cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_CLOSE, kernel), kernel)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
        if n > 1:
            area = stats[1:, cv2.CC_STAT_AREA]
            out[i] = np.isin(labels, 1 + np.flatnonzero(area >= 0.2 * area.max()))
    return out


def centre_x(frames: np.ndarray, bg: np.ndarray) -> float:
    """Where the clip's person stands: the median over frames of the mean column of their pixels."""
    masks = foreground(frames, bg)
    counts = masks.sum(1)  # (T, W) foreground pixels per column
    seen = counts.sum(1) > 0
    if not seen.any():
        return bg.shape[1] / 2
    cols = (counts[seen] * np.arange(bg.shape[1])).sum(1) / counts[seen].sum(1)
    return float(np.median(cols))


def composite(clips: list[np.ndarray], shifts: list[int], bg: np.ndarray, masks: bool = False, keys: list[np.ndarray] | None = None):
    """Frames with the person of each clip moved ``shifts[i]`` pixels to the right and laid over ``bg``
    (later clips in front), as long as the shortest clip. ``keys``: the empty scene of each clip to key it
    against (default ``bg``). With ``masks``, also each person's visible pixels (K, T, H, W): who is where."""
    n = min(len(c) for c in clips)
    keys = keys or [bg] * len(clips)
    out = np.repeat(bg[None], n, axis=0)
    w = bg.shape[1]
    where = np.zeros((len(clips), *out.shape[:3]), bool)
    for k, (clip, dx, key) in enumerate(zip(clips, shifts, keys)):
        frames = clip[:n]
        mask = foreground(frames, key)
        src = slice(max(0, -dx), min(w, w - dx))
        dst = slice(max(0, dx), min(w, w + dx))
        m = mask[:, :, src]
        region = out[:, :, dst]
        region[m] = frames[:, :, src][m]
        where[:, :, :, dst][:, m] = False  # people in front hide those behind
        where[k][:, :, dst] = m
    return (out, where) if masks else out


def write_video(path: str | Path, frames: np.ndarray, fps: float) -> Path:
    """Frames as an MJPG ``.avi`` (lossless enough, readable by every OpenCV build)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (frames.shape[2], frames.shape[1]))
    if not out.isOpened():
        raise OSError(f"cannot write {path}")
    for f in frames:
        out.write(f)
    out.release()
    return path
