"""Which videos, which labels, which split: dataset definitions (YAML in ``datasets/``) and splits.

Layouts: folder per class; a CSV of ``path,label[,group][,split]``; UCF101 split lists
(``classInd.txt``, ``trainlist0K.txt``, ``testlist0K.txt``); HMDB51 split lists
(``<class>_test_splitK.txt`` with 1 = train, 2 = test, 0 = unused).
Splits: by group (a regex on the file name gives the actor, so no actor is in two splits), stratified
random with a seed, or the dataset's official lists (validation carved out of train).
"""

from __future__ import annotations

import csv
import logging
import os
import random
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipeline.data.video import VIDEO_EXTENSIONS
from pipeline.data.video import list_videos as video_files
from pipeline.errors import UserError

DEFAULT_FOLDS = 5  # stratified folds when --data.num_folds is not given (fewer for a class with fewer videos)
log = logging.getLogger("lightning.pytorch")  # shown by Lightning's console handler

DATASETS_DIR = Path(__file__).resolve().parents[2] / "datasets"
DATA_DIR_ENV = "ACTIONS_DATA_DIR"  # folder that holds datasets by name: $ACTIONS_DATA_DIR/weizmann/...
LAYOUTS = ("folders", "csv", "ucf101", "hmdb51")
SPLITS = ("group", "scene", "stratified", "official")


class DatasetError(UserError, RuntimeError):
    """A dataset that cannot be listed or split; the message says what to fix."""


@dataclass(frozen=True)
class Video:
    path: Path
    label: int
    group: str = ""  # actor / subject: never in two splits
    split: str = ""  # 'train' or 'test' where the dataset says so


@dataclass
class DatasetDefinition:
    """A dataset as data: classes, layout, how to read groups from names, where to download it."""

    name: str
    classes: list[str] | None = None
    layout: str = "folders"
    group_pattern: str | None = None  # regex on the file stem; group 1 (or the whole match) is the group
    csv: str | None = None  # layout 'csv': file relative to the root
    split_dir: str | None = None  # layouts 'ucf101' / 'hmdb51': folder of split lists relative to the root
    download: list[dict] = field(default_factory=list)  # [{url: ..., into: subfolder}]
    citation: str = ""
    notes: str = ""
    folder: str | None = None  # a dataset given as a folder of class folders lives there

    @classmethod
    def load(cls, spec: str | Path) -> DatasetDefinition:
        """``spec``: a definition YAML, a name in ``datasets/`` (``weizmann``), or a folder of class folders."""
        path = Path(spec)
        if not path.suffix and not path.exists() and (DATASETS_DIR / f"{spec}.yaml").is_file():
            path = DATASETS_DIR / f"{spec}.yaml"
        if path.is_dir():
            return cls(name=path.resolve().name, folder=str(path.resolve()))
        if path.suffix.lower() == ".csv":
            return cls(name=path.stem, layout="csv", csv=str(path.resolve()))
        if not path.is_file():
            raise DatasetError(f"dataset definition {spec} not found: give a YAML file, a name in {DATASETS_DIR}, or a folder")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (yaml.YAMLError, OSError, UnicodeDecodeError) as e:
            where = getattr(e, "problem_mark", None)
            at = f" at line {where.line + 1}" if where else ""
            raise DatasetError(f"{path}: not a readable dataset YAML{at} ({getattr(e, 'problem', None) or e})") from None
        if not isinstance(raw, dict):
            raise DatasetError(f"{path}: a dataset YAML is a mapping of keys (name, layout, classes, ...), got {type(raw).__name__}")
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise DatasetError(f"{path}: unknown keys {sorted(unknown)}")
        d = cls(**{"name": path.stem, **raw})
        if d.layout not in LAYOUTS:
            raise DatasetError(f"{path}: layout '{d.layout}' is not one of {LAYOUTS}")
        return d

    def default_root(self) -> Path:
        if self.folder:
            return Path(self.folder)
        base = os.environ.get(DATA_DIR_ENV)
        return Path(base) / self.name if base else DATASETS_DIR / self.name

    def default_cache(self) -> Path:
        """Where its features are cached unless ``--data.cache_dir`` says otherwise."""
        return DATASETS_DIR / "cache" / self.name

    def group_of(self, path: Path) -> str:
        if not self.group_pattern:
            return ""
        m = re.search(self.group_pattern, path.stem)
        return (m.group(1) if m and m.groups() else m.group(0)) if m else ""


