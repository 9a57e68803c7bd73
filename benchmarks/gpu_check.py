"""The GPU check: both stages on CUDA, correct and measured, in one go (``bash benchmarks/gpu_check.sh``).

    python benchmarks/gpu_check.py [--shared ../shared] [--checkpoint best.ckpt] [--out runs/gpu_check.json]
                                   [--tiny] [--steps env,tests,forward,file,profile,stream,train,onnx,labels]

Steps, each timed and written to one JSON (a step that fails is recorded with its error; the rest still run):

* ``env``: GPU, driver, torch, onnxruntime's providers, CPU cores.
* ``tests``: the tests marked ``cuda`` (``pytest -m cuda``; they skip without CUDA).
* ``forward``: the extractor alone (letterbox on the device, the pose pass, NMS, pooling) on real frames at
  640x480, imgsz 640, layers 16/19/22 pooled per person: frames/s at batch 1, 32, 64, 128, fp16 and fp32.
* ``file``: ``infer.py``'s file mode end to end over many 640x480 videos (decode included, labels only):
  frames/s and labels/s with 1, 4 and 8 worker processes at batch 64 (and 8 at batch 16), GPU utilisation
  and memory (nvidia-smi) while it runs, and the ratio to the forward alone at the same batch.
* ``profile``: one process's file mode taken apart: decoding alone (with and without page-locked batches)
  and ``analyse_video`` under cProfile, its costliest calls.
* ``stream``: per-frame latency of one frame at a time (extractor, tracker, GRU; what live mode runs) with
  1, 10 and 50 people in view: grids of Weizmann people (180x144 tiles) at an imgsz that does not shrink them.
* ``train``: ``train.py fit`` on Weizmann fold 0 for one epoch on the GPU, twice: extraction into the cache
  and the epoch, then the epoch alone from the cached features.
* ``onnx``: the exported extractor on ONNX Runtime (CUDA / TensorRT providers where this onnxruntime has
  them, else its CPU) against PyTorch, frames/s at batch 32.
* ``labels``: the video labels of the Weizmann test clips (fold 0's held-out actor) on the CPU, on CUDA
  fp32 and on CUDA fp16, with ``--checkpoint`` (default: the one-epoch checkpoint of ``train``).

Without CUDA (``--tiny`` is then implied) the same steps run on the CPU with a random-init model and tiny
sizes, so that CI keeps the script working; their figures mean nothing and the table says so.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import os
import platform
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.inference_speed import untrained_checkpoint  # noqa: E402
from pipeline.data.composite import read_frames  # noqa: E402
from pipeline.data.features import ExtractorConfig, FeatureExtractor  # noqa: E402

STEPS = ("env", "tests", "forward", "file", "profile", "stream", "train", "onnx", "labels")
TINY_MODEL = "yolo11n-pose.yaml"
IN_PLACE = ("bend", "jack", "pjump", "wave1", "wave2")


class Check:
    """Shared state of one run: options, the device, a scratch folder, and the results so far."""

    def __init__(self, a: argparse.Namespace, tmp: Path):
        self.a = a
        self.tmp = tmp
        self.cuda = torch.cuda.is_available() and not a.cpu
        self.tiny = a.tiny or not self.cuda
        self.device = "cuda" if self.cuda else "cpu"
        self.shared = Path(a.shared)
        self.weizmann = self.shared / "data" / "weizmann"
        self.weights = str(self.shared / "weights" / "yolo11n-pose.pt")
        if self.tiny:  # a random-init model whose person score is raised, so that it sees people to track and label
            from tests.conftest import seeing_weights

            self.weights = str(seeing_weights(tmp / "tiny-person.pt"))
        self.results: dict = {"date": time.strftime("%Y-%m-%d"), "tiny": self.tiny, "device": self.device, "steps": {}}
        self.trained: Path | None = Path(a.checkpoint) if a.checkpoint else None

    def videos640(self) -> list[Path]:
        """The file mode's videos, made once (``make_videos``)."""
        if not hasattr(self, "_videos"):
            self._videos = make_videos(self, self.tmp / "videos640", 1 if self.tiny else 2)
        return self._videos

    def clips(self, n: int | None = None) -> list[Path]:
        """Weizmann clips, one per class and actor in turn; in tiny mode synthetic ones."""
        if self.tiny:
            from tests.conftest import make_dataset

            root = make_dataset(self.tmp / "toy", frames=12)
            return sorted(root.rglob("*.avi"))[:n]
        by = sorted(self.weizmann.rglob("*.avi"), key=lambda p: (p.stem.split("_")[0], p.parent.name))
        return by[:n]


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed_rate(fn, items: int, min_s: float, warmup: int = 3, max_iters: int = 1000) -> float:
    """Items per second of ``fn()`` (each call does ``items``), timed over at least ``min_s`` after warm-up."""
    for _ in range(warmup):
        fn()
    sync()
    n, t0 = 0, time.perf_counter()
    while n < max_iters and (n < 3 or time.perf_counter() - t0 < min_s):
        fn()
        n += 1
    sync()
    return n * items / (time.perf_counter() - t0)


