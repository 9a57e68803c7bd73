"""The teaching app's examples: a folder of action folders of recorded clips, their features cached as they
come, exactly where ``train.py`` looks for them.

The folder is an ordinary dataset (``python train.py fit --data.dataset FOLDER``) and the cache is the one
``train.py`` would fill (``datasets/cache/<folder name>/<extractor key>/``), so a clip is extracted once,
seconds after it was recorded, and training starts on cached features.
"""

from __future__ import annotations

import queue
import re
import shutil
import threading
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import cv2

from pipeline.data.cache import FeatureCache
from pipeline.data.extract import extract_video, extractor_record
from pipeline.data.features import FeatureExtractor
from pipeline.data.video import VideoError, list_videos
from pipeline.data.videoset import DatasetDefinition
from pipeline.errors import UserError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")
MIN_CLIPS = 3  # per action: one goes to validation (the rejection threshold is fitted there), two or more train


class ExampleError(UserError, ValueError):
    """A request the examples cannot honour (a bad name, a clip that is not there); the message says why."""


@dataclass(frozen=True)
class Clip:
    action: str
    name: str
    seconds: float
    cached: bool  # its features are in the cache


class Examples:
    """Actions and their clips under ``root``, features cached by a background worker.

    ``guard`` is held around each extractor forward: the live stream shares the extractor. ``cache_dir``:
    where features are cached (default: where ``train.py`` caches this folder's, ``datasets/cache/<name>``).
    """

    def __init__(self, root: str | Path, extractor: FeatureExtractor, guard: AbstractContextManager, cache_dir: Path | None = None):
        self.root = Path(root)
        if self.root.is_file():
            raise ExampleError(f"--examples {self.root} is a file: give a folder (it is made if missing)")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ExampleError(f"cannot make the examples folder {self.root}: {e.strerror or e}") from None
        self.definition = DatasetDefinition.load(self.root)
        self.extractor, self.guard = extractor, guard
        self.cache_dir = Path(cache_dir) if cache_dir else self.definition.default_cache()
        self.cache = FeatureCache(self.cache_dir, extractor.config.key(extractor.identity), extractor_record(extractor))
        self._seconds: dict[tuple[Path, float], float] = {}
        self._cached: set[Path] = set()  # clips whose entry is in the cache (hashing a clip per page poll would cost)
        self._todo: queue.Queue[Path | None] = queue.Queue()
        self._busy = 0
        self.failed: dict[str, str] = {}  # clip path: why its features could not be extracted
        self._lock = threading.Lock()
        self._worker = threading.Thread(target=self._work, daemon=True, name="examples-cache")
        self._worker.start()
        for action in self.actions():  # clips recorded before a restart, or copied in by hand
            for path in list_videos(self.root / action):
                if self.cache.entry(path, self.root).is_file():
                    self._cached.add(path)
                else:
                    self.cache_later(path)

    # ---- actions and clips
    def actions(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def _folder(self, action: str) -> Path:
        if not NAME.fullmatch(action or ""):
            raise ExampleError(f"action name '{action}': use 1-40 letters, digits, '_' or '-', starting with a letter or digit")
        return self.root / action

    def add_action(self, action: str) -> None:
        self._folder(action).mkdir(exist_ok=True)

    def remove_action(self, action: str) -> None:
        folder = self._folder(action)
        if not folder.is_dir():
            raise ExampleError(f"there is no action '{action}'")
        if list_videos(folder):
            raise ExampleError(f"action '{action}' still has clips: delete them first")
        shutil.rmtree(folder)

    def clips(self, action: str) -> list[Clip]:
        folder = self._folder(action)
        out = []
        for path in list_videos(folder) if folder.is_dir() else []:
            out.append(Clip(action, path.name, self._duration(path), path in self._cached))
        return out

    def clip_path(self, action: str, name: str) -> Path:
        path = self._folder(action) / name
        if Path(name).name != name or not path.is_file():
            raise ExampleError(f"there is no clip '{name}' in action '{action}'")
        return path

    def new_clip(self, action: str) -> Path:
        """A fresh file name for the next recording of ``action`` (the folder is made if needed)."""
        folder = self._folder(action)
        folder.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%d_%H%M%S")
        n = 0
        while (path := folder / f"{action}_{stamp}{f'_{n}' if n else ''}.mp4").exists():
            n += 1
        return path

    def delete_clip(self, action: str, name: str) -> None:
        path = self.clip_path(action, name)
        self.cache.entry(path, self.root).unlink(missing_ok=True)
        self._cached.discard(path)
        path.unlink()
        self.failed.pop(str(path), None)

    def _duration(self, path: Path) -> float:
        key = (path, path.stat().st_mtime)
        if key not in self._seconds:
            cap = cv2.VideoCapture(str(path))
            frames, fps = cap.get(cv2.CAP_PROP_FRAME_COUNT), cap.get(cv2.CAP_PROP_FPS)
            cap.release()
            self._seconds[key] = round(frames / fps, 2) if fps > 0 else 0.0
        return self._seconds[key]

    # ---- features
    def cache_later(self, path: Path) -> None:
        with self._lock:
            self._busy += 1
        self._todo.put(path)

    @property
    def pending(self) -> int:
        """Clips whose features are still being extracted."""
        with self._lock:
            return self._busy

    def wait(self, timeout: float = 60.0) -> bool:
        """Block until every queued clip is cached (True) or ``timeout`` passes."""
        end = time.monotonic() + timeout
        while self.pending and time.monotonic() < end:
            time.sleep(0.05)
        return not self.pending

    def _work(self) -> None:
        while (path := self._todo.get()) is not None:
            try:
                entry = self.cache.entry(path, self.root)
                seq = extract_video(self.extractor, path, batch_size=4, guard=self.guard)  # small batches: the stream waits little
                self.cache.save(entry, seq)
                self._cached.add(path)
                if not path.exists():  # deleted while it was being extracted: its features go too
                    entry.unlink(missing_ok=True)
                    self._cached.discard(path)
            except (VideoError, OSError) as e:
                if path.exists():  # a clip deleted before its turn is no failure
                    self.failed[str(path)] = str(e)
            finally:
                with self._lock:
                    self._busy -= 1

    def close(self) -> None:
        self._todo.put(None)
        self._worker.join(timeout=30)

    # ---- for the page and the trainer
    def state(self) -> list[dict]:
        return [{"name": a, "clips": [c.__dict__ for c in self.clips(a)]} for a in self.actions()]

    def training_problem(self) -> str | None:
        """Why these examples cannot train a model yet (None: they can)."""
        failed = {p: why for p, why in self.failed.items() if Path(p).exists()}
        if failed:
            path, why = next(iter(failed.items()))
            return f"clip {Path(path).name} cannot be read ({why}): delete it"
        counts = {a: len(list_videos(self.root / a)) for a in self.actions()}
        if len(counts) < 2:
            return "add at least two actions (a classifier tells actions apart)"
        few = [f"{a} ({n})" for a, n in counts.items() if n < MIN_CLIPS]
        if few:
            return f"record at least {MIN_CLIPS} clips per action; too few: {', '.join(few)}"
        return None
