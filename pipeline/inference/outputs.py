"""Labels -> outputs of ``infer.py``: annotated video, JSON timeline, CSV, timeline plot.

The JSON and CSV are written frame by frame as results arrive, so memory stays flat on long videos.

JSON schema (``schema_version`` 5)::

    {
      "schema_version": 5,
      "source": str,                 # path or URL
      "checkpoint": str,
      "classes": [str, ...],
      "fps": float,                  # rate the model ran at (the training fps, or the source's)
      "source_fps": float,
      "smoothing": {"smooth_s": float, "min_duration_s": float, "threshold": float,
                    "warmup_frames": int,  # each track's first frames, left out of the settled labels below
                    "rules": {"motion": {...}, "prototypes": {...}} | None},  # the checkpoint's "unknown" rules, when on
      "tracker": {"kind": str, "conf": float, "lost_s": float, "match_iou": float},
      "max_people": int,
      "frames": [                    # one per processed frame (left out with --no-frames)
        {"frame": int,               # index in the source video
         "time_s": float,            # frame / source_fps
         "tracks": [                 # every person seen in this frame
           {"id": int,               # track id, stable while the person stays in view
            "box": [x0, y0, x1, y1], # source pixels
            "label": str, "score": float,   # that person's smoothed label (causal, as live; "warming up", 0, in the track's first warmup_frames)
            "top": [[str, float], ...]}     # top-k raw probabilities
         ]}
      ],
      "frame_count": int,            # source frames read
      "declared_frames": int,        # the container's count (0: unknown)
      "truncated": bool,             # frame_count under 90% of declared_frames: a corrupt or cut-short file
      "processed_frames": int,
      "duration_s": float,
      "main_track": int | null,      # the main subject (see pipeline/data/tracking.py); null: nobody was seen
      "label": str, "score": float,  # the main subject's action ("nobody" when no one was seen)
      "video": {"label": str,        # main subject: the action whose segments cover the most time,
                "score": float,        # their mean smoothed probability,
                "share": float,        # the share of the time they cover,
                "probs": {class: float}},  # and the mean of the raw per-frame probabilities (after the warm-up)
      "segments": [{"start_s": float, "end_s": float, "label": str, "score": float}],  # main subject's, settled
      "tracks": [{"id": int, "first_s": float, "last_s": float, "label": str, "score": float, "share": float,
                  "frames": int, "probs": {class: float}, "segments": [...]}],
      "processing_fps": float
    }
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import IO

import cv2
import numpy as np

from pipeline.errors import UserError
from pipeline.timeline import Segment

SCHEMA_VERSION = 5  # 3: video label = most time, "share", settled segments; 4: labels settled after each track's warm-up; 5: frames in it "warming up"
GAP_S = 0.2  # a plotted line breaks where the subject went unseen for longer than this (or 3 frame steps)


class OutputError(UserError, RuntimeError):
    """An output file that cannot be written."""


def check_writable(path: Path) -> Path:
    """Fail before any work when ``path`` cannot be created (missing folder is made; a read-only one is an error)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise OutputError(f"cannot write {path}: permission denied")
    return path


def partial(path: Path) -> Path:
    """Where ``path`` is written until it is complete: ``name.partial.ext`` beside it, renamed at the end,
    so a killed run or a full disk never leaves a broken file under the final name."""
    return path.with_name(f"{path.stem}.partial{path.suffix}")


def _open(path: Path, newline: str | None = None) -> IO[str]:
    try:
        return open(partial(check_writable(path)), "w", newline=newline)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None


def _finish(f: IO[str]) -> None:
    f.flush()
    os.fsync(f.fileno())
    f.close()


def commit(path: Path) -> None:
    """A complete output under its final name. A video's outputs are all completed first, then committed
    together (``files.analyse_video``): a full disk half-way leaves none of them under a final name."""
    os.replace(partial(path), path)


def _discard(f: IO[str] | None, path: Path) -> None:
    try:
        if f is not None:
            f.close()
    except OSError:
        pass  # a full disk fails the close too; the file goes anyway
    partial(path).unlink(missing_ok=True)


