"""GRU vs LSTM vs plain RNN on Weizmann leave-one-actor-out, same features, projection and head.

    python benchmarks/cell_comparison.py [--root ../shared/data/weizmann] [--cells gru lstm rnn] [--seeds 0 1 2]

For every cell and seed: the 9-fold protocol of ``benchmarks/cross_validate.py`` with ``--model.cell CELL``
and the default config otherwise (features extracted once, before any timing, and shared). Prints one
table: parameters of the temporal model, training time (9 folds, cached features), per-step latency of
streaming (batch 1, one frame, hidden state carried; CPU, and CUDA when there is one), and mean video-level
and clip-level top-1 over the folds, as mean +- standard deviation over the seeds. Writes the table as
JSON to ``runs/cell_comparison.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import yaml  # noqa: E402

from benchmarks.cross_validate import run as loao  # noqa: E402
from pipeline.data.features import POSE_DIM  # noqa: E402
from pipeline.data.videoset import DatasetDefinition  # noqa: E402
from pipeline.model.rnn import ActionRNN  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLASSES = DatasetDefinition.load("weizmann").classes


@torch.inference_mode()
def step_latency_ms(model: ActionRNN, device: str, steps: int = 2000) -> float:
    """Median time of one streaming step (batch 1) on ``device``."""
    model = model.eval().to(device)
    x, hidden, times = torch.randn(1, model.mean.numel(), device=device), None, []
    for i in range(steps + 100):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        logits, hidden = model.step(x, hidden)
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= 100:
            times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="../shared/data/weizmann")
    p.add_argument("--config", default="configs/weizmann.yaml")
    p.add_argument("--cells", nargs="*", default=["gru", "lstm", "rnn"])
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    p.add_argument("--out", default="runs/cell_comparison.json")
    p.add_argument("--fresh", action="store_true", help="rerun (cell, seed) pairs whose runs/loao_CELL_seedN.json exists")
    p.add_argument("extra", nargs="*", help="further train.py arguments, after --")
    a = p.parse_args(argv)

    # features first, so that no cell's timing includes extraction
    loao(["--config", a.config, "--root", a.root, "--folds", "0", "--out", "runs/cell_comparison_warmup.json", "--", "--trainer.max_epochs=1", *a.extra])

    m = yaml.safe_load((ROOT / a.config).read_text())["model"]
    rows = []
    for cell in a.cells:
        runs = []
        for seed in a.seeds:
            out = Path(f"runs/loao_{cell}_seed{seed}.json")
            if out.is_file() and not a.fresh:  # a finished (cell, seed): resume instead of redoing it
                runs.append(json.loads(out.read_text()))
                continue
            runs.append(loao(["--config", a.config, "--root", a.root, "--seeds", str(seed), "--out", str(out), "--", f"--model.cell={cell}", *a.extra]))
        # the default extractor is pose only (layers: []): POSE_DIM features per frame
        model = ActionRNN(POSE_DIM, len(CLASSES), m["hidden_size"], m.get("num_layers", 1), m["proj_dim"], cell=cell)
        video = [r["mean"]["video_top1"]["mean"] for r in runs]
        clip = [r["mean"]["clip_top1"]["mean"] for r in runs]
        rows.append({
            "cell": cell,
            "params": sum(p.numel() for p in model.parameters()),
            "cell_params": sum(p.numel() for p in model.rnn.parameters()),
            "train_s": statistics.mean(sum(f["seconds"] for f in r["folds"]) for r in runs),
            "step_ms_cpu": step_latency_ms(model, "cpu"),
            "step_ms_cuda": step_latency_ms(model, "cuda") if torch.cuda.is_available() else None,
            "video_top1": statistics.mean(video), "video_top1_sd": statistics.stdev(video) if len(video) > 1 else 0.0,
            "clip_top1": statistics.mean(clip), "clip_top1_sd": statistics.stdev(clip) if len(clip) > 1 else 0.0,
            "video_top1_per_seed": video,
        })  # fmt: skip
    print(f"\nWeizmann leave-one-actor-out, {len(a.seeds)} seeds ({', '.join(map(str, a.seeds))}), default config, {torch.get_num_threads()} CPU threads")
    print("| cell | parameters (cell) | training, 9 folds | step latency CPU | step latency GPU | video top-1 | clip top-1 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        gpu = f"{r['step_ms_cuda']:.3f} ms" if r["step_ms_cuda"] is not None else "n/a"
        print(f"| {r['cell']} | {r['params']:,} ({r['cell_params']:,}) | {r['train_s']:.0f} s | {r['step_ms_cpu']:.3f} ms | {gpu} | "
              f"{r['video_top1']:.3f} +- {r['video_top1_sd']:.3f} | {r['clip_top1']:.3f} +- {r['clip_top1_sd']:.3f} |")  # fmt: skip
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
