"""Extract features for a list of videos into the cache, through ``Trainer.predict``.

Running extraction as a Lightning predict loop means ``--trainer.devices N --trainer.strategy ddp``
spreads the videos over GPUs and nodes (Lightning's unrepeated distributed sampler) with no other change.
Each ``predict_step`` extracts one whole video, with decoding in a background thread; the writer callback
commits each video's entry atomically as soon as it is done, so an interrupted run resumes where it stopped.
Bad videos are reported and skipped; they never stop the run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, TQDMProgressBar
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader

from pipeline.data.cache import CacheError, FeatureCache, Sequence
from pipeline.data.features import ExtractorConfig, FeatureExtractor
from pipeline.data.tracking import PersonTracker, TrackerConfig, track_batch
from pipeline.data.video import VideoError, VideoReader, prefetch

log = logging.getLogger("lightning.pytorch")  # shown by Lightning's console handler, on every rank


def extract_video(
    extractor: FeatureExtractor, source: str | Path, batch_size: int = 32, guard: contextlib.AbstractContextManager | None = None
) -> Sequence:
    """Every tracked person's features in one video, at the extractor's fps and frame cap (decoding
    overlapped in a thread; tracking as ``infer.py`` does it). ``guard`` (a lock) is held around each
    batch's forward, so an extractor shared with a live stream is used by one thread at a time."""
    cfg = extractor.config
    reader = VideoReader(str(source), fps=cfg.fps, max_frames=cfg.max_frames)
    tracker = PersonTracker(TrackerConfig(conf=cfg.conf), fps=reader.fps)
    feats, frame, track, index = [], [], [], []
    seen, size = 0, (0, 0)
    for idx, frames, _ in prefetch(reader.batches(batch_size)):
        size = (frames.shape[2], frames.shape[1])
        with guard or contextlib.nullcontext():
            det = extractor(frames)
        host = torch.cat([det.boxes, det.scores[:, None], det.frame[:, None].float(), det.features], 1).cpu().numpy()  # one copy
        features = host[:, 6:]
        for i, (ids, rows) in enumerate(track_batch(tracker, host[:, 5].astype(np.int64), host[:, :4], host[:, 4], len(idx))):
            feats.append(features[rows])
            frame.append(np.full(len(ids), seen + i))
            track.append(ids)
        seen += len(idx)
        index.append(idx)
    declared = reader.info.frame_count if cfg.max_frames is None else 0  # a cap reads fewer on purpose
    seq = Sequence(
        np.concatenate(feats).astype(np.float32), np.concatenate(frame), np.concatenate(track), np.concatenate(index), reader.fps,
        reader.info.fps, declared, size,
    )  # fmt: skip
    if seq.truncated:
        log.warning("%s: read %d of %d declared frames (corrupt or cut short); features of the frames read", source, seq.frames_read, declared)
    return seq


class ExtractionModule(L.LightningModule):
    """Holds the extractor; one predict step = one video. Not trained."""

    def __init__(self, extractor: FeatureExtractor, videos: list[str], batch_size: int = 32, half: bool = True):
        super().__init__()
        self.extractor = extractor
        self.videos = videos
        self.batch_size = batch_size
        self.half_precision = half

    def on_predict_start(self) -> None:
        self.extractor.place(self.device, half=self.half_precision)

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.videos, batch_size=None, shuffle=False)

    def predict_step(self, path: str, batch_idx: int) -> dict[str, Any]:
        try:
            return {"path": path, "sequence": extract_video(self.extractor, path, self.batch_size)}
        except VideoError as e:
            return {"path": path, "error": str(e)}


class CacheWriter(BasePredictionWriter):
    """Writes each finished video into the cache; records failures per rank for the final report."""

    def __init__(self, cache: FeatureCache, data_root: Path | None):
        super().__init__(write_interval="batch")
        self.cache = cache
        self.data_root = data_root
        self.failed: list[tuple[str, str]] = []
        self.done = 0

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        if "error" in prediction:
            self.failed.append((prediction["path"], prediction["error"]))
            return
        try:
            self.cache.save(self.cache.entry(prediction["path"], self.data_root), prediction["sequence"])
        except OSError as e:
            raise CacheError(
                f"cannot write the feature cache {self.cache.dir}: {e.strerror or e}; the {self.done} videos extracted before are kept"
            ) from None
        self.done += 1

    def on_predict_end(self, trainer, pl_module) -> None:
        # every rank leaves its failures beside the cache so rank 0 can report all of them
        out = self.cache.dir / f"failed.rank{trainer.global_rank}.json"
        out.write_text(json.dumps(self.failed))
        log.info("rank %d/%d: extracted %d videos, %d failed", trainer.global_rank, trainer.world_size, self.done, len(self.failed))