def list_videos(d: DatasetDefinition, root: Path, split_id: int = 1) -> tuple[list[Video], list[str]]:
    """All labelled videos of the dataset under ``root`` and the class names, in label order."""
    if root.is_file():
        raise DatasetError(f"data root {root} is a file: give the folder that holds one folder of videos per class")
    if not root.is_dir():
        raise DatasetError(f"data root {root} does not exist: pass --data.root DIR (or set {DATA_DIR_ENV}) or enable download")
    if d.layout == "folders":
        classes = d.classes or sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        items = [(p, c, "", "") for c in classes for p in video_files(root / c)]
    elif d.layout == "csv":
        items, classes = _read_csv(root / d.csv if d.csv else root / "labels.csv", root, d.classes)
    elif d.layout == "ucf101":
        items, classes = _read_ucf101(root, root / (d.split_dir or "ucfTrainTestlist"), split_id)
    else:
        items, classes = _read_hmdb51(root, root / (d.split_dir or "testTrainMulti_7030_splits"), split_id, d.classes)
    index = {c: i for i, c in enumerate(classes)}
    videos = [Video(p, index[c], g or d.group_of(p), s) for p, c, s, g in items]
    if not videos:
        loose = d.layout == "folders" and any(p.suffix.lower() in VIDEO_EXTENSIONS for p in root.iterdir() if p.is_file())
        if loose:
            raise DatasetError(f"{root} holds videos but no class folders: put each class's videos in a folder named after it")
        raise DatasetError(f"no videos found under {root} for dataset '{d.name}' (layout {d.layout}); is the root right?")
    used = sorted({classes[v.label] for v in videos})
    if len(used) < 2:
        raise DatasetError(f"{root}: videos of {len(used)} class ({', '.join(used)}) only; a classifier needs at least 2 class folders")
    return videos, list(classes)


def _read_csv(path: Path, root: Path, classes: list[str] | None):
    if not path.is_file():
        raise DatasetError(f"label file {path} not found")
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r and not r[0].startswith("#")]
    if rows and rows[0][0].strip().lower() == "path":
        rows = rows[1:]
    items = []
    for r in rows:
        if len(r) < 2:
            raise DatasetError(f"{path}: row {r} needs at least path,label")
        p = Path(r[0].strip())
        p = p if p.is_absolute() else path.parent / p
        split = r[3].strip().lower() if len(r) > 3 else ""
        items.append((p, r[1].strip(), split, r[2].strip() if len(r) > 2 else ""))
    names = classes or sorted({c for _, c, _, _ in items})
    unknown = sorted({c for _, c, _, _ in items} - set(names))
    if unknown:
        raise DatasetError(f"{path}: labels {unknown} are not among the classes {names}")
    return items, names


def _read_ucf101(root: Path, split_dir: Path, split_id: int):
    class_ind = split_dir / "classInd.txt"
    if not class_ind.is_file():
        raise DatasetError(f"UCF101 split lists not found: {class_ind}")
    classes = [line.split()[1] for line in class_ind.read_text().splitlines() if line.strip()]
    items = []
    for split, name in (("train", f"trainlist0{split_id}.txt"), ("test", f"testlist0{split_id}.txt")):
        for line in (split_dir / name).read_text().splitlines():
            if line.strip():
                rel = line.split()[0]
                items.append((root / rel, rel.split("/")[0], split, ""))
    return items, classes


def _read_hmdb51(root: Path, split_dir: Path, split_id: int, classes: list[str] | None):
    files = sorted(split_dir.glob(f"*_test_split{split_id}.txt"))
    if not files:
        raise DatasetError(f"HMDB51 split lists not found in {split_dir}")
    names = classes or [f.name[: -len(f"_test_split{split_id}.txt")] for f in files]
    items = []
    for c in names:
        for line in (split_dir / f"{c}_test_split{split_id}.txt").read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1] in ("1", "2"):
                items.append((root / c / parts[0], c, "train" if parts[1] == "1" else "test", ""))
    return items, names


