"""Labels -> timeline: smoothed per-frame labels, action segments and the video-level label.

``Timeline`` is incremental and causal, for what is shown while a video or stream runs: per frame, the
probabilities are smoothed by an exponential average with time constant ``smooth_s``; a label change is
accepted only once the new label has held for ``min_duration_s`` (a change that does not hold stays with
the current segment, so one noisy frame never opens a segment; one that does is placed where the current
label was left, passing labels included); the running video-level scores are the mean
of the raw per-frame probabilities (a finished video's leave each track's warm-up out, as ``train.py test``
does: ``pipeline.inference.files``).

A causal average puts every change late by about its time constant. ``settle`` is for a finished video:
the same average run forwards and then backwards (no delay), the same segment rule, and the video's label
is the action that covers the most time, not the mean over actions that took turns.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

UNKNOWN = "unknown"  # below the rejection threshold: none of the trained actions
SMOOTH_S = 0.3  # default time constant of the probability smoothing (infer.py --smooth)
MIN_DURATION_S = 0.5  # default time a label must hold to open a segment (infer.py --min-segment)
NOBODY = "nobody"  # the video-level label when no person was tracked at all
WARMING = "warming up"  # shown for a track's first frames: the warm-up its label leaves out, as training does


@dataclass
class Segment:
    start_s: float
    end_s: float
    label: str
    score: float  # mean smoothed probability of ``label`` over the segment

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class _Run:
    """Frames under one label: where it starts and the sums its score is made of."""

    label: str
    start_s: float
    probs: np.ndarray  # sum of smoothed probabilities
    top: float = 0.0  # sum of the smoothed top probability
    frames: int = 0
    confirmed: bool = False
    since: float | None = None  # a candidate's: when the current label was left (by way of labels that did not hold)

    def add(self, p: np.ndarray) -> None:
        self.probs += p
        self.top += float(p.max())
        self.frames += 1

    def absorb(self, other: _Run) -> None:
        self.probs += other.probs
        self.top += other.top
        self.frames += other.frames

    def score(self, class_names: list[str]) -> float:
        n = max(self.frames, 1)
        return float(self.probs[class_names.index(self.label)] / n) if self.label in class_names else self.top / n


class Smoother:
    """Exponential average of probabilities in time (time constant ``smooth_s``), robust to uneven frame gaps."""

    def __init__(self, smooth_s: float = 0.3):
        self.smooth_s = smooth_s
        self.value: np.ndarray | None = None
        self._last_t: float | None = None

    def reset(self) -> None:
        self.value, self._last_t = None, None

    def add(self, time_s: float, probs: np.ndarray) -> np.ndarray:
        probs = np.asarray(probs, np.float64)
        if self.value is None or self._last_t is None:
            self.value = probs.copy()
        else:
            a = 1.0 - math.exp(-max(time_s - self._last_t, 0.0) / self.smooth_s) if self.smooth_s > 0 else 1.0
            self.value = self.value + a * (probs - self.value)
        self._last_t = time_s
        return self.value


def first_scored(frames: int, warmup: int) -> int:
    """The first of a track's ``frames`` that its settled label reads: after the ``warmup`` that training
    leaves out of the GRU's loss, the last frame at least (``pipeline.model.classifier.scored_frames``, the
    same rule over a batch)."""
    return max(min(frames - 1, warmup), 0)


def warming(frames: int, warmup: int) -> bool:
    """Whether a track's latest frame, its ``frames``-th, is still in its ``warmup`` (shown as ``WARMING``)."""
    return frames <= warmup


def label_of(p: np.ndarray, class_names: list[str], threshold: float, novel: bool = False) -> tuple[str, float]:
    """The top class and its probability, or ``unknown`` when that probability is below ``threshold`` or the
    frame is ``novel`` (unlike what the model was trained on: ``pipeline.model.novelty``)."""
    i = int(np.argmax(p))
    return (class_names[i] if p[i] >= threshold and not novel else UNKNOWN), float(p[i])


def zero_phase(times: np.ndarray, probs: np.ndarray, smooth_s: float) -> np.ndarray:
    """``probs`` (T, C) at ``times`` (T,) smoothed by the exponential average forwards, then backwards over
    that: a symmetric smoothing, so a change stays where it happened."""
    if len(probs) == 0:
        return np.zeros((0, probs.shape[-1]))
    fwd, bwd = Smoother(smooth_s), Smoother(smooth_s)
    ahead = np.array([fwd.add(t, p) for t, p in zip(times, probs)])
    return np.array([bwd.add(-t, p) for t, p in zip(times[::-1], ahead[::-1])])[::-1]


def settle(
    class_names: list[str], times: np.ndarray, probs: np.ndarray, smooth_s: float = SMOOTH_S, min_duration_s: float = MIN_DURATION_S,
    threshold: float = 0.0, start_s: float = 0.0, end_s: float | None = None, background: str | None = None,
    novelty: np.ndarray | None = None, max_novelty: float | None = 1.0,
) -> tuple[list[Segment], tuple[str, float, float]]:
    """A finished video's segments, smoothed without delay, and its label: the one whose segments cover the
    most time, with their mean score and the share of the time they cover. ``background``: a class that
    is no action: it never makes a segment (it can still be the video's label). ``novelty``: per frame, as
    ``Timeline.add`` takes it."""
    tl = Timeline(class_names, 0.0, min_duration_s, threshold, start_s, max_novelty)
    novelty = np.zeros(len(times)) if novelty is None else novelty
    for t, p, n in zip(times, zero_phase(np.asarray(times, np.float64), np.asarray(probs, np.float64), smooth_s), novelty):
        tl.add(t, p, float(n))
    segments = tl.segments(end_s)
    return [s for s in segments if s.label != background], longest(segments)