class JsonTimeline:
    """The JSON file above, streamed: header first, one line per frame, summary at ``close``."""

    def __init__(self, path: Path, header: dict, frames: bool = True):
        self.path, self.with_frames = Path(path), frames
        self._f = _open(self.path)
        self._f.write("{\n" + "".join(f"  {json.dumps(k)}: {json.dumps(v)},\n" for k, v in {"schema_version": SCHEMA_VERSION, **header}.items()))
        self._f.write('  "frames": [')
        self._first = True

    def frame(self, index: int, time_s: float, tracks: list[dict]) -> None:
        if not self.with_frames:
            return
        rec = {"frame": int(index), "time_s": round(time_s, 4), "tracks": tracks}
        self._f.write(("\n    " if self._first else ",\n    ") + json.dumps(rec))
        self._first = False

    def complete(self, summary: dict) -> None:
        """Write the summary and close the file, still under its partial name (``commit`` renames it)."""
        self._f.write(("\n  ]" if not self._first else "]") + "".join(f",\n  {json.dumps(k)}: {json.dumps(v)}" for k, v in summary.items()) + "\n}\n")
        _finish(self._f)

    def abort(self) -> None:
        """The video failed half-way: remove the unfinished file rather than leave invalid JSON."""
        _discard(self._f, self.path)


class CsvTimeline:
    """``frame,time_s,track,label,score,<class probabilities>`` per processed frame and person in view."""

    def __init__(self, path: Path, class_names: list[str]):
        self.path = Path(path)
        self._f = _open(self.path, newline="")
        self._w = csv.writer(self._f)
        self._w.writerow(["frame", "time_s", "track", "label", "score", *class_names])

    def frame(self, index: int, time_s: float, track: int, label: str, score: float, probs: np.ndarray) -> None:
        self._w.writerow([int(index), f"{time_s:.4f}", int(track), label, f"{score:.4f}", *(f"{p:.4f}" for p in probs)])

    def complete(self) -> None:
        """Close the file, still under its partial name (``commit`` renames it)."""
        _finish(self._f)

    def abort(self) -> None:
        _discard(self._f, self.path)


class _H264Writer:
    """H.264 in MP4 through PyAV (its own FFmpeg with libx264): what browsers and common players play."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]):
        from fractions import Fraction

        import av
        self._av = av
        self._box = av.open(str(path), "w")
        self._stream = self._box.add_stream("libx264", rate=Fraction(round(fps * 1000), 1000))
        self._w, self._h = size[0] // 2 * 2, size[1] // 2 * 2  # 4:2:0 needs even sides
        self._stream.width, self._stream.height, self._stream.pix_fmt = self._w, self._h, "yuv420p"
        self._stream.options = {"crf": "23", "preset": "veryfast"}
        self._stream.codec_context.thread_count = 1  # decoding and the model have the cores

    def write(self, frame: np.ndarray) -> None:
        image = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[: self._h, : self._w]), format="bgr24")
        for packet in self._stream.encode(image):
            self._box.mux(packet)

    def release(self) -> None:
        if self._box is not None:
            try:
                for packet in self._stream.encode():
                    self._box.mux(packet)
            finally:
                self._box.close()
                self._box = None


class VideoSink:
    """An annotated copy of the source: every frame, same frame rate. ``.mp4``, ``.m4v`` and ``.mov`` are
    H.264 (PyAV), or MPEG-4 Part 2 through OpenCV when no H.264 encoder is there; ``.avi`` and ``.mkv`` MJPG.
    ``codec`` says which was used."""

    CODECS = {".mp4": "H.264", ".m4v": "H.264", ".mov": "H.264", ".avi": "MJPG", ".mkv": "MJPG"}

    def __init__(self, path: Path, fps: float, size: tuple[int, int]):
        path = check_writable(Path(path))
        codec = self.CODECS.get(path.suffix.lower())
        if codec is None:
            raise OutputError(f"cannot write video {path}: use one of {', '.join(sorted(self.CODECS))}")
        self.path, self.codec = path, codec
        self._w = None
        if codec == "H.264":
            try:
                self._w = _H264Writer(partial(path), fps, size)
            except Exception:  # noqa: BLE001 - no PyAV, or a build without libx264: the older codec still plays in most players
                self.codec = "MPEG-4 Part 2"
        if self._w is None:
            fourcc = "MJPG" if self.codec == "MJPG" else "mp4v"
            self._w = cv2.VideoWriter(str(partial(path)), cv2.VideoWriter_fourcc(*fourcc), fps, size)
            if not self._w.isOpened():
                raise OutputError(f"cannot write video {path} (OpenCV could not open a {fourcc} writer)")

    def write(self, frame: np.ndarray) -> None:
        self._w.write(frame)

    def complete(self) -> None:
        self._w.release()
        size = partial(self.path).stat().st_size if partial(self.path).exists() else 0
        if size == 0:  # OpenCV reports no write error (a full disk, for one): an empty file is the sign
            partial(self.path).unlink(missing_ok=True)
            raise OutputError(f"cannot write video {self.path}: nothing was written (disk full?)")

    def close(self) -> None:
        self.complete()
        commit(self.path)

    def abort(self) -> None:
        try:
            self._w.release()
        except Exception:  # noqa: BLE001 - a writer that failed half-way: its file goes anyway
            pass
        partial(self.path).unlink(missing_ok=True)


def broken_at_gaps(times: np.ndarray, values: np.ndarray, gap_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Samples ``times`` (T,) and ``values`` (T, ...) with a NaN row wherever consecutive samples are more
    than ``gap_s`` apart, so that a plotted line breaks where nobody was seen instead of bridging the gap
    with a straight line that looks like a prediction."""
    cut = np.flatnonzero(np.diff(times) > gap_s) + 1
    return np.insert(np.asarray(times, float), cut, np.nan), np.insert(np.asarray(values, float), cut, np.nan, axis=0)


