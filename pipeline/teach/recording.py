"""Live frames -> a recorded clip: a countdown, then the next N seconds of the source, every frame of it.

The recorder is the capture thread's tap (``LatestFrameCapture.tap``), so a clip holds every frame the source
delivers even when the live stream, or a training run beside it, is slower than the camera. The file is
written in a hidden folder and moved into its action folder only when complete: a crash or a stop never
leaves half a clip where training would read it.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import UserError
from pipeline.inference.outputs import OutputError, VideoSink
from pipeline.live.capture import LiveFrame


class RecordingError(UserError, RuntimeError):
    """A recording that cannot start (one is under way) or could not be written."""


@dataclass
class Take:
    action: str
    path: Path  # where the finished clip goes
    countdown_s: float
    seconds: float
    asked_at: float  # time.perf_counter() of the request
    frames: int = 0
    started_at: float | None = None  # capture time of its first frame


class Recorder:
    """Records one take at a time from the frames it is given (``recorder(frame)`` in the capture thread).

    ``fps``: the source's declared rate; a camera that delivers at another rate (dim light) is written at
    the rate measured over the last frames instead, so the clip plays at real speed. ``on_done(path)`` is
    called with every finished clip (the app caches its features).
    """

    def __init__(self, fps: float, on_done: Callable[[Path], None], scratch: Path):
        self.fps, self.on_done, self.scratch = fps, on_done, scratch
        self._lock = threading.Lock()
        self._take: Take | None = None
        self._sink: VideoSink | None = None
        self._times: deque[float] = deque(maxlen=30)
        self.last_error: str | None = None

    def start(self, action: str, path: Path, countdown_s: float, seconds: float) -> None:
        with self._lock:
            if self._take is not None:
                raise RecordingError(f"already recording '{self._take.action}': wait for it to finish or cancel it")
            self._take = Take(action, path, countdown_s, seconds, time.perf_counter())
            self.last_error = None

    def cancel(self) -> bool:
        with self._lock:
            take, self._take = self._take, None
            sink, self._sink = self._sink, None
        if sink is not None:
            sink.abort()
        return take is not None

    def status(self, now: float | None = None) -> dict | None:
        """What the page shows: the action, ``countdown`` with the seconds left, or ``recording`` and how far."""
        with self._lock:
            take = self._take
        if take is None:
            return None
        now = time.perf_counter() if now is None else now
        left = take.countdown_s - (now - take.asked_at)
        if take.started_at is None:
            return {"action": take.action, "phase": "countdown", "seconds_left": round(max(left, 0.0), 1), "seconds": take.seconds}
        return {"action": take.action, "phase": "recording", "elapsed": round(now - take.started_at, 1), "seconds": take.seconds}

    def measured_fps(self) -> float:
        t = self._times
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 10 and t[-1] > t[0] else self.fps

    def __call__(self, lf: LiveFrame) -> None:
        self._times.append(lf.captured_at)
        with self._lock:
            take = self._take
            if take is None or lf.captured_at - take.asked_at < take.countdown_s:
                return
            try:
                if take.started_at is None:
                    take.started_at = lf.captured_at
                    measured = self.measured_fps()
                    fps = self.fps if self.fps > 0 and abs(measured / self.fps - 1) < 0.15 else measured
                    h, w = lf.frame.shape[:2]
                    self.scratch.mkdir(parents=True, exist_ok=True)
                    self._sink = VideoSink(self.scratch / take.path.name, fps, (w, h))
                if lf.captured_at - take.started_at < take.seconds:
                    self._sink.write(lf.frame)
                    take.frames += 1
                    return
                sink, self._sink, self._take = self._sink, None, None
                sink.close()
                os.replace(sink.path, take.path)
            except (OutputError, OSError) as e:
                if self._sink is not None:
                    self._sink.abort()
                self._sink, self._take = None, None
                self.last_error = f"recording '{take.action}' failed: {e}"
                return
        self.on_done(take.path)
