"""``train.py`` as a user runs it: download, extract, fit, test, report; and its one-line errors."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, TINY_MODEL, make_dataset, run_script
from test_download import server  # noqa: F401  (fixture)
from test_extract import _bad_files

from pipeline.cli import leave_process_group, reserve_version, unknown_rules
from pipeline.data.features import POSE_DIM


def _args(tmp: Path, *extra: str, dataset: Path | None = None, root: Path | None = None, epochs: int = 2) -> list[str]:
    logger = json.dumps([{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(tmp / "runs")}}])
    args = [
        "train.py", extra[0] if extra else "fit", "--config", "configs/weizmann.yaml",
        "--data.dataset", str(dataset or tmp / "toy.yaml"),
        "--data.extractor.weights", TINY_MODEL, "--data.extractor.imgsz", "64",
        "--data.cache_dir", str(tmp / "cache"), "--data.batch_size", "4",
        "--trainer.max_epochs", str(epochs), "--trainer.logger", logger,
    ]
    if root is not None:
        args += ["--data.root", str(root)]
    return args + list(extra[1:])


def _toy_yaml(tmp: Path, download: str = "") -> Path:
    p = tmp / "toy.yaml"
    p.write_text(f"name: toy\nlayout: folders\nclasses: [walk, wave]\ngroup_pattern: '^([^_]+)_'\n{download}")
    return p


def same(a, b) -> bool:
    """Equal, tensors and all (a state dict's extra state nests them in dicts)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return torch.equal(a, b) if torch.is_tensor(a) else a == b


def _one_line_error(r) -> str:
    assert r.returncode == 2, r.stdout[-1000:] + r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, r.stderr[-2000:]
    return lines[0]


def test_fit_downloads_extracts_trains_tests_and_reports(tmp_path, server):  # noqa: F811
    base, www = server
    src = make_dataset(tmp_path / "src", classes=("walk", "wave"))
    for c in ("walk", "wave"):
        with zipfile.ZipFile(www / f"{c}.zip", "w") as z:
            for f in (src / c).iterdir():
                z.write(f, f"{c}/{f.name}")
    _toy_yaml(tmp_path, f"download:\n  - {{url: '{base}/walk.zip', into: walk}}\n  - {{url: '{base}/wave.zip', into: wave}}\n")
    env = {"ACTIONS_DATA_DIR": str(tmp_path / "data")}

    r = run_script(*_args(tmp_path), env=env)  # the tiny model sees nobody, so only the GRU-state rule is fitted
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "data" / "toy" / "walk").iterdir()) == sorted(p.name for p in (src / "walk").iterdir())
    assert "extracting features of 8 videos" in r.stderr
    keys = ("run:", "checkpoint:", "stream:", "test:", "unknown:", "report:")
    summary = dict(ln.split(":", 1) for ln in r.stdout.splitlines() if ln.startswith(keys))
    assert set(summary) == {"run", "checkpoint", "stream", "test", "unknown", "report"}, r.stdout[-2000:]
    ckpt, report = Path(summary["checkpoint"].strip()), Path(summary["report"].strip())
    assert ckpt.is_file() and ckpt.name.startswith("best")
    rep = json.loads(report.read_text())
    assert rep["checkpoint"] == str(ckpt)
    assert rep["classes"] == ["walk", "wave"]
    assert rep["stream"] in rep["streams_trained"] and summary["stream"].split()[0] == rep["stream"]
    # the rejection rules, fitted on training and validation, and what they do to the test split
    rej = rep["rejection"]
    assert rej["threshold"] == 0.0 and rej["prototypes"]["quantile"] == 0.1 and rej["prototypes"]["calibration"] > 0
    assert summary["unknown"].strip().startswith("GRU state unlike training (past the limit: 10% of validation frames); test videos called unknown")
    assert "motion" not in rej  # the random test model sees nobody: no motion to learn, so no motion rule
    assert 0 <= rej["test_videos_unknown"] <= 1 and rej["test_video_top1_with_rejection"] <= rep["metrics"]["test/video_top1"] + 1e-9
    assert {"test/video_top1", "test/video_top5", "test/video_mean_class", "test/clip_top1"} <= set(rep["metrics"])
    assert len(rep["videos"]) == 2 and {"path", "label", "predicted", "score"} <= set(rep["videos"][0])
    assert (report.parent / "confusion_matrix.png").stat().st_size > 1000

    # the same fit again: nothing fetched (the server is emptied) and nothing re-extracted
    for f in www.iterdir():
        f.unlink()
    again = run_script(*_args(tmp_path), env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "extracting features" not in again.stderr
    # and the run repeats exactly, whether or not it had to extract first (extraction leaves the RNG alone)
    ckpt2 = Path(next(ln for ln in again.stdout.splitlines() if ln.startswith("checkpoint:")).split(":", 1)[1].strip())
    a, b = (torch.load(c, weights_only=True)["state_dict"] for c in (ckpt, ckpt2))
    assert same(a, b)

    # test any checkpoint on another split: the extractor and classes come from the checkpoint
    t = run_script(*_args(tmp_path, "test", "--ckpt_path", str(ckpt), "--data.fold", "1"), env=env)
    assert t.returncode == 0, t.stderr[-3000:]
    assert "test:" in t.stdout and "video_top1" in t.stdout
    other = Path(next(ln for ln in t.stdout.splitlines() if ln.startswith("report:")).split(":", 1)[1].strip())
    assert other != report and json.loads(other.read_text())["split"]["fold"] == 1
    assert json.loads(report.read_text())["split"]["fold"] == 0  # the fit's report is kept


def test_bad_files_are_skipped_and_reported(tmp_path):
    root = make_dataset(tmp_path / "toy", classes=("walk", "wave"))
    bad = _bad_files(root / "walk")
    _toy_yaml(tmp_path)
    r = run_script(*_args(tmp_path, root=root, epochs=1))
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"skipped {len(bad)} video(s)" in r.stderr
    for p in bad.values():
        assert str(p) in r.stderr
    assert "test:" in r.stdout


def test_wrong_data_root(tmp_path):
    _toy_yaml(tmp_path)
    err = _one_line_error(run_script(*_args(tmp_path, root=tmp_path / "nowhere")))
    assert "nowhere" in err and "does not exist" in err


def test_unknown_weights_offline(tmp_path):
    _toy_yaml(tmp_path)
    root = make_dataset(tmp_path / "toy", classes=("walk", "wave"))
    err = _one_line_error(run_script(*_args(tmp_path, "fit", "--data.extractor.weights", "yolo99z-pose.pt", root=root)))
    assert "yolo99z-pose.pt" in err and "put the file at" in err


def test_checkpoint_errors(tmp_path):
    _toy_yaml(tmp_path)
    root = make_dataset(tmp_path / "toy", classes=("walk", "wave"))
    r = run_script(*_args(tmp_path, "fit", "--data.extractor.layers", "[]", root=root, epochs=1))  # pose only
    assert r.returncode == 0, r.stderr[-3000:]
    last = next((tmp_path / "runs").rglob("last.ckpt"))

    # resuming with another extractor: the checkpoint's feature size does not match
    err = _one_line_error(run_script(*_args(tmp_path, "fit", "--ckpt_path", str(last), "--data.extractor.layers", "[16]", root=root)))
    assert f"expects {POSE_DIM} features per frame" in err and "layers []" in err

    err = _one_line_error(run_script(*_args(tmp_path, "test", "--ckpt_path", str(tmp_path / "none.ckpt"), root=root)))
    assert "not found" in err
    junk = tmp_path / "junk.ckpt"
    junk.write_text("hello")
    err = _one_line_error(run_script(*_args(tmp_path, "test", "--ckpt_path", str(junk), root=root)))
    assert "not a readable checkpoint" in err


def test_ddp_extraction_and_fit_on_two_cpu_processes(tmp_path):
    _toy_yaml(tmp_path)
    root = make_dataset(tmp_path / "toy", classes=("walk", "wave"))
    r = run_script(
        *_args(tmp_path, "fit", "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp", root=root, epochs=1)
    )
    assert r.returncode == 0, r.stderr[-4000:]
    # each process extracted its share of the 8 videos
    assert "rank 0/2: extracted 4 videos, 0 failed" in r.stderr
    assert "rank 1/2: extracted 4 videos, 0 failed" in r.stderr
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == 8
    assert "test:" in r.stdout


def test_a_finished_run_leaves_its_gloo_process_group():
    # a Gloo group alive at interpreter exit can abort a finished DDP run (SIGABRT); main() destroys it
    torch.distributed.init_process_group("gloo", store=torch.distributed.HashStore(), rank=0, world_size=1)
    try:
        assert torch.distributed.is_initialized()
        leave_process_group()
        assert not torch.distributed.is_initialized()
        leave_process_group()  # nothing to leave: a single-process run
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def test_the_readmes_own_videos_recipe_runs_as_written(tmp_path):
    """The two commands of "Training on your own videos", typed from a folder holding ``my_videos/``; only
    options that make it fast are appended. The run is named after the data."""
    import re
    import shutil

    from conftest import ROOT

    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Training on your own videos") :]
    commands = re.findall(r"^(python \S+ .*?my_videos/.*?)(?:\s+#.*)?$", section.split("```")[1], flags=re.M)
    assert len(commands) == 2, commands
    make_dataset(tmp_path / "my_videos", classes=("walk", "wave"), actors=("ann", "bob", "cid", "dan", "eve"), frames=8)
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    fast = ["--data.extractor.weights", TINY_MODEL, "--data.extractor.imgsz", "64", "--trainer.max_epochs", "1",
            "--data.val_fraction", "0.2", "--data.test_fraction", "0.2", "--data.cache_dir", str(tmp_path / "cache")]  # fmt: skip
    fit = commands[0].split()
    r = run_script(str(ROOT / fit[1]), *fit[2:], *fast, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    run_dir = next(ln.split(":", 1)[1].strip() for ln in r.stdout.splitlines() if ln.startswith("run:"))
    assert (tmp_path / run_dir).resolve().parent == (tmp_path / "runs" / "my_videos").resolve()
    assert "Previous log files" not in r.stderr, r.stderr[-3000:]
    ckpt = next(ln.split(":", 1)[1].strip() for ln in r.stdout.splitlines() if ln.startswith("checkpoint:"))
    t = run_script(str(ROOT / "train.py"), "test", "--config", "configs/weizmann.yaml", "--data.dataset", "my_videos/", "--data.split",
                   "stratified", "--ckpt_path", ckpt, *fast[4:], cwd=tmp_path)  # fmt: skip
    assert t.returncode == 0 and "Test metric" not in t.stdout and t.stdout.count("test:") == 1, t.stdout[-2000:] + t.stderr[-2000:]
    assert "dirpath has changed" not in t.stderr
    cv = commands[1].split()
    r = run_script(str(ROOT / cv[1]), *cv[2:], "--num-folds", "2", "--out", str(tmp_path / "cv.json"), "--", *fast, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((tmp_path / "cv.json").read_text())["args"]["dataset"] == str((tmp_path / "my_videos").resolve())


def test_the_unknown_line_names_the_rules_their_limits_and_shares():
    motion, gru = {"quantile": 0.05}, {"quantile": 0.1, "weight": 0.1}  # as report.json has them (Novelty.summary)
    assert unknown_rules({"motion": motion, "prototypes": gru, "threshold": 0.0}) == (
        "motion and GRU state unlike training (past the limits: 5% of known clips, 10% of validation frames; weighed 0.9 : 0.1)"
    )
    assert unknown_rules({"motion": motion, "threshold": 0.0}) == "motion unlike training (past the limit: 5% of known clips)"
    assert unknown_rules({"threshold": 0.0}) == ""


def test_runs_started_together_get_their_own_version_folder(tmp_path):
    """A logger names its folder only when it first writes; two fits started together (cross-validation in two
    shells) took the same ``version_N`` and overwrote each other's checkpoints and reports. Two CLIs built and
    not yet run (nothing logged) stand for them: each reserves its own folder, shared by its two loggers."""
    from pipeline.cli import ActionCLI, OneLineParser
    from pipeline.data.datamodule import ActionDataModule
    from pipeline.model.classifier import ActionClassifier

    root = make_dataset(tmp_path / "mine", classes=("walk", "wave"), actors=("ann", "bob", "cid"), frames=10)
    loggers = json.dumps([
        {"class_path": f"lightning.pytorch.loggers.{kind}", "init_args": {"save_dir": str(tmp_path / "runs"), "name": "auto"}}
        for kind in ("TensorBoardLogger", "CSVLogger")
    ])  # fmt: skip
    args = ["--config", "configs/weizmann.yaml", "--data.dataset", str(root), "--data.split", "stratified", "--data.extractor.weights",
            TINY_MODEL, "--data.extractor.imgsz", "64", "--data.cache_dir", str(tmp_path / "cache"), "--trainer.logger", loggers]  # fmt: skip
    clis = [ActionCLI(ActionClassifier, ActionDataModule, parser_class=OneLineParser, run=False, args=args) for _ in range(2)]
    assert [[lg.version for lg in cli.trainer.loggers] for cli in clis] == [[0, 0], [1, 1]]
    assert sorted(d.name for d in (tmp_path / "runs" / "mine").iterdir()) == ["version_0", "version_1"]
    (tmp_path / "runs" / "mine" / "version_x").mkdir()  # not a run's number
    assert reserve_version(tmp_path / "runs" / "mine") == 2


@pytest.mark.parametrize("config", ["weizmann.yaml", "weizmann_pose.yaml", "teach.yaml"])
def test_every_config_parses_with_the_settings_it_documents(config):
    r = run_script("train.py", "fit", "--config", f"configs/{config}", "--print_config")
    assert r.returncode == 0, r.stderr[-2000:]
    model, data = (yaml.safe_load(r.stdout)[k] for k in ("model", "data"))
    probe, summary, layers, tilt = {
        "weizmann.yaml": (0.5, 128, [16, 19, 22], (15, 0.15)), "weizmann_pose.yaml": (0.0, 0, [], (0, 0)), "teach.yaml": (0.0, 0, [], (0, 0))
    }[config]  # fmt: skip
    assert model["probe_share"] == probe and model["summary_frames"] == summary and data["extractor"]["layers"] == layers
    assert (data["tilt"], data["shear"]) == tilt


def test_a_few_clips_per_class_train_with_fewer_folds_and_stdout_holds_only_the_results(tmp_path):
    """The README's own-videos recipe on a folder of 3 clips per class: 3 folds (said on stderr), a model, and
    on stdout the six result lines alone (progress bars and logs on stderr: ``train.py ... > result.txt``)."""
    root = make_dataset(tmp_path / "mine", classes=("walk", "wave"), actors=("ann", "bob", "cid"), frames=10)
    logger = json.dumps([{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(tmp_path / "runs")}}])
    r = run_script(
        "train.py", "fit", "--config", "configs/weizmann.yaml", "--data.dataset", str(root), "--data.split", "stratified",
        "--data.extractor.weights", TINY_MODEL, "--data.extractor.imgsz", "64", "--data.cache_dir", str(tmp_path / "cache"),
        "--trainer.max_epochs", "1", "--trainer.logger", logger,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert [ln.split(":")[0] for ln in r.stdout.splitlines()] == ["run", "checkpoint", "stream", "test", "unknown", "report"], r.stdout
    assert "class 'walk' has 3 videos: 3 folds instead of 5" in r.stderr
    assert "Epoch 0" in r.stderr  # the progress bar went to stderr


def test_fit_without_a_logger_runs_under_runs_and_keeps_its_checkpoint(tmp_path):
    """``--trainer.logger false`` with the default config: its learning-rate monitor made Lightning fail the
    run at its start (a traceback); the run goes under ``runs/<dataset>`` of the working folder."""
    root = make_dataset(tmp_path / "mine", classes=("walk", "wave"), actors=("ann", "bob", "cid"), frames=10)
    r = run_script(
        str(ROOT / "train.py"), "fit", "--config", str(ROOT / "configs" / "weizmann.yaml"), "--data.dataset", str(root),
        "--data.split", "stratified", "--data.extractor.weights", TINY_MODEL, "--data.extractor.imgsz", "64",
        "--data.cache_dir", str(tmp_path / "cache"), "--trainer.max_epochs", "1", "--trainer.logger", "false", cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = dict(ln.split(":", 1) for ln in r.stdout.splitlines())
    assert lines["run"].strip() == "runs/mine" and (tmp_path / lines["checkpoint"].strip()).is_file()
