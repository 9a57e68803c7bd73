"""Outputs drawn on frames: every person's box, skeleton, track id and action in a colour per id; the main
subject's action, score and top-3 bar top-left; fps and latency top-right.

Drawing works on the uint8 BGR frame with a handful of OpenCV calls (no per-pixel Python), so it costs well
under a millisecond at the sizes this tool meets. A frame whose short side is under ``MIN_SIDE`` pixels is
first enlarged by an integer factor (a 180x144 source becomes 540x432): text a few pixels high cannot be
read. Text sits on a dark box rather than a thick outline, whose glyphs OpenCV 5 advances wider than the
text's own and so garbles it ("wave1 0.98" read "wave10.988").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from pipeline.data.features import SKELETON
from pipeline.timeline import NOBODY, UNKNOWN, WARMING

GREEN, WHITE, GREY, BLACK, ORANGE = (80, 200, 80), (255, 255, 255), (150, 150, 150), (0, 0, 0), (0, 165, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX
Rect = tuple[int, int, int, int]  # x0, y0, x1, y1 pixels
MIN_SIDE = 360  # pixels: smaller frames are drawn enlarged
NO_SCORE = (UNKNOWN, WARMING, NOBODY)  # labels that are no action: drawn grey, without a score


# distinct BGR colours, one per track id (id modulo their number)
PALETTE = (
    (80, 200, 80), (255, 160, 40), (60, 60, 230), (0, 200, 230), (200, 80, 200), (200, 200, 60),
    (40, 140, 255), (150, 110, 255), (120, 220, 170), (180, 130, 70),
)  # fmt: skip


def color_of(track_id: int) -> tuple[int, int, int]:
    return PALETTE[(track_id - 1) % len(PALETTE)] if track_id > 0 else GREEN


@dataclass
class Person:
    """One tracked person on one frame."""

    track: int
    box: np.ndarray  # xyxy, source pixels
    keypoints: np.ndarray | None  # (17, 3) x, y, confidence
    label: str
    score: float


@dataclass
class Overlay:
    """What to draw on one frame: the main subject's label, score and top classes, and every person."""

    label: str
    score: float
    top: list[tuple[str, float]]  # the top classes and their (smoothed) probabilities
    people: list[Person] = field(default_factory=list)
    main: int | None = None  # track id of the main subject
    fps: float | None = None
    latency_ms: float | None = None
    status: str | None = None  # e.g. "paused", "camera lost: reconnecting"
    background: str | None = None  # the class that is no action: its people get no label, top-left "no action"


def upscale(width: int, height: int) -> int:
    """The integer factor a frame of this size is enlarged by before drawing (1: drawn as it is)."""
    return max(1, math.ceil(MIN_SIDE / max(min(width, height), 1)))


def enlarge(frame: np.ndarray) -> np.ndarray:
    """``frame`` at the size ``draw`` gives it (itself when large enough)."""
    up = upscale(frame.shape[1], frame.shape[0])
    return cv2.resize(frame, None, fx=up, fy=up, interpolation=cv2.INTER_LINEAR) if up > 1 else frame


def scored(label: str, score: float) -> str:
    """What follows a label: its score (" 87%"), but nothing after ``unknown`` (its score is the top known
    action's, and would read as confidence in ``unknown``; the bars show the actions' scores), ``warming up``
    or ``nobody``."""
    return "" if label in NO_SCORE else f" {score:.0%}"


def headline(o: Overlay) -> str:
    """The main subject's label as it reads top-left (and on the served page): "wave 87%", "#3 unknown",
    "no action"; empty before there is a model."""
    who = f"#{o.main} " if o.main is not None and len(o.people) > 1 else ""
    if o.label == o.background:
        return f"{who}no action"
    return f"{who}{o.label}{scored(o.label, o.score)}" if o.label else ""


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, color=WHITE, thickness: int = 1) -> Rect:
    """``text`` with its baseline at ``org``, on a dark box 2 pixels wider than the glyphs all round; returns
    that box."""
    rect = _text_box(text, org, scale, thickness)
    cv2.rectangle(img, rect[:2], rect[2:], BLACK, -1)
    cv2.putText(img, text, org, FONT, scale, color, thickness, cv2.LINE_AA)
    return rect


