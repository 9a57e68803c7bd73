"""Video file -> labels -> outputs: the throughput mode of ``infer.py``.

Decoding runs in a background thread with a bounded queue; frames reach the predictor in batches (one
extractor forward per batch, tracking, and per frame one GRU step over all tracks with their states
carried, which equals stepping frame by frame). Every tracked person gets a timeline of their own; the
video's label and segments are the main subject's (``pipeline.data.tracking``). Frames are sampled at the
checkpoint's fps; results map back to source timestamps, and an annotated copy gets every source frame,
drawn with the latest result. Per-frame labels (JSON, CSV, overlay) are the causal ones a live view shows;
once the video is finished, its segments and labels are settled without delay (``timeline.settle``), per
person and for the video (the main subject in view at each moment), each track's first ``warmup_frames``
left out as ``train.py test`` leaves them out of a video's score.
"""

from __future__ import annotations

import errno
import hashlib
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.data.video import VideoError, VideoReader, is_truncated, prefetch
from pipeline.inference.annotate import Overlay, Person, draw, enlarge, upscale
from pipeline.inference.outputs import CsvTimeline, JsonTimeline, OutputError, VideoSink, check_writable, commit, partial, plot_timeline
from pipeline.inference.predictor import ActionPredictor, Predictions
from pipeline.timeline import MIN_DURATION_S, NOBODY, SMOOTH_S, WARMING, Segment, Timeline, first_scored, settle, warming


@dataclass
class OutputPaths:
    """Where to write each output of one video (None: not written)."""

    video: Path | None = None
    json: Path | None = None
    csv: Path | None = None
    plot: Path | None = None

    @classmethod
    def in_folder(cls, folder: Path, stem: str) -> OutputPaths:
        raw = os.fsencode(stem)  # the name's bytes as the file system has them (not UTF-8 on every disk)
        if len(raw) > MAX_STEM_BYTES:  # room for ".partial.json" within a file system's 255 bytes
            stem = os.fsdecode(raw[: MAX_STEM_BYTES - 9]) + "_" + hashlib.sha1(raw).hexdigest()[:8]
        return cls(folder / f"{stem}.mp4", folder / f"{stem}.json", folder / f"{stem}.csv", folder / f"{stem}.png")

    def check(self) -> None:
        """Fail before any work when one of the outputs cannot be written."""
        for path in vars(self).values():
            if path is not None:
                check_writable(path)


MAX_STEM_BYTES = 200
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@dataclass
class Smoothing:
    smooth_s: float = SMOOTH_S  # time constant of the exponential average of probabilities
    min_duration_s: float = MIN_DURATION_S  # a label must hold this long to open a segment
    threshold: float = 0.0  # below this smoothed score the label reads "unknown" (infer.py: the checkpoint's)
    background: str | None = None  # a class that is no action: no segment (infer.py: the checkpoint's)
    max_novelty: float | None = 1.0  # novelty above this reads "unknown" (1: the checkpoint's rules' limit; None: off)
    # a track's first frames left out of its settled label and segments (the first segment still opens where the
    # track does): the GRU is not trained to be right there, and train.py test scores a video without them.
    # None: the checkpoint's (its warmup_frames)
    warmup_frames: int | None = None


@dataclass
class TrackResult:
    """One person's summary: when they were in view, their action over that time and its segments."""

    id: int
    first_s: float
    last_s: float
    label: str
    score: float
    probs: dict[str, float]
    segments: list[Segment]
    frames: int
    share: float = 1.0  # of the time in view that ``label``'s segments cover

    def to_dict(self) -> dict:
        return {
            "id": self.id, "first_s": round(self.first_s, 4), "last_s": round(self.last_s, 4), "label": self.label,
            "score": round(self.score, 4), "share": round(self.share, 4), "frames": self.frames, "probs": self.probs,
            "segments": [s.to_dict() for s in self.segments],
        }  # fmt: skip


