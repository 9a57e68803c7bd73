"""Live frames: a capture thread that keeps only the newest frame, and reopens a source that stops.

When inference is slower than the camera, older frames are overwritten, never queued, so latency
cannot grow and memory stays flat. Each frame carries the time it was captured, for end-to-end latency.
A video file replayed with ``realtime=True`` is paced at its own frame rate: a stand-in camera.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.data.video import VideoError, open_capture, probe


@dataclass
class LiveFrame:
    frame: np.ndarray
    index: int  # frames delivered by the source so far (dropped ones included)
    captured_at: float  # time.perf_counter() when the frame was read


def open_live(source: str | int) -> cv2.VideoCapture:
    """Open a camera index, URL or file; a missing camera is a one-line error naming what was tried."""
    s = str(source)
    if s.isdigit():
        cap = cv2.VideoCapture(int(s))
        if not cap.isOpened():
            cap.release()
            raise VideoError(
                f"camera {s}: cannot open it (tried OpenCV camera index {s}, e.g. /dev/video{s}); "
                "check that it is connected and not in use, or pass another --source"
            )
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # do not let the driver queue stale frames either
        return cap
    return open_capture(s)


class LatestFrameCapture:
    """Read ``source`` in a thread; ``get()`` returns the newest frame not yet returned.

    Args:
        source: camera index, URL or file.
        realtime: pace a file at its own frame rate (as a camera would deliver it).
        loop: start a file again at its end (a long replay from a short clip).
        reconnect: reopen a source that stops delivering frames, with backoff from 0.5 s to ``max_backoff_s``.
        opener: how to open the source (tests pass a flaky one).

    ``tap``, when set, is called in the capture thread with every frame read, dropped ones included, before
    the frame is handed on: a recording gets the source's every frame, untouched, even when the consumer is slower.
    """

    def __init__(
        self,
        source: str | int,
        realtime: bool = False,
        loop: bool = False,
        reconnect: bool = True,
        max_backoff_s: float = 5.0,
        opener: Callable[[str | int], cv2.VideoCapture] = open_live,
    ):
        self.source, self.realtime, self.loop, self.reconnect = source, realtime, loop, reconnect
        self.max_backoff_s, self.opener = max_backoff_s, opener
        self._cap = opener(source)  # fails now, in the caller, when there is no such source
        self.fps = probe(self._cap, source).fps
        self.is_file = not str(source).isdigit() and "://" not in str(source)
        self._cond = threading.Condition()
        self._latest: LiveFrame | None = None
        self._taken = -1
        self.delivered = 0  # frames read from the source
        self.dropped = 0  # frames overwritten before anyone took them
        self.reconnects = 0
        self.status: str | None = None  # e.g. "camera lost: reconnecting in 2.0 s"
        self.finished = False  # the source ended (a file without loop) or reconnecting was given up
        self.tap: Callable[[LiveFrame], None] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="capture")
        self._thread.start()

    def _read(self) -> np.ndarray | None:
        ok, frame = self._cap.read()
        if ok and frame is not None:
            return frame
        if self.is_file and self.loop and self.delivered:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._cap.read()
            return frame if ok else None
        return None

    def _reopen(self) -> bool:
        backoff = 0.5
        while not self._stop.is_set():
            self.status = f"source lost: reconnecting in {backoff:.1f} s"
            if self._stop.wait(backoff):
                return False
            try:
                self._cap.release()
                self._cap = self.opener(self.source)
                self.reconnects += 1
                self.status = None
                return True
            except VideoError:
                backoff = min(backoff * 2, self.max_backoff_s)
        return False

    def _run(self) -> None:
        period = 1.0 / self.fps if self.realtime and self.fps else 0.0
        next_t = time.perf_counter()
        try:
            while not self._stop.is_set():
                if period:
                    delay = next_t - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    next_t = max(next_t + period, time.perf_counter() - period)
                frame = self._read()
                if frame is None:
                    if self.is_file and not self.loop:
                        break  # a replayed file that ended: the stream is over
                    if not self.reconnect or not self._reopen():
                        break
                    continue
                latest = LiveFrame(frame, self.delivered, time.perf_counter())
                tap = self.tap
                if tap is not None:
                    tap(latest)  # before the consumer can draw on the frame in place
                with self._cond:
                    if self._latest is not None and self._latest.index != self._taken:
                        self.dropped += 1
                    self._latest = latest
                    self.delivered += 1
                    self._cond.notify_all()
        finally:
            with self._cond:
                self.finished = True
                self._cond.notify_all()

    def get(self, timeout: float | None = None) -> LiveFrame | None:
        """The newest frame not returned before; waits for one; None when the source has ended."""
        with self._cond:
            ok = self._cond.wait_for(lambda: (self._latest is not None and self._latest.index != self._taken) or self.finished, timeout)
            if not ok or self._latest is None or self._latest.index == self._taken:
                return None
            self._taken = self._latest.index
            return self._latest

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        self._cap.release()

    def __enter__(self) -> LatestFrameCapture:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
