"""Video -> frames: OpenCV decoding with temporal subsampling and a frame cap.

A file is looked at before a decoder touches it: a still image is refused (it is not "a 1-frame video"),
and an uncompressed AVI, which crashes OpenCV's reader in native code (no exception to catch), is decoded
by PyAV (FFmpeg) instead.

Frames stay uint8 BGR (H, W, 3) numpy arrays here; conversion to float happens on the model's device.
Each frame carries its source frame index so results map back to the source's timestamps.
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg's own messages (AV_LOG_QUIET)
import cv2  # noqa: E402

# OpenCV's messages on corrupt files and absent cameras duplicate the one-line errors raised here; set at
# run time too, since cv2 may have been imported (and its log level read) before this module
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

from pipeline.errors import UserError  # noqa: E402

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp")
FALLBACK_FPS = 30.0  # for sources that report no frame rate (some streams and webcams)


class VideoError(UserError, RuntimeError):
    """A source that cannot be opened or yields no frames. The message names the source."""


TRUNCATED = 0.9  # share of the declared frames below which a video counts as cut short


def is_truncated(read: int, declared: int) -> bool:
    """Far fewer frames decoded than the container declares (0: unknown): a corrupt middle or end."""
    return declared > 0 and read < TRUNCATED * declared


@dataclass(frozen=True)
class VideoInfo:
    source: str
    fps: float  # the source's frame rate
    frame_count: int  # as reported by the container; 0 when unknown (streams, cameras)
    width: int
    height: int


IMAGE_SIGNATURES = {b"\xff\xd8\xff": "JPEG", b"\x89PNG": "PNG", b"GIF8": "GIF", b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}


def sniff(path: Path) -> str | None:
    """What the first bytes say a file is, when it matters: an image format's name, ``raw-avi`` for an
    AVI whose video is uncompressed, else None."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    for magic, name in IMAGE_SIGNATURES.items():
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        at = head.find(b"strh")
        while at >= 0 and head[at + 8 : at + 12] != b"vids":  # the video stream's header, then its format
            at = head.find(b"strh", at + 4)
        at = head.find(b"strf", at) if at >= 0 else -1
        if at >= 0 and len(head) >= at + 28:
            compression = int.from_bytes(head[at + 24 : at + 28], "little")
            if compression in (0, 3):  # BI_RGB, BI_BITFIELDS: raw pixels
                return "raw-avi"
    return None


