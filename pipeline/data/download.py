"""Fetch a dataset's archives (the ``download`` list of its definition) and unpack its videos.

Each entry ``{url, into}`` is downloaded to ``<root>/.downloads/`` (to a ``.part`` file renamed when
complete, so an interrupted download is never mistaken for a finished one) and its video files are
unpacked into ``<root>/<into>/`` through a staging folder. Entries whose folder already holds videos are
skipped, so a rerun fetches only what is missing.
"""

from __future__ import annotations

import logging
import shutil
import tarfile
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from pipeline.data.video import VIDEO_EXTENSIONS
from pipeline.data.videoset import DatasetDefinition, DatasetError

log = logging.getLogger(__name__)


def download_file(url: str, dest: Path, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` with a progress bar; raise DatasetError naming the URL on failure."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(part, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"Downloading {dest.name}", leave=False) as bar:
                while block := r.read(1 << 16):
                    f.write(block)
                    bar.update(len(block))
        if total is not None and part.stat().st_size != total:
            raise DatasetError(f"download of {url} stopped early ({part.stat().st_size} of {total} bytes)")
    except DatasetError:
        part.unlink(missing_ok=True)
        raise
    except Exception as e:  # URLError, HTTPError, timeouts, ...
        part.unlink(missing_ok=True)
        raise DatasetError(f"cannot download {url}: {getattr(e, 'reason', None) or e}") from None
    part.replace(dest)
    return dest


def unpack_videos(archive: Path, into: Path) -> int:
    """Copy the video files of a zip or tar archive, flattened, into ``into``; return how many."""
    into.mkdir(parents=True, exist_ok=True)
    count = 0
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                for info in z.infolist():
                    name = PurePosixPath(info.filename).name
                    if not info.is_dir() and name.lower().endswith(VIDEO_EXTENSIONS) and not name.startswith("."):
                        with z.open(info) as src, open(into / name, "wb") as dst:
                            shutil.copyfileobj(src, dst)
                        count += 1
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as t:
                for m in t.getmembers():
                    name = PurePosixPath(m.name).name
                    if m.isfile() and name.lower().endswith(VIDEO_EXTENSIONS) and not name.startswith("."):
                        with t.extractfile(m) as src, open(into / name, "wb") as dst:
                            shutil.copyfileobj(src, dst)
                        count += 1
        else:
            raise DatasetError(f"{archive}: not a zip or tar archive; unpack it by hand into {into}")
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as e:
        raise DatasetError(f"{archive}: cannot unpack ({e}); delete it and download again") from None
    return count


def download_dataset(definition: DatasetDefinition, root: Path) -> None:
    """Make ``root`` hold the dataset, downloading what is missing."""
    if not definition.download:
        raise DatasetError(
            f"data root {root} has no videos and dataset '{definition.name}' defines no download; "
            "pass --data.root DIR with the videos"
        )
    def missing(entry: dict) -> bool:
        target = root / entry.get("into", "")
        return not (target.is_dir() and any(p.suffix.lower() in VIDEO_EXTENSIONS for p in target.iterdir()))

    todo = [e for e in definition.download if missing(e)]
    for entry in tqdm(todo, desc=f"Fetching {definition.name}", unit="archive", disable=not todo):
        url, target = entry["url"], root / entry.get("into", "")
        archive = root / ".downloads" / PurePosixPath(urllib.request.urlparse(url).path).name
        if not archive.is_file():
            download_file(url, archive)
        staging = root / ".downloads" / f"{archive.name}.unpacking"
        shutil.rmtree(staging, ignore_errors=True)  # left by a killed run
        n = unpack_videos(archive, staging)
        if n == 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise DatasetError(f"{archive} holds no video files")
        if target.exists():
            for f in staging.iterdir():
                f.replace(target / f.name)
            staging.rmdir()
        else:  # one rename: a killed run never leaves a half-filled class folder
            target.parent.mkdir(parents=True, exist_ok=True)
            staging.replace(target)
        log.info("unpacked %d videos from %s into %s", n, archive.name, target)
