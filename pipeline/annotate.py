"""Outputs drawn on frames: the current action and score, a top-3 bar, the person's box and skeleton, fps.

Drawing works in place on the uint8 BGR frame with a handful of OpenCV calls (no per-pixel Python), so it
costs well under a millisecond at the sizes this tool meets.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.features import SKELETON

GREEN, WHITE, GREY, BLACK, ORANGE = (80, 200, 80), (255, 255, 255), (150, 150, 150), (0, 0, 0), (0, 165, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass
class Overlay:
    """What to draw on one frame."""

    label: str
    score: float
    top: list[tuple[str, float]]  # the top classes and their (smoothed) probabilities
    box: np.ndarray | None = None  # xyxy, source pixels; None when nobody is in view
    keypoints: np.ndarray | None = None  # (17, 3) x, y, confidence
    fps: float | None = None
    latency_ms: float | None = None
    status: str | None = None  # e.g. "paused", "camera lost: reconnecting"


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, color=WHITE, thickness: int = 1) -> None:
    cv2.putText(img, text, org, FONT, scale, BLACK, thickness + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, FONT, scale, color, thickness, cv2.LINE_AA)


def draw(frame: np.ndarray, o: Overlay, kpt_conf: float = 0.5) -> np.ndarray:
    """Draw ``o`` on ``frame`` (in place) and return it."""
    h, w = frame.shape[:2]
    s = max(min(w, h) / 480, 0.35)  # scale text and lines with the frame
    lw = max(int(round(2 * s)), 1)
    if o.box is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in o.box)
        cv2.rectangle(frame, (x0, y0), (x1, y1), GREEN, lw)
    if o.keypoints is not None:
        k = o.keypoints
        ok = k[:, 2] >= kpt_conf
        lines = [np.int32([k[a, :2], k[b, :2]]) for a, b in SKELETON if ok[a] and ok[b]]
        if lines:
            cv2.polylines(frame, lines, False, ORANGE, lw, cv2.LINE_AA)
        for x, y in k[ok, :2]:
            cv2.circle(frame, (int(x), int(y)), lw + 1, WHITE, -1, cv2.LINE_AA)
    # label and score, top-left
    _text(frame, f"{o.label} {o.score:.0%}", (int(8 * s), int(30 * s)), 0.9 * s, GREEN if o.label != "uncertain" else GREY, lw)
    # top-k bars under it
    bar_w, bar_h, y = int(110 * s), max(int(12 * s), 6), int(42 * s)
    for name, p in o.top:
        x = int(8 * s)
        cv2.rectangle(frame, (x, y), (x + bar_w, y + bar_h), GREY, 1)
        cv2.rectangle(frame, (x, y), (x + int(bar_w * float(np.clip(p, 0, 1))), y + bar_h), GREEN, -1)
        _text(frame, f"{name} {p:.2f}", (x + bar_w + int(6 * s), y + bar_h - 1), 0.45 * s)
        y += bar_h + int(5 * s)
    # fps and latency, top-right
    info = " ".join(t for t in (f"{o.fps:.1f} fps" if o.fps else "", f"{o.latency_ms:.0f} ms" if o.latency_ms is not None else "") if t)
    if info:
        (tw, _), _ = cv2.getTextSize(info, FONT, 0.5 * s, 1)
        _text(frame, info, (w - tw - int(8 * s), int(20 * s)), 0.5 * s)
    if o.status:
        _text(frame, o.status, (int(8 * s), h - int(10 * s)), 0.55 * s, ORANGE)
    return frame
