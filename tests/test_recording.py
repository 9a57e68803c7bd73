"""Recording a take from live frames: the countdown, the length, every frame, nothing half-written."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.live.capture import LiveFrame
from pipeline.teach.recording import Recorder, RecordingError


def coded(index: int) -> np.ndarray:
    """A frame that carries its index in 8 black or white stripes: readable through lossy compression."""
    bits = (index >> np.arange(8)) & 1
    return np.repeat(np.repeat(bits * 255, 8)[None, :, None], 48, 0).repeat(3, 2).astype(np.uint8)


def feed(recorder: Recorder, t0: float, n: int, fps: float, start_index: int = 0) -> None:
    for i in range(n):
        recorder(LiveFrame(coded(start_index + i), start_index + i, t0 + (start_index + i) / fps))


def frames_of(path) -> list[int]:
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, f = cap.read()
        if not ok:
            return out
        stripes = f[:, :, 0].reshape(f.shape[0], 8, 8).mean((0, 2)) > 127
        out.append(int((stripes * (1 << np.arange(8))).sum()))


def test_a_take_waits_out_the_countdown_then_keeps_every_frame_for_its_length(tmp_path):
    done = []
    rec = Recorder(25.0, done.append, tmp_path / ".recording")
    rec.start("wave", tmp_path / "wave" / "a.mp4", countdown_s=1.0, seconds=2.0)
    (tmp_path / "wave").mkdir()
    t0 = rec._take.asked_at
    feed(rec, t0, 20, 25.0)  # 0.8 s: still counting down
    assert rec.status(t0 + 0.5)["phase"] == "countdown" and not (tmp_path / "wave" / "a.mp4").exists()
    feed(rec, t0, 60, 25.0, start_index=20)  # 0.8 s .. 3.2 s: the take is 1.0 .. 3.0 s
    assert done == [tmp_path / "wave" / "a.mp4"]
    assert rec.status() is None
    values = frames_of(done[0])
    assert values == list(range(25, 75))  # frames at 1.0 .. 2.96 s: every one, none from the countdown
    cap = cv2.VideoCapture(str(done[0]))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(25.0, rel=0.01)
    assert not list((tmp_path / ".recording").iterdir())  # the scratch file was moved, not copied


def test_a_camera_slower_than_it_declares_is_written_at_its_real_rate(tmp_path):
    done = []
    rec = Recorder(30.0, done.append, tmp_path)
    t0 = 100.0
    feed(rec, t0 - 2.0, 30, 15.0)  # the preview before the take: 15 fps from a camera that says 30
    rec.start("x", tmp_path / "x.mp4", 0.0, 1.0)
    rec._take.asked_at = t0
    feed(rec, t0 - 2.0, 20, 15.0, start_index=30)
    assert done
    fps = cv2.VideoCapture(str(done[0])).get(cv2.CAP_PROP_FPS)
    assert fps == pytest.approx(15.0, rel=0.05)  # plays at real speed


def test_one_take_at_a_time_and_a_cancelled_take_leaves_nothing(tmp_path):
    done = []
    rec = Recorder(25.0, done.append, tmp_path / ".recording")
    rec.start("a", tmp_path / "a.mp4", 0.0, 5.0)
    with pytest.raises(RecordingError, match="already recording 'a'"):
        rec.start("b", tmp_path / "b.mp4", 0.0, 1.0)
    feed(rec, rec._take.asked_at, 10, 25.0)
    assert rec.status()["phase"] == "recording"
    assert rec.cancel()
    assert not done and not (tmp_path / "a.mp4").exists()
    assert not [p for p in (tmp_path / ".recording").iterdir()]  # the partial file is gone too
    assert not rec.cancel()  # nothing to cancel
