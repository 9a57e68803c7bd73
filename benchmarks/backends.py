"""PyTorch vs ONNX Runtime vs OpenVINO, fp32 and INT8 exports: the same clips, the same CPU cores, one run.

    python benchmarks/backends.py [--checkpoint best.ckpt] [--root DIR] [--clips 5] [--rounds 3] [--live-seconds 20]

For each backend (``infer.py --backend``; ``*-int8``: the folder of ``infer.py --export --int8``, calibrated
on the checkpoint's training videos, or on ``--root``'s clips for the untrained one), on the same clips:
* file mode: frames per second of ``pipeline.inference.files.analyse_video`` as ``infer.py`` runs it (decode
  thread, batches of ``--batch-size``, tracking, GRU steps), without outputs written; the median of
  ``--rounds``, the backends taking turns (the speed of a shared machine drifts);
* live: the live loop (``pipeline.live.loop.run_live``) on the first clip replayed in real time and looped, for
  ``--live-seconds``: capture-to-display latency p50 / p95 and processed fps; and the predictor's own
  latency on one frame at a time (p50 / p95);
* the limit: the extractor alone at the same batch size and image size: its graph (every convolution)
  and its whole call (with candidates, NMS and pooling), ms per frame; and its graph on one frame at a time
  (live's batch), the floor under live latency.
Ratios are against torch. Without ``--checkpoint`` an untrained classifier with the default config's
extractor is used (speed does not depend on trained weights). Every backend gets ``--threads`` threads.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.inference_speed import untrained_checkpoint  # noqa: E402
from pipeline.data.features import letterbox  # noqa: E402
from pipeline.data.video import VideoReader, list_videos  # noqa: E402
from pipeline.inference.export import export  # noqa: E402
from pipeline.inference.files import analyse_video  # noqa: E402
from pipeline.inference.predictor import ActionPredictor  # noqa: E402
from pipeline.inference.quantize import export_int8  # noqa: E402
from pipeline.live.capture import LatestFrameCapture  # noqa: E402
from pipeline.live.loop import LiveOptions, run_live  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("torch", "onnxruntime", "openvino", "onnxruntime-int8", "openvino-int8")


def int8_instructions() -> str:
    """What this CPU offers INT8 convolutions (Linux ``/proc/cpuinfo``), and an ISA cap set for oneDNN
    (``ONEDNN_MAX_CPU_ISA=AVX2`` makes PyTorch and OpenVINO run as on a CPU without VNNI; ONNX Runtime ignores it)."""
    import os

    try:
        flags = set(next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")).split())
    except (OSError, StopIteration):
        return "unknown"
    have = [f for f in ("avx2", "avx512f", "avx_vnni", "avx512_vnni", "amx_int8") if f in flags]
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    return " ".join(have) + (f"; oneDNN capped at {cap}" if cap else "")


def per_call_ms(fn, repeats: int) -> np.ndarray:
    fn()  # warm-up (OpenVINO compiles for the shape)
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return np.array(out) * 1000


def graph_call(predictor: ActionPredictor, batch: np.ndarray):
    """The extractor's convolutions alone on ``batch``: PyTorch's layers, or the exported graph."""
    ex = predictor.extractor
    if hasattr(ex, "graph"):
        x = letterbox(batch, ex.config.imgsz)[0].numpy()
        return lambda: ex.graph(x)
    x = ex.preprocess(batch)[0]

    def run() -> None:
        with torch.inference_mode():
            ex._pass(x)

    return run


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="a train.py checkpoint (default: an untrained one, default config)")
    p.add_argument("--weights", default="yolo11n-pose.pt")
    p.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "weizmann"), help="a folder of class folders")
    p.add_argument("--clips", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--live-seconds", type=float, default=20.0)
    p.add_argument("--rounds", type=int, default=3, help="file-mode rounds, backends taking turns (median reported)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    p.add_argument("--out", default="runs/backends.json")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    videos = list_videos(a.root)
    step = max(len(videos) // a.clips, 1)
    clips = [str(v) for v in videos[::step][: a.clips]]
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as d:
        ckpt = a.checkpoint or untrained_checkpoint(Path(d) / "untrained.ckpt", a.weights)
        folder, folder8 = Path(d) / "exported", Path(d) / "exported-int8"
        t = time.perf_counter()
        export(ckpt, folder)
        export_s = time.perf_counter() - t
        if any(b.endswith("-int8") for b in a.backends):
            listed = bool(torch.load(ckpt, map_location="cpu", weights_only=True).get("train_videos"))
            int8 = export_int8(ckpt, folder8, calibrate=None if listed else [a.root], progress=False)["int8"]
            print(f"int8 export: {json.dumps({k: v for k, v in int8.items() if k != 'calibration'} | {'check': {k: v for k, v in int8['check'].items() if k != 'drawn_from'}})}", flush=True)
        frames = np.stack([f for _, (_, f) in zip(range(a.batch_size), VideoReader(clips[0]))])
        predictors = {
            b: ActionPredictor(ckpt if b == "torch" else folder8 if b.endswith("-int8") else folder, device="cpu", backend=b.removesuffix("-int8"))
            for b in a.backends
        }
        timings: dict[str, dict[str, list[float]]] = {b: {"file": [], "graph": [], "whole": []} for b in a.backends}
        for predictor in predictors.values():
            analyse_video(clips[0], predictor, None, progress=False)  # warm-up (and OpenVINO's compilation)
        # the machine's speed drifts (shared cores): backends take turns, each round, and the median is reported
        for _ in range(a.rounds):
            for backend, predictor in predictors.items():
                t, n = time.perf_counter(), 0
                for c in clips:
                    n += analyse_video(c, predictor, None, progress=False, batch_size=a.batch_size).processed_frames
                timings[backend]["file"].append(n / (time.perf_counter() - t))
                timings[backend]["graph"] += list(per_call_ms(graph_call(predictor, frames), 3) / len(frames))
                timings[backend]["whole"] += list(per_call_ms(lambda p=predictor: p.extractor(frames), 3) / len(frames))
        for backend, predictor in predictors.items():
            predictor.reset()
            one = per_call_ms(lambda it=iter(np.tile(frames, (8, 1, 1, 1))): predictor(next(it)[None]), 5 * a.batch_size)
            graph_one = per_call_ms(graph_call(predictor, frames[:1]), 3 * a.batch_size)
            capture = LatestFrameCapture(clips[0], realtime=True, loop=True)
            live = run_live(predictor, capture, LiveOptions(show=False, duration_s=a.live_seconds)).summary()
            tm = timings[backend]
            rows[backend] = {
                "file_fps": float(np.median(tm["file"])), "file_fps_rounds": tm["file"], "frames": n,
                "step_ms_p50": float(np.median(one)), "step_ms_p95": float(np.percentile(one, 95)),
                "live_ms_p50": live["latency_ms_p50"], "live_ms_p95": live["latency_ms_p95"], "live_fps": live["processed_fps"],
                "extractor_graph_ms": float(np.median(tm["graph"])), "extractor_ms": float(np.median(tm["whole"])),
                "graph_one_frame_ms": float(np.median(graph_one)),
            }  # fmt: skip
            print(f"{backend}: {json.dumps({k: np.round(v, 2).tolist() for k, v in rows[backend].items()})}", flush=True)
    cfg = predictor.config
    h, w = frames.shape[1:3]
    print(f"\n{len(clips)} clips of {a.root} ({w}x{h} first), {a.threads} threads; {Path(cfg.weights).name} imgsz {cfg.imgsz} "
          f"layers {list(cfg.layers)}; batch {a.batch_size}; export {export_s:.1f} s; CPU: {int8_instructions()}")  # fmt: skip
    print(f"{'backend':<16} {'file fps':>9} {'x torch':>8} {'live p50':>9} {'live p95':>9} {'live fps':>9} "
          f"{'1-frame p50':>12} {'p95':>6} {'graph ms/f':>11} {'extractor ms/f':>15} {'x torch':>8} {'graph, 1 frame':>15}")  # fmt: skip
    base = rows.get("torch")
    for b, r in rows.items():
        speed = r["file_fps"] / base["file_fps"] if base else float("nan")
        ext = base["extractor_ms"] / r["extractor_ms"] if base else float("nan")
        print(f"{b:<16} {r['file_fps']:>9.1f} {speed:>7.2f}x {r['live_ms_p50']:>9.1f} {r['live_ms_p95']:>9.1f} {r['live_fps']:>9.1f} "
              f"{r['step_ms_p50']:>12.1f} {r['step_ms_p95']:>6.1f} {r['extractor_graph_ms']:>11.2f} {r['extractor_ms']:>15.2f} {ext:>7.2f}x {r['graph_one_frame_ms']:>15.2f}")  # fmt: skip
    for b, r in rows.items():
        print(f"{b}: file mode runs at {1000 / r['file_fps']:.2f} ms/frame, the extractor alone {r['extractor_ms']:.2f} "
              f"({r['extractor_graph_ms']:.2f} of it in the graph)")  # fmt: skip
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"clips": clips, "cpu": int8_instructions(), "threads": a.threads, "batch_size": a.batch_size, "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
