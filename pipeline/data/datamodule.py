"""Cached sequences -> batches: the LightningDataModule.

It lists and splits the videos (``pipeline.data.videoset``), fetches a missing dataset, has the cache filled
(``pipeline.data.extract``), then serves random temporal crops for training and, for evaluation, whole videos
(video level) and fixed windows (clip level). Videos that could not be decoded are left out and listed.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import replace
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from pipeline.data.cache import FeatureCache
from pipeline.data.download import download_dataset
from pipeline.data.extract import extract_features, extractor_record
from pipeline.data.features import ExtractorConfig, FeatureExtractor, mirror_features, reframe, tilted
from pipeline.data.scenes import with_scene_groups
from pipeline.data.video import frame_aspect
from pipeline.data.videoset import DatasetDefinition, DatasetError, Video, list_videos, make_splits
from pipeline.options import check_range

log = logging.getLogger(__name__)
STAGE_SPLITS = {"fit": ("train", "val", "test"), "validate": ("val",), "test": ("test",), "predict": ("test",)}


class CropDataset(Dataset):
    """Random temporal crops of ``clip_len`` frames (whole video if shorter; a random length from ``min_len``
    when given, as short clips are), played at a random speed in
    ``[1 / (1 + speed), 1 + speed]``, reframed (zoom in ``[1 / (1 + zoom), 1 + zoom]``, moved up to ``zoom / 2``
    of the frame), the skeleton turned by up to ``tilt`` degrees and sheared by up to ``shear`` (one draw per crop, as
    a camera's roll holds for a clip), mirrored with probability ``flip``, each frame lost (the "nobody" vector, as when the
    detector misses the person) with probability ``drop``: what other footage of the same action looks like.
    ``aspects``: each video's frame width over height, so that the skeleton turns in pixels, not in the frame's
    stretched units (None or a missing one: 16:9)."""

    def __init__(
        self, seqs: list[torch.Tensor], labels: list[int], clip_len: int, flip: float, noise: float, std: torch.Tensor,
        speed: float = 0.0, zoom: float = 0.0, drop: float = 0.0, min_len: int | None = None, tilt: float = 0.0,
        shear: float = 0.0, aspects: list[float | None] | None = None,
    ):  # fmt: skip
        self.seqs, self.labels, self.clip_len, self.flip, self.noise, self.std = seqs, labels, clip_len, flip, noise, std
        self.speed, self.zoom, self.drop, self.min_len, self.tilt, self.shear = speed, zoom, drop, min_len, tilt, shear
        self.aspects = aspects or [None] * len(seqs)

    def __len__(self) -> int:
        return len(self.seqs)

    def __getitem__(self, i: int):
        x = self.seqs[i]
        length = int(torch.randint(self.min_len, self.clip_len + 1, ())) if self.min_len else self.clip_len
        rate = float(torch.empty(()).uniform_(-1, 1).mul(math.log1p(self.speed)).exp()) if self.speed else 1.0
        span = min(max(round(length * rate), 1), len(x))  # source frames that make one crop
        start = int(torch.randint(0, len(x) - span + 1, ()))
        n = min(length, max(round(span / rate), 1))
        x = x[start + (torch.arange(n) * span // n)] if rate != 1.0 else x[start : start + span]
        if self.zoom:
            z = float(torch.empty(()).uniform_(-1, 1).mul(math.log1p(self.zoom)).exp())
            dx, dy = (torch.rand(2) - 0.5).mul(self.zoom).tolist()
            x = reframe(x, z, dx, dy)
        if self.tilt or self.shear:
            angle, sh = (torch.rand(2) * 2 - 1).mul(torch.tensor([math.radians(self.tilt), self.shear])).tolist()
            x = tilted(x, angle, sh, self.aspects[i] or 16 / 9)
        if self.flip and torch.rand(()) < self.flip:
            x = mirror_features(x)
        if self.noise:
            x = x + self.noise * self.std * torch.randn_like(x)
        if self.drop:
            x = x * (torch.rand(len(x), 1) >= self.drop)
        return x, self.labels[i], i


class WindowDataset(Dataset):
    """Evaluation items: whole videos (``window=None``) or windows of ``window`` frames every ``stride``."""

    def __init__(self, seqs: list[torch.Tensor], labels: list[int], window: int | None = None, stride: int = 1):
        self.items = []
        for v, x in enumerate(seqs):
            if window is None or len(x) <= window:
                self.items.append((v, 0, len(x)))
            else:
                self.items += [(v, s, s + window) for s in range(0, len(x) - window + 1, stride)]
        self.seqs, self.labels = seqs, labels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        v, s, e = self.items[i]
        return self.seqs[v][s:e], self.labels[v], v


def collate(batch) -> dict[str, torch.Tensor]:
    xs, ys, vs = zip(*batch)
    return {
        "x": pad_sequence(list(xs), batch_first=True),
        "lengths": torch.tensor([len(x) for x in xs]),
        "y": torch.tensor(ys),
        "video": torch.tensor(vs),
    }


class ActionDataModule(L.LightningDataModule):
    """Videos of a dataset, split, featurised once and served as sequences.

    Args:
        dataset: definition YAML, a name in ``datasets/`` (``weizmann``), a folder of class folders, or a CSV.
        root: folder holding the videos. Default: ``$ACTIONS_DATA_DIR/<name>`` if that variable is set,
            else ``datasets/<name>``; a missing default root is downloaded when the definition says how.
        split: ``group`` (folds by actor), ``scene`` (folds by the scene the clips show, balanced by class:
            no room or camera in both train and test; ``pipeline.data.scenes``), ``stratified``
            (class-balanced folds) or ``official`` (dataset lists).
        fold: the test fold. ``group``: validation is the next fold; ``num_folds`` None = one per group.
            ``scene``: validation is the next fold; ``num_folds`` None = 5; ``split_seed`` redraws the deal.
            ``stratified``: validation is ``val_fraction`` of the videos, from the other folds; ``num_folds``
            None = 5 (1: one seeded split with ``test_fraction`` in test).
        split_id: which official split list (UCF101 / HMDB51: 1..3).
        extractor: feature settings; the checkpoint keeps them so inference extracts the same features.
        cache_dir: where features are cached. Default: ``datasets/cache/<name>``.
        download: fetch the dataset into the default root when missing.
        clip_len: training crop length in frames; ``eval_window`` / ``eval_stride``: clip-level evaluation.
        min_len: when given, each training crop has a random length from ``min_len`` to ``clip_len`` frames.
        flip: probability of mirroring a training crop (pose mirrored, left/right keypoints swapped).
        speed: training crops play at a random speed within ``1 + speed`` times faster or slower.
        zoom: training crops are reframed: zoomed within ``1 + zoom`` times and moved up to ``zoom / 2``.
        tilt: training crops' skeletons turn by up to this many degrees about the box's centre (camera roll).
        shear: training crops' skeletons are sheared by up to this (x moves by ``shear`` times y: perspective).
        balance: draw training crops with each class equally likely (weights 1 / class size), not each video.
        drop: chance that a frame of a training crop is lost (all zeros: nobody seen).
        noise: Gaussian feature noise, in units of each feature's standard deviation.
        exclude_classes: classes left out of training, validation and test (``benchmarks/open_set.py`` shows
            them to the model as actions it never learnt).
    """

    def __init__(
        self,
        dataset: str = "weizmann",
        root: str | None = None,
        split: str = "group",
        fold: int = 0,
        num_folds: int | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        split_id: int = 1,
        extractor: ExtractorConfig = ExtractorConfig(),
        cache_dir: str | None = None,
        download: bool = True,
        clip_len: int = 32,
        min_len: int | None = None,
        eval_window: int = 32,
        eval_stride: int = 16,
        flip: float = 0.5,
        speed: float = 0.0,
        zoom: float = 0.0,
        tilt: float = 0.0,
        shear: float = 0.0,
        balance: bool = False,
        drop: float = 0.0,
        noise: float = 0.0,
        batch_size: int = 16,
        num_workers: int = 0,
        extract_batch_size: int = 32,
        exclude_classes: list[str] | None = None,
    ):
        super().__init__()
        for name, value, low, high in (
            ("fold", fold, 0, None), ("num_folds", num_folds, 1, None), ("val_fraction", val_fraction, 0, 0.9),
            ("test_fraction", test_fraction, 0, 0.9), ("clip_len", clip_len, 1, None), ("min_len", min_len, 1, clip_len),
            ("eval_window", eval_window, 1, None), ("eval_stride", eval_stride, 1, None), ("flip", flip, 0, 1),
            ("speed", speed, 0, 4), ("zoom", zoom, 0, 4), ("tilt", tilt, 0, 45),
            ("shear", shear, 0, 1), ("drop", drop, 0, 0.9), ("noise", noise, 0, 10),
            ("batch_size", batch_size, 1, 65536), ("num_workers", num_workers, 0, 256), ("extract_batch_size", extract_batch_size, 1, 4096),
        ):  # fmt: skip
            check_range(f"--data.{name}", value, low, high)
        self.definition = DatasetDefinition.load(dataset)
        self.explicit_root = root is not None
        if root is not None:
            self.root = Path(root)
        elif self.definition.layout == "csv" and self.definition.csv and Path(self.definition.csv).is_absolute():
            self.root = Path(self.definition.csv).parent
        else:
            self.root = self.definition.default_root()
        if self.explicit_root and self.root.is_file():
            raise DatasetError(f"--data.root {self.root} is a file: give the folder that holds one folder of videos per class")
        if self.explicit_root and not self.root.is_dir():
            raise DatasetError(f"--data.root {self.root} does not exist")
        self.split, self.fold, self.num_folds = split, fold, num_folds
        self.val_fraction, self.test_fraction, self.split_seed, self.split_id = val_fraction, test_fraction, split_seed, split_id
        self.download = download
        self.clip_len, self.min_len, self.eval_window, self.eval_stride = clip_len, min_len, eval_window, eval_stride
        self.flip, self.speed, self.zoom, self.drop, self.noise = flip, speed, zoom, drop, noise
        self.tilt, self.shear, self.balance = tilt, shear, balance
        self.batch_size, self.num_workers, self.extract_batch_size = batch_size, num_workers, extract_batch_size
        self.extractor = FeatureExtractor(extractor)  # resolves the weights now: a bad name fails before any work
        self.cache = FeatureCache(
            Path(cache_dir) if cache_dir else self.definition.default_cache(),
            extractor.key(self.extractor.identity),
            extractor_record(self.extractor),
        )
        self.class_names = self.definition.classes or (list_videos(self.definition, self.root, split_id)[1] if self.root.is_dir() else None)
        if not self.class_names:
            raise DatasetError(f"data root {self.root} does not exist and the dataset defines no classes; pass --data.root")
        self.exclude_classes = list(exclude_classes or [])
        unknown = [c for c in self.exclude_classes if c not in self.class_names]
        if unknown:
            raise DatasetError(f"--data.exclude_classes {unknown} are not classes of {self.definition.name} ({', '.join(self.class_names)})")
        self.class_names = [c for c in self.class_names if c not in self.exclude_classes]
        self.splits: dict[str, list[Video]] = {}
        self.skipped: list[tuple[str, str]] = []
        self.truncated: dict[str, tuple[int, int]] = {}  # path: (frames read, frames declared)
        self._reported: set[tuple[str, str]] = set()
        self.data: dict[str, tuple[list[torch.Tensor], list[int], list[Video]]] = {}
        self.aspects: dict[str, list[float | None]] = {}  # per split and video: frame width over height
        self.mean = self.std = None

    @property
    def feature_dim(self) -> int:
        return self.extractor.feature_dim

    @property
    def extractor_info(self) -> dict:
        return extractor_record(self.extractor)

    def _list(self) -> dict[str, list[Video]]:
        if not self.splits:
            if self.download and not self.explicit_root and int(os.environ.get("LOCAL_RANK", 0)) == 0:
                if self.definition.download or not self.root.is_dir():
                    download_dataset(self.definition, self.root)  # fetches only the missing archives
            videos, classes = list_videos(self.definition, self.root, self.split_id)
            if self.exclude_classes:  # left out of training and evaluation alike (open-set benchmarks)
                videos = [v for v in videos if classes[v.label] not in self.exclude_classes]
                keep = [c for c in classes if c not in self.exclude_classes]
                videos = [replace(v, label=keep.index(classes[v.label])) for v in videos]
                classes = keep
            if list(classes) != list(self.class_names):
                raise DatasetError(f"classes {classes} under {self.root} differ from {self.class_names}")
            if self.split == "scene":  # the groups are the scenes, found in the clips (cached beside the features)
                videos = with_scene_groups(videos, self.cache.dir.parent)
            self.splits = make_splits(
                videos, self.split, self.fold, self.num_folds, self.val_fraction, self.test_fraction, self.split_seed, list(self.class_names)
            )
        return self.splits

    def prepare_features(self, stage: str = "fit", trainer_kwargs: dict | None = None) -> None:
        """Extract what the stage needs and is not cached yet, with the run's devices and strategy."""
        splits = self._list()
        videos = [v.path for s in STAGE_SPLITS[stage] for v in splits[s]]
        failed = extract_features(
            videos, self.cache, self.extractor.config, self.root, self.extract_batch_size, trainer_kwargs, self.extractor
        )
        self.skipped = sorted(set(self.skipped) | set(failed))

    def prepare_data(self) -> None:
        # Programmatic use (trainer.fit(model, dm)): fill the cache on this process. The CLI has done it already.
        self.prepare_features("fit", {"accelerator": "auto", "devices": 1})

    def setup(self, stage: str) -> None:
        splits = self._list()
        for name in STAGE_SPLITS.get(stage, ()):
            if name in self.data or (name == "test" and not splits[name]):
                continue  # a fit with no test split (--data.test_fraction 0) trains and validates all the same
            seqs, labels, kept, aspects = [], [], [], []
            for v in splits[name]:
                try:
                    entry = self.cache.entry(v.path, self.root)
                    cached = self.cache.load(entry) if entry.is_file() else None
                    seq = cached.subject() if cached is not None else None  # the main subject's track
                except Exception:  # noqa: BLE001 - gone or unreadable since extraction checked it: skip, say so
                    seq = None
                if seq is None:
                    if not any(p == str(v.path) for p, _ in self.skipped):
                        self.skipped.append((str(v.path), "no features (not extracted)"))
                    continue
                if cached.truncated:
                    self.truncated[str(v.path)] = (cached.frames_read, cached.declared_frames)
                seqs.append(torch.from_numpy(seq))
                labels.append(v.label)
                kept.append(v)
                if name == "train" and (self.tilt or self.shear):  # an entry from before frame sizes: the header says
                    aspects.append(cached.aspect or frame_aspect(v.path))
            if not seqs:
                raise DatasetError(f"no usable videos in the {name} split ({len(splits[name])} listed)")
            self.data[name] = (seqs, labels, kept)
            self.aspects[name] = aspects
            if aspects.count(None):  # moved or unreadable since extraction, with an entry from before frame sizes
                rank_zero_warn(
                    f"{aspects.count(None)} training video(s) of unknown frame size (no size in the cache, no readable header): "
                    f"tilt and shear turn them as 16:9 frames; delete their entries in {self.cache.dir} to extract them again with their size"
                )
        if "train" in self.data and self.mean is None:
            frames = torch.cat(self.data["train"][0])
            self.mean, self.std = frames.mean(0), frames.std(0)
        new = [s for s in self.skipped if s not in self._reported]
        if new:  # once per video, not once per stage
            self._reported.update(new)
            rank_zero_warn(f"skipped {len(new)} video(s):\n" + "\n".join(f"  {p}: {why}" for p, why in new))
        rank_zero_info(
            "videos: " + ", ".join(f"{k} {len(v[0])}" for k, v in self.data.items()) + f" | features cached in {self.cache.dir}"
        )

    def _loader(self, ds: Dataset, shuffle: bool = False, sampler: WeightedRandomSampler | None = None) -> DataLoader:
        return DataLoader(
            ds, batch_size=self.batch_size, shuffle=shuffle, sampler=sampler, collate_fn=collate,
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        seqs, labels, _ = self.data["train"]
        crops = CropDataset(
            seqs, labels, self.clip_len, self.flip, self.noise, self.std, self.speed, self.zoom, self.drop, self.min_len,
            self.tilt, self.shear, self.aspects.get("train"),
        )  # fmt: skip
        if not self.balance:
            return self._loader(crops, shuffle=True)
        counts = torch.bincount(torch.tensor(labels), minlength=len(self.class_names)).float()
        weights = (1 / counts)[torch.tensor(labels)]  # each class drawn as often, whatever its number of videos
        return self._loader(crops, sampler=WeightedRandomSampler(weights.double(), len(labels)))

    def _eval_loaders(self, name: str) -> list[DataLoader]:
        seqs, labels, _ = self.data[name]
        return [
            self._loader(WindowDataset(seqs, labels)),
            self._loader(WindowDataset(seqs, labels, self.eval_window, self.eval_stride)),
        ]

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("val")

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("test")

    def videos(self, name: str) -> list[Video]:
        return self.data[name][2]
