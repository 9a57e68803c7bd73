"""What happens in this video, and when? Stream videos through the YOLO extractor and the GRU.

    python infer.py VIDEO [VIDEO|FOLDER|GLOB|URL ...] --checkpoint best.ckpt [--output DIR]
                    [--save-video out.mp4] [--json out.json] [--csv out.csv] [--plot out.png]
    python infer.py --source 0 --checkpoint best.ckpt [--no-show] [--save-video out.mp4] [--serve 127.0.0.1:8080]
    python infer.py --export DIR --checkpoint best.ckpt          (ONNX, and OpenVINO IR when installed)
    python infer.py --export DIR --checkpoint best.ckpt --int8   (and an INT8 extractor, calibrated on the training videos)
    python infer.py VIDEO --checkpoint DIR|best.ckpt --backend onnxruntime|openvino

Labels every person in view (tracked, one GRU state each) and prints each video's main subject's action
with its score and segments, and every person's action. ``--output DIR`` writes every
output of every video as ``DIR/<name>.{mp4,json,csv,png}``; the single-file options are for one video.
Live mode (a camera index, ``--live``, ``--realtime`` or ``--serve``) shows the newest frame with its label
in a window; keys: q/Esc quit, r reset the GRU, space pause, s snapshot. The checkpoint alone sets the
features (weights, image size, layers, fps). See README.md, "Inference" and "Live demo".
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.options import BACKENDS, MAX_PEOPLE, TRACKERS, OptionError, check_range  # light: --help answers at once

if TYPE_CHECKING:
    from pipeline.inference.predictor import ActionPredictor
    from pipeline.inference.workers import PredictorSpec


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, as every other error of the tool
        self.exit(2, f"error: {message} (see --help)\n")


# option: (lowest, highest, whether the lowest is excluded); None: no bound
RANGES = {
    "top_k": (1, None, False), "smooth": (0, None, False), "min_segment": (0, None, False), "threshold": (0, 1, False),
    "max_people": (1, None, False), "lost_time": (0, None, False), "display_threshold": (0, 1, False),
    "display_smooth": (0, None, False), "reset_after": (0, None, False), "duration": (0, None, True), "batch_size": (1, 4096, False),
    "workers": (1, 256, False), "threads": (1, 1024, False), "imgsz": (32, 4096, False), "max_imgsz": (0, 4096, False),
    "num_nodes": (1, None, False), "calibration_frames": (8, 100_000, False),
}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="*", help="video files, folders, globs, or OpenCV URLs (rtsp://, http://)")
    p.add_argument("--source", action="append", default=[], help="another source (same as a positional one)")
    p.add_argument("-c", "--checkpoint", required=True, help="a checkpoint written by train.py, or a folder written by --export")
    out = p.add_argument_group("outputs")
    out.add_argument("-o", "--output", type=Path, help="folder for all outputs of every video")
    out.add_argument("--save-video", type=Path, help="annotated video (.mp4 or .avi), same frames and fps as the source")
    out.add_argument("--json", type=Path, help="timeline JSON (schema in pipeline/inference/outputs.py)")
    out.add_argument("--csv", type=Path, help="per-frame probabilities as CSV")
    out.add_argument("--plot", type=Path, help="timeline plot (PNG): probabilities over time, segments shaded")
    out.add_argument("--no-frames", action="store_true", help="JSON without the per-frame list (summary and segments only)")
    out.add_argument("--top-k", type=int, default=3, help="classes per frame in the JSON (default 3)")
    sm = p.add_argument_group("labels")
    sm.add_argument("--smooth", type=float, default=0.3, help="time constant (s) of the probability smoothing (default 0.3, as the rejection was calibrated)")
    sm.add_argument("--min-segment", type=float, default=0.5, help="seconds a label must hold to open a segment (default 0.5)")
    sm.add_argument("--threshold", type=float,
                    help="smoothed scores below this read 'unknown', instead of the checkpoint's calibrated rules (default: those: motion unlike "
                         "the training videos, and the top-probability threshold when it has one; 0: no rejection)")
    ppl = p.add_argument_group("people")
    ppl.add_argument("--max-people", type=int, default=MAX_PEOPLE,
                     help=f"people labelled per frame, the highest-scoring (default {MAX_PEOPLE}); 1: one subject, one label per video")
    ppl.add_argument("--tracker", choices=TRACKERS, default="bytetrack", help="bytetrack (default) or botsort (camera-motion compensation, slower)")
    ppl.add_argument("--lost-time", type=float, default=1.0, help="seconds a person may be out of view before their track and state are dropped (default 1)")
    live = p.add_argument_group("live (a camera index such as 0, --live, --realtime or --serve)")
    live.add_argument("--live", action="store_true", help="treat the source (e.g. an RTSP URL) as live: newest frame only, window")
    live.add_argument("--realtime", action="store_true", help="replay a video file at its own frame rate, as a stand-in camera")
    live.add_argument("--loop", action="store_true", help="with --realtime: start the file again at its end")
    live.add_argument("--no-show", action="store_true", help="no window (headless)")
    live.add_argument("--serve", metavar="HOST:PORT", help="serve the annotated stream as MJPEG with a page, e.g. 127.0.0.1:8080")
    live.add_argument("--display-threshold", type=float, help="smoothed score below this shows 'unknown', instead of the checkpoint's rules (default: those, as --threshold)")
    live.add_argument("--display-smooth", type=float, default=0.5, help="time constant (s) of the display smoothing (default 0.5)")
    live.add_argument("--reset-after", type=float, default=2.0, help="seconds with nobody in view before the GRU resets (default 2)")
    live.add_argument("--duration", type=float, help="stop after this many seconds")
    live.add_argument("--stats", type=Path, help="write the run's figures (fps, dropped frames, latency) as JSON here")
    run = p.add_argument_group("runtime")
    run.add_argument("--backend", choices=BACKENDS, default="auto",
                     help="torch (a checkpoint), onnxruntime or openvino (an exported folder, or a checkpoint exported beside it "
                          "as NAME.export/ on first use); auto: torch for a checkpoint, onnxruntime for a folder")
    run.add_argument("--export", type=Path, metavar="DIR", help="write the checkpoint's models to DIR as ONNX (and OpenVINO IR) and stop")
    run.add_argument("--int8", action="store_true",
                     help="with --export: an INT8 extractor too, calibrated on the checkpoint's training videos (or --calibrate); "
                          "about twice as fast on a CPU with VNNI/AMX, README 'Export and faster runtimes'")
    run.add_argument("--calibrate", nargs="+", metavar="VIDEO",
                     help="with --int8: videos, folders or lists to calibrate on instead of the training videos (clips like those to label)")
    run.add_argument("--calibration-frames", type=int, help="with --int8: frames sampled to calibrate on (default 300)")
    run.add_argument("--device", default="auto", help="auto (CUDA when there is one), cpu, cuda, cuda:1, ...")
    run.add_argument("--no-half", action="store_true", help="keep the extractor in fp32 on CUDA")
    run.add_argument("--batch-size", type=int, default=16, help="frames per extractor forward (default 16)")
    run.add_argument("--imgsz", type=int, help="the pose model's input long side (default: the checkpoint's); with a cap, the smallest")
    run.add_argument("--max-imgsz", type=int,
                     help="each source at its own long side up to this (default: the checkpoint's; 0: every source at --imgsz)")
    run.add_argument("--threads", type=int,
                     help="torch's CPU threads (default: torch's own, one per core; beside the decoding thread that measured fastest, "
                          "README 'Inference on video files')")
    run.add_argument("--workers", type=int,
                     help="processes labelling videos at once, each with its own model and decoder (default 1 on a CPU; on a GPU one per "
                          "two CPU cores up to 8, see README 'On a GPU')")
    run.add_argument("--weights", help="path of the checkpoint's weights file if it moved (its sha256 must match)")
    arc = p.add_argument_group("archive (a resumable job over many videos, spread by Lightning; README 'Label a whole archive')")
    arc.add_argument("--trainer.devices", dest="devices", help="processes (CPU) or GPUs per machine: N, or auto; labels into --output with its index.jsonl")
    arc.add_argument("--trainer.num_nodes", dest="num_nodes", type=int, help="machines (launched by torchrun or SLURM; default 1)")
    arc.add_argument("--trainer.strategy", dest="strategy", help="Lightning's strategy (default: ddp for more than one process, else auto)")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    a = p.parse_args(argv)
    for name, (low, high, above) in RANGES.items():
        try:
            check_range(f"--{name.replace('_', '-')}", getattr(a, name), low, high, above=above)
        except OptionError as e:
            p.error(str(e))
    if a.serve:
        host, _, port = a.serve.rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            p.error(f"--serve takes HOST:PORT with a port from 1 to 65535, got '{a.serve}'")
    a.sources = a.sources + a.source
    a.archive = a.devices is not None or a.num_nodes is not None
    if a.devices is not None and a.devices != "auto" and not (a.devices.isdigit() and int(a.devices) >= 1):
        p.error(f"--trainer.devices takes a number of processes or GPUs (1 or more) or auto, got '{a.devices}'")
    if a.archive and (a.output is None or a.workers or a.save_video or a.json or a.csv or a.plot):
        p.error("--trainer.devices / --trainer.num_nodes label an archive into --output DIR (every output of every video, and "
                "index.jsonl): give --output, and neither --workers nor --save-video/--json/--csv/--plot")
    if a.export and a.sources:
        p.error("--export writes the models and stops: give no videos")
    if (a.calibrate or a.calibration_frames) and not a.int8 or a.int8 and not a.export:
        p.error("--int8 goes with --export DIR, and --calibrate / --calibration-frames with --int8")
    if not a.sources and not a.export:
        p.error("give at least one video, folder, glob or URL")
    return a


def _spec(a: argparse.Namespace) -> PredictorSpec:
    from pipeline.inference.workers import PredictorSpec

    return PredictorSpec(a.checkpoint, a.device, not a.no_half, a.weights, a.max_people, a.backend, a.tracker, a.lost_time, a.imgsz, a.max_imgsz)


def _predictor(a: argparse.Namespace) -> ActionPredictor:
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    return _spec(a).build()


def _stop(*_) -> None:
    raise KeyboardInterrupt  # a service manager's SIGTERM ends the demo as cleanly as Ctrl-C


def live_main(a: argparse.Namespace) -> int:
    from pipeline.data.video import VideoError
    from pipeline.inference.outputs import OutputError, check_writable
    from pipeline.live.capture import LatestFrameCapture
    from pipeline.live.loop import LiveOptions, check_display, run_live

    if len(a.sources) != 1:
        raise VideoError(f"live mode takes one source, got {len(a.sources)}")
    if a.output or a.json or a.csv or a.plot:
        raise OutputError("live mode writes --save-video and --stats; --output/--json/--csv/--plot are for video files")
    if not a.no_show:
        check_display()
    predictor = _predictor(a)
    capture = LatestFrameCapture(a.sources[0], realtime=a.realtime, loop=a.loop)
    opts = LiveOptions(
        show=not a.no_show, save_video=a.save_video, serve=a.serve, smooth_s=a.display_smooth,
        threshold=predictor.rejection_threshold if a.display_threshold is None else a.display_threshold,
        max_novelty=1.0 if a.display_threshold is None else None,  # a threshold of one's own replaces the checkpoint's rules
        reset_after_s=a.reset_after, duration_s=a.duration,
    )  # fmt: skip
    signal.signal(signal.SIGTERM, _stop)
    stats = run_live(predictor, capture, opts).summary()
    print(" | ".join(f"{k} {v}" for k, v in stats.items()))
    if a.stats:
        check_writable(a.stats).write_text(json.dumps(stats, indent=2))
    if a.save_video:
        print(f"  video: {a.save_video}")
    return 0


def export_main(a: argparse.Namespace) -> int:
    from pipeline.inference.export import export
    from pipeline.inference.quantize import FRAMES, export_int8

    if a.int8:
        m = export_int8(a.checkpoint, a.export, a.weights, a.calibrate, a.calibration_frames or FRAMES, progress=not a.quiet)
    else:
        m = export(a.checkpoint, a.export, a.weights)
    ir = " and OpenVINO IR (.xml/.bin)" if m["openvino"] else "; no OpenVINO IR: pip install -e \".[openvino]\" to add it"
    print(f"exported: {a.export} ({', '.join(g + '.onnx' for g in m['graphs'])}, export.json{ir}) in {m['seconds']:.1f} s")
    if a.int8:
        c, k = m["int8"]["calibration"], m["int8"]["check"]
        print(f"  int8 extractor: calibrated on {c['frames']} frames of {c['videos']} videos ({c['source']}); on {k['frames']} held-out "
              f"frames it finds {k['people_found']:.0%} of fp32's people, feature cosine median {k['feature_cosine_median']:.3f}, "
              f"keypoints {k['keypoint_px_median']:.1f} px apart (median)")
    print(f"  run it: python infer.py VIDEO -c {a.export} --backend onnxruntime|openvino")
    return 0


def _smoothing(a: argparse.Namespace, predictor: ActionPredictor):
    from pipeline.inference.files import Smoothing

    return Smoothing(
        a.smooth, a.min_segment, predictor.rejection_threshold if a.threshold is None else a.threshold, predictor.background,
        1.0 if a.threshold is None else None,  # a threshold of one's own replaces the checkpoint's rules
    )  # fmt: skip


def archive_main(a: argparse.Namespace, sources: list[str]) -> int:
    """Label every video once over Lightning's processes into --output and its index; a rerun resumes."""
    from functools import partial

    from pipeline.cli import leave_process_group
    from pipeline.inference.archive import label_archive
    from pipeline.inference.files import plan_outputs

    many = a.devices not in (None, "1") or (a.num_nodes or 1) > 1
    accelerator = "cpu" if a.device == "cpu" else "gpu" if a.device.startswith("cuda") else "auto"
    trainer = {"accelerator": accelerator, "devices": a.devices or "auto", "num_nodes": a.num_nodes or 1, "strategy": a.strategy or ("ddp" if many else "auto")}
    signal.signal(signal.SIGTERM, _stop)
    summary = label_archive(
        plan_outputs(sources, a.output, None), a.output, _spec(a), trainer, threads=a.threads, progress=not a.quiet,
        smoothing=partial(_smoothing, a), batch_size=a.batch_size, top_k=a.top_k, frames_in_json=not a.no_frames, checkpoint=a.checkpoint,
    )  # fmt: skip
    leave_process_group()
    if summary is None:  # another rank: rank 0 reports
        return 0
    print(summary.line())
    if summary.failed:
        print(f"failed: {len(summary.failed)} of {len(sources)} videos (rows with their error in the index)", file=sys.stderr)
        for src, why in summary.failed:
            print(f"  {why}" if why.startswith(src) else f"  {src}: {why}", file=sys.stderr)
    return 0 if summary.done or summary.skipped else 1


