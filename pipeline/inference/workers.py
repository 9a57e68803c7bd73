"""Many videos -> labels, several at once: file mode spread over worker processes (``infer.py --workers N``).

One process steps each frame through the tracker and the GRU in Python, so on a GPU a single process keeps
the pose model busy only part of the time, and one decode thread cannot feed it. Here N spawned processes
each hold their own predictor on the same device (its own CUDA context; the GPU interleaves their
forwards), their own decode thread and page-locked batches; the videos go out from one queue, largest file
first, so that the processes finish together. Each video is labelled by one process exactly as
``files.analyse_video`` does it alone, so its labels and outputs are those of a one-process run (outputs are
written by that process, to a temporary name and renamed once complete). Results come back in the order of
the sources. A video that cannot be read is a failure line, never the end of the run; a full disk, a worker
that cannot start or dies, Ctrl-C or SIGTERM stops every worker (each removes its partial files).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from pipeline.data.features import resolve_device
from pipeline.data.tracking import TrackerConfig
from pipeline.data.video import VideoError
from pipeline.errors import UserError
from pipeline.inference.files import DISK_FULL, OutputPaths, VideoResult, analyse_video, plan_outputs, summary_line
from pipeline.inference.outputs import OutputError
from pipeline.options import MAX_PEOPLE


class WorkerError(UserError, RuntimeError):
    """A worker process could not start, or died, or the outputs cannot be written: the run stops."""


@dataclass(frozen=True)
class PredictorSpec:
    """How to build the predictor, picklable, so that every worker builds the same one as the parent."""

    checkpoint: str
    device: str = "auto"
    half: bool = True
    weights: str | None = None
    max_people: int = MAX_PEOPLE
    backend: str = "auto"
    tracker: str = "bytetrack"
    lost_s: float = 1.0  # seconds a person may be out of view before their track and state are dropped
    imgsz: int | None = None  # the pose model's input size instead of the checkpoint's (``ActionPredictor.set_input_size``)
    max_imgsz: int | None = None  # ... and its cap per source (0: none, every source at imgsz)

    def build(self):
        from pipeline.inference.predictor import ActionPredictor

        p = ActionPredictor(self.checkpoint, self.device, self.half, self.weights, self.max_people, backend=self.backend)
        p.tracker_config = TrackerConfig(self.tracker, conf=p.config.conf, lost_s=self.lost_s)
        if self.imgsz is not None or self.max_imgsz is not None:
            p.set_input_size(self.imgsz, self.max_imgsz)
        return p


def default_workers(device_type: str, videos: int) -> int:
    """One process on a CPU (the cores are the limit: more processes only split them), on a GPU one per two
    cores up to 8 (``benchmarks/gpu_check.py`` measures the file mode with 1, 4 and 8), never more than videos."""
    if device_type != "cuda":
        return 1
    return max(1, min(videos, (os.cpu_count() or 2) // 2, 8))


def torch_threads(device_type: str, workers: int) -> int:
    """Intra-op threads per worker: on a GPU one (the host side is small tensors), on a CPU the cores shared
    out (the decoding thread mostly waits: one torch thread per core beside it measured fastest,
    ``benchmarks/threads.py``)."""
    if device_type == "cuda":
        return 1
    return max(1, (os.cpu_count() or 1) // workers)


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def _work(spec: PredictorSpec, threads: int, tasks, results, kwargs: dict) -> None:
    """A worker: build the predictor, then label videos from ``tasks`` until a ``None``; every answer goes
    to ``results`` as ``(kind, index, payload)``."""
    signal.signal(signal.SIGTERM, _interrupt)  # the parent's stop: clean up like Ctrl-C
    try:
        import torch

        torch.set_num_threads(threads)
        predictor = spec.build()
    except KeyboardInterrupt:
        return
    except Exception as e:  # noqa: BLE001 - said in the parent, one line
        results.put(("fatal", None, f"a worker process could not load the model: {(str(e).splitlines() or [type(e).__name__])[0]}"))
        return
    results.put(("ready", None, os.getpid()))
    try:
        while (task := tasks.get()) is not None:
            i, src, paths = task
            try:
                results.put(("done", i, analyse_video(src, predictor, paths, progress=False, **kwargs)))
            except OSError as e:
                if e.errno in DISK_FULL:
                    results.put(("fatal", i, f"writing the outputs of {src} failed: {e.strerror}"))
                    return
                results.put(("failed", i, f"{src}: {e.strerror or e}"))
            except (VideoError, OutputError) as e:
                results.put(("failed", i, str(e)))
            except Exception as e:  # noqa: BLE001 - a fault, not bad input: the traceback to stderr, the run stops
                traceback.print_exc()
                results.put(("fatal", i, f"labelling {src} failed: {type(e).__name__}: {(str(e).splitlines() or [''])[0]}"))
                return
    except KeyboardInterrupt:
        return
    finally:  # from here on a stop needs no clean-up: end quietly, not with a traceback from the exit handlers
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@dataclass
class RunStats:
    """What ``analyse_parallel`` measured: wall time, when the last worker was ready, frames processed."""

    workers: int = 0
    seconds: float = 0.0
    ready_s: float = 0.0
    frames: int = 0
    pids: list[int] = field(default_factory=list)

    @property
    def fps(self) -> float:
        """Processed frames per second once every worker was ready (the steady rate)."""
        return self.frames / max(self.seconds - self.ready_s, 1e-9)


def analyse_parallel(
    sources: list[str], spec: PredictorSpec, workers: int, out_dir: Path | None, single: OutputPaths | None,
    progress: bool = True, echo: bool = True, stats: RunStats | None = None, threads: int | None = None, **kwargs,
) -> tuple[list[VideoResult], list[tuple[str, str]]]:  # fmt: skip
    """``files.analyse_many`` over ``workers`` processes: the results in the sources' order and the
    ``(source, reason)`` failures; ``echo`` prints each video's line as it finishes. ``kwargs`` go to
    ``analyse_video`` (smoothing, batch size, ...); ``stats`` receives the run's timings; ``threads``: torch's
    per worker (default ``torch_threads``)."""
    planned = plan_outputs(sources, out_dir, single)
    workers = max(1, min(workers, len(planned)))
    device_type = resolve_device(spec.device).type
    ctx = mp.get_context("spawn")  # never fork a process that holds CUDA or torch's thread pools
    tasks, answers = ctx.Queue(), ctx.Queue()
    for i in sorted(range(len(planned)), key=lambda i: -_size(planned[i][0])):
        tasks.put((i, *planned[i]))
    for _ in range(workers):
        tasks.put(None)
    threads = threads or torch_threads(device_type, workers)
    procs = [ctx.Process(target=_work, args=(spec, threads, tasks, answers, kwargs), name=f"infer-{k}", daemon=True) for k in range(workers)]
    stats = stats if stats is not None else RunStats()
    stats.workers = workers
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    results: dict[int, VideoResult] = {}
    failed: dict[int, tuple[str, str]] = {}
    ready = 0
    bar = tqdm(total=len(planned), desc="Videos", unit="video", disable=not progress or len(planned) < 2)
    try:
        while len(results) + len(failed) < len(planned):
            try:
                kind, i, payload = answers.get(timeout=0.5)
            except queue.Empty:
                if not any(p.is_alive() for p in procs):
                    codes = ", ".join(str(p.exitcode) for p in procs)
                    raise WorkerError(f"the worker processes ended (exit codes {codes}) with {len(planned) - len(results) - len(failed)} video(s) left; "
                                      "try fewer --workers") from None  # fmt: skip
                continue
            if kind == "ready":
                ready += 1
                stats.pids.append(payload)
                if ready == 1 or ready == workers:  # the steady rate counts from the last worker's start
                    stats.ready_s = time.perf_counter() - t0
            elif kind == "fatal":
                raise WorkerError(f"{payload}; {len(results)} of {len(planned)} video(s) finished, their outputs are complete")
            elif kind == "failed":
                failed[i] = (str(planned[i][0]), payload)
                bar.update()
            else:
                results[i] = payload
                stats.frames += payload.processed_frames
                bar.update()
                if echo:
                    tqdm.write(summary_line(payload))
    except KeyboardInterrupt:
        tqdm.write(f"interrupted: {len(results)} of {len(planned)} video(s) finished; nothing of the videos in progress was kept", file=sys.stderr)
        raise
    finally:
        bar.close()
        _stop(procs, graceful=len(results) + len(failed) == len(planned))
        stats.seconds = time.perf_counter() - t0
        stats.pids += [payload for kind, _, payload in _drain(answers) if kind == "ready"]  # a worker that started after the last video
    return [results[i] for i in sorted(results)], [failed[i] for i in sorted(failed)]


def _stop(procs: list, graceful: bool) -> None:
    """Let each worker exit (``graceful``: all videos answered) or clean up: SIGTERM (its partial outputs
    are removed), then a kill."""
    end = time.monotonic() + 10
    for p in procs:
        if graceful:
            p.join(timeout=max(end - time.monotonic(), 0.1))
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=max(end - time.monotonic(), 0.1))
        if p.is_alive():
            p.kill()
            p.join()


def _drain(answers) -> list[tuple]:
    """What the exited workers left in the queue."""
    out = []
    while True:
        try:
            out.append(answers.get(timeout=0.1))
        except (queue.Empty, OSError, ValueError):
            return out


def _size(source: str) -> int:
    try:
        return os.path.getsize(source)
    except OSError:
        return 0

