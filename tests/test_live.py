"""The live loop: newest frame only (bounded latency), reconnecting sources, the browser view, camera errors."""

from __future__ import annotations

import re
import shutil
import time

import cv2
import numpy as np
import pytest
from conftest import ROOT, free_port, run_script, wait_for_url, write_clip

from pipeline.data.video import VideoError
from pipeline.inference.predictor import ActionPredictor, Predictions
from pipeline.live.capture import LatestFrameCapture, open_live
from pipeline.live.loop import LiveLabels, LiveOptions, run_live


class SlowPredictor:
    """The real predictor plus a fixed delay per call: inference slower than the camera. Keeps the first
    pixel of every frame it is given (``seen``), which tells which camera a frame came from."""

    def __init__(self, inner: ActionPredictor, delay_s: float):
        self.inner, self.delay_s = inner, delay_s
        self.calls = 0
        self.seen: list[int] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, frames):
        self.calls += 1
        self.seen.append(int(frames[0, 0, 0, 0]))
        time.sleep(self.delay_s)
        return self.inner(frames)


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint) -> ActionPredictor:
    return ActionPredictor(tiny_checkpoint, device="cpu")


def test_slow_model_drops_frames_and_latency_does_not_grow(predictor, tmp_path):
    clip = write_clip(tmp_path / "cam.avi", frames=150, fps=50.0)  # 3 s of "camera" at 50 fps
    slow = SlowPredictor(predictor, delay_s=0.06)  # ~15 frames/s at best: most frames must be dropped
    capture = LatestFrameCapture(str(clip), realtime=True)
    stats = run_live(slow, capture, LiveOptions(show=False, smooth_s=0.2))
    assert stats.delivered == 150 and slow.calls == stats.processed
    assert stats.dropped > 60 and stats.processed < 75  # dropped, not queued
    lat = np.asarray(stats.latencies_ms)
    third = len(lat) // 3
    # bounded: the newest frame is always taken, so latency is about one processing time, and flat
    assert np.median(lat[-third:]) < 2 * np.median(lat[:third]) + 100, lat  # queued frames would add seconds


class FlakyCamera:
    """Delivers ``frames`` frames then stops, like a camera unplugged mid-run."""

    def __init__(self, frames: int, value: int = 120):
        self.left = frames
        self.img = np.full((48, 64, 3), value, np.uint8)

    def isOpened(self) -> bool:
        return True

    def read(self):
        time.sleep(0.01)
        if self.left <= 0:
            return False, None
        self.left -= 1
        return True, self.img.copy()

    def get(self, prop: int) -> float:
        return 25.0 if prop == 5 else 0.0  # CAP_PROP_FPS

    def set(self, *a) -> bool:
        return True

    def release(self) -> None:
        pass


def test_source_that_fails_is_reopened_and_the_loop_goes_on(predictor):
    attempts = []

    def opener(source):
        attempts.append(time.perf_counter())
        if len(attempts) == 2:  # the first reopen fails: backoff, then try again
            raise VideoError("camera 0: cannot open it")
        return FlakyCamera(10, value=len(attempts))  # each opening's frames carry its number

    capture = LatestFrameCapture("0", opener=opener, max_backoff_s=1.0)
    model = SlowPredictor(predictor, delay_s=0.0)
    stats = run_live(model, capture, LiveOptions(show=False, duration_s=4.0))
    assert capture.reconnects >= 2  # after the failed attempt
    assert len(attempts) >= 4
    assert attempts[2] - attempts[1] >= 0.9  # backed off (0.5 s, then 1 s)
    assert stats.delivered >= 30
    # the loop went on: it processed frames of the cameras opened after the failed attempt (however many the
    # machine's speed allows), in the order they came
    assert max(model.seen) >= 3 and model.seen == sorted(model.seen)


def test_no_camera_is_a_one_line_error(tiny_checkpoint):
    with pytest.raises(VideoError, match="camera 9: cannot open it"):
        open_live("9")
    r = run_script("infer.py", "--source", "9", "-c", str(tiny_checkpoint), "--no-show")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert [ln for ln in r.stderr.splitlines() if ln.strip()] == [
        ln for ln in r.stderr.splitlines() if ln.startswith("error: camera 9")
    ], r.stderr


def test_window_without_a_screen_is_a_one_line_error(tiny_checkpoint, tmp_path):
    clip = write_clip(tmp_path / "a.avi", frames=5)
    r = run_script("infer.py", str(clip), "--realtime", "-c", str(tiny_checkpoint), env={"DISPLAY": ""})
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--no-show" in r.stderr