@dataclass
class VideoResult:
    """A video's summary; ``label``, ``score``, ``probs`` and ``segments`` are the main subject's
    (``main_track``, chosen by ``pipeline.data.tracking.main_track``'s rule)."""

    source: str
    label: str
    score: float
    probs: dict[str, float]
    segments: list[Segment]
    frame_count: int
    processed_frames: int
    duration_s: float
    processing_fps: float
    main_track: int | None = None
    tracks: list[TrackResult] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    declared_frames: int = 0  # the container's frame count (0: unknown)
    share: float = 1.0  # of the main subject's time that ``label`` covers
    video_codec: str = ""  # of the annotated copy, when one was written

    @property
    def truncated(self) -> bool:
        return is_truncated(self.frame_count, self.declared_frames)


class _TrackLog:
    """Per track while a video runs: its causal timeline, when it was seen, its main-subject weight, its
    probabilities (settled at the end; a few bytes a frame) and, for the plot, its gates."""

    def __init__(self, names: list[str], smoothing: Smoothing, t: float, curves: bool):
        self.smoothing = smoothing  # warmup_frames set (analyse_video fills in the checkpoint's)
        self.timeline = Timeline(names, smoothing.smooth_s, smoothing.min_duration_s, smoothing.threshold, t, smoothing.max_novelty)
        self.first_s = self.last_s = t
        self.weight = 0.0
        self.curves = curves
        self.times: list[float] = []
        self.probs: list[np.ndarray] = []
        self.novelty: list[float] = []
        self.gates: list[tuple[float, float]] = []

    def add(self, t: float, probs: np.ndarray, novelty: float, weight: float, gates: tuple[float, float] | None) -> tuple[str, float]:
        self.last_s, self.weight = t, self.weight + weight
        self.times.append(t)
        self.probs.append(probs.astype(np.float32))
        self.novelty.append(novelty)
        if self.curves and gates is not None:
            self.gates.append(gates)
        return self.timeline.add(t, probs, novelty)

    @property
    def first_scored(self) -> int:
        """The first of this track's frames that its label reads: after the warm-up, the last one at least."""
        return first_scored(len(self.times), self.smoothing.warmup_frames or 0)

    def result(self, track_id: int, names: list[str], step_s: float) -> TrackResult:
        end = self.last_s + step_s
        sm, k = self.smoothing, self.first_scored
        probs = np.stack(self.probs[k:])
        segments, (label, score, share) = settle(
            names, np.asarray(self.times[k:]), probs, sm.smooth_s, sm.min_duration_s, sm.threshold, self.first_s, end, sm.background,
            np.asarray(self.novelty[k:]), sm.max_novelty,
        )  # fmt: skip
        mean = {n: round(float(v), 4) for n, v in zip(names, probs.mean(0))}
        return TrackResult(track_id, self.first_s, end, label, score, mean, segments, self.timeline.frames, share)


def _top(probs: np.ndarray, names: list[str], k: int) -> list[tuple[str, float]]:
    order = np.argsort(-probs)[:k]
    return [(names[i], float(probs[i])) for i in order]


