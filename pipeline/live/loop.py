"""Live labels from a camera or stream with bounded latency: the webcam demo of ``infer.py``.

Per processed frame: the newest captured frame (older ones are dropped, see ``capture.py``), one extractor
forward, the tracker's update and one GRU step over every tracked person (one batch, each with their own
state carried), smoothed probabilities per person for display, drawing (every person's box, id and action;
the main subject's label and top-3 top-left), and the outputs (window, recording, MJPEG server).

Frame rate seen by the GRU: the model is fed at most at the rate it was trained at (a frame that arrives
sooner than 1/fps after the last one fed is shown with the current label but not fed), so a 30 or 60 fps
camera looks like training data. When processing is slower than that rate, the GRU sees fewer frames per
second than in training; the window then says so ("model at N of 25 fps"); the remedy is a faster device or
a checkpoint trained at a smaller image size. A person who leaves is forgotten (track and state) after the
tracker's lost time; after ``reset_after_s`` with nobody in view everything resets.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Container
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from pipeline.errors import UserError
from pipeline.inference.annotate import Overlay, Person, draw, headline
from pipeline.inference.outputs import VideoSink
from pipeline.inference.predictor import ActionPredictor, Predictions
from pipeline.live.capture import LatestFrameCapture
from pipeline.live.serve import FrameServer
from pipeline.timeline import NOBODY, WARMING, Smoother, label_of, warming

WINDOW = "yolo-gru-actions (q: quit, r: reset, space: pause, s: snapshot)"


class DisplayError(UserError, RuntimeError):
    """No screen to show the window on."""


@dataclass
class LiveOptions:
    show: bool = True
    save_video: Path | None = None
    serve: str | None = None
    smooth_s: float = 0.5  # display smoothing of the probabilities
    threshold: float = 0.5  # smoothed top score below this shows "unknown" (infer.py: the checkpoint's)
    max_novelty: float | None = 1.0  # motion more novel than this shows "unknown" (1: the checkpoint's rule; None: off)
    reset_after_s: float = 2.0  # nobody in view this long: reset the GRU state
    duration_s: float | None = None  # stop after this long (benchmarks, tests)
    snapshot_dir: Path = Path(".")


@dataclass
class LiveStats:
    """What happened in a run; latencies are capture-to-display, in ms, of the last 100 000 frames."""

    processed: int = 0
    shown: int = 0
    delivered: int = 0
    dropped: int = 0
    reconnects: int = 0
    resets: int = 0
    wall_s: float = 0.0
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=100_000))

    def summary(self) -> dict:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        return {
            "processed_frames": self.processed, "processed_fps": round(self.processed / max(self.wall_s, 1e-9), 2),
            "frames_from_source": self.delivered, "dropped_frames": self.dropped, "reconnects": self.reconnects,
            "gru_resets": self.resets, "latency_ms_p50": round(float(np.percentile(lat, 50)), 2),
            "latency_ms_p95": round(float(np.percentile(lat, 95)), 2), "latency_ms_max": round(float(lat.max()), 2),
            "wall_s": round(self.wall_s, 2),
        }  # fmt: skip


def check_display() -> None:
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise DisplayError("no screen to show the window on (DISPLAY is not set); use --no-show, or --serve HOST:PORT to watch in a browser")


class LiveLabels:
    """Predictions -> what to draw: display smoothing per track, ``unknown`` below the threshold or for motion
    more novel than ``max_novelty``, ``warming up`` for a track's first ``warmup_frames`` (the checkpoint's:
    what its labels leave out, as training does), and the main subject (the track with the largest running
    subject weight) whose label goes top-left."""

    def __init__(
        self, names: list[str], smooth_s: float, threshold: float, background: str | None = None, max_novelty: float | None = 1.0,
        warmup_frames: int = 0,
    ):  # fmt: skip
        self.names, self.smooth_s, self.threshold, self.background, self.max_novelty = names, smooth_s, threshold, background, max_novelty
        self.warmup_frames = warmup_frames
        self.smoothers: dict[int, Smoother] = {}
        self.weights: dict[int, float] = {}
        self.frames: dict[int, int] = {}  # per track: the frames it was labelled on

    def reset(self) -> None:
        self.smoothers.clear()
        self.weights.clear()
        self.frames.clear()

    def update(self, pred: Predictions, t: float, alive: Container[int]) -> Overlay:
        """The overlay of one processed frame at time ``t``; tracks not in ``alive`` are forgotten."""
        for tid in [k for k in self.smoothers if k not in alive]:  # tracks the tracker dropped
            del self.smoothers[tid], self.weights[tid], self.frames[tid]
        people = []
        for r in range(len(pred.track)):
            tid = int(pred.track[r])
            p = self.smoothers.setdefault(tid, Smoother(self.smooth_s)).add(t, pred.probs[r])
            self.weights[tid] = self.weights.get(tid, 0.0) + float(pred.weight[r])
            self.frames[tid] = self.frames.get(tid, 0) + 1
            novel = self.max_novelty is not None and float(pred.novelty[r]) > self.max_novelty
            label, score = (WARMING, 0.0) if warming(self.frames[tid], self.warmup_frames) else label_of(p, self.names, self.threshold, novel)
            people.append(Person(tid, pred.boxes[r], pred.keypoints[r], label, score))
        if not people:
            return Overlay(NOBODY, 0.0, [])
        main = max(people, key=lambda q: self.weights[q.track])
        p = self.smoothers[main.track].value
        top = [] if main.label == WARMING else [(self.names[i], float(p[i])) for i in np.argsort(-p)[:3]]
        return Overlay(main.label, main.score, top, people, main.track, background=self.background)


def run_live(predictor: ActionPredictor, capture: LatestFrameCapture, opts: LiveOptions) -> LiveStats:
    """Run until the source ends, ``q``/Esc, the window is closed, Ctrl-C, or ``duration_s``."""
    names = predictor.class_names
    fps = predictor.fps or capture.fps
    min_gap = 1.0 / fps if predictor.fps else 0.0
    labels = LiveLabels(names, opts.smooth_s, opts.threshold, predictor.background, opts.max_novelty, predictor.warmup_frames)
    stats = LiveStats()
    sink: VideoSink | None = None
    server: FrameServer | None = None
    overlay = Overlay(NOBODY, 0.0, [])
    last_fed, last_person, latency_ms = -1e9, time.perf_counter(), None
    recent: deque = deque()  # times of the frames fed in the last 2 s, for the displayed rate
    paused, was_reset = False, False
    start = time.perf_counter()
    predictor.reset(fps)
    try:
        if opts.show:
            check_display()
        if opts.serve:
            server = FrameServer(opts.serve)
            print(f"serving the annotated stream at {server.url}", flush=True)
        while opts.duration_s is None or time.perf_counter() - start < opts.duration_s:
            lf = capture.get(timeout=0.5)
            if lf is None:
                if capture.finished:
                    break
                if opts.show and cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                    break
                continue
            frame = lf.frame
            feed = not paused and lf.captured_at - last_fed >= 0.9 * min_gap
            if feed:
                last_fed = lf.captured_at
                pred = predictor(frame[None])
                stats.processed += 1
                recent.append(lf.captured_at)
                while recent[0] < lf.captured_at - 2.0:
                    recent.popleft()
                if len(pred.track):
                    last_person, was_reset = lf.captured_at, False
                elif not was_reset and lf.captured_at - last_person >= opts.reset_after_s:
                    predictor.reset(fps)  # nobody for a while: the next person starts from a clean memory
                    labels.reset()
                    stats.resets += 1
                    was_reset = True
                rate = len(recent) / 2.0 if lf.captured_at - start > 2.0 else None
                status = capture.status
                if rate is not None and predictor.fps and rate < 0.8 * predictor.fps:
                    status = status or f"model at {rate:.1f} of {predictor.fps:.0f} fps"
                overlay = labels.update(pred, lf.captured_at, predictor.states.slot)
                overlay.fps, overlay.latency_ms, overlay.status = rate, latency_ms, status
            else:
                overlay.status = "paused" if paused else capture.status
            frame = draw(frame, overlay)  # enlarged when the source is small
            if server:
                server.publish(frame, {"label": overlay.label, "score": overlay.score, "text": headline(overlay), "fps": overlay.fps or 0.0,
                                       "latency_ms": latency_ms or 0.0, "status": overlay.status})  # fmt: skip
            if opts.save_video:
                if sink is None:
                    sink = VideoSink(opts.save_video, fps, (frame.shape[1], frame.shape[0]))
                if feed:
                    sink.write(frame)
            if opts.show:
                cv2.imshow(WINDOW, frame)
                key = cv2.waitKey(1) & 0xFF
                if key in (ord("q"), 27) or cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) < 1:
                    break
                if key == ord("r"):
                    predictor.reset(fps)
                    labels.reset()
                    stats.resets += 1
                elif key == ord(" "):
                    paused = not paused
                elif key == ord("s"):
                    snap = opts.snapshot_dir / f"snapshot_{time.strftime('%Y%m%d_%H%M%S')}_{stats.shown}.png"
                    cv2.imwrite(str(snap), frame)
                    print(f"snapshot: {snap}", flush=True)
            stats.shown += 1
            if feed:
                latency_ms = 1000 * (time.perf_counter() - lf.captured_at)  # capture to display (or publish)
                stats.latencies_ms.append(latency_ms)
    except KeyboardInterrupt:
        pass  # Ctrl-C ends the demo cleanly: the camera is released and the recording finished below
    finally:
        stats.wall_s = time.perf_counter() - start
        stats.delivered, stats.dropped, stats.reconnects = capture.delivered, capture.dropped, capture.reconnects
        capture.close()
        if sink:
            sink.close()
        if server:
            server.close()
        if opts.show:
            cv2.destroyAllWindows()
    return stats