class PyAVCapture:
    """The part of ``cv2.VideoCapture`` this package uses, decoded by PyAV: for files OpenCV cannot read safely."""

    def __init__(self, path: str):
        try:
            import av
        except ImportError:
            raise VideoError(f"{path}: an uncompressed AVI needs PyAV to be read safely: pip install av") from None
        self._av = av
        try:
            self._container = av.open(path)
            self._stream = self._container.streams.video[0]
        except (av.error.FFmpegError, IndexError):
            self._container = None
            return
        self._frames = self._container.decode(self._stream)
        self._frame = None

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self._container is not None

    def get(self, prop: int) -> float:
        s = self._stream
        values = {
            cv2.CAP_PROP_FPS: float(s.average_rate or s.guessed_rate or 0),
            cv2.CAP_PROP_FRAME_COUNT: float(s.frames or 0),
            cv2.CAP_PROP_FRAME_WIDTH: float(s.codec_context.width),
            cv2.CAP_PROP_FRAME_HEIGHT: float(s.codec_context.height),
        }
        return values.get(prop, 0.0)

    def set(self, prop: int, value: float) -> bool:
        """Only a rewind to the start (``--realtime --loop``)."""
        if prop != cv2.CAP_PROP_POS_FRAMES or value != 0 or self._container is None:
            return False
        self._container.seek(0)
        self._frames = self._container.decode(self._stream)
        return True

    def grab(self) -> bool:
        try:
            self._frame = next(self._frames)
        except (StopIteration, self._av.error.FFmpegError):
            self._frame = None
        return self._frame is not None

    def retrieve(self) -> tuple[bool, np.ndarray | None]:
        return (True, self._frame.to_ndarray(format="bgr24")) if self._frame is not None else (False, None)

    def read(self) -> tuple[bool, np.ndarray | None]:
        return self.retrieve() if self.grab() else (False, None)

    def release(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


def is_stream(source: str | int) -> bool:
    s = str(source)
    return s.isdigit() or "://" in s


def check_source(source: str | int) -> str | None:
    """Cheap checks of a file before any decoder or model is loaded: it exists, is a readable non-empty
    file and not an image. Returns ``raw-avi`` for a file that needs PyAV, else None."""
    s = str(source)
    if is_stream(s):
        return None
    path = Path(s)
    if not path.exists():
        raise VideoError(f"{s}: no such file")
    if path.is_dir():
        raise VideoError(f"{s}: is a folder, not a video file")
    if not os.access(path, os.R_OK):
        raise VideoError(f"{s}: permission denied")
    if path.stat().st_size == 0:
        raise VideoError(f"{s}: empty file")
    try:
        kind = sniff(path)
    except OSError as e:
        raise VideoError(f"{s}: cannot read ({e.strerror or e})") from None
    if kind not in (None, "raw-avi"):
        raise VideoError(f"{s}: is a {kind} image, not a video: give a video file")
    return kind


@contextlib.contextmanager
def decodable_name(path: str) -> Iterator[str]:
    """``path`` as the decoders can take it. A name that is not UTF-8 (bytes the file system allows) crashes
    OpenCV's reader in native code: such a file is opened through a symbolic link with a plain name, removed
    once the decoder holds the file open."""
    try:
        path.encode("utf-8")
        yield path
        return
    except UnicodeEncodeError:
        pass
    folder = tempfile.mkdtemp(prefix="video-")
    link = os.path.join(folder, "video" + "".join(c for c in Path(path).suffix if c.isascii()))
    try:
        os.symlink(os.path.abspath(os.fsencode(path)), os.fsencode(link))
        yield link
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def open_capture(source: str | int) -> cv2.VideoCapture:
    """Open a file, URL or camera index, or raise VideoError saying why not."""
    s = str(source)
    kind = check_source(s)
    if kind == "raw-avi":
        with decodable_name(s) as name:
            cap = PyAVCapture(name)
        if not cap.isOpened():
            raise VideoError(f"{s}: cannot open file (an uncompressed AVI that is corrupt)")
        return cap
    if s.isdigit():
        cap = cv2.VideoCapture(int(s))
    else:
        with decodable_name(s) as name:
            cap = cv2.VideoCapture(name)
    if not cap.isOpened():
        cap.release()
        what = "camera" if s.isdigit() else "stream" if "://" in s else "file"
        raise VideoError(f"{s}: cannot open {what} (not a video, corrupt, unreachable or unsupported codec)")
    return cap


def check_sources(sources: list[str]) -> None:
    """Raise VideoError when none of ``sources`` can be read, before any model loads (seconds): every file is
    checked cheaply (``check_source``), and files are opened in order until one opens. A batch with some bad
    files goes on (each is reported where it fails); a stream is judged when it is read."""
    bad = []
    for s in sources:
        try:
            if check_source(s) is None and not is_stream(s):
                open_capture(s).release()
            return
        except VideoError as e:
            bad.append(e)
    if bad:
        raise bad[0] if len(bad) == 1 else VideoError(f"none of the {len(sources)} videos can be read, e.g. {bad[0]}")


def probe(cap: cv2.VideoCapture, source: str | int) -> VideoInfo:
    fps = cap.get(cv2.CAP_PROP_FPS)
    if not fps or not math.isfinite(fps) or fps <= 0 or fps > 1000:
        fps = FALLBACK_FPS
    return VideoInfo(
        source=str(source),
        fps=float(fps),
        frame_count=max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0), 0),
        width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
        height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
    )


def frame_aspect(source: str | Path) -> float | None:
    """The frames' width over height as the file's header declares it; None when it cannot be opened or says nothing."""
    try:
        cap = open_capture(source)
    except VideoError:
        return None
    try:
        info = probe(cap, source)
    finally:
        cap.release()
    return info.width / info.height if info.width > 0 and info.height > 0 else None


class FrameSampler:
    """Decide which source frames to keep so that the kept ones run at ``target_fps``.

    Frame i is kept when it is the first at or after the next slot of the target clock; with no
    target (or a target at or above the source rate) every frame is kept.
    """

    def __init__(self, source_fps: float, target_fps: float | None):
        self.step = 1.0 if not target_fps or target_fps >= source_fps else source_fps / target_fps
        self._next = 0.0

    def keep(self, index: int) -> bool:
        if index + 1e-6 >= self._next:
            self._next += self.step
            # a source frame can only fill one slot; skip slots it already passed (dropped input)
            while self._next <= index:
                self._next += self.step
            return True
        return False