def analyse_video(
    source: str,
    predictor: ActionPredictor,
    out: OutputPaths | None = None,
    smoothing: Smoothing | None = None,
    batch_size: int = 16,
    top_k: int = 3,
    frames_in_json: bool = True,
    progress: bool = True,
    checkpoint: str = "",
) -> VideoResult:
    """Run the predictor over a whole video, label every tracked person, write the requested outputs and
    return the summary."""
    out, smoothing = out or OutputPaths(), smoothing or Smoothing()
    if smoothing.warmup_frames is None:
        smoothing = replace(smoothing, warmup_frames=predictor.warmup_frames)
    names = predictor.class_names
    reader = VideoReader(source, fps=predictor.fps)
    info = reader.info
    sinks: dict = {}
    plotted = False
    try:
        if out.json:
            header = {
                "source": str(source), "checkpoint": checkpoint, "classes": names, "fps": reader.fps, "source_fps": info.fps,
                "smoothing": {
                    "smooth_s": smoothing.smooth_s, "min_duration_s": smoothing.min_duration_s, "threshold": smoothing.threshold,
                    "warmup_frames": smoothing.warmup_frames,
                    "rules": predictor.novelty.summary() if smoothing.max_novelty is not None and predictor.novelty else None,
                },
                "tracker": asdict(predictor.tracker_config), "max_people": predictor.extractor.max_people,
            }  # fmt: skip
            sinks["json"] = JsonTimeline(out.json, header, frames=frames_in_json)
        if out.csv:
            sinks["csv"] = CsvTimeline(out.csv, names)
        if out.video:
            up = upscale(info.width, info.height)  # small sources are drawn enlarged, to be legible
            sinks["video"] = VideoSink(out.video, info.fps, (info.width * up, info.height * up))
        predictor.reset(fps=reader.fps)
        predictor.inspect = bool(out.plot) and predictor.can_inspect
        logs: dict[int, _TrackLog] = {}
        latest: Overlay | None = None
        frames_read, processed, t0 = 0, 0, time.perf_counter()
        total = info.frame_count if info.frame_count > 0 else None
        bar = tqdm(total=total, unit="frame", desc=Path(str(source)).name, disable=not progress, leave=False)
        for idx, frames, keep in prefetch(reader.batches(batch_size, every_frame="video" in sinks, pin=predictor.device.type == "cuda")):
            # boolean indexing copies the batch: only when some frames are decoded for the video alone
            kept = frames if keep.all() else frames[keep]
            preds: Predictions | None = predictor(kept) if len(kept) else None
            rows = preds.rows() if preds is not None else []
            j = 0
            for i, frame, k in zip(idx, frames, keep):
                if k:
                    t = i / info.fps
                    people: list[Person] = []
                    entries: list[dict] = []
                    for r in rows[j]:
                        tid, p = int(preds.track[r]), preds.probs[r]
                        log = logs.get(tid) or logs.setdefault(tid, _TrackLog(names, smoothing, t, bool(out.plot)))
                        gates = (float(preds.gates["update"][r]), float(preds.gates["reset"][r])) if preds.gates else None
                        label, score = log.add(t, p, float(preds.novelty[r]), float(preds.weight[r]), gates)
                        if warming(len(log.times), smoothing.warmup_frames):  # no action yet, as live shows it
                            label, score = WARMING, 0.0
                        if "json" in sinks:
                            entries.append({
                                "id": tid, "box": [round(float(v), 1) for v in preds.boxes[r]], "label": label,
                                "score": round(score, 4), "top": [[n, round(q, 4)] for n, q in _top(p, names, top_k)],
                            })  # fmt: skip
                        if "csv" in sinks:
                            sinks["csv"].frame(i, t, tid, label, score, p)
                        if "video" in sinks:
                            people.append(Person(tid, preds.boxes[r], preds.keypoints[r], label, score))
                    if "json" in sinks:
                        sinks["json"].frame(i, t, entries)
                    processed += 1
                    if "video" in sinks:  # drawn only when an annotated copy is written
                        elapsed = time.perf_counter() - t0
                        latest = _overlay(people, logs, names, processed / elapsed if elapsed > 0 else None, smoothing.background)
                    j += 1
                if "video" in sinks:
                    sinks["video"].write(draw(frame, latest) if latest is not None else enlarge(frame))
            frames_read += len(idx)
            bar.update(len(idx))
        bar.close()
        elapsed = time.perf_counter() - t0
        duration = frames_read / info.fps
        step = 1 / reader.fps
        tracks = [log.result(tid, names, step) for tid, log in sorted(logs.items())]
        main = max(logs, key=lambda tid: logs[tid].weight) if logs else None
        if main is not None:
            label, score, probs, segments, share = _video_timeline(logs, names, smoothing, step)
        else:
            label, score, probs, segments, share = NOBODY, 0.0, {n: 0.0 for n in names}, [], 0.0
        result = VideoResult(
            str(source), label, score, probs, segments, frames_read, processed, duration, processed / max(elapsed, 1e-9), main, tracks,
            declared_frames=info.frame_count, share=share,
        )  # fmt: skip
        # Every output is completed under its partial name, then all are renamed at once: a video whose
        # outputs cannot all be written (a full disk at its end, say) leaves none of them under a final name.
        if out.plot:
            _plot(out.plot, source, result, logs, names)  # written whole or not at all; removed again below if another fails
            plotted = True
        if "json" in sinks:
            sinks["json"].complete(
                {
                    "frame_count": frames_read, "declared_frames": info.frame_count, "truncated": result.truncated,
                    "processed_frames": processed, "duration_s": round(duration, 4),
                    "main_track": main, "label": label, "score": round(score, 4),
                    "video": {"label": label, "score": round(score, 4), "share": round(share, 4), "probs": probs},
                    "segments": [s.to_dict() for s in segments], "tracks": [tr.to_dict() for tr in tracks],
                    "processing_fps": round(result.processing_fps, 2),
                }
            )  # fmt: skip
        for name in ("csv", "video"):
            if name in sinks:
                sinks[name].complete()
        for name, path in (("json", out.json), ("csv", out.csv), ("video", out.video)):
            if name in sinks:
                sink = sinks.pop(name)
                commit(path)
                result.outputs[name] = str(path)
                result.video_codec = getattr(sink, "codec", result.video_codec)
        if plotted:
            result.outputs["plot"] = str(out.plot)
        return result
    except BaseException:
        if plotted:
            out.plot.unlink(missing_ok=True)
        raise
    finally:
        predictor.inspect = False
        for sink in sinks.values():  # not committed: the video failed or the run was stopped half-way
            sink.abort()
        for path in (out.json, out.csv, out.video):  # and a stop that came while a sink was made, or committed
            if path:
                partial(path).unlink(missing_ok=True)


