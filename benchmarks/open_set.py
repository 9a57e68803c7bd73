"""How often is an action nobody trained named as a known one? Leave-classes-out on Weizmann.

    python benchmarks/open_set.py --root ../shared/data/weizmann [--pairs 5] [--pair-seed 0] [--folds 0 3 6] --out runs/open_set.json
    python benchmarks/open_set.py --summarise runs/open_set.json runs/open_set_more.json    # the table over several
    python benchmarks/open_set.py --replay runs/open_set.json --descriptor 1 --out runs/open_set_v1.json     # no training

For each held-out pair of classes (``--pairs N`` drawn at random with ``--pair-seed``, or named, e.g.
``--pair run skip --pair wave1 wave2``) and each leave-one-actor-out fold, ``train.py fit`` trains on the
other 8 classes (``--data.exclude_classes``), which also fits the checkpoint's rejection rules
(``pipeline.model.novelty``). Then the test actor's clips of all 10 classes are labelled as ``infer.py``
labels a finished video (per-frame probabilities smoothed without delay, frames the rules call novel
``unknown``, the label covering the most time), from the cached features. Printed, as mean +- sd over runs:

* known clips: video top-1 without rejection, and its drop with each rule (an ``unknown`` counts as wrong);
* unknown clips: the share labelled ``unknown``;
* AUROC, known against unknown clips, of each rule's score (the clip's median novelty) and, for
  comparison, of the clip's mean smoothed top probability and of the energy (logsumexp of the logits);

for the checkpoint's rules (the default: motion weighed with the GRU state; ``-- --model.prototype_quantile=0``
for motion alone), each alone, and a top-probability threshold (5% of the validation frames under it), so
that the default is chosen by measurement.

``--replay JSON`` scores the checkpoints of an earlier ``--out`` again, without training; with ``--descriptor
N`` each checkpoint's motion rule is first refitted on its own training split with ``describe``'s version N
(``pipeline.model.novelty``), so that two descriptors are compared on the same models.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipeline.data.datamodule import ActionDataModule  # noqa: E402
from pipeline.data.features import ExtractorConfig  # noqa: E402
from pipeline.data.videoset import DatasetDefinition  # noqa: E402
from pipeline.errors import run_cli  # noqa: E402
from pipeline.model.checkpoint import read_checkpoint  # noqa: E402
from pipeline.model.classifier import ActionClassifier  # noqa: E402
from pipeline.model.novelty import MotionRule, Novelty  # noqa: E402
from pipeline.timeline import MIN_DURATION_S, SMOOTH_S, UNKNOWN, first_scored, settle, zero_phase  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def auroc(pos: list[float], neg: list[float]) -> float:
    """P(a known clip scores above an unknown one), ties counted half."""
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def train(a: argparse.Namespace, pair: tuple[str, str], fold: int) -> Path:
    args = [
        sys.executable, str(ROOT / "train.py"), "fit", "--config", a.config, f"--data.root={a.root}", f"--data.fold={fold}",
        f"--data.exclude_classes=[{pair[0]},{pair[1]}]", f"--seed_everything={a.seed}", "--trainer.enable_progress_bar=false", *a.extra,
    ]  # fmt: skip
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"{pair} fold {fold}: train.py failed:\n{r.stderr[-2000:]}")
    return Path(next(ln.split(":", 1)[1].strip() for ln in r.stdout.splitlines() if ln.startswith("checkpoint:")))


def per_video(model: ActionClassifier, seqs: list[torch.Tensor]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Each sequence's per-frame probabilities, logits and novelty (the checkpoint's rules), as infer.py's
    step-by-step GRU gives them; and the novelty of each rule alone."""
    out, rnn = [], model.model
    with torch.no_grad():
        for x in seqs:
            h = rnn.outputs(x[None].float())[0][0]
            logits = rnn.head(h)  # the GRU's own (the energy score)
            probs = rnn.scores(x[None].float(), h[None])[0].softmax(-1)  # the frame probe fused in, as infer.py has it
            alone = {name: Novelty(**{name: getattr(model.novelty, name)}).sequence(x, h).numpy() for name in RULES if getattr(model.novelty, name)}
            out.append((probs.numpy(), logits.numpy(), model.novelty.sequence(x, h).numpy(), alone))
    return out


RULES = ("motion", "prototypes")


