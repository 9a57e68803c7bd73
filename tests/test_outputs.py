"""The timeline plot shows where the subject was not seen: its lines break there instead of bridging the gap."""

import cv2
import numpy as np

from pipeline.inference.outputs import broken_at_gaps, plot_timeline
from pipeline.timeline import Segment

BLUE = np.array([180, 119, 31])  # tab10's first colour (BGR): the first class's line


def test_a_gap_longer_than_the_limit_gets_a_nan_row():
    t = np.array([0.0, 0.04, 0.08, 1.0, 1.04])
    v = np.arange(10.0).reshape(5, 2)
    bt, bv = broken_at_gaps(t, v, 0.2)
    assert np.isnan(bt[3]) and np.isnan(bv[3]).all() and len(bt) == 6
    assert np.array_equal(bt[[0, 1, 2, 4, 5]], t) and np.array_equal(bv[[0, 1, 2, 4, 5]], v)
    assert len(broken_at_gaps(t, v, 1.0)[0]) == 5  # no gap that long: unchanged


def line_columns(path) -> np.ndarray:
    img = cv2.imread(str(path))
    near = (np.abs(img.astype(int) - BLUE).max(axis=2) < 40)[:, : int(img.shape[1] * 0.8)]  # the axes, not the legend
    return np.flatnonzero(near.any(axis=0))


def test_the_plotted_line_breaks_where_nobody_was_seen(tmp_path):
    fps = 25
    times = np.r_[np.arange(0, 1, 1 / fps), np.arange(2, 3, 1 / fps)]  # seen 0-1 s and 2-3 s, not between
    probs = np.tile([0.8, 0.2], (len(times), 1))
    seg = [Segment(0.0, 3.0, "a", 0.8)]
    cols = line_columns(plot_timeline(tmp_path / "gap.png", times, probs, ["a", "b"], seg, duration_s=3.0))
    widest = np.diff(cols).max()
    # a third of the axes' width without the line (the gap is 1 s of 3); seen throughout, no hole at all
    span = cols[-1] - cols[0]
    assert widest > span / 4
    times = np.arange(0, 3, 1 / fps)
    cols = line_columns(plot_timeline(tmp_path / "seen.png", times, np.tile([0.8, 0.2], (len(times), 1)), ["a", "b"], seg, duration_s=3.0))
    assert np.diff(cols).max() <= 2



def test_the_subjects_warm_up_is_greyed_and_nothing_else_changes(tmp_path):
    # the video's label leaves the subject's first frames out: the plot says so where they are
    times = np.arange(0, 3, 1 / 25)
    probs = np.tile([0.8, 0.2], (len(times), 1))
    seg = [Segment(0.0, 3.0, "a", 0.8)]

    def drawn(name: str, warmup=None) -> np.ndarray:
        return cv2.imread(str(plot_timeline(tmp_path / name, times, probs, ["a", "b"], seg, duration_s=3.0, warmup=warmup))).astype(int)

    plain = drawn("plain.png")
    start = line_columns(tmp_path / "plain.png")[0]  # t = 0
    spans = {}
    for end in (1.0, 2.0):
        warm = drawn(f"warm{end:g}.png", (0.0, end))
        changed = np.flatnonzero((np.abs(warm - plain).max(axis=2) > 30).any(axis=0))
        assert abs(changed.min() - start) <= 2 and len(changed) == changed.max() - changed.min() + 1  # one band from t = 0
        spans[end] = changed.max() - changed.min()
        x = int(changed.mean())
        row = warm.shape[0] // 3
        assert np.ptp(warm[row, x]) < 40 and warm[row, x].mean() < plain[row, x].mean() - 30  # grey, darker than the segment's shade
    assert abs(spans[2.0] / spans[1.0] - 2) < 0.05  # as long as the warm-up, and nothing else moved