WARMUP_GREY = (0.55, 0.55, 0.55)  # over the subject's warm-up, above the lines: they do not count there


def plot_timeline(
    path: Path,
    times: np.ndarray,
    probs: np.ndarray,
    class_names: list[str],
    segments: list[Segment],
    title: str = "",
    gates: dict[str, np.ndarray] | None = None,
    tracks: list[tuple[int, list[Segment]]] | None = None,
    duration_s: float | None = None,
    warmup: tuple[float, float] | None = None,
) -> Path:
    """Class probabilities over time with the segments shaded; with ``tracks`` ([(id, segments)], more than
    one) a panel with one band per person, coloured by action; with ``gates`` ({"update": (T,), "reset":
    (T,)}) a panel of the GRU's mean gate activity. ``warmup`` (start, end seconds): the subject's first
    frames, greyed: the video's label leaves them out, so what the lines do there is not what it says."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    check_writable(path)
    tracks = tracks if tracks and len(tracks) > 1 else None
    panels = ["probs"] + (["tracks"] if tracks else []) + (["gates"] if gates else [])
    ratios = {"probs": 2, "tracks": max(0.6, 0.25 * len(tracks or [])), "gates": 1}
    heights = [ratios[p] for p in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 1.8 * sum(heights)), sharex=True, squeeze=False, height_ratios=heights)
    ax = axes[0, 0]
    colors = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    color_of = {n: colors(i % colors.N) for i, n in enumerate(class_names)}
    for seg in segments:
        ax.axvspan(seg.start_s, seg.end_s, color=color_of.get(seg.label, (0.6, 0.6, 0.6)), alpha=0.15, lw=0)
        ax.text((seg.start_s + seg.end_s) / 2, 1.02, seg.label, ha="center", va="bottom", fontsize=8, clip_on=False)
    if warmup is not None and warmup[1] > warmup[0]:
        ax.axvspan(*warmup, color=WARMUP_GREY, alpha=0.35, lw=0, zorder=3)
        ax.text(warmup[0], 0.98, " warm-up", ha="left", va="top", fontsize=7, color="0.3", zorder=4)
    step = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
    gap_s = max(GAP_S, 3 * step)  # a few missed frames bridged; a person lost for longer, a break
    lines_t, lines_p = broken_at_gaps(times, probs, gap_s)
    for i, n in enumerate(class_names):
        ax.plot(lines_t, lines_p[:, i], color=color_of[n], lw=1.2, label=n)
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    ax.set_title(title, fontsize=10, pad=16)
    if tracks:
        tx = axes[panels.index("tracks"), 0]
        for row, (tid, segs) in enumerate(tracks):
            for seg in segs:
                tx.barh(row, seg.end_s - seg.start_s, left=seg.start_s, height=0.7, color=color_of.get(seg.label, (0.6, 0.6, 0.6)))
                tx.text((seg.start_s + seg.end_s) / 2, row, seg.label, ha="center", va="center", fontsize=7)
        tx.set_yticks(range(len(tracks)), [f"#{tid}" for tid, _ in tracks], fontsize=8)
        tx.set_ylim(len(tracks) - 0.5, -0.5)
        tx.set_ylabel("person")
    if gates:
        gx = axes[panels.index("gates"), 0]
        for name, values in gates.items():
            gx.plot(*broken_at_gaps(times, values, gap_s), lw=1.2, label=f"mean {name} gate")
        gx.set_ylim(0, 1)
        gx.set_ylabel("gate")
        gx.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    if duration_s:
        ax.set_xlim(0, duration_s)
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    try:
        fig.savefig(partial(path), dpi=110)
        os.replace(partial(path), path)
    except OSError as e:
        partial(path).unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        plt.close(fig)
    return path