class StderrProgressBar(TQDMProgressBar):
    """Lightning's progress bars on stderr: stdout carries results only (``train.py fit ... > result.txt``)."""

    @staticmethod
    def _on_stderr(make):
        with contextlib.redirect_stdout(sys.stderr):  # tqdm keeps the file it is given: stdout as it is now
            return make()

    def init_sanity_tqdm(self):
        return self._on_stderr(super().init_sanity_tqdm)

    def init_train_tqdm(self):
        return self._on_stderr(super().init_train_tqdm)

    def init_validation_tqdm(self):
        return self._on_stderr(super().init_validation_tqdm)

    def init_test_tqdm(self):
        return self._on_stderr(super().init_test_tqdm)

    def init_predict_tqdm(self):
        return self._on_stderr(super().init_predict_tqdm)


class ExtractionProgress(StderrProgressBar):
    @property
    def predict_description(self) -> str:
        return "Extracting features (videos)"


@contextlib.contextmanager
def _rng_untouched():
    """Restore the torch, numpy and Python random states afterwards (a DataLoader draws a seed, for one)."""
    py, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        yield
    random.setstate(py)
    np.random.set_state(np_state)


def extract_features(
    videos: list[Path],
    cache: FeatureCache,
    extractor_config: ExtractorConfig,
    data_root: Path | None = None,
    batch_size: int = 32,
    trainer_kwargs: dict | None = None,
    extractor: FeatureExtractor | None = None,
) -> list[tuple[str, str]]:
    """Extract every video that has no cache entry; return ``(path, reason)`` for those that failed.

    ``trainer_kwargs`` (accelerator, devices, strategy, num_nodes) are those of the training run, so
    extraction is spread over the same processes. A video that cannot be stat'ed (missing) fails here.
    """
    failed: list[tuple[str, str]] = []
    todo: list[str] = []
    corrupt: list[str] = []
    for v in videos:
        try:
            entry = cache.entry(v, data_root)
            if entry.is_file() and not cache.readable(entry):
                entry.unlink()  # truncated, empty or of another feature size: extract again
                corrupt.append(str(v))
            if not entry.is_file():
                todo.append(str(v))
        except OSError as e:
            failed.append((str(v), f"{v}: {e.strerror or e}"))
    if corrupt:
        rank_zero_warn(f"{len(corrupt)} unreadable cache entr{'y' if len(corrupt) == 1 else 'ies'} in {cache.dir}, extracted again: " + ", ".join(corrupt[:5]) + (" ..." if len(corrupt) > 5 else ""))
    for stale in cache.dir.glob("failed.rank*.json"):
        stale.unlink(missing_ok=True)
    if todo:
        log.info("extracting features of %d videos into %s", len(todo), cache.dir)
        extractor = extractor or FeatureExtractor(extractor_config)
        writer = CacheWriter(cache, data_root)
        trainer = L.Trainer(
            **(trainer_kwargs or {}),
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            callbacks=[writer, ExtractionProgress()],
        )
        with _rng_untouched():  # a run repeats whether or not its features had to be extracted first
            trainer.predict(ExtractionModule(extractor, todo, batch_size), return_predictions=False)
        trainer.strategy.barrier()
        for f in sorted(cache.dir.glob("failed.rank*.json")):
            failed += [tuple(x) for x in json.loads(f.read_text())]
    return failed


def extractor_record(extractor: FeatureExtractor) -> dict:
    """What a checkpoint and the cache folder keep about the extractor."""
    return {
        **asdict(extractor.config),
        "layers": list(extractor.config.layers),
        "weights_name": extractor.identity.name,
        "weights_sha256": extractor.identity.sha256,
        "feature_dim": extractor.feature_dim,
    }