def _text_box(text: str, org: tuple[int, int], scale: float, thickness: int = 1) -> Rect:
    (tw, th), base = cv2.getTextSize(text, FONT, scale, thickness)
    x, y = org
    return (x - 2, y - th - 2, x + tw + 2, y + base)


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_tag(text: str, scale: float, box: tuple[int, int, int, int], size: tuple[int, int], taken: list[Rect]) -> tuple[int, int]:
    """Where a person's tag goes: above their box, else just inside its top, else under it, the first that
    fits the frame (``size`` = width, height) and covers none of the ``taken`` boxes (the label and bars
    top-left); if none does, above the box and right of what it would cover."""
    (tw, th), _ = cv2.getTextSize(text, FONT, scale, 1)
    w, h = size
    x0, y0, x1, y1 = box
    pad = max(int(round(4 * scale / 0.45)), 2)
    tx = int(np.clip(x0, 2, max(w - tw - 2, 2)))
    rows = (y0 - pad, y0 + th + pad, y1 + th + pad)
    for ty in rows:
        r = _text_box(text, (tx, ty), scale)
        if r[1] >= 0 and r[3] <= h and not any(_overlaps(r, t) for t in taken):
            return tx, ty
    ty = max(y0 - pad, th + 2)
    right = max([t[2] for t in taken if _overlaps(_text_box(text, (tx, ty), scale), t)], default=tx - 4)
    return min(right + 4, max(w - tw - 2, 2)), ty


def draw(frame: np.ndarray, o: Overlay, kpt_conf: float = 0.5) -> np.ndarray:
    """Draw ``o`` on ``frame`` (in place, or on an enlarged copy when the frame is small) and return the
    drawn frame."""
    up = upscale(frame.shape[1], frame.shape[0])
    if up > 1:
        frame = enlarge(frame)
        o = replace(o, people=[replace(p, box=p.box * up, keypoints=None if p.keypoints is None else p.keypoints * [up, up, 1]) for p in o.people])
    h, w = frame.shape[:2]
    s = max(min(w, h) / 480, 0.35)  # scale text and lines with the frame
    lw = max(int(round(2 * s)), 1)
    tags: list[tuple[str, tuple[int, int, int, int], tuple[int, int, int]]] = []  # drawn after the panel, clear of it
    for p in o.people:
        color = color_of(p.track)
        x0, y0, x1, y1 = (int(round(v)) for v in p.box)
        cv2.rectangle(frame, (x0, y0), (x1, y1), color, lw + (p.track == o.main and len(o.people) > 1))
        if p.keypoints is not None:
            k = p.keypoints
            ok = k[:, 2] >= kpt_conf
            lines = [np.int32([k[a, :2], k[b, :2]]) for a, b in SKELETON if ok[a] and ok[b]]
            if lines:
                cv2.polylines(frame, lines, False, color, lw, cv2.LINE_AA)
            for x, y in k[ok, :2]:
                cv2.circle(frame, (int(x), int(y)), lw + 1, WHITE, -1, cv2.LINE_AA)
        if not p.label and not p.track:
            continue  # an untracked, unlabelled person (the teaching app before its first model): no tag
        tag = f"#{p.track}" if p.label == o.background or not p.label else f"#{p.track} {p.label}{scored(p.label, p.score)}"
        tags.append((tag, (x0, y0, x1, y1), color))
    # label and score, top-left (none before there is a model: the teaching app's first minutes)
    taken: list[Rect] = []  # what the people's tags must not cover
    if o.label:
        action = o.label not in NO_SCORE and o.label != o.background
        taken.append(_text(frame, headline(o), (int(8 * s), int(30 * s)), 0.9 * s, GREEN if action else GREY, lw))
    # top-k bars under it
    bar_w, bar_h, y = int(110 * s), max(int(12 * s), 6), int(42 * s)
    for name, p in o.top:
        x = int(8 * s)
        cv2.rectangle(frame, (x, y), (x + bar_w, y + bar_h), GREY, 1)
        cv2.rectangle(frame, (x, y), (x + int(bar_w * float(np.clip(p, 0, 1))), y + bar_h), GREEN, -1)
        r = _text(frame, f"{name} {p:.2f}", (x + bar_w + int(6 * s), y + bar_h - 1), 0.45 * s)
        taken.append((x, y, r[2], y + bar_h + 1))
        y += bar_h + int(5 * s)
    # fps and latency, top-right
    info = " ".join(t for t in (f"{o.fps:.1f} fps" if o.fps else "", f"{o.latency_ms:.0f} ms" if o.latency_ms is not None else "") if t)
    if info:
        (tw, _), _ = cv2.getTextSize(info, FONT, 0.5 * s, 1)
        taken.append(_text(frame, info, (w - tw - int(8 * s), int(20 * s)), 0.5 * s))
    if o.status:
        taken.append(_text(frame, o.status, (int(8 * s), h - int(10 * s)), 0.55 * s, ORANGE))
    for tag, box, color in tags:  # last, where they cover none of the above (nor each other)
        taken.append(_text(frame, tag, place_tag(tag, 0.45 * s, box, (w, h), taken), 0.45 * s, color))
    return frame
