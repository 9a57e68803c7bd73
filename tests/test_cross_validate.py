"""benchmarks/cross_validate.py: the model's gain over the time-blind baseline, paired per fold, and the data
settings the baseline's folds are made with (the same as train.py's)."""

import argparse

import pytest
from conftest import ROOT

from benchmarks.cross_validate import data_settings, paired


def test_the_gain_is_paired_per_fold_and_deal_over_the_seeds_mean():
    rows = [
        {"split_seed": 0, "fold": 0, "seed": 0, "video_top1": 0.6, "tb": 0.5},
        {"split_seed": 0, "fold": 0, "seed": 1, "video_top1": 0.8, "tb": 0.5},  # fold 0: model 0.7, +0.2
        {"split_seed": 0, "fold": 1, "seed": 0, "video_top1": 0.4, "tb": 0.6},
        {"split_seed": 0, "fold": 1, "seed": 1, "video_top1": 0.6, "tb": 0.6},  # fold 1: model 0.5, -0.1
        {"split_seed": 1, "fold": 0, "seed": 0, "video_top1": 0.9, "tb": 0.6},
        {"split_seed": 1, "fold": 0, "seed": 1, "video_top1": 0.7, "tb": 0.6},  # another deal's fold 0: +0.2
    ]
    mean, se, n = paired(rows, "tb")
    assert n == 3 and mean == pytest.approx(0.1)
    assert se == pytest.approx(0.1732 / 3**0.5, abs=1e-3)  # sd of (0.2, -0.1, 0.2) over sqrt(3)


def test_the_baseline_reads_the_config_then_the_options_then_data_overrides():
    a = argparse.Namespace(config=str(ROOT / "configs" / "weizmann.yaml"), dataset="clips/", root=None, split="scene", num_folds=None,
                           extra=["--data.cache_dir=/tmp/c", "--data.extractor.layers", "[]", "--model.hidden_size=8", "--data.extractor.max_imgsz=null"])  # fmt: skip
    data, extractor = data_settings(a)
    assert data["dataset"] == "clips/" and data["split"] == "scene" and data["cache_dir"] == "/tmp/c" and data["fold"] == 0
    assert extractor["layers"] == [] and extractor["max_imgsz"] is None and extractor["imgsz"] == 320
    assert "hidden_size" not in data