def evaluate(a: argparse.Namespace, ckpt_path: Path, pair: tuple[str, str], fold: int) -> dict:
    ckpt = read_checkpoint(ckpt_path)
    hp = ckpt["hyper_parameters"]
    model = ActionClassifier.from_hparams(hp)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    names, fps = model.class_names, hp["extractor"].get("fps") or 25.0
    dm = ActionDataModule(dataset="weizmann", root=a.root, split="group", fold=fold, extractor=ExtractorConfig.from_record(hp["extractor"]))
    dm.setup("fit")
    dm.setup("test")
    all_names = dm.class_names
    if getattr(a, "descriptor", None) and model.novelty.motion is not None:  # refitted as train.py fits it, another descriptor
        known = lambda split: [(x, v) for x, y, v in zip(*dm.data[split]) if all_names[y] not in pair]  # noqa: E731
        train = known("train")
        model.novelty.motion = MotionRule.fit(
            [x for x, _ in train], [v.group or str(v.path) for _, v in train], [x for x, _ in known("val")], hp["motion_window"],
            hp["motion_quantile"], model.min_frames, descriptor=a.descriptor,
        )  # fmt: skip
    # for comparison, the top-probability rule: 5% of the validation frames (known actions) under it
    val = [x for x, y in zip(*dm.data["val"][:2]) if all_names[y] not in pair]
    val_top = np.concatenate([zero_phase(np.arange(len(p)) / fps, p, SMOOTH_S).max(1) for p, *_ in per_video(model, val)])
    top_threshold = float(np.quantile(val_top, 0.05))
    clips = []
    seqs, labels, videos = dm.data["test"]
    for (p, logits, novelty, alone), y, v in zip(per_video(model, seqs), labels, videos):
        t, end = np.arange(len(p)) / fps, len(p) / fps
        truth = all_names[y]
        k = first_scored(len(p), hp["warmup_frames"])  # settled after the warm-up, as infer.py settles
        label = lambda th=0.0, nov=None: settle(  # noqa: E731
            names, t[k:], p[k:], SMOOTH_S, MIN_DURATION_S, th, 0.0, end, novelty=None if nov is None else nov[k:], max_novelty=None if nov is None else 1.0
        )[1][0]
        judged = novelty[model.min_frames :] if len(novelty) > model.min_frames else novelty
        clips.append({
            "video": v.path.name, "truth": truth, "known": truth not in pair, "off": label(), "on": label(nov=novelty),
            **{f"on_{name}": label(nov=n) for name, n in alone.items()}, "on_top": label(th=top_threshold),
            "novelty": float(np.median(judged)), **{f"novelty_{name}": float(np.median(n[model.min_frames :])) for name, n in alone.items()},
            "top": float(zero_phase(t, p, SMOOTH_S).max(1).mean()), "energy": float(np.log(np.exp(logits).sum(1)).mean()),
        })  # fmt: skip
    known = [c for c in clips if c["known"]]
    unknown = [c for c in clips if not c["known"]]
    top1 = lambda key: sum(c[key] == c["truth"] for c in known) / len(known)  # noqa: E731
    caught = lambda key: sum(c[key] == UNKNOWN for c in unknown) / max(len(unknown), 1)  # noqa: E731
    rules = ["on", *(f"on_{name}" for name in RULES if getattr(model.novelty, name)), "on_top"]
    return {
        "pair": list(pair), "fold": fold, "test": videos[0].group if videos else "", "checkpoint": str(ckpt_path),
        "novelty": model.novelty.summary(), "top_threshold": round(top_threshold, 4),
        "known_top1_off": top1("off"), **{f"known_top1_{r}": top1(r) for r in rules}, **{f"unknown_{r}": caught(r) for r in rules},
        # AUROC: a known clip scores as more known than an unknown one (novelty negated)
        **{f"auroc_{key}": auroc([-c[key] for c in known], [-c[key] for c in unknown]) for key in ("novelty", *(f"novelty_{n}" for n in RULES if getattr(model.novelty, n)))},
        "auroc_top": auroc([c["top"] for c in known], [c["top"] for c in unknown]),
        "auroc_energy": auroc([c["energy"] for c in known], [c["energy"] for c in unknown]),
        "clips": clips,
    }  # fmt: skip


def mean_sd(values: list[float]) -> str:
    values = [v for v in values if v == v]
    return f"{statistics.fmean(values):.3f} +- {statistics.stdev(values) if len(values) > 1 else 0.0:.3f}"


