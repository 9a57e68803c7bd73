"""Smoothed labels, segments and the video-level label."""

from __future__ import annotations

import numpy as np

from pipeline.timeline import UNCERTAIN, Timeline

NAMES = ["a", "b", "c"]
FPS = 25.0


def _onehot(labels: str, p: float = 0.9) -> np.ndarray:
    out = np.full((len(labels), 3), (1 - p) / 2)
    out[np.arange(len(labels)), [NAMES.index(c) for c in labels]] = p
    return out


def _run(tl: Timeline, probs: np.ndarray) -> list[str]:
    return [tl.add(i / FPS, p)[0] for i, p in enumerate(probs)]


def test_one_noisy_frame_does_not_open_a_segment():
    tl = Timeline(NAMES, smooth_s=0.0, min_duration_s=0.5)
    labels = _run(tl, _onehot("a" * 30 + "b" + "a" * 30))
    assert labels[30] == "b"  # the frame itself reads b
    segs = tl.segments()
    assert [s.label for s in segs] == ["a"]


def test_segments_follow_the_labels_that_hold():
    tl = Timeline(NAMES, smooth_s=0.1, min_duration_s=0.4)
    seq = "a" * 40 + "c" * 3 + "a" * 10 + "b" * 50 + "c" * 40
    labels = _run(tl, _onehot(seq))
    duration = len(seq) / FPS
    segs = tl.segments(end_s=duration)
    assert [s.label for s in segs] == ["a", "b", "c"]
    # contiguous, from 0 to the end, none shorter than the minimum
    assert segs[0].start_s == 0 and segs[-1].end_s == duration
    assert all(x.end_s == y.start_s for x, y in zip(segs, segs[1:]))
    assert all(s.end_s - s.start_s >= 0.4 for s in segs)
    # every run of a per-frame label that held for the minimum duration lies in a segment of that label
    t = np.arange(len(seq)) / FPS
    start = 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            if t[i - 1] - t[start] >= 0.4:
                inside = [s for s in segs if s.start_s <= t[start] + 1e-9 and t[i - 1] <= s.end_s + 1e-9]
                assert inside and inside[0].label == labels[start], (labels[start], t[start], t[i - 1], segs)
            start = i
    assert all(0 < s.score <= 1 for s in segs)


def test_video_label_is_the_mean_of_raw_probabilities():
    tl = Timeline(NAMES)
    probs = np.random.default_rng(0).dirichlet(np.ones(3), size=50)
    _run(tl, probs)
    np.testing.assert_allclose(tl.video_probs(), probs.mean(0))
    assert tl.video_label()[0] == NAMES[int(np.argmax(probs.mean(0)))]


def test_low_confidence_reads_uncertain():
    tl = Timeline(NAMES, smooth_s=0.0, min_duration_s=0.2, threshold=0.6)
    labels = _run(tl, _onehot("a" * 20, p=0.5))
    assert set(labels) == {UNCERTAIN}
    assert [s.label for s in tl.segments()] == [UNCERTAIN]


def test_a_video_too_short_for_any_segment_gets_the_video_label():
    tl = Timeline(NAMES, min_duration_s=5.0)
    _run(tl, _onehot("b" * 10))
    segs = tl.segments(end_s=10 / FPS)
    assert len(segs) == 1 and segs[0].label == "b" and segs[0].end_s == 10 / FPS
