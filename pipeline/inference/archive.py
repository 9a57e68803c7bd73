"""A whole video archive -> labels and one results table: ``infer.py ARCHIVE --output DIR --trainer.devices N``.

File inference on the engine that extracts training's features: a Lightning ``Trainer.predict`` in which one
step labels one whole video exactly as ``files.analyse_video`` does alone (same outputs, written to a
temporary name and renamed once complete). Lightning spreads the list over processes, devices and nodes
(DDP, launched by Lightning itself, ``torchrun`` or SLURM); its predict sampler hands each video to exactly one
rank, without padding, and the videos go out largest first so that the ranks finish together.

The results table is ``DIR/index.jsonl``, one row per video (``ROW_KEYS``). Each rank appends a row to its own
shard (``index.rank{r}.jsonl``, flushed and synced) as soon as a video is finished or failed; at the end
rank 0 merges the shards into the index. A run stopped any way (Ctrl-C, ``kill -9``, a node lost) and started
again with the same command reads the index and the shards it left, skips every video already labelled by
the same checkpoint from the same content with its outputs in place, and labels the rest: a video cut off
half-way had no row and is done again from the start. Another checkpoint starts the labels over.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader

from pipeline.data.extract import StderrProgressBar
from pipeline.data.video import VideoError, is_stream
from pipeline.data.weights import sha256_file
from pipeline.inference.files import DISK_FULL, OutputPaths, VideoResult, analyse_video
from pipeline.inference.outputs import OutputError
from pipeline.inference.workers import PredictorSpec, torch_threads

INDEX = "index.jsonl"
ROW_KEYS = (
    "path", "status", "error", "sha256", "size", "mtime_ns", "checkpoint_sha256", "duration_s", "frames", "label", "score",
    "segments", "people", "outputs", "seconds", "rank", "run",
)  # fmt: skip
RUN_ENV = "ACTIONS_ARCHIVE_RUN"  # the run's id, inherited by the processes Lightning launches


def checkpoint_sha256(checkpoint: str | Path) -> str:
    """The identity of the model that labels: the checkpoint's sha256 (an exported folder records its own)."""
    from pipeline.inference.export import read_manifest

    path = Path(checkpoint)
    return read_manifest(path)["checkpoint_sha256"] if path.is_dir() else sha256_file(path)


def file_identity(source: str) -> dict:
    """Size and modification time of a file (empty for a stream or a file that cannot be read)."""
    if is_stream(source):
        return {}
    try:
        st = os.stat(source)
    except OSError:
        return {}
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def content_sha256(source: str) -> str | None:
    try:
        return None if is_stream(source) else sha256_file(source)
    except OSError:
        return None


