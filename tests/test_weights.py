import pytest
from conftest import REAL_WEIGHTS, ROOT, TINY_MODEL, needs_shared, run_script

from pipeline.data import weights as W


def test_yaml_builds_the_same_random_model_every_time():
    m1, id1 = W.load_pose_model(TINY_MODEL)
    m2, id2 = W.load_pose_model(TINY_MODEL)
    assert id1 == id2 and id1.name == TINY_MODEL and len(id1.sha256) == 64
    assert not any(p.requires_grad for p in m1.parameters()) and not m1.training


def test_a_detection_model_is_refused():
    with pytest.raises(W.WeightsError, match="not a pose model"):
        W.load_pose_model("yolo11n.yaml")


def test_missing_weights_offline_give_one_line_saying_where_to_put_them(monkeypatch, tmp_path):
    monkeypatch.setattr(W, "weights_dir", lambda: tmp_path)

    def offline(*a, **k):
        raise ConnectionError("Download failure for https://github.com/... Environment may be offline.")

    monkeypatch.setattr("ultralytics.utils.downloads.attempt_download_asset", offline)
    with pytest.raises(W.WeightsError) as e:
        W.resolve_weights("yolo11n-pose.pt")
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "yolo11n-pose.pt") in msg and "could not be downloaded" in msg


def test_an_explicit_path_that_is_missing_is_never_downloaded(monkeypatch, tmp_path):
    monkeypatch.setattr("ultralytics.utils.downloads.attempt_download_asset", lambda *a, **k: pytest.fail("downloaded"))
    with pytest.raises(W.WeightsError, match="not found"):
        W.resolve_weights(str(tmp_path / "sub" / "mine.pt"))


@needs_shared
def test_a_bare_name_resolves_through_ultralytics_weights_dir(tmp_path):
    """As a user sets it up: ``yolo settings weights_dir=DIR``, then the bare name works from anywhere."""
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "yolo11n-pose.pt").symlink_to(REAL_WEIGHTS)
    env = {"YOLO_CONFIG_DIR": str(tmp_path / "cfg"), "ACTIONS_WEIGHTS_DIR": ""}  # the setting alone
    r = run_script("-c", "import sys; from ultralytics.utils import SETTINGS; SETTINGS.update(weights_dir=sys.argv[1])", str(tmp_path / "w"), cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    code = "from pipeline.data.weights import load_pose_model; print(load_pose_model('yolo11n-pose.pt')[1].sha256)"
    r = run_script("-c", code, cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-1] == "869e83fcdffdc7371fa4e34cd8e51c838cc729571d1635e5141e3075e9319dc0"


def test_the_environment_variable_is_looked_at_before_ultralytics_settings(monkeypatch, tmp_path):
    (tmp_path / "mine-pose.pt").write_bytes(b"x")
    monkeypatch.setenv("ACTIONS_WEIGHTS_DIR", str(tmp_path))
    assert W.resolve_weights("mine-pose.pt") == tmp_path / "mine-pose.pt"
    monkeypatch.setenv("ACTIONS_WEIGHTS_DIR", "")
    with pytest.raises(W.WeightsError, match="not found locally"):
        W.resolve_weights("mine-pose.pt")


def test_a_corrupt_weights_file_is_a_one_line_error(tmp_path):
    bad = tmp_path / "broken-pose.pt"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(W.WeightsError, match="not a loadable Ultralytics checkpoint") as e:
        W.load_pose_model(str(bad))
    assert "\n" not in str(e.value) and len(str(e.value)) < 200 and str(e.value).isascii()  # not Ultralytics' decorated message
