"""Which clips share a scene: groups for folds that keep a room and camera out of both train and test.

Footage without person ids in its names (``../shared/data/pushfit``) often holds several clips cut from one
recording: the same person, room and camera. Stratified folds put such near-duplicates in train and test,
which rewards recognising the room. Each clip is reduced to its median frame (nine frames spread over the
clip: the moving person fades, the scene stays), shrunk to 24x24 and standardised; clips whose scenes
correlate above a threshold are linked, and each connected set is one group (single linkage: a chain of
similar scenes is one group, which errs towards putting together what might be one source). The signatures
are cached beside the features (``scenes.json``), keyed by each file's size and time, so a second run reads
no video.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from pipeline.data.video import decodable_name
from pipeline.data.videoset import Video

log = logging.getLogger(__name__)

SAMPLES = 9  # frames per clip whose median is its scene
SIDE = 24  # the scene's signature is SIDE x SIDE x 3
THRESHOLD = 0.7  # scene correlation above which two clips are one group (benchmarks/scene_groups.py --sheet: one place a row)
CACHE_NAME = "scenes.json"


def median_frame(path: Path) -> np.ndarray | None:
    """A clip's median frame (BGR float, 96x54), or None when no frame can be read."""
    with decodable_name(str(path)) as name:
        cap = cv2.VideoCapture(name)
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        frames = []
        for k in np.linspace(0.05, 0.95, SAMPLES):
            cap.set(cv2.CAP_PROP_POS_FRAMES, int(max(n - 1, 0) * k))
            ok, f = cap.read()
            if ok:
                frames.append(cv2.resize(f, (96, 54), interpolation=cv2.INTER_AREA).astype(np.float32))
        cap.release()
    return np.median(np.stack(frames), 0) if frames else None


def signature(frame: np.ndarray) -> np.ndarray:
    """A median frame -> its standardised SIDE x SIDE x 3 signature (flat)."""
    sig = cv2.resize(frame, (SIDE, SIDE), interpolation=cv2.INTER_AREA).ravel()
    return (sig - sig.mean()) / (sig.std() + 1e-6)


def groups_of(signatures: np.ndarray, threshold: float = THRESHOLD) -> list[int]:
    """Each clip's group from its signature (rows): connected sets of clips whose signatures correlate above
    ``threshold``, numbered from the largest set."""
    linked = signatures @ signatures.T / signatures.shape[1] > threshold
    parent = list(range(len(signatures)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(linked, 1))):
        parent[root(int(i))] = root(int(j))
    members: dict[int, list[int]] = {}
    for i in range(len(signatures)):
        members.setdefault(root(i), []).append(i)
    group = [0] * len(signatures)
    for g, m in enumerate(sorted(members.values(), key=lambda m: (-len(m), m[0]))):
        for i in m:
            group[i] = g
    return group


def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def scene_signatures(paths: list[Path], cache_dir: Path | None = None) -> tuple[dict[Path, np.ndarray], list[Path]]:
    """Each readable clip's signature, and the clips no frame could be read from; cached in ``cache_dir``."""
    cache_file = cache_dir / CACHE_NAME if cache_dir else None
    cached: dict = {}
    if cache_file and cache_file.is_file():
        try:
            cached = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            log.warning("unreadable scene cache %s: reading the clips again", cache_file)
    out, unreadable, changed = {}, [], False
    for p in paths:
        key, stamp = str(p.resolve()), _stamp(p)
        entry = cached.get(key)
        if entry is None or entry.get("stamp") != stamp:
            frame = median_frame(p)
            entry = {"stamp": stamp, "sig": None if frame is None else [round(float(x), 4) for x in signature(frame)]}
            cached[key], changed = entry, True
        if entry["sig"] is None:
            unreadable.append(p)
        else:
            out[p] = np.asarray(entry["sig"], dtype=np.float32)
    if cache_file and changed:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cached))
        tmp.replace(cache_file)
    return out, unreadable


def with_scene_groups(videos: list[Video], cache_dir: Path | None = None, threshold: float = THRESHOLD) -> list[Video]:
    """The videos with ``group`` set to their scene (``scene000`` the largest); a clip no frame can be read
    from is its own group (extraction reports it)."""
    sigs, unreadable = scene_signatures([v.path for v in videos], cache_dir)
    readable = [v for v in videos if v.path in sigs]
    groups = groups_of(np.stack([sigs[v.path] for v in readable]), threshold) if readable else []
    named = {v.path: f"scene{g:03d}" for v, g in zip(readable, groups)}
    n = len(set(groups))
    for i, p in enumerate(unreadable):
        named[p] = f"scene{n + i:03d}"
    return [replace(v, group=named[v.path]) for v in videos]