def _video_timeline(logs: dict[int, _TrackLog], names: list[str], smoothing: Smoothing, step_s: float):
    """The video's own timeline, settled: at each processed frame the person in view who weighs most as the
    main subject (``pipeline.data.tracking``). With one person in view at a time, this follows them across broken
    tracks (a cut between two shots, an absence longer than ``--lost-time``), which no single track does."""
    best: dict[float, tuple[float, np.ndarray, float, bool]] = {}
    for log in logs.values():
        k = log.first_scored
        for i, (t, p, n) in enumerate(zip(log.times, log.probs, log.novelty)):
            if t not in best or log.weight > best[t][0]:
                best[t] = (log.weight, p, n, i >= k)
    # the subject's warm-up is left out, as a track's is; another person does not stand in for those frames
    start = min(best)
    kept = {t: b for t, b in best.items() if b[3]} or {max(best): best[max(best)]}
    times = np.array(sorted(kept))
    probs = np.stack([kept[t][1] for t in times])
    sm = smoothing
    segments, (label, score, share) = settle(
        names, times, probs, sm.smooth_s, sm.min_duration_s, sm.threshold, float(start), float(times[-1]) + step_s,
        sm.background, np.array([kept[t][2] for t in times]), sm.max_novelty,
    )
    return label, score, {n: round(float(v), 4) for n, v in zip(names, probs.mean(0))}, segments, share


def _overlay(people: list[Person], logs: dict[int, _TrackLog], names: list[str], fps: float | None, background: str | None) -> Overlay:
    """This frame's drawing: every person, and top-left the visible person who is the main subject so far."""
    if not people:
        return Overlay(NOBODY, 0.0, [], fps=fps)
    main = max(people, key=lambda p: logs[p.track].weight)
    top = [] if main.label == WARMING else _top(logs[main.track].timeline.smoothed, names, 3)
    return Overlay(main.label, main.score, top, people, main.track, fps=fps, background=background)


def _plot(path: Path, source: str, result: VideoResult, logs: dict[int, _TrackLog], names: list[str]) -> None:
    """The main subject's probabilities (and gates) over time, and a band per track."""
    share = f", {result.share:.0%} of the time" if result.share < 0.995 else ""
    name = os.fsencode(Path(str(source)).name).decode("utf-8", "backslashreplace")  # the name's bytes that are not UTF-8 as \xNN
    title = f"{name}: {result.label} ({result.score:.0%}{share})"
    if result.main_track is not None:
        log = logs[result.main_track]
        times, probs = np.asarray(log.times), np.stack(log.probs)
        gates = {"update": np.array([g[0] for g in log.gates]), "reset": np.array([g[1] for g in log.gates])} if log.gates else None
        title += f", main subject #{result.main_track}" if len(logs) > 1 else ""
        warmup = (float(times[0]), float(times[log.first_scored])) if log.first_scored else None
    else:
        times, probs, gates, warmup = np.zeros(0), np.zeros((0, len(names))), None, None
    bands = [(tr.id, tr.segments) for tr in result.tracks]
    plot_timeline(path, times, probs, names, result.segments, title, gates, bands, result.duration_s, warmup)