class VideoReader:
    """Iterate ``(source_index, frame)`` of a video, subsampled to ``fps`` and capped at ``max_frames``."""

    def __init__(self, source: str | int, fps: float | None = None, max_frames: int | None = None):
        self.source = source
        self.target_fps = fps
        self.max_frames = max_frames
        self._cap = open_capture(source)
        self.info = probe(self._cap, source)

    @property
    def fps(self) -> float:
        """Frame rate of the frames this reader yields."""
        return min(self.target_fps or self.info.fps, self.info.fps)

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        for index, frame, _ in self._decode(every_frame=False):
            yield index, frame

    def _decode(self, every_frame: bool) -> Iterator[tuple[int, np.ndarray, bool]]:
        """``(source_index, frame, kept)``; skipped frames are only grabbed, never decoded, unless
        ``every_frame`` (an annotated copy of the video needs them all)."""
        sampler = FrameSampler(self.info.fps, self.target_fps)
        kept, index = 0, 0
        try:
            while self.max_frames is None or kept < self.max_frames:
                if not self._cap.grab():
                    break
                keep = sampler.keep(index)
                if keep or every_frame:
                    ok, frame = self._cap.retrieve()
                    if not ok or frame is None:
                        break
                    yield index, frame, keep
                    kept += keep
                index += 1
        finally:
            self.close()
        if kept == 0:
            raise VideoError(f"{self.source}: no frames could be decoded (empty or corrupt video)")

    def batches(self, size: int, every_frame: bool = False, pin: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Yield ``(source_indices (B,), frames (B, H, W, 3) uint8, kept (B,) bool)`` in chunks of at most
        ``size`` frames; without ``every_frame`` only sampled frames come, all with ``kept`` True.

        ``pin``: each batch is stacked straight into page-locked memory (for a CUDA model: its copy to the
        GPU is then one DMA that does not block the host, ``FeatureExtractor.preprocess``), no extra copy."""
        idx: list[int] = []
        frames: list[np.ndarray] = []
        keep: list[bool] = []
        for i, frame, k in self._decode(every_frame):
            idx.append(i)
            frames.append(frame)
            keep.append(k)
            if len(frames) == size:
                yield np.asarray(idx), stack(frames, pin), np.asarray(keep)
                idx, frames, keep = [], [], []
        if frames:
            yield np.asarray(idx), stack(frames, pin), np.asarray(keep)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def stack(frames: list[np.ndarray], pin: bool = False) -> np.ndarray:
    """Frames of one size -> one (B, H, W, 3) array; with ``pin``, in page-locked memory (a numpy view of a
    pinned torch tensor, which the array keeps alive; torch's caching host allocator reuses the blocks)."""
    if not pin or len({f.shape for f in frames}) != 1:
        return np.stack(frames)
    import torch

    out = torch.empty((len(frames), *frames[0].shape), dtype=torch.uint8, pin_memory=True).numpy()
    return np.stack(frames, out=out)


def list_videos(folder: str | Path) -> list[Path]:
    """Video files under ``folder`` (recursively, by extension), sorted; none for a missing folder.

    Broken links are listed too, so that reading them reports them instead of silently leaving them out.
    """
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and not p.is_dir()) if folder.is_dir() else []


LIST_EXTENSIONS = (".txt", ".csv")


def read_list(path: str | Path) -> list[str]:
    """The videos a list names: a text file of paths (one a line, ``#`` comments) or a CSV whose ``path``
    column (else its first) holds them; relative paths are relative to the list's folder."""
    import csv

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise VideoError(f"{path}: cannot read the list of videos ({getattr(e, 'strerror', None) or e})") from None
    if path.suffix.lower() == ".csv":
        rows = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)]
        column = rows[0].index("path") if rows and "path" in rows[0] else 0
        names = [r[column].strip() for r in rows[1 if rows and "path" in rows[0] else 0 :] if len(r) > column]
    else:
        names = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not names:
        raise VideoError(f"{path}: the list names no videos")
    return [n if is_stream(n) or Path(n).is_absolute() else str(path.parent / n) for n in names]


def expand_sources(items: list[str], outputs: str | Path | None = None) -> list[str]:
    """Command-line sources -> videos: files and URLs as given, folders -> their videos, globs expanded, a
    ``.txt`` or ``.csv`` list -> the videos it names (``read_list``).

    A name that is none of these is kept, so that reading it gives the usual one-line error. A folder's or
    glob's videos under ``outputs`` (the run's output folder, when it lies inside a source folder) are left
    out: they are this tool's own annotated videos from an earlier run, not footage to label.
    """
    out: list[str] = []
    mine = Path(outputs).resolve() if outputs is not None else None

    def footage(item: str, found: list) -> list[str]:
        kept = [str(p) for p in found if mine is None or not Path(p).resolve().is_relative_to(mine)]
        if not kept:
            raise VideoError(f"{item}: its only videos are under the output folder {outputs} (this tool's outputs); give the footage's own folder or another --output")
        return kept

    for item in items:
        if not is_stream(item) and Path(item).suffix.lower() in LIST_EXTENSIONS and Path(item).is_file():
            out += read_list(item)
        elif is_stream(item) or Path(item).is_file():
            out.append(item)
        elif Path(item).is_dir():
            found = list_videos(item)
            if not found:
                raise VideoError(f"{item}: folder holds no video files ({', '.join(VIDEO_EXTENSIONS[:4])}, ...)")
            out += footage(item, found)
        elif any(c in item for c in "*?["):
            found = sorted(p for p in glob.glob(item, recursive=True) if Path(p).is_file())
            if not found:
                raise VideoError(f"{item}: no files match")
            out += footage(item, found)
        else:
            out.append(item)
    return out


def prefetch(items: Iterable, depth: int = 2) -> Iterator:
    """Run ``items`` (e.g. a decoder) in a background thread, ``depth`` items ahead of the consumer.

    The bounded queue overlaps decoding with inference without letting memory grow; an exception in the
    producer is re-raised in the consumer, and closing the consumer early stops the producer.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(entry: tuple) -> bool:
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((done, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            put((done, e))

    thread = threading.Thread(target=produce, daemon=True, name="decode")
    thread.start()
    try:
        while True:
            item, err = q.get()
            if item is done:
                if err is not None:
                    raise err
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5.0)