class ArchiveIndex:
    """``DIR/index.jsonl`` and the shards that ranks append to; the last row of a video is its row."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / INDEX

    def shards(self) -> list[Path]:
        return sorted(self.folder.glob("index.rank*.jsonl"))

    def rows(self) -> dict[str, dict]:
        """Every video's last row: the index first, then the shards a run added (and a stopped run left)."""
        out: dict[str, dict] = {}
        for f in [self.path, *self.shards()]:
            with contextlib.suppress(FileNotFoundError), open(f, encoding="utf-8") as lines:
                for line in lines:
                    try:
                        row = json.loads(line)
                    except ValueError:
                        continue  # the line a killed process was writing
                    if isinstance(row, dict) and "path" in row:
                        out[row["path"]] = row
        return out

    def is_done(self, row: dict | None, source: str, model: str) -> bool:
        """Whether ``row`` holds this video's labels from this model, with its outputs in place. A file whose
        size or time changed is hashed again: the same content (a copy, a touch) is still done."""
        if row is None or row.get("status") != "done" or row.get("checkpoint_sha256") != model:
            return False
        if not all(Path(p).is_file() for p in row.get("outputs", {}).values()):
            return False
        ident = file_identity(source)
        if not ident:
            return False
        same = ident["size"] == row.get("size") and ident["mtime_ns"] == row.get("mtime_ns")
        return same or (ident["size"] == row.get("size") and content_sha256(source) == row.get("sha256"))

    def merge(self) -> dict[str, dict]:
        """Fold the shards into the index (one row per video, sorted by path; written to a temporary name and
        renamed), then remove them; the rows."""
        rows = self.rows()
        tmp = self.path.with_name(f".{INDEX}.partial")
        with open(tmp, "w", encoding="utf-8") as f:
            for path in sorted(rows):
                f.write(json.dumps(rows[path], ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)
        for shard in self.shards():
            shard.unlink(missing_ok=True)
        return rows


def result_row(source: str, result: VideoResult | None, error: str | None, model: str, seconds: float, rank: int, run: str) -> dict:
    """One row of the index (``ROW_KEYS``): the video's identity, its label and segments or its error."""
    row = dict.fromkeys(ROW_KEYS)
    row.update(path=source, status="failed" if result is None else "done", error=error, checkpoint_sha256=model,
               sha256=content_sha256(source), seconds=round(seconds, 3), rank=rank, run=run, outputs={}, segments=[])  # fmt: skip
    row.update(file_identity(source))
    if result is not None:
        row.update(
            duration_s=round(result.duration_s, 3), frames=result.processed_frames, label=result.label, score=round(result.score, 4),
            segments=[s.to_dict() for s in result.segments], people=len(result.tracks), outputs=dict(result.outputs),
        )  # fmt: skip
    return row


class ArchiveModule(L.LightningModule):
    """Holds the predictor; one predict step = one whole video -> its row. Nothing is trained."""

    def __init__(self, spec: PredictorSpec, videos: list[tuple[str, OutputPaths]], model: str, run: str, threads: int | None, **kwargs: Any):
        super().__init__()
        self.spec, self.videos, self.model_sha, self.run, self.threads, self.kwargs = spec, videos, model, run, threads, kwargs
        self.predictor = None

    def on_predict_start(self) -> None:
        # each rank on its own device; on a CPU the node's cores shared out between its ranks
        # (two processes of two threads on two cores measured 15x slower than one: OpenMP's threads spin)
        torch.set_num_threads(self.threads or torch_threads(self.device.type, max(1, self.trainer.num_devices)))
        device = str(self.device) if self.device.type == "cuda" else "cpu"
        self.predictor = dataclasses.replace(self.spec, device=device).build()
        if callable(self.kwargs.get("smoothing")):  # it reads the checkpoint's rejection rules, known once loaded
            self.kwargs["smoothing"] = self.kwargs["smoothing"](self.predictor)

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(range(len(self.videos)), batch_size=None, shuffle=False)

    def predict_step(self, i: int, batch_idx: int) -> dict:
        source, paths = self.videos[int(i)]
        t0, result, error = time.perf_counter(), None, None
        try:
            result = analyse_video(source, self.predictor, paths, progress=False, **self.kwargs)
        except OSError as e:
            if e.errno in DISK_FULL:
                raise OutputError(f"writing the outputs of {source} failed: {e.strerror}; the videos in {INDEX} are complete") from None
            error = f"{source}: {e.strerror or e}"
        except (VideoError, OutputError) as e:
            error = str(e)
        return result_row(source, result, error, self.model_sha, time.perf_counter() - t0, self.global_rank, self.run)


class IndexWriter(BasePredictionWriter):
    """Appends each video's row to this rank's shard the moment it is finished (flushed and synced, so a
    ``kill -9`` loses at most the video in progress), and prints its result line."""

    def __init__(self, index: ArchiveIndex, echo: bool = True):
        super().__init__(write_interval="batch")
        self.index, self.echo, self.out = index, echo, sys.stdout  # stdout as it is before Lightning runs
        self.file = None
        self.frames = 0

    def on_predict_start(self, trainer, pl_module) -> None:
        self.file = open(self.index.folder / f"index.rank{trainer.global_rank}.jsonl", "a", encoding="utf-8")

    def write_on_batch_end(self, trainer, pl_module, row, batch_indices, batch, batch_idx, dataloader_idx=0):
        self.file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())
        self.frames += row["frames"] or 0
        if self.echo and row["status"] == "done":
            print(_row_line(row), file=self.out, flush=True)  # results only on stdout

    def on_predict_end(self, trainer, pl_module) -> None:
        self.file.close()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self.file is not None:
            self.file.close()


