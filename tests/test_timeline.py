"""Smoothed labels, segments and the video-level label."""

from __future__ import annotations

import numpy as np

from pipeline.timeline import UNKNOWN, Timeline, settle, zero_phase

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


def test_low_confidence_reads_unknown():
    tl = Timeline(NAMES, smooth_s=0.0, min_duration_s=0.2, threshold=0.6)
    labels = _run(tl, _onehot("a" * 20, p=0.5))
    assert set(labels) == {UNKNOWN}
    assert [s.label for s in tl.segments()] == [UNKNOWN]


def test_a_video_too_short_for_any_segment_gets_the_video_label():
    tl = Timeline(NAMES, min_duration_s=5.0)
    _run(tl, _onehot("b" * 10))
    segs = tl.segments(end_s=10 / FPS)
    assert len(segs) == 1 and segs[0].label == "b" and segs[0].end_s == 10 / FPS


def _step(seq: str, rng: np.random.Generator) -> np.ndarray:
    """Noisy per-frame probabilities that follow ``seq`` with a model's gradual change-over (0.2 s ramps)."""
    clean = _onehot(seq)
    ramp = max(int(0.2 * FPS), 1)
    kernel = np.ones(ramp) / ramp
    smooth = np.stack([np.convolve(np.pad(clean[:, c], (ramp // 2, ramp - 1 - ramp // 2), mode="edge"), kernel, "valid") for c in range(3)], 1)
    noisy = np.clip(smooth + rng.normal(0, 0.1, smooth.shape), 1e-3, None)
    return noisy / noisy.sum(1, keepdims=True)


def test_settled_segments_put_a_change_at_the_cut_where_the_causal_ones_are_late():
    rng = np.random.default_rng(0)
    seq = "a" * 75 + "b" * 60 + "c" * 90  # cuts at 3.0 s and 5.4 s
    probs = _step(seq, rng)
    t = np.arange(len(seq)) / FPS
    causal = Timeline(NAMES, smooth_s=0.3, min_duration_s=0.5)
    _run(causal, probs)
    late = [s.start_s for s in causal.segments()[1:]]
    segs, (label, score, share) = settle(NAMES, t, probs, smooth_s=0.3, min_duration_s=0.5, end_s=len(seq) / FPS)
    assert [s.label for s in segs] == ["a", "b", "c"]
    cuts = [3.0, 5.4]
    assert all(abs(s.start_s - c) <= 0.12 for s, c in zip(segs[1:], cuts)), segs
    assert all(s - c >= 0.15 for s, c in zip(late, cuts)), late  # what the causal smoothing does: late
    assert segs[0].start_s == 0 and segs[-1].end_s == len(seq) / FPS
    assert label == "c" and abs(share - 90 / 225) < 0.05 and 0.5 < score <= 1


def test_zero_phase_smoothing_keeps_a_constant_and_is_symmetric_in_time():
    t = np.arange(50) / FPS
    flat = np.tile([0.2, 0.3, 0.5], (50, 1))
    np.testing.assert_allclose(zero_phase(t, flat, 0.3), flat)
    pulse = np.zeros((51, 3))
    pulse[25] = 1.0
    out = zero_phase(np.arange(51) / FPS, pulse, 0.3)[:, 0]
    assert out.argmax() == 25 and abs(out[20] - out[30]) < 0.15 * out[25]  # no shift to later frames


def test_the_video_label_is_the_action_that_lasts_longest():
    # a long, unsure "a" and two short, sure actions: the mean of probabilities would say "b"
    seq = "a" * 40 + "b" * 32 + "c" * 28
    probs = np.concatenate([_onehot("a" * 40, p=0.55), _onehot("b" * 32, p=0.95), _onehot("c" * 28, p=0.95)])
    assert NAMES[int(probs.mean(0).argmax())] == "b"
    segs, (label, score, share) = settle(NAMES, np.arange(len(seq)) / FPS, probs, 0.1, 0.4, end_s=len(seq) / FPS)
    assert [s.label for s in segs] == ["a", "b", "c"]
    assert label == "a" and abs(share - 0.4) < 0.03 and abs(score - 0.55) < 0.05


def test_the_background_class_never_opens_a_segment():
    seq = "a" * 30 + "b" * 40 + "a" * 30
    segs, (label, _, share) = settle(NAMES, np.arange(len(seq)) / FPS, _onehot(seq), 0.1, 0.4, end_s=len(seq) / FPS, background="a")
    assert [s.label for s in segs] == ["b"] and abs(segs[0].start_s - 1.2) < 0.1 and abs(segs[0].end_s - 2.8) < 0.1
    assert label == "a" and abs(share - 0.6) < 0.05  # the video's label can still be "nothing in particular"


def test_a_change_through_a_passing_label_is_placed_where_the_old_label_was_left():
    # a -> (c, 3 frames, too short to hold) -> b: the boundary is at the first frame that is not a
    seq = "a" * 40 + "c" * 3 + "b" * 40
    tl = Timeline(NAMES, smooth_s=0.0, min_duration_s=0.4)
    _run(tl, _onehot(seq))
    segs = tl.segments(end_s=len(seq) / FPS)
    assert [s.label for s in segs] == ["a", "b"] and abs(segs[1].start_s - 40 / FPS) < 1e-9
    segs, _ = settle(NAMES, np.arange(len(seq)) / FPS, _onehot(seq), 0.0, 0.4, end_s=len(seq) / FPS)
    assert [s.label for s in segs] == ["a", "b"] and abs(segs[1].start_s - 40 / FPS) < 1e-9