def frames_640(check: Check, n: int) -> np.ndarray:
    """``n`` real frames at 640x480 (Weizmann people, enlarged), uint8 BGR; tiny mode: 64x48."""
    size = (64, 48) if check.tiny else (640, 480)
    clips = [read_frames(c) for c in check.clips(10)]
    frames = np.concatenate(clips)[:: max(1, sum(map(len, clips)) // n)][:n]
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_LINEAR) for f in frames])


class GpuSampler:
    """nvidia-smi's GPU utilisation and memory in use, sampled every 100 ms while the block runs."""

    def __init__(self):
        self.util: list[float] = []
        self.mem: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                                     capture_output=True, text=True, timeout=5).stdout  # fmt: skip
                u, m = (float(x) for x in out.strip().split(","))
                self.util.append(u)
                self.mem.append(m)
            except (OSError, ValueError, subprocess.SubprocessError):
                return
            self._stop.wait(0.1)

    def __enter__(self) -> GpuSampler:
        if shutil.which("nvidia-smi"):
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def summary(self) -> dict:
        if not self.util:
            return {"gpu_util_mean_pct": None, "gpu_mem_max_mib": None}
        return {"gpu_util_mean_pct": round(float(np.mean(self.util)), 1), "gpu_mem_max_mib": round(max(self.mem))}


# ---------------------------------------------------------------- steps


def step_env(check: Check) -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda, "cpu_cores": os.cpu_count()}
    if check.cuda:
        p = torch.cuda.get_device_properties(0)
        out |= {"gpu": torch.cuda.get_device_name(0), "gpu_memory_gib": round(p.total_memory / 2**30, 1), "sms": p.multi_processor_count}
        try:
            out["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
        except OSError:
            pass
    try:
        import onnxruntime as ort

        out["onnxruntime"], out["ort_providers"] = ort.__version__, ort.get_available_providers()
    except ImportError:
        out["onnxruntime"] = None
    import ultralytics

    out["ultralytics"] = ultralytics.__version__
    print(f"onnxruntime providers: {out.get('ort_providers')}", flush=True)
    return out


def step_tests(check: Check) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "tests/test_cuda.py"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    Path(check.a.out).with_suffix(".tests.log").write_text(r.stdout + r.stderr)  # the whole report, beside the JSON
    tail = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-300:]
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors)", tail)}
    print(r.stdout[-1500:], flush=True)
    if r.returncode not in (0, 5):
        print(r.stderr[-3000:], flush=True)
    return {"returncode": r.returncode, "summary": tail, **counts, "ok": r.returncode == 0 and not counts.get("failed")}