def make_splits(
    videos: list[Video],
    kind: str = "group",
    fold: int = 0,
    num_folds: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    class_names: list[str] | None = None,
) -> dict[str, list[Video]]:
    """Split into ``train`` / ``val`` / ``test`` (``class_names``: for the messages).

    * ``group``: groups (sorted) are dealt round-robin into ``num_folds`` folds (default: one per group,
      i.e. leave-one-group-out); fold ``fold`` is the test set and the next fold the validation set.
    * ``scene``: the groups (scenes: ``pipeline.data.scenes`` sets them) dealt into ``num_folds`` folds
      (default 5) balanced by class: each fold's class mix close to the whole's, no group in two folds;
      ``seed`` redraws the deal. Fold ``fold`` is the test set and the next fold the validation set.
    * ``stratified``: K-fold cross-validation. Per class, a seeded shuffle deals the videos round-robin
      into ``num_folds`` folds (default 5), so every fold holds each class in proportion; fold ``fold`` is
      the test set, and ``val_fraction`` of all videos, per class, from the other folds the validation set.
      Running every fold tests every video exactly once. ``num_folds`` 1 keeps the older single split:
      ``test_fraction`` test, ``val_fraction`` val.
    * ``official``: the dataset's own train/test lists; validation is carved out of train by group when
      groups exist, else stratified.
    """
    if kind == "group":
        groups = sorted({v.group for v in videos})
        nameless = [v.path.name for v in videos if not v.group]
        if nameless:
            raise DatasetError(
                f"group split: the group pattern does not match {len(nameless)} file name(s), e.g. {nameless[0]}; "
                "rename them, fix group_pattern in the dataset definition, or use --data.split stratified"
            )
        if len(groups) < 3:
            raise DatasetError(
                f"group split needs at least 3 groups (found {len(groups)}); use --data.split stratified"
            )
        k = num_folds or len(groups)
        if not 3 <= k <= len(groups) or not 0 <= fold < k:
            raise DatasetError(f"fold {fold} of {k} folds is impossible with {len(groups)} groups")
        fold_of = {g: i % k for i, g in enumerate(groups)}
        out = {"train": [], "val": [], "test": []}
        for v in videos:
            f = fold_of[v.group]
            out["test" if f == fold else "val" if f == (fold + 1) % k else "train"].append(v)
        return out
    if kind == "scene":
        return _balanced_group_folds(videos, num_folds or DEFAULT_FOLDS, fold, seed)
    if kind == "stratified":
        k = _stratified_fold_count(videos, num_folds, class_names)
        if k == 1:
            return _stratified(videos, val_fraction, test_fraction, seed)
        if not 0 <= fold < k:
            raise DatasetError(f"fold {fold} of {k} folds does not exist: use --data.fold 0..{k - 1}")
        return _stratified_folds(videos, k, fold, val_fraction, seed)
    if kind == "official":
        train = [v for v in videos if v.split == "train"]
        test = [v for v in videos if v.split == "test"]
        if not train or not test:
            raise DatasetError("this dataset has no official train/test lists; use --data.split group or stratified")
        if all(v.group for v in train):
            groups = sorted({v.group for v in train})
            rng = random.Random(seed)
            val_groups = set(rng.sample(groups, max(1, round(len(groups) * val_fraction))))
            return {
                "train": [v for v in train if v.group not in val_groups],
                "val": [v for v in train if v.group in val_groups],
                "test": test,
            }
        parts = _stratified(train, val_fraction, 0.0, seed)
        return {"train": parts["train"], "val": parts["val"], "test": test}
    raise DatasetError(f"split '{kind}' is not one of {SPLITS}")