class ArchiveProgress(StderrProgressBar):
    """The predict bar (rank 0, its share of the videos) with the frames per second it labels."""

    def __init__(self, writer: IndexWriter):
        super().__init__()
        self.writer, self.t0 = writer, time.perf_counter()

    @property
    def predict_description(self) -> str:
        return "Labelling videos"

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        super().on_predict_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
        if self.predict_progress_bar is not None:
            self.predict_progress_bar.set_postfix_str(f"{self.writer.frames / (time.perf_counter() - self.t0):.1f} frames/s", refresh=False)


def _row_line(row: dict) -> str:
    segs = ", ".join(f"{s['start_s']:.1f}-{s['end_s']:.1f}s {s['label']} {s['score']:.2f}" for s in row["segments"])
    return f"{row['path']}: {row['label']} ({row['score']:.2f}) | {segs} | {row['people']} people"


@dataclass
class ArchiveSummary:
    done: int
    failed: list[tuple[str, str]]
    skipped: int
    frames: int
    seconds: float
    index: Path

    def line(self) -> str:
        fps = self.frames / max(self.seconds, 1e-9)
        return (f"archive: {self.done} done, {len(self.failed)} failed, {self.skipped} skipped (done before) | {fps:.1f} frames/s, "
                f"{self.seconds:.1f} s | index: {self.index}")  # fmt: skip


def _largest_first(videos: list[tuple[str, OutputPaths]]) -> list[tuple[str, OutputPaths]]:
    return sorted(videos, key=lambda v: (-file_identity(v[0]).get("size", 0), v[0]))


def label_archive(
    planned: list[tuple[str, OutputPaths]], out_dir: Path, spec: PredictorSpec, trainer_kwargs: dict, threads: int | None = None,
    progress: bool = True, **kwargs: Any,
) -> ArchiveSummary | None:
    """Label every video of ``planned`` not done before, spread over ``trainer_kwargs``'s processes; rank 0
    merges the index and returns the run's summary (other ranks: None). ``kwargs`` go to ``analyse_video``
    (``smoothing`` may be a function of the predictor)."""
    t0 = time.perf_counter()
    run = os.environ.setdefault(RUN_ENV, f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
    index = ArchiveIndex(out_dir)
    model = checkpoint_sha256(spec.checkpoint)
    rows = index.rows()
    todo = _largest_first([(s, p) for s, p in planned if not index.is_done(rows.get(s), s, model)])
    if not todo and int(os.environ.get("RANK", 0)) == 0:  # nothing to label: no processes to launch
        index.merge()
        return ArchiveSummary(0, [], len(planned), 0, time.perf_counter() - t0, index.path)
    writer = IndexWriter(index)
    with _notes_to_stderr(), warnings.catch_warnings():
        # one video per step has no batch indices to track; Lightning's own pytree call on this torch
        warnings.filterwarnings("ignore", message=".*(infer the batch indices|LeafSpec)")
        trainer = L.Trainer(**trainer_kwargs, logger=False, enable_checkpointing=False, enable_model_summary=False,
                            enable_progress_bar=progress, callbacks=[writer, *([ArchiveProgress(writer)] if progress else [])])  # fmt: skip
        try:
            trainer.predict(ArchiveModule(spec, todo, model, run, threads, **kwargs), return_predictions=False)
        except SystemExit:
            if not trainer.interrupted:
                raise
            # Lightning stopped every rank on Ctrl-C / SIGTERM and exits with 1: say so, and exit as a stopped run
            print(f"interrupted: the videos finished so far are recorded in {out_dir} (index.rank*.jsonl); the same command labels "
                  "the rest", file=sys.stderr)  # fmt: skip
            raise KeyboardInterrupt from None
        trainer.strategy.barrier()
    if not trainer.is_global_zero:
        return None
    this_run = [r for r in index.merge().values() if r.get("run") == run]
    return ArchiveSummary(
        done=sum(r["status"] == "done" for r in this_run), failed=[(r["path"], r["error"]) for r in this_run if r["status"] == "failed"],
        skipped=len(planned) - len(todo), frames=sum(r["frames"] or 0 for r in this_run), seconds=time.perf_counter() - t0, index=index.path,
    )  # fmt: skip


@contextlib.contextmanager
def _notes_to_stderr() -> Iterator[None]:
    """Lightning's own notes (GPU available, ...) go to stderr: stdout carries the result lines."""
    with contextlib.redirect_stdout(sys.stderr):
        yield