def longest(segments: list[Segment]) -> tuple[str, float, float]:
    """The label that covers the most time, its duration-weighted mean score and its share of the time."""
    cover: dict[str, list[float]] = {}
    for s in segments:
        d = max(s.end_s - s.start_s, 1e-9)
        c = cover.setdefault(s.label, [0.0, 0.0])
        c[0], c[1] = c[0] + d, c[1] + d * s.score
    if not cover:
        return UNKNOWN, 0.0, 0.0
    label, (d, weighted) = max(cover.items(), key=lambda kv: kv[1][0])
    return label, weighted / d, d / sum(c[0] for c in cover.values())


class Timeline:
    """Feed ``add(time_s, probs)`` frame by frame; read ``label`` now, ``segments()`` and ``video_label()``
    at any time.

    ``threshold``: a smoothed top score below it reads as ``unknown`` (a label of its own for segments),
    so that a model unsure of itself does not name a wrong action. ``max_novelty``: a frame whose novelty
    (``pipeline.model.novelty``: 1 is the calibrated limit) is above it reads as ``unknown`` too; None: off.
    """

    def __init__(
        self, class_names: list[str], smooth_s: float = 0.3, min_duration_s: float = 0.5, threshold: float = 0.0, start_s: float = 0.0,
        max_novelty: float | None = 1.0,
    ):
        self.class_names = list(class_names)
        self.start_s = start_s  # the first segment opens here: 0 for a video, the first frame for a track
        self.smooth_s, self.min_duration_s, self.threshold, self.max_novelty = smooth_s, min_duration_s, threshold, max_novelty
        self._smoother = Smoother(smooth_s)
        self.frames = 0
        self.novel_frames = 0
        self._novel = False  # the latest frame's
        self._sum = np.zeros(len(class_names), np.float64)
        self._last_t: float | None = None
        self._done: list[Segment] = []
        self._current: _Run | None = None
        self._candidate: _Run | None = None
        self._run_start = 0.0  # start of the current label's latest unbroken run

    @property
    def smoothed(self) -> np.ndarray | None:
        return self._smoother.value

    @property
    def label(self) -> tuple[str, float]:
        """The current smoothed label and its smoothed probability."""
        return label_of(self.smoothed, self.class_names, self.threshold, self._novel) if self.smoothed is not None else (UNKNOWN, 0.0)

    def add(self, time_s: float, probs: np.ndarray, novelty: float = 0.0) -> tuple[str, float]:
        """One processed frame's probabilities at ``time_s`` (and the novelty of its motion) -> its smoothed
        label and score."""
        probs = np.asarray(probs, np.float64)
        self._sum += probs
        self.frames += 1
        self._novel = self.max_novelty is not None and novelty > self.max_novelty
        self.novel_frames += self._novel
        self._last_t = time_s
        smoothed = self._smoother.add(time_s, probs)
        label, score = label_of(smoothed, self.class_names, self.threshold, self._novel)
        self._segment(time_s, label, smoothed)
        return label, score

    def _segment(self, t: float, label: str, p: np.ndarray) -> None:
        cur = self._current
        if cur is None:  # the first segment opens at time 0
            cur = self._current = _Run(label, self.start_s, np.zeros_like(p))
            self._run_start = t
        if label == cur.label:
            if self._candidate is not None:  # a change that did not last: its frames stay in this segment
                cur.absorb(self._candidate)
                self._candidate = None
                self._run_start = t
            cur.add(p)
            cur.confirmed |= t - self._run_start >= self.min_duration_s
            return
        cand = self._candidate
        if cand is None or cand.label != label:
            new = _Run(label, t, np.zeros_like(p), since=t if cand is None else cand.since)
            if cand is not None:  # a label that did not hold between two others goes with the change
                new.absorb(cand)
            cand = self._candidate = new
        cand.add(p)
        if t - cand.start_s < self.min_duration_s:  # the new label itself must hold
            return
        if cur.confirmed:  # the change is placed where the current label was left
            self._done.append(Segment(cur.start_s, cand.since, cur.label, cur.score(self.class_names)))
            cand.confirmed, cand.start_s = True, cand.since
            self._current = cand
        else:  # the opening segment never held its label: it takes the first label that does
            cur.label, cur.confirmed = label, True
            cur.absorb(cand)
        self._candidate = None
        self._run_start = cand.start_s

    def segments(self, end_s: float | None = None) -> list[Segment]:
        """Segments so far, contiguous from ``start_s``; the open one ends at ``end_s`` (default: the last frame)."""
        if self._current is None:
            return []
        cur = _Run(self._current.label, self._current.start_s, self._current.probs.copy(), self._current.top, self._current.frames, self._current.confirmed)
        if self._candidate is not None:
            cur.absorb(self._candidate)
        if not cur.confirmed:  # nothing held for the minimum duration (a very short video): the video label
            cur.label = self.video_label()[0]
        end = end_s if end_s is not None else (self._last_t or 0.0)
        return [*self._done, Segment(cur.start_s, max(end, cur.start_s), cur.label, cur.score(self.class_names))]

    def video_probs(self) -> np.ndarray:
        return self._sum / max(self.frames, 1)

    def video_label(self) -> tuple[str, float]:
        """Label and score of the whole video so far: the mean of the per-frame probabilities (``unknown``
        when most frames were novel)."""
        return label_of(self.video_probs(), self.class_names, 0.0, 2 * self.novel_frames > self.frames)
