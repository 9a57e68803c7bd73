"""Dataset download against a local HTTP server (no internet here, and none needed)."""

from __future__ import annotations

import functools
import http.server
import threading
import zipfile
from pathlib import Path

import pytest
from conftest import write_clip

from pipeline.data.download import download_dataset, download_file, unpack_videos
from pipeline.data.videoset import DatasetDefinition, DatasetError


@pytest.fixture
def server(tmp_path):
    """Serve ``tmp_path/www`` on a free local port; yields the base URL and the folder."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", www
    httpd.shutdown()


def _zip_of_clips(path: Path, names: list[str], tmp: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for i, n in enumerate(names):
            clip = write_clip(tmp / "src" / n, frames=6, seed=i)
            z.write(clip, f"nested/dir/{n}")  # archives often have folders: videos are flattened
        z.writestr("nested/readme.txt", "not a video")
    return path


def _definition(base: str) -> DatasetDefinition:
    return DatasetDefinition(
        name="toy",
        classes=["walk", "wave"],
        group_pattern="^([^_]+)_",
        download=[{"url": f"{base}/walk.zip", "into": "walk"}, {"url": f"{base}/wave.zip", "into": "wave"}],
    )


def test_download_dataset_fetches_unpacks_and_skips_what_is_there(server, tmp_path):
    base, www = server
    _zip_of_clips(www / "walk.zip", ["a_walk.avi", "b_walk.avi"], tmp_path)
    _zip_of_clips(www / "wave.zip", ["a_wave.avi", "b_wave.avi"], tmp_path)
    root = tmp_path / "data"
    download_dataset(_definition(base), root)
    assert sorted(p.name for p in (root / "walk").iterdir()) == ["a_walk.avi", "b_walk.avi"]
    assert sorted(p.name for p in (root / "wave").iterdir()) == ["a_wave.avi", "b_wave.avi"]
    assert not list(root.rglob("*.part")) and not list(root.rglob("*.unpacking"))

    # a class folder lost: only that archive is unpacked again, and nothing is fetched (server gone)
    (www / "walk.zip").unlink()
    (www / "wave.zip").unlink()
    for f in (root / "wave").iterdir():
        f.unlink()
    (root / "wave").rmdir()
    download_dataset(_definition(base), root)
    assert sorted(p.name for p in (root / "wave").iterdir()) == ["a_wave.avi", "b_wave.avi"]


def test_missing_url_is_a_one_line_error_and_leaves_no_part_file(server, tmp_path):
    base, _ = server
    with pytest.raises(DatasetError, match=r"cannot download .*/walk.zip") as e:
        download_dataset(_definition(base), tmp_path / "data")
    assert "\n" not in str(e.value)
    assert not list((tmp_path / "data").rglob("*.part"))


def test_unreachable_host_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="cannot download"):
        download_file("http://127.0.0.1:9/none.zip", tmp_path / "none.zip", timeout=5)


def test_not_an_archive(tmp_path):
    bad = tmp_path / "walk.zip"
    bad.write_text("<html>moved</html>")
    with pytest.raises(DatasetError, match="not a zip or tar archive"):
        unpack_videos(bad, tmp_path / "out")


def test_definition_without_download_says_to_pass_root(tmp_path):
    with pytest.raises(DatasetError, match="--data.root"):
        download_dataset(DatasetDefinition(name="mine", classes=["a"]), tmp_path / "data")