def main(argv: list[str] | argparse.Namespace | None = None) -> int:
    from pipeline.data.video import check_sources, expand_sources
    from pipeline.inference.outputs import OutputError
    from pipeline.model.checkpoint import check_exists

    a = argv if isinstance(argv, argparse.Namespace) else parse_args(argv)
    check_exists(a.checkpoint)  # every mode: a wrong checkpoint is said before torch loads
    if a.export:
        return export_main(a)
    if a.live or a.realtime or a.serve or any(str(s).isdigit() for s in a.sources):
        return live_main(a)
    sources = expand_sources(a.sources, a.output)  # not the annotated videos of an earlier run into a folder inside
    if a.archive:
        return archive_main(a, sources)
    if len(sources) > 1 and any((a.save_video, a.json, a.csv, a.plot)):
        raise OutputError(f"{len(sources)} videos: use --output DIR instead of --save-video/--json/--csv/--plot")
    check_sources(sources)  # before the model loads (seconds): a wrong name or a file no decoder opens is said at once
    from pipeline.inference.files import OutputPaths, analyse_many  # torch, Ultralytics and Lightning: seconds
    from pipeline.inference.workers import analyse_parallel, default_workers

    single = OutputPaths(a.save_video, a.json, a.csv, a.plot)
    signal.signal(signal.SIGTERM, _stop)  # a killed batch says what it finished and keeps no partial file
    predictor = _predictor(a)
    device = predictor.device.type
    workers = a.workers or default_workers(device, len(sources))
    kwargs = dict(
        smoothing=_smoothing(a, predictor),
        batch_size=a.batch_size, top_k=a.top_k, frames_in_json=not a.no_frames, checkpoint=a.checkpoint,
    )  # fmt: skip
    if workers > 1 and len(sources) > 1:
        del predictor  # each worker builds its own
        results, failed = analyse_parallel(sources, _spec(a), workers, a.output, single, progress=not a.quiet, threads=a.threads, **kwargs)
    else:
        results, failed = analyse_many(sources, predictor, a.output, single, progress=not a.quiet, **kwargs)
    for r in results:
        for kind, path in r.outputs.items():
            print(f"  {kind}: {path}" + (f" ({r.video_codec})" if kind == "video" else ""))
    if failed:
        print(f"failed: {len(failed)} of {len(sources)} videos", file=sys.stderr)
        for src, why in failed:
            print(f"  {why}" if why.startswith(src) else f"  {src}: {why}", file=sys.stderr)
    return 0 if results else 1


if __name__ == "__main__":
    args = parse_args()  # usage errors and --help before torch and the models load (seconds)
    from pipeline.errors import run_cli

    run_cli(lambda: sys.exit(main(args)))