@pytest.mark.parametrize("backend", ["torch", "openvino"])
def test_replay_records_and_reports(tiny_checkpoint, tiny_export, tmp_path, backend):
    import json

    import cv2

    stamp = (tiny_export / "export.json").stat().st_mtime_ns  # OpenVINO runs the export beside the checkpoint
    clip = write_clip(tmp_path / "a.avi", frames=25, fps=25.0)
    r = run_script(
        "infer.py", str(clip), "--realtime", "--no-show", "-c", str(tiny_checkpoint), "--backend", backend,
        "--save-video", str(tmp_path / "rec.mp4"), "--stats", str(tmp_path / "stats.json"),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["frames_from_source"] == 25 and stats["processed_frames"] > 0
    cap = cv2.VideoCapture(str(tmp_path / "rec.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == stats["processed_frames"]
    assert (tiny_export / "export.json").stat().st_mtime_ns == stamp  # reused, not made again


chromium = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(chromium is None, reason="Debian's chromium package is not installed (apt-get install chromium)")
def test_served_page_shows_frames_and_the_label_in_headless_chromium(tiny_checkpoint, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])")
    import subprocess
    import sys

    clip = write_clip(tmp_path / "a.avi", frames=50, fps=25.0)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "infer.py", str(clip), "--realtime", "--loop", "--no-show", "-c", str(tiny_checkpoint),
         "--serve", f"127.0.0.1:{port}", "--display-threshold", "0", "--duration", "60"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for_url(url + "status", proc, 30)
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            page.goto(url, wait_until="commit")
            # frames arrive: the MJPEG image gets a real size
            page.wait_for_function("document.getElementById('stream').naturalWidth > 0", timeout=30_000)
            assert page.eval_on_selector("#stream", "e => e.naturalWidth") == 80 * 6  # 80x64 is drawn enlarged
            # and the page shows the model's label
            page.wait_for_function("['walk', 'wave'].some(c => document.getElementById('label').textContent.startsWith(c))", timeout=30_000)
            label = page.text_content("#label")
            # the stream is scaled to the window, not left at its own size in a corner
            page.set_viewport_size({"width": 1280, "height": 900})
            box = page.eval_on_selector("#stream", "e => e.getBoundingClientRect().toJSON()")
            page.screenshot(path=str(tmp_path / "live_page.png"))
            info = page.text_content("#info")
            browser.close()
        assert label.split()[0] in ("walk", "wave")
        assert box["width"] > 0.9 * 1280 and box["height"] > 0.6 * 900, box
        shot = cv2.imread(str(tmp_path / "live_page.png"))
        lit = (np.abs(shot.astype(int) - 0x11).sum(-1) > 60).any(0)  # columns with more than the page's background
        assert lit.mean() > 0.5
        assert re.search(r"\d+\.\d fps", info), info
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_the_tap_sees_every_frame_before_the_consumer_can_draw_on_it(tmp_path):
    clip = write_clip(tmp_path / "a.avi", frames=12)
    seen: list[tuple[int, bool]] = []
    with LatestFrameCapture(str(clip), realtime=False, loop=False) as cap:
        cap.tap = lambda lf: seen.append((lf.index, cap._latest is lf))  # handed on yet?
        while not cap.finished or cap.get(timeout=0.1) is not None:
            lf = cap.get(timeout=0.5)
            if lf is not None:
                lf.frame[:] = 0  # the consumer draws in place
    indices = [i for i, _ in seen]
    assert not any(handed for _, handed in seen)  # every frame reached the tap first
    assert indices == list(range(indices[0], indices[0] + len(indices))) and indices[-1] == 11  # none skipped


def test_a_new_persons_first_frames_read_warming_up():
    """Each track's first ``warmup_frames`` (the checkpoint's: what its labels leave out, as training does) are
    drawn as ``warming up``, without bars; a person who joins later warms up on their own; a reset starts over."""

    def frame(*tracks: int) -> Predictions:
        n = len(tracks)
        return Predictions(
            frames=1, frame=np.zeros(n, np.int64), track=np.array(tracks), probs=np.tile([0.2, 0.8], (n, 1)),
            boxes=np.zeros((n, 4)), keypoints=np.zeros((n, 17, 3)), scores=np.ones(n), weight=np.arange(n, 0, -1.0), novelty=np.zeros(n),
        )  # fmt: skip

    labels = LiveLabels(["walk", "wave"], 0.0, 0.0, warmup_frames=3)
    seen = [labels.update(frame(1), t / 10, {1}) for t in range(5)]
    assert [o.label for o in seen] == ["warming up"] * 3 + ["wave"] * 2
    assert [o.top for o in seen[:3]] == [[]] * 3 and seen[3].top[0][0] == "wave"
    two = labels.update(frame(1, 2), 0.5, {1, 2})
    assert [(p.track, p.label) for p in two.people] == [(1, "wave"), (2, "warming up")] and two.label == "wave"  # 1 is the main subject
    labels.reset()
    assert labels.update(frame(1), 0.6, {1}).label == "warming up"
    assert LiveLabels(["walk", "wave"], 0.0, 0.0).update(frame(1), 0.0, {1}).label == "wave"  # no warm-up: labelled at once