def step_forward(check: Check) -> dict:
    imgsz = 64 if check.tiny else 640
    batches = (1, 4) if check.tiny else (1, 32, 64, 128)
    # (precision, CUDA graphs, batches): the default (fp16, graphs) at every batch, then what each changes
    runs = [("fp32", True, batches)] if not check.cuda else [("fp16", True, batches), ("fp16", False, (1, 64)), ("fp32", True, batches)]
    frames = torch.from_numpy(frames_640(check, max(batches))).to(check.device)
    extractor = FeatureExtractor(ExtractorConfig(weights=check.weights, imgsz=imgsz, layers=(16, 19, 22)))
    rows = []
    for prec, graphs, sizes in runs:
        extractor.place(check.device, half=prec == "fp16")
        extractor.cuda_graphs = graphs
        for b in sizes:
            if check.cuda:
                torch.cuda.reset_peak_memory_stats()
            x = frames[:b]
            fps = timed_rate(lambda: extractor(x), b, 0.3 if check.tiny else 1.0)
            people = len(extractor(x).frame) / b
            peak = torch.cuda.max_memory_allocated() / 2**20 if check.cuda else None
            row = {"precision": prec, "cuda_graphs": graphs and check.cuda, "batch": b, "fps": round(fps, 1), "ms_per_batch": round(1000 * b / fps, 2),
                   "people_per_frame": round(people, 2), "peak_mem_mib": peak and round(peak)}  # fmt: skip
            rows.append(row)
            print(f"forward {prec}{' graphs' if row['cuda_graphs'] else ''} batch {b:3d}: {fps:9.1f} frames/s ({people:.1f} people/frame)", flush=True)
    return {"imgsz": imgsz, "frame": "640x480" if not check.tiny else "64x48", "rows": rows}


def make_videos(check: Check, folder: Path, copies: int) -> list[Path]:
    """Every Weizmann clip enlarged to 640x480 (MPEG-4 part 2 .mp4), ``copies`` times (the copies mirrored
    or flipped, so no two are the same); tiny mode: a few small AVIs."""
    folder.mkdir(parents=True, exist_ok=True)
    clips = check.clips(6 if check.tiny else None)
    size, fourcc, ext = ((64, 48), "MJPG", ".avi") if check.tiny else ((640, 480), "mp4v", ".mp4")
    jobs = [(c, k) for k in range(copies) for c in clips]

    def write(job) -> Path:
        clip, k = job
        path = folder / f"{clip.stem}_{k}{ext}"
        frames = read_frames(clip)
        out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25.0, size)
        for f in frames:
            f = cv2.resize(f, size)
            out.write(f if k == 0 else cv2.flip(f, 1))
        out.release()
        return path

    with ThreadPoolExecutor(max(1, (os.cpu_count() or 2) - 1)) as pool:
        return list(pool.map(write, jobs))