def _balanced_group_folds(videos: list[Video], k: int, fold: int, seed: int) -> dict[str, list[Video]]:
    """Groups dealt into ``k`` folds, largest first (ties in a seeded order), each to the fold where the
    class counts come closest to an equal share of each class (least squared excess; ties seeded)."""
    by_group: dict[str, list[Video]] = defaultdict(list)
    for v in videos:
        by_group[v.group].append(v)
    if len(by_group) < 3:
        raise DatasetError(f"scene split needs at least 3 scenes (found {len(by_group)}); use --data.split stratified")
    if not 3 <= k <= len(by_group) or not 0 <= fold < k:
        raise DatasetError(f"fold {fold} of {k} folds is impossible with {len(by_group)} scenes: use --data.num_folds 3..{len(by_group)}")
    labels = sorted({v.label for v in videos})
    share = {c: sum(v.label == c for v in videos) / k for c in labels}
    rng = random.Random(seed)
    names = sorted(by_group)
    rng.shuffle(names)
    names.sort(key=lambda g: -len(by_group[g]))  # stable: equal sizes keep the seeded order
    counts = [dict.fromkeys(labels, 0) for _ in range(k)]
    fold_of: dict[str, int] = {}
    for g in names:
        add = {c: sum(v.label == c for v in by_group[g]) for c in labels}
        cost = [sum((counts[f][c] + add[c] - share[c]) ** 2 - (counts[f][c] - share[c]) ** 2 for c in labels) for f in range(k)]
        best = min(cost)
        f = rng.choice([i for i in range(k) if cost[i] <= best + 1e-9])
        fold_of[g] = f
        for c in labels:
            counts[f][c] += add[c]
    out = {"train": [], "val": [], "test": []}
    for v in videos:
        f = fold_of[v.group]
        out["test" if f == fold else "val" if f == (fold + 1) % k else "train"].append(v)
    return out


def _stratified_fold_count(videos: list[Video], num_folds: int | None, class_names: list[str] | None) -> int:
    """``num_folds``, or by default ``DEFAULT_FOLDS``, fewer (said in one line) when a class has fewer videos:
    a user with 3 clips of an action gets 3 folds and a model, not a refusal."""
    counts: dict[int, int] = defaultdict(int)
    for v in videos:
        counts[v.label] += 1
    if not counts:
        raise DatasetError("no videos to split")
    label = min(counts, key=lambda c: (counts[c], c))
    n = counts[label]
    name = f"'{class_names[label]}'" if class_names and label < len(class_names) else str(label)
    if num_folds is not None:
        if num_folds > 1 and n < num_folds:
            raise DatasetError(f"class {name} has {n} videos: too few for {num_folds} folds; give --data.num_folds {n} or fewer, or add videos of it")
        return num_folds
    if n < 3:
        raise DatasetError(f"class {name} has {n} video{'s' * (n != 1)}: at least 3 per class are needed (to learn from, validate on, test on); add videos of it")
    if n < DEFAULT_FOLDS:
        log.warning("class %s has %d videos: %d folds instead of %d (--data.num_folds sets it)", name, n, n, DEFAULT_FOLDS)
    return min(n, DEFAULT_FOLDS)


def _shuffled_classes(videos: list[Video], seed: int) -> list[list[Video]]:
    """Each class's videos, in a seeded random order (the same order for the same files and seed)."""
    by_class: dict[int, list[Video]] = defaultdict(list)
    for v in videos:
        by_class[v.label].append(v)
    rng = random.Random(seed)
    out = []
    for label in sorted(by_class):
        vs = sorted(by_class[label], key=lambda v: str(v.path))
        rng.shuffle(vs)
        out.append(vs)
    return out


def _stratified_folds(videos: list[Video], k: int, fold: int, val_fraction: float, seed: int) -> dict[str, list[Video]]:
    out = {"train": [], "val": [], "test": []}
    for vs in _shuffled_classes(videos, seed):
        if len(vs) < k:
            raise DatasetError(f"class {vs[0].label} has {len(vs)} videos: too few for {k} folds (--data.num_folds)")
        rest = [v for i, v in enumerate(vs) if i % k != fold]
        n_val = min(max(round(len(vs) * val_fraction), 1), len(rest) - 1)  # every class validated, while one is left to learn from
        out["test"] += vs[fold::k]
        out["val"] += rest[:n_val]
        out["train"] += rest[n_val:]
    return out


def _stratified(videos: list[Video], val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[Video]]:
    out = {"train": [], "val": [], "test": []}
    for vs in _shuffled_classes(videos, seed):
        n_test = round(len(vs) * test_fraction)
        n_val = round(len(vs) * val_fraction)
        if len(vs) - n_test - n_val < 1:
            raise DatasetError(f"class {vs[0].label} has {len(vs)} videos: too few for val/test fractions {val_fraction}/{test_fraction}")
        out["test"] += vs[:n_test]
        out["val"] += vs[n_test : n_test + n_val]
        out["train"] += vs[n_test + n_val :]
    return out
