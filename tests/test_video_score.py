"""benchmarks/video_score.py: its replay of a checkpoint scores a video as ``train.py test`` does, or the
check it makes against every report would pass for the wrong reason."""

from pathlib import Path

import torch

from benchmarks.video_score import checkpoint_of, video_scores
from pipeline.data.features import POSE_DIM
from pipeline.model.classifier import ActionClassifier, masked_mean


def test_the_replay_scores_a_video_as_train_py_test_does():
    torch.manual_seed(0)
    clf = ActionClassifier(POSE_DIM, ["a", "b", "c"], {"layers": []}, hidden_size=8, proj_dim=8).eval()
    m = clf.model
    m.probe_weight.normal_()
    m.share = 0.5
    x = torch.randn(20, POSE_DIM)
    with torch.no_grad():
        scores = video_scores(m, x, clf.hparams.warmup_frames)
        frames = m.scores(x[None], m.outputs(x[None])[0]).softmax(-1)  # the fused probabilities, as _evaluate takes them
    assert torch.allclose(scores["mix_after_warmup"], masked_mean(frames, torch.tensor([20]), clf.hparams.warmup_frames)[0], atol=1e-6)
    assert torch.allclose(scores["span"], frames[0].mean(0), atol=1e-6)  # the rule of reports made before the warm-up
    assert not torch.allclose(scores["span"], scores["mix_after_warmup"], atol=1e-4)
    # the parts apart follow the run's own rule: at the share it used they give its score
    assert torch.allclose(scores["share_0.5"], scores["mix_after_warmup"], atol=1e-6)
    assert torch.allclose(video_scores(m, x, clf.hparams.warmup_frames, own_rule_warmup=False)["share_0.5"], scores["span"], atol=1e-6)


def test_a_run_made_in_another_folder_finds_its_checkpoint_beside_its_report(tmp_path, monkeypatch):
    run = tmp_path / "elsewhere" / "runs" / "x" / "version_0" / "checkpoints"
    run.mkdir(parents=True)
    (run / "best.ckpt").write_bytes(b"")
    report = {"checkpoint": "runs/x/version_0/checkpoints/best.ckpt"}  # relative to the folder the run started in
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert checkpoint_of(report, run / "report.json") == Path("runs/x/version_0/checkpoints/best.ckpt")
    monkeypatch.chdir(tmp_path)  # replayed from another folder
    assert checkpoint_of(report, run / "report.json") == run / "best.ckpt"