def summarise(rows: list[dict], what: str) -> None:
    """The table: per rule, known top-1 drop, unknown clips labelled unknown, AUROC; mean +- sd over runs."""
    print(f"\n{what}, mean +- sd over runs; known top-1 without rejection {mean_sd([r['known_top1_off'] for r in rows])}")
    print(f"  {'rule':48s} {'known top-1 drop':>18s} {'unknown labelled unknown':>26s} {'AUROC':>15s}")
    for key, name, auc in (
        ("on", "the checkpoint's rules (the default)", "auroc_novelty"), ("on_motion", "motion alone", "auroc_novelty_motion"),
        ("on_prototypes", "GRU state alone", "auroc_novelty_prototypes"), ("on_top", "top probability (5% of validation frames)", "auroc_top"),
    ):
        sel = [r for r in rows if f"known_top1_{key}" in r]
        if sel:
            drop = mean_sd([r["known_top1_off"] - r[f"known_top1_{key}"] for r in sel])
            print(f"  {name:48s} {drop:>18s} {mean_sd([r[f'unknown_{key}'] for r in sel]):>26s} {mean_sd([r.get(auc, float('nan')) for r in sel]):>15s}")
    print(f"  AUROC of the energy (logsumexp of the logits): {mean_sd([r['auroc_energy'] for r in rows])}")


def run(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs/weizmann.yaml"))
    p.add_argument("--root", default="../shared/data/weizmann", help="the Weizmann clips")
    p.add_argument("--pairs", type=int, default=5, help="how many held-out class pairs, drawn at random")
    p.add_argument("--pair-seed", type=int, default=0, help="the seed --pairs are drawn with")
    p.add_argument("--pair", nargs=2, action="append", help="a held-out pair by name (repeatable); overrides --pairs")
    p.add_argument("--folds", type=int, nargs="*", default=[0, 3, 6], help="leave-one-actor-out folds (test actors)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/open_set.json")
    p.add_argument("--summarise", nargs="+", metavar="JSON", help="no training: the table over the runs of these earlier --out files")
    p.add_argument("--replay", metavar="JSON", help="no training: score the checkpoints of this earlier --out again")
    p.add_argument("--descriptor", type=int, choices=(1, 2), help="with --replay: refit each motion rule with this descriptor version")
    p.add_argument("extra", nargs="*", help="further train.py arguments, after --")
    a = p.parse_args(argv)
    if a.summarise:
        rows = [r for f in a.summarise for r in json.loads(Path(f).read_text())["runs"]]
        summarise(rows, f"{len(rows)} runs from {len(a.summarise)} file(s)")
        return {"runs": rows}
    a.root = str(Path(a.root).resolve())
    names = DatasetDefinition.load("weizmann").classes
    pairs = [tuple(x) for x in a.pair] if a.pair else random.Random(a.pair_seed).sample(list(itertools.combinations(names, 2)), a.pairs)
    rows, start = [], time.perf_counter()
    earlier = json.loads(Path(a.replay).read_text())["runs"] if a.replay else []
    runs = [(tuple(r["pair"]), r["fold"], Path(r["checkpoint"])) for r in earlier] or [(pair, fold, None) for pair in pairs for fold in a.folds]
    pairs = list(dict.fromkeys(pair for pair, _, _ in runs))
    for pair, fold, ckpt in runs:
        r = evaluate(a, ckpt or train(a, pair, fold), pair, fold)
        rows.append(r)
        print(f"held out {pair[0]}+{pair[1]}, fold {fold} ({r['test']}): known top-1 {r['known_top1_off']:.3f} -> {r['known_top1_on']:.3f} "
              f"with rejection; unknown labelled unknown {r['unknown_on']:.2f}; AUROC novelty {r['auroc_novelty']:.3f} "
              f"(top probability {r['auroc_top']:.3f})", flush=True)  # fmt: skip
    summarise(rows, f"{len(rows)} runs ({len(pairs)} pairs)" + (f", replayed from {a.replay}" if a.replay else "") + (f", motion descriptor {a.descriptor}" if a.descriptor else ""))
    total = time.perf_counter() - start
    print(f"total {total:.0f} s")
    summary = {"runs": rows, "args": vars(a), "total_seconds": round(total, 1)}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    run_cli(run)
