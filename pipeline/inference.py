"""Video file -> labels -> outputs: the throughput mode of ``infer.py``.

Decoding runs in a background thread with a bounded queue; frames reach the predictor in batches (one
extractor forward per batch, then the GRU over the batch with its state carried, which equals stepping
frame by frame). Frames are sampled at the checkpoint's fps; results map back to source timestamps, and an
annotated copy gets every source frame, drawn with the latest result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.annotate import Overlay, draw
from pipeline.outputs import CsvTimeline, JsonTimeline, VideoSink, plot_timeline
from pipeline.predictor import ActionPredictor, Predictions
from pipeline.timeline import Segment, Timeline
from pipeline.video import VideoError, VideoReader, prefetch


@dataclass
class OutputPaths:
    """Where to write each output of one video (None: not written)."""

    video: Path | None = None
    json: Path | None = None
    csv: Path | None = None
    plot: Path | None = None

    @classmethod
    def in_folder(cls, folder: Path, stem: str) -> OutputPaths:
        return cls(folder / f"{stem}.mp4", folder / f"{stem}.json", folder / f"{stem}.csv", folder / f"{stem}.png")


@dataclass
class Smoothing:
    smooth_s: float = 0.3  # time constant of the exponential average of probabilities
    min_duration_s: float = 0.5  # a label must hold this long to open a segment
    threshold: float = 0.0  # below this smoothed score the label reads "uncertain"


@dataclass
class VideoResult:
    source: str
    label: str
    score: float
    probs: dict[str, float]
    segments: list[Segment]
    frame_count: int
    processed_frames: int
    duration_s: float
    processing_fps: float
    outputs: dict[str, str] = field(default_factory=dict)


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
    """Run the predictor over a whole video and write the requested outputs; return the summary."""
    out, smoothing = out or OutputPaths(), smoothing or Smoothing()
    names = predictor.class_names
    reader = VideoReader(source, fps=predictor.fps)
    info = reader.info
    timeline = Timeline(names, smoothing.smooth_s, smoothing.min_duration_s, smoothing.threshold)
    sinks: dict = {}
    try:
        if out.json:
            header = {
                "source": str(source), "checkpoint": checkpoint, "classes": names, "fps": reader.fps, "source_fps": info.fps,
                "smoothing": {"smooth_s": smoothing.smooth_s, "min_duration_s": smoothing.min_duration_s, "threshold": smoothing.threshold},
            }  # fmt: skip
            sinks["json"] = JsonTimeline(out.json, header, frames=frames_in_json)
        if out.csv:
            sinks["csv"] = CsvTimeline(out.csv, names)
        if out.video:
            sinks["video"] = VideoSink(out.video, info.fps, (info.width, info.height))
        plot_times: list[float] = []  # only kept for the plot: T x C floats, small even for an hour
        plot_probs: list[np.ndarray] = []
        plot_gates: dict[str, list[np.ndarray]] = {"update": [], "reset": []}

        predictor.reset()
        latest: Overlay | None = None
        frames_read, processed, t0 = 0, 0, time.perf_counter()
        total = info.frame_count if info.frame_count > 0 else None
        bar = tqdm(total=total, unit="frame", desc=Path(str(source)).name, disable=not progress, leave=False)
        for idx, frames, keep in prefetch(reader.batches(batch_size, every_frame="video" in sinks)):
            # boolean indexing copies the batch: only when some frames are decoded for the video alone
            kept = frames if keep.all() else frames[keep]
            preds: Predictions | None = predictor(kept) if len(kept) else None
            if out.plot and preds is not None and (gates := predictor.gate_activity()) is not None:
                for k in plot_gates:
                    plot_gates[k].append(gates[k])
            j = 0
            for i, frame, k in zip(idx, frames, keep):
                if k:
                    p = preds.probs[j]
                    t = i / info.fps
                    label, score = timeline.add(t, p)
                    if "json" in sinks:
                        sinks["json"].frame(i, t, label, score, _top(p, names, top_k))
                    if "csv" in sinks:
                        sinks["csv"].frame(i, t, label, score, p)
                    if out.plot:
                        plot_times.append(t)
                        plot_probs.append(p.astype(np.float32))
                    processed += 1
                    if "video" in sinks:  # drawn only when an annotated copy is written
                        elapsed = time.perf_counter() - t0
                        latest = Overlay(
                            label, score, _top(timeline.smoothed, names, 3),
                            preds.boxes[j] if preds.present[j] else None, preds.keypoints[j] if preds.present[j] else None,
                            fps=processed / elapsed if elapsed > 0 else None,
                        )  # fmt: skip
                    j += 1
                if "video" in sinks:
                    sinks["video"].write(draw(frame, latest) if latest is not None else frame)
            frames_read += len(idx)
            bar.update(len(idx))
        bar.close()
        elapsed = time.perf_counter() - t0
        duration = frames_read / info.fps
        segments = timeline.segments(end_s=duration)
        label, score = timeline.video_label()
        probs = {n: round(float(v), 4) for n, v in zip(names, timeline.video_probs())}
        result = VideoResult(str(source), label, score, probs, segments, frames_read, processed, duration, processed / max(elapsed, 1e-9))
        if "json" in sinks:
            sinks.pop("json").close(
                {
                    "frame_count": frames_read, "processed_frames": processed, "duration_s": round(duration, 4),
                    "video": {"label": label, "score": round(score, 4), "probs": probs},
                    "segments": [s.to_dict() for s in segments], "processing_fps": round(result.processing_fps, 2),
                }
            )  # fmt: skip
            result.outputs["json"] = str(out.json)
        if out.plot:
            title = f"{Path(str(source)).name}: {label} ({score:.0%})"
            gates = {k: np.concatenate(v) for k, v in plot_gates.items()} if plot_gates["update"] else None
            plot_timeline(out.plot, np.asarray(plot_times), np.stack(plot_probs), names, segments, title, gates)
            result.outputs["plot"] = str(out.plot)
        for name, path in (("csv", out.csv), ("video", out.video)):
            if path:
                result.outputs[name] = str(path)
        return result
    finally:
        for sink in sinks.values():  # close the CSV and video; a JSON still open here is unfinished: removed
            sink.abort() if isinstance(sink, JsonTimeline) else sink.close()


def analyse_many(
    sources: list[str], predictor: ActionPredictor, out_dir: Path | None, single: OutputPaths | None, **kwargs
) -> tuple[list[VideoResult], list[tuple[str, str]]]:
    """Each source in turn; a video that cannot be read is reported and skipped, never the end of the run.

    ``out_dir``: every output of every video, as ``<out_dir>/<stem>.{mp4,json,csv,png}``; ``single``:
    explicit paths, for one source. Returns the results and the ``(source, reason)`` failures.
    """
    results, failed = [], []
    stems: dict[str, int] = {}
    for src in tqdm(sources, desc="Videos", unit="video", disable=len(sources) < 2 or not kwargs.get("progress", True)):
        paths = single
        if out_dir is not None:
            stem = Path(str(src)).stem or "stream"
            stems[stem] = stems.get(stem, 0) + 1
            paths = OutputPaths.in_folder(out_dir, stem if stems[stem] == 1 else f"{stem}_{stems[stem]}")
        try:
            r = analyse_video(src, predictor, paths, **kwargs)
        except VideoError as e:
            if len(sources) == 1:
                raise
            failed.append((str(src), str(e)))
            continue
        results.append(r)
        line = f"{src}: {r.label} ({r.score:.2f}) | " + ", ".join(
            f"{s.start_s:.1f}-{s.end_s:.1f}s {s.label} {s.score:.2f}" for s in r.segments
        )
        tqdm.write(line)  # stdout, around the progress bars
    return results, failed