def step_file(check: Check) -> dict:
    from pipeline.inference.files import Smoothing
    from pipeline.inference.workers import PredictorSpec, RunStats, analyse_parallel

    t0 = time.perf_counter()
    videos = check.videos640()
    made_s = time.perf_counter() - t0
    imgsz = 64 if check.tiny else 640
    ckpt = untrained_checkpoint(check.tmp / "file.ckpt", check.weights, imgsz=imgsz)
    spec = PredictorSpec(str(ckpt), check.device)
    runs = ((1, 4), (2, 4)) if check.tiny else ((1, 64), (4, 64), (8, 64))
    rows = []
    for workers, batch in runs:
        subset = videos if workers > 1 else videos[: max(2, len(videos) // 6)]  # one process: a sixth is enough to time it
        stats = RunStats()
        with GpuSampler() as gpu:
            results, failed = analyse_parallel([str(v) for v in subset], spec, workers, None, None, progress=False, echo=False, stats=stats,
                                               smoothing=Smoothing(), batch_size=batch)  # fmt: skip
        labels = sum(t.frames for r in results for t in r.tracks)
        steady = stats.seconds - stats.ready_s
        row = {"workers": workers, "batch": batch, "videos": len(subset), "failed": len(failed), "frames": stats.frames,
               "fps": round(stats.fps, 1), "labels_per_s": round(labels / max(steady, 1e-9), 1), "wall_s": round(stats.seconds, 1),
               "start_s": round(stats.ready_s, 1), "fps_with_start": round(stats.frames / stats.seconds, 1), **gpu.summary()}  # fmt: skip
        forward = next((f["fps"] for f in check.results["steps"].get("forward", {}).get("rows", [])
                        if f["batch"] == batch and f["cuda_graphs"] == check.cuda and f["precision"] == ("fp16" if check.cuda else "fp32")), None)  # fmt: skip
        row["forward_over_file"] = forward and round(forward / max(row["fps"], 1e-9), 2)  # the target: within 1.5
        rows.append(row)
        print(f"file mode, {workers} worker(s), batch {batch}: {row['fps']:8.1f} frames/s, {row['labels_per_s']:8.1f} labels/s "
              f"({len(subset)} videos, {stats.frames} frames, workers ready after {stats.ready_s:.1f} s; GPU {row['gpu_util_mean_pct']}%)", flush=True)  # fmt: skip
    return {"imgsz": imgsz, "videos_made_s": round(made_s, 1), "video": "640x480 mp4v" if not check.tiny else "64x48 MJPG", "rows": rows}


def profiled(work: Callable[[], object], sort: str = "cumulative", top: int = 30) -> list[str]:
    """Run ``work`` under cProfile: its ``top`` costliest calls by ``sort``, one line each."""
    prof = cProfile.Profile()
    prof.enable()
    work()
    prof.disable()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats(sort).print_stats(top)
    return [ln.strip() for ln in text.getvalue().splitlines() if re.match(r"\s*\d", ln)][:top]


def step_profile(check: Check) -> dict:
    """Where one process's file-mode time goes: decoding alone (with and without page-locked batches) and
    ``analyse_video`` under cProfile, its costliest calls, on a tenth of the file mode's videos."""
    from pipeline.data.video import VideoReader
    from pipeline.inference.files import analyse_video
    from pipeline.inference.predictor import ActionPredictor

    videos = check.videos640()[: max(2, len(check.videos640()) // 10)]
    out: dict = {"videos": len(videos)}
    for pin in (False, True) if check.cuda else (False,):
        n, t0 = 0, time.perf_counter()
        for v in videos:
            n += sum(len(i) for i, _, _ in VideoReader(str(v)).batches(64, pin=pin))
        out[f"decode_fps{'_pinned' if pin else ''}"] = round(n / (time.perf_counter() - t0), 1)
    predictor = ActionPredictor(untrained_checkpoint(check.tmp / "profile.ckpt", check.weights, imgsz=64 if check.tiny else 640), device=check.device)
    analyse_video(str(videos[0]), predictor, progress=False, batch_size=64)  # warm-up
    t0, n = time.perf_counter(), []
    out["top"] = profiled(lambda: n.extend(analyse_video(str(v), predictor, progress=False, batch_size=64).processed_frames for v in videos))
    out["file_fps_one_process"] = round(sum(n) / (time.perf_counter() - t0), 1)
    print(f"decode alone {out.get('decode_fps')} frames/s (pinned {out.get('decode_fps_pinned')}); file mode in this process "
          f"{out['file_fps_one_process']} frames/s; costliest calls (cumulative s):", flush=True)  # fmt: skip
    print("\n".join(out["top"][:25]), flush=True)
    return out


def grid(tiles: list[np.ndarray], cols: int) -> np.ndarray:
    """Clips (T, h, w, 3) laid out ``cols`` to a row, as one clip; empty cells black."""
    n, rows = min(len(t) for t in tiles), math.ceil(len(tiles) / cols)
    cells = [t[:n] for t in tiles] + [np.zeros_like(tiles[0][:n])] * (rows * cols - len(tiles))
    return np.concatenate([np.concatenate(cells[r * cols : (r + 1) * cols], 2) for r in range(rows)], 1)


def step_stream(check: Check) -> dict:
    from pipeline.inference.predictor import ActionPredictor

    # (people, columns, where the recurrent step runs, CUDA graphs): the default at 1, 10 and 50 people, then
    # 10 people with the step on the GPU and without graphs, the two choices the default makes
    variants = [(1, 1, "auto", True), (3, 3, "auto", True)] if check.tiny else [
        (1, 1, "auto", True), (10, 5, "auto", True), (50, 10, "auto", True), (10, 5, "cuda", True), (10, 5, "auto", False)]  # fmt: skip
    pool = [c for c in check.clips() if check.tiny or c.parent.name in IN_PLACE]
    tiles = [read_frames(c, max_frames=60) for c in pool]
    rows, out = [], {}
    for people, cols, step_device, graphs in variants:
        clip = grid([tiles[i % len(tiles)] for i in range(people)], cols)
        imgsz = math.ceil(max(clip.shape[1:3]) / 32) * 32
        ckpt = untrained_checkpoint(check.tmp / f"stream{people}.ckpt", check.weights, imgsz=imgsz)
        predictor = ActionPredictor(ckpt, device=check.device, max_people=max(16, 2 * people), step_device=step_device)
        predictor.extractor.cuda_graphs = graphs
        predictor.reset(25.0)
        lat, seen = [], []
        for f in np.concatenate([clip, clip])[: 30 if check.tiny else 120]:
            t0 = time.perf_counter()
            p = predictor(f[None])  # returns host arrays: the GPU's work is done
            lat.append(1000 * (time.perf_counter() - t0))
            seen.append(len(p.track))
        lat = np.asarray(lat[10:])
        if people == variants[1][0] and step_device == "auto" and graphs and "top" not in out:  # where a default frame's time goes
            out["top"] = profiled(lambda: [predictor(f[None]) for f in clip[:60]], "tottime", 20)
        row = {"people": people, "frame": f"{clip.shape[2]}x{clip.shape[1]}", "imgsz": imgsz, "step_on": predictor.step_device.type,
               "cuda_graphs": graphs and check.cuda, "tracked_per_frame": round(float(np.mean(seen[10:])), 1),
               "p50_ms": round(float(np.percentile(lat, 50)), 2), "p95_ms": round(float(np.percentile(lat, 95)), 2)}  # fmt: skip
        rows.append(row)
        print(f"streaming, {people} people ({row['frame']}, imgsz {imgsz}, {row['tracked_per_frame']} tracked; step on {row['step_on']}, "
              f"graphs {row['cuda_graphs']}): p50 {row['p50_ms']} ms, p95 {row['p95_ms']} ms", flush=True)  # fmt: skip
    out["rows"] = rows
    if "top" in out:
        print("streaming, its costliest calls (own time, s):\n" + "\n".join(out["top"][:20]), flush=True)
    return out


def step_train(check: Check) -> dict:
    cache, runs = check.tmp / "cache", check.tmp / "runs"
    logger = json.dumps([{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(runs)}}])
    args = [sys.executable, "train.py", "fit", "--config", "configs/weizmann.yaml", "--data.cache_dir", str(cache), "--trainer.max_epochs", "1",
            "--trainer.logger", logger, "--trainer.accelerator", "gpu" if check.cuda else "cpu"]  # fmt: skip
    if check.tiny:
        root = check.clips()[0].parents[1]
        definition = check.tmp / "toy.yaml"
        definition.write_text("name: toy\nlayout: folders\nclasses: [wave, walk]\ngroup_pattern: '^([^_]+)_'\n")
        args += ["--data.dataset", str(definition), "--data.root", str(root), "--data.extractor.weights", TINY_MODEL, "--data.extractor.imgsz", "64"]
    else:
        args += ["--data.root", str(check.weizmann)]
    out = {}
    for what in ("extract_and_epoch", "epoch_cached"):
        t0 = time.perf_counter()
        r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        seconds = time.perf_counter() - t0
        if r.returncode != 0:
            raise RuntimeError(f"train.py exited {r.returncode}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ''}")
        lines = dict(ln.split(":", 1) for ln in r.stdout.splitlines() if ":" in ln and not ln.startswith(" "))
        out[what] = {"seconds": round(seconds, 1), "gpu_used": bool(re.search(r"GPU available: True.*used: True", r.stderr)), "test": lines.get("test", "").strip()}
        print(f"train.py fit, 1 epoch ({what}): {seconds:.1f} s wall; test {out[what]['test'][:80]}", flush=True)
        ckpt = lines.get("checkpoint", "").strip()
    if check.trained is None and ckpt:
        check.trained = ROOT / ckpt if not Path(ckpt).is_absolute() else Path(ckpt)
    return out


def step_onnx(check: Check) -> dict:
    from pipeline.inference.export import export
    from pipeline.inference.runtime import gpu_providers, load_exported

    imgsz = 64 if check.tiny else 640
    ckpt = untrained_checkpoint(check.tmp / "onnx.ckpt", check.weights, imgsz=imgsz)
    t0 = time.perf_counter()
    folder = check.tmp / "exported"
    export(ckpt, folder)
    export_s = time.perf_counter() - t0
    providers = gpu_providers("auto")
    parts = load_exported(folder, "onnxruntime", device="auto")
    b = 4 if check.tiny else 32
    frames = frames_640(check, b)
    ort_fps = timed_rate(lambda: parts.extractor(frames), b, 0.3 if check.tiny else 2.0, warmup=2, max_iters=200)
    extractor = FeatureExtractor(ExtractorConfig.from_record(parts.record)).place(check.device)
    x = torch.from_numpy(frames).to(check.device)
    torch_fps = timed_rate(lambda: extractor(x), b, 0.3 if check.tiny else 2.0)
    a, t = parts.extractor(frames), extractor(x)
    same_people = len(a.frame) == len(t.frame)
    cos = float(torch.nn.functional.cosine_similarity(a.features.float(), t.features.float().cpu(), dim=1).min()) if same_people and len(a.frame) else None
    print(f"onnxruntime ({providers[0]}) {ort_fps:.1f} frames/s vs torch {check.device} {torch_fps:.1f} frames/s at batch {b}; "
          f"same people {same_people}, min feature cosine {cos}", flush=True)  # fmt: skip
    return {"provider": providers[0], "batch": b, "ort_fps": round(ort_fps, 1), "torch_fps": round(torch_fps, 1), "export_s": round(export_s, 1),
            "same_people": same_people, "min_cosine": cos and round(cos, 5)}  # fmt: skip


def step_labels(check: Check) -> dict:
    from pipeline.inference.files import analyse_many
    from pipeline.inference.predictor import ActionPredictor

    ckpt = check.trained or untrained_checkpoint(check.tmp / "labels.ckpt", check.weights, imgsz=64 if check.tiny else 320)
    clips = [str(c) for c in check.clips()][: 4 if check.tiny else 10]  # fold 0's test actor (daria) sorts first
    runs = [("cpu", "cpu", True)] + ([("cuda_fp16", "cuda", True)] if check.cuda else [])  # fp16: the default on a GPU
    labels = {}
    for name, device, half in runs:
        predictor = ActionPredictor(ckpt, device=device, half=half)
        results, failed = analyse_many(clips, predictor, None, None, progress=False, echo=False)
        labels[name] = {r.source: (r.label, round(r.score, 4)) for r in results}
    ref = labels["cpu"]
    out = {"checkpoint": str(ckpt), "clips": len(clips), "labels": {k: {Path(s).stem: v for s, v in d.items()} for k, d in labels.items()}}
    for name in labels:
        same = sum(labels[name][s][0] == ref[s][0] for s in ref)
        gap = max(abs(labels[name][s][1] - ref[s][1]) for s in ref)
        out[f"{name}_same_labels"] = same
        out[f"{name}_max_score_gap"] = round(gap, 4)
        print(f"labels {name}: {same} of {len(ref)} the CPU's, largest score difference {gap:.4f}", flush=True)
    return out


def table(r: dict) -> str:
    """The README's table, from the JSON."""
    s = r["steps"]
    lines = [f"GPU check {r['date']}: {s.get('env', {}).get('gpu', 'no GPU (tiny CPU run: figures mean nothing)')}"]

    def get(name):
        return s.get(name) if isinstance(s.get(name), dict) and "error" not in s[name] else None

    if get("forward"):
        for row in s["forward"]["rows"]:
            lines.append(f"| extractor forward, {row['precision']}{', CUDA graphs' if row['cuda_graphs'] else ''}, batch {row['batch']} | "
                         f"{row['fps']:.0f} frames/s ({row['ms_per_batch']} ms a batch) |")  # fmt: skip
    if get("file"):
        for row in s["file"]["rows"]:
            lines.append(f"| file mode, {row['workers']} worker(s), batch {row['batch']} | {row['fps']:.0f} frames/s, {row['labels_per_s']:.0f} labels/s, "
                         f"GPU {row['gpu_util_mean_pct']}%, forward alone {row.get('forward_over_file')}x faster |")  # fmt: skip
    if get("stream"):
        for row in s["stream"]["rows"]:
            lines.append(f"| streaming, {row['people']} people ({row['tracked_per_frame']} tracked), step on {row['step_on']}"
                         f"{', CUDA graphs' if row['cuda_graphs'] else ''} | p50 {row['p50_ms']} ms, p95 {row['p95_ms']} ms |")  # fmt: skip
    if get("train"):
        for k, v in s["train"].items():
            if isinstance(v, dict):
                    lines.append(f"| train.py fit, 1 epoch, {k} | {v['seconds']} s |")
    if get("onnx"):
        o = s["onnx"]
        lines.append(f"| onnxruntime {o['provider']} vs torch, batch {o['batch']} | {o['ort_fps']:.0f} vs {o['torch_fps']:.0f} frames/s |")
    if get("labels"):
        lb = s["labels"]
        lines.append("| labels vs CPU | " + ", ".join(f"{k[:-12]} {v}/{lb['clips']}" for k, v in lb.items() if k.endswith("_same_labels")) + " |")
    for name, v in s.items():
        if isinstance(v, dict) and "error" in v:
            lines.append(f"| {name} | FAILED: {v['error']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shared", default=os.environ.get("ACTIONS_SHARED", str(ROOT.parent / "shared")), help="folder with weights/ and data/weizmann/")
    p.add_argument("--checkpoint", help="a trained checkpoint for the labels step (default: train's one-epoch checkpoint)")
    p.add_argument("--out", default="runs/gpu_check.json")
    p.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, of {', '.join(STEPS)}")
    p.add_argument("--tiny", action="store_true", help="tiny sizes and a random-init model (implied without CUDA)")
    p.add_argument("--cpu", action="store_true", help="run on the CPU even where CUDA is present")
    a = p.parse_args(argv)
    steps = [s.strip() for s in a.steps.split(",") if s.strip()]
    unknown = set(steps) - set(STEPS)
    if unknown:
        p.error(f"unknown steps {sorted(unknown)}: use {', '.join(STEPS)}")
    os.environ.setdefault("ACTIONS_WEIGHTS_DIR", str(Path(a.shared).resolve() / "weights"))
    os.environ["ACTIONS_SHARED"] = str(Path(a.shared).resolve())  # the tests' real inputs
    out_path = Path(a.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        check = Check(a, Path(tmp))
        print(f"GPU check on {check.device}{' (tiny sizes: figures mean nothing)' if check.tiny else ''}", flush=True)
        for name in steps:
            t0 = time.perf_counter()
            try:
                out = globals()[f"step_{name}"](check)
            except Exception as e:  # noqa: BLE001 - recorded; the other steps still run
                traceback.print_exc()
                out = {"error": f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}"}
            out["seconds"] = round(time.perf_counter() - t0, 1)
            check.results["steps"][name] = out
            check.results["seconds"] = round(time.perf_counter() - t_all, 1)
            out_path.write_text(json.dumps(check.results, indent=2))  # after every step: a run cut short keeps what it measured
            print(f"[{name}: {out['seconds']} s{', FAILED' if 'error' in out else ''}]", flush=True)
    print(table(check.results))
    print(f"written: {out_path} ({check.results['seconds']} s)")
    steps_failed = [n for n, v in check.results["steps"].items() if "error" in v or v.get("ok") is False]
    if steps_failed:
        print(f"failed steps: {', '.join(steps_failed)}", file=sys.stderr)
    return 1 if steps_failed else 0


if __name__ == "__main__":
    sys.exit(main())