def plan_outputs(sources: list[str], out_dir: Path | None, single: OutputPaths | None) -> list[tuple[str, OutputPaths | None]]:
    """Each source with its outputs, checked writable before any work: ``out_dir`` gives every video
    ``<out_dir>/<stem>.{mp4,json,csv,png}`` (a repeated stem numbered), ``single`` explicit paths for one."""
    stems: dict[str, int] = {}
    planned = []
    for src in sources:
        paths = single
        if out_dir is not None:
            stem = Path(str(src)).stem or "stream"
            stems[stem] = stems.get(stem, 0) + 1
            paths = OutputPaths.in_folder(out_dir, stem if stems[stem] == 1 else f"{stem}_{stems[stem]}")
        planned.append((src, paths))
    if single is not None:
        single.check()
    if out_dir is not None:
        check_writable(Path(out_dir) / ".probe")
    return planned


def summary_line(r: VideoResult) -> str:
    """The line printed for a finished video: the main subject's label, segments, everyone's label."""
    share = f", {r.share:.0%} of the time" if r.share < 0.995 else ""
    line = f"{r.source}: {r.label} ({r.score:.2f}{share}) | " + ", ".join(
        f"{s.start_s:.1f}-{s.end_s:.1f}s {s.label} {s.score:.2f}" for s in r.segments
    ) if r.main_track is not None else f"{r.source}: {NOBODY} in view"
    if r.truncated:
        line += f" | warning: read {r.frame_count} of {r.declared_frames} declared frames (corrupt or cut short)"
    if len(r.tracks) > 1:
        line += f" | {len(r.tracks)} people: " + ", ".join(f"#{t.id} {t.label} ({t.score:.2f})" for t in r.tracks)
    return line


def analyse_many(
    sources: list[str], predictor: ActionPredictor, out_dir: Path | None, single: OutputPaths | None, echo: bool = True, **kwargs
) -> tuple[list[VideoResult], list[tuple[str, str]]]:
    """Each source in turn; a video that cannot be read is reported and skipped, never the end of the run;
    ``echo`` prints each video's line as it finishes.

    ``out_dir``: every output of every video, as ``<out_dir>/<stem>.{mp4,json,csv,png}``; ``single``:
    explicit paths, for one source. Returns the results and the ``(source, reason)`` failures.
    """
    results, failed = [], []
    planned = plan_outputs(sources, out_dir, single)
    done = lambda: f"{len(results)} of {len(sources)} video(s) finished" + (f" (last: {results[-1].source})" if results else "")  # noqa: E731
    for src, paths in tqdm(planned, desc="Videos", unit="video", disable=len(sources) < 2 or not kwargs.get("progress", True)):
        try:
            r = analyse_video(src, predictor, paths, **kwargs)
        except OSError as e:
            if e.errno in DISK_FULL:
                raise OutputError(f"writing the outputs of {src} failed: {e.strerror}; {done()}, their outputs are complete") from None
            if len(sources) == 1:
                raise OutputError(f"{src}: {e.strerror or e}") from None
            failed.append((str(src), f"{src}: {e.strerror or e}"))
            continue
        except (VideoError, OutputError) as e:
            if len(sources) == 1:
                raise
            failed.append((str(src), str(e)))
            continue
        except KeyboardInterrupt:
            tqdm.write(f"interrupted at {src}: {done()}; nothing of {Path(str(src)).name} was kept", file=sys.stderr)
            raise
        results.append(r)
        if echo:
            tqdm.write(summary_line(r))  # stdout, around the progress bars
    return results, failed
