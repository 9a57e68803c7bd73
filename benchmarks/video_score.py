"""What a video's score averages: the checkpoints of a cross-validation, replayed on their test videos.

    python benchmarks/video_score.py --cv runs/cv_pushfit_default.json [--out runs/video_score_pushfit.json]
    python benchmarks/video_score.py --cv runs/cv_seed0.json runs/cv_seeds12.json    # seeds run apart, together

Training leaves the first ``warmup_frames`` of a crop out of the GRU's loss, so the GRU is never asked to be
right there; ``train.py test`` (and so ``cross_validate.py``) scores a video by the mean of the kept stream's
per-frame probabilities over its subject's track after those frames (``mix_after_warmup`` below; before
that rule, runs whose report lacks ``scored_from_frame``, over the whole span: ``span``), frames where nobody
is seen included; ``infer.py`` settles the label on the frames where its subject is seen, after the same
warm-up. This replays every fold's checkpoint on its test videos' cached features (no training, no
extraction) and scores them several ways (the run's own rule checked against its report):

* ``span``: the mean over the track's whole span;
* ``seen``: the mean over the frames the subject is seen in, as ``infer.py`` averages one track;
* ``after_warmup``: the GRU's part averaged after the frames its loss leaves out, the frame probe's over
  all frames (the probe is trained on every frame);
* ``mix_after_warmup``: the fused frames averaged after the frames the GRU's loss leaves out (what a stream
  can do without the two parts apart);
* ``share_0``, ``share_0.5``, ``share_1``: the run's own rule (``span`` before the warm-up rule,
  ``mix_after_warmup`` since) with the probe's share set to 0 (the GRU alone), 0.5 and 1 (the probe alone)
  instead of the one the run used: which part carries over to the test videos (with the summary the probe
  is the time-blind model, ``pipeline.model.rnn``).

When the cross-validation ran several seeds (``--seeds 0 1 2``), each fold's seeds are also averaged as an
ensemble (the mean of their ``span`` probabilities per video), beside the mean of the seeds' own scores on the
same fold: what averaging seeds at inference would give, measured before it is built.

Printed and written to ``--out``: per fold video top-1 under each rule, the mean +- sd over folds per seed
and over seeds, and how many videos change label against ``span``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import yaml  # noqa: E402

from benchmarks.cross_validate import mean_sd  # noqa: E402
from pipeline.data.datamodule import ActionDataModule  # noqa: E402
from pipeline.data.features import POSE_DIM, ExtractorConfig  # noqa: E402
from pipeline.errors import run_cli  # noqa: E402
from pipeline.model.checkpoint import read_checkpoint  # noqa: E402
from pipeline.model.classifier import ActionClassifier  # noqa: E402
from pipeline.timeline import first_scored  # noqa: E402

ENSEMBLED = ("span", "mix_after_warmup")  # the rules whose seeds are also averaged as an ensemble
RULES = ("span", "seen", "after_warmup", "mix_after_warmup", "share_0", "share_0.5", "share_1")


class ReplayError(Exception):
    """A cross-validation summary or one of its runs that cannot be replayed."""


def video_scores(model, x: torch.Tensor, warmup: int, own_rule_warmup: bool = True) -> dict[str, torch.Tensor]:
    """One video's class probabilities under each rule, from its (T, D) features; ``own_rule_warmup``: the
    run scored videos after the warm-up (the ``share_*`` rules then do too)."""
    x = x[None].float()
    out = model.outputs(x, torch.tensor([x.shape[1]]))[0]
    gru, probe, share = model.head(out).softmax(-1)[0], model.probe_probs(x)[0], model.share
    frames = (1 - share) * gru + share * probe
    seen = x[0, :, x.shape[-1] - POSE_DIM] > 0.5  # the pose block's "present" flag
    first = first_scored(x.shape[1], warmup)  # as the loss: at least the last frame counts
    own = first if own_rule_warmup else 0
    return {
        "span": frames.mean(0),
        "seen": frames[seen].mean(0) if seen.any() else frames.mean(0),
        "after_warmup": (1 - share) * gru[first:].mean(0) + share * probe.mean(0),
        "mix_after_warmup": frames[first:].mean(0),
        **{f"share_{s:g}": (1 - s) * gru[own:].mean(0) + s * probe[own:].mean(0) for s in (0.0, 0.5, 1.0)},
    }


def checkpoint_of(report: dict, report_path: Path) -> Path:
    """The checkpoint a report names: as written (relative to where its run was started), or else beside the
    report, where ``train.py`` saves both (a run made in another folder, replayed from here)."""
    named = Path(report["checkpoint"])
    return named if named.is_file() else report_path.parent / named.name


def replay_fold(row: dict, args: dict, cached: dict) -> dict:
    """One fold's test videos scored under each rule by its own checkpoint."""
    report = json.loads(Path(row["report"]).read_text())
    ckpt = read_checkpoint(checkpoint_of(report, Path(row["report"])))
    hp = ckpt["hyper_parameters"]
    classifier = ActionClassifier.from_hparams(hp)
    classifier.load_state_dict(ckpt["state_dict"])
    classifier.eval()
    config = yaml.safe_load(Path(args["config"]).read_text()).get("data", {})
    dataset = args.get("dataset") or config.get("dataset", "weizmann")
    key = (dataset, report["split"]["root"], json.dumps(hp["extractor"], sort_keys=True))
    if key not in cached:  # one data module per dataset and feature setting: it finds the cache
        cached.clear()
        extra = " ".join(args.get("extra") or []).replace("=", " ").split()
        cache_dir = extra[extra.index("--data.cache_dir") + 1] if "--data.cache_dir" in extra[:-1] else config.get("cache_dir")
        record = ExtractorConfig.from_record(hp["extractor"])
        cached[key] = ActionDataModule(dataset=dataset, root=report["split"]["root"], extractor=record, cache_dir=cache_dir)
    dm = cached[key]
    names = list(hp["class_names"])
    reported = "mix_after_warmup" if "scored_from_frame" in report else "span"  # train.py's rule when it ran
    hits = dict.fromkeys(RULES, 0)
    changed = dict.fromkeys(RULES, 0)
    probs = {}
    for v in report["videos"]:
        entry = dm.cache.entry(Path(v["path"]), dm.root)
        seq = dm.cache.load(entry).subject() if entry.is_file() else None
        if seq is None:
            raise ReplayError(f"{v['path']}: no cached features under {dm.cache.dir}; run cross_validate.py again")
        with torch.no_grad():
            scores = video_scores(classifier.model, torch.from_numpy(seq), hp.get("warmup_frames", 8), reported == "mix_after_warmup")
        labels = {r: names[int(p.argmax())] for r, p in scores.items()}
        probs[v["path"]] = ({r: scores[r] for r in ENSEMBLED}, names.index(v["label"]))
        if labels[reported] != v["predicted"]:
            raise ReplayError(f"{v['path']}: the replay labels it {labels[reported]}, the report {v['predicted']}: not this run's checkpoint or features")
        for r in RULES:
            hits[r] += labels[r] == v["label"]
            changed[r] += labels[r] != labels["span"]
    n = len(report["videos"])
    return {
        "fold": row["fold"], "seed": row["seed"], "split_seed": row.get("split_seed", 0), "videos": n,
        **{r: hits[r] / n for r in RULES}, "changed": changed, "probs": probs,
    }  # fmt: skip


