"""The teaching app end to end, in headless Chromium: three actions, five clips each recorded from Weizmann
clips replayed as the camera, Train, then live labels on people it never saw. Screenshots at each step."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ROOT, WEIZMANN, free_port, needs_shared, run_script, wait_for_url

ACTIONS = ("walk", "wave2", "jack")
TRAIN_ACTORS = ("daria", "denis", "eli", "ido", "ira")
HELD_OUT = ("moshe", "shahar")
chromium = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    needs_shared,
    pytest.mark.slow,
    pytest.mark.skipif(chromium is None, reason="Debian's chromium package is not installed (apt-get install chromium)"),
]


def clip(action: str, actor: str) -> str:
    return str(WEIZMANN / action / f"{actor}_{action}.avi")


def lit(path: Path) -> float:
    """Share of the screenshot's columns with something brighter than the page's dark background."""
    shot = cv2.imread(str(path))
    return float((np.abs(shot.astype(int) - 0x11).sum(-1) > 60).any(0).mean())


@pytest.fixture
def app(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "teach.py"), "--source", clip("walk", "daria"), "--examples", str(tmp_path / "mine"),
         "--cache-dir", str(tmp_path / "cache"), "--port", str(port)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    wait_for_url(url + "api/state", proc, 120)
    yield url
    proc.terminate()
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode in (0, -15), out[-3000:]


def test_record_three_actions_train_and_recognise_new_people_in_the_browser(app, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])")
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(app, wait_until="commit")
        page.wait_for_function("document.getElementById('stream').naturalWidth > 0", timeout=60_000)
        page.wait_for_function("document.getElementById('info').textContent.includes('1 in view')", timeout=30_000)  # the skeleton's person
        assert page.text_content("#label") == "no model yet"
        assert page.is_disabled("#train")
        page.screenshot(path=str(shots / "1_start.png"))

        for action in ACTIONS:
            page.fill("#action-name", action)
            page.click("#add-action")
            page.wait_for_selector(f".action[data-name='{action}']")
        page.fill("#countdown", "0")
        page.fill("#seconds", "2")

        def record(action: str, actor: str, n: int) -> None:
            page.fill("#source", clip(action, actor))
            page.click("#use-source")
            page.wait_for_function(f"document.getElementById('info').textContent.endsWith({json.dumps(clip(action, actor))})")
            page.click(f".action[data-name='{action}'] .record")
            page.wait_for_function(f"document.querySelector(\".action[data-name='{action}'] .count\").textContent === '{n} clip{'s' * (n > 1)}'", timeout=60_000)

        for action in ACTIONS:
            for i, actor in enumerate(TRAIN_ACTORS):
                if action == "jack" and i == 2:  # the page during a take
                    page.fill("#source", clip(action, actor))
                    page.click("#use-source")
                    page.wait_for_function(f"document.getElementById('info').textContent.endsWith({json.dumps(clip(action, actor))})")
                    page.fill("#seconds", "3")
                    page.click(".action[data-name='jack'] .record")
                    page.wait_for_function("document.getElementById('label').textContent.startsWith('recording jack')")
                    assert page.is_disabled(".action[data-name='walk'] .record")  # one take at a time
                    page.wait_for_timeout(700)
                    page.screenshot(path=str(shots / "2_recording.png"))
                    page.wait_for_function("document.querySelector(\".action[data-name='jack'] .count\").textContent === '3 clips'", timeout=60_000)
                    page.fill("#seconds", "2")
                else:
                    record(action, actor, i + 1)
        # a bad take, deleted with its button
        record("walk", "lena", 6)
        page.click(".action[data-name='walk'] .clip:last-child .delete")
        page.wait_for_function("document.querySelector(\".action[data-name='walk'] .count\").textContent === '5 clips'")
        # closing the page loses nothing: a new page shows every clip
        page.close()
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(app, wait_until="commit")
        page.wait_for_selector(".action[data-name='wave2'] .clip")
        for action in ACTIONS:
            assert page.text_content(f".action[data-name='{action}'] .count") == "5 clips"
        page.wait_for_function("document.querySelectorAll('.clip img').length === 15 && [...document.querySelectorAll('.clip img')].every(i => i.naturalWidth > 0)")
        page.wait_for_function("!document.getElementById('train').disabled", timeout=60_000)  # every clip's features are cached
        page.screenshot(path=str(shots / "3_recorded.png"))

        page.click("#train")
        page.wait_for_function("document.getElementById('progress').value > 0", timeout=120_000)
        page.screenshot(path=str(shots / "4_training.png"))
        page.wait_for_function("document.getElementById('model').textContent.startsWith('model: ')", timeout=300_000)
        info = page.text_content("#train-info")
        assert info.startswith("done, validation accuracy"), info
        assert page.text_content("#train-problem") == ""  # nothing left to fix (a deleted take is no broken clip)
        page.wait_for_function("!document.getElementById('label').textContent.startsWith('loading')", timeout=30_000)  # its first label
        page.screenshot(path=str(shots / "5_trained.png"))

        right, readings = 0, 0
        for action in ACTIONS:
            for actor in HELD_OUT:
                page.fill("#source", clip(action, actor))
                page.click("#use-source")
                page.wait_for_timeout(1500)  # the GRU warms up on the new person
                for _ in range(12):
                    right += page.text_content("#label").startswith(action + " ")
                    readings += 1
                    page.wait_for_timeout(200)
            page.screenshot(path=str(shots / f"6_live_{action}.png"))
        browser.close()
    assert right / readings > 0.6, f"held-out people: the right action {right} of {readings} readings"
    for shot in shots.iterdir():
        assert lit(shot) > 0.5, shot  # the stream and the panel are drawn, not a blank page
    # ordinary outputs: the folder trains with train.py, the checkpoint labels videos with infer.py
    mine = tmp_path / "mine"
    assert sorted(p.name for p in mine.iterdir() if not p.name.startswith(".")) == sorted(ACTIONS)
    assert all(len(list((mine / a).glob("*.mp4"))) == 5 for a in ACTIONS)
    ckpt = next((mine / ".training" / "runs" / "mine").glob("version_*/checkpoints/best-*.ckpt"))  # the runs live with the examples
    r = run_script(str(ROOT / "infer.py"), clip("walk", "shahar"), "-c", str(ckpt), "--json", str(tmp_path / "shahar.json"), "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "shahar.json").read_text())["video"]["label"] == "walk"