def ensembles(rows: list[dict], rule: str = "span") -> list[dict]:
    """Per fold (and deal) run with several seeds: video top-1 of the seeds' mean probabilities under ``rule``,
    and the mean of the seeds' own top-1 under it."""
    folds: dict[tuple[int, int], list[dict]] = {}
    for r in rows:
        folds.setdefault((r["split_seed"], r["fold"]), []).append(r)
    out = []
    for (deal, fold), runs in sorted(folds.items()):
        if len(runs) < 2:
            continue
        videos = runs[0]["probs"]
        hits = sum(int(torch.stack([r["probs"][v][0][rule] for r in runs]).mean(0).argmax()) == label for v, (_, label) in videos.items())
        out.append({"deal": deal, "fold": fold, "seeds": len(runs), "ensemble": hits / len(videos), "single": sum(r[rule] for r in runs) / len(runs)})
    return out


def run(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cv", required=True, nargs="+", help="summaries written by benchmarks/cross_validate.py --out (several: their runs together, e.g. seeds run apart)")
    p.add_argument("--out", help="where to write the results (JSON)")
    a = p.parse_args(argv)
    for f in a.cv:
        if not Path(f).is_file():
            raise ReplayError(f"{f} not found: give the --out of a benchmarks/cross_validate.py run")
    summaries = [json.loads(Path(f).read_text()) for f in a.cv]
    torch.set_num_threads(1)  # small sequences: one thread is fastest and spares the machine
    rows, cached = [], {}
    for row, args in [(row, s["args"]) for s in summaries for row in s["folds"]]:
        rows.append(replay_fold(row, args, cached))
        r = rows[-1]
        print(f"seed {r['seed']} fold {r['fold']}: " + "  ".join(f"{k} {r[k]:.3f}" for k in RULES)
              + "  (labels changed: " + ", ".join(f"{k} {r['changed'][k]}" for k in RULES[1:]) + ")", flush=True)  # fmt: skip
    seeds = sorted({r["seed"] for r in rows})
    per_seed = {s: {k: mean_sd([r[k] for r in rows if r["seed"] == s])[0] for k in RULES} for s in seeds}
    overall = {k: mean_sd([per_seed[s][k] for s in seeds]) for k in RULES}
    total = {k: sum(r["changed"][k] for r in rows) for k in RULES}
    videos = sum(r["videos"] for r in rows)
    for k in RULES:
        print(f"{k:>13}: video top-1 {overall[k][0]:.3f} +- {overall[k][1]:.3f} over {len(seeds)} seed(s)"
              + (f"; {total[k]} of {videos} test videos change label against span" if k != "span" else ""))  # fmt: skip
    ens = {rule: ensembles(rows, rule) for rule in ENSEMBLED}
    for rule, folds in ens.items():
        if not folds:
            continue
        gain = [e["ensemble"] - e["single"] for e in folds]
        se = mean_sd(gain)[1] / len(gain) ** 0.5 if len(gain) > 1 else 0.0
        print(f"ensemble ({rule}): {folds[0]['seeds']} seeds averaged per fold: " + ", ".join(f"{e['ensemble']:.3f}" for e in folds)
              + f"; mean {mean_sd([e['ensemble'] for e in folds])[0]:.3f} against {mean_sd([e['single'] for e in folds])[0]:.3f}"
              + f" for one seed (paired gain {mean_sd(gain)[0]:+.3f} +- {se:.3f} SE over {len(folds)} folds)")  # fmt: skip
    for r in rows:
        del r["probs"]
    result = {"cv": a.cv, "folds": rows, "per_seed": per_seed, "mean": {k: {"mean": v[0], "sd_over_seeds": v[1]} for k, v in overall.items()}, "changed": total, "ensembles": ens}  # per rule
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    run_cli(run, extra=(ReplayError,))
