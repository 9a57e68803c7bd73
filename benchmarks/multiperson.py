"""Several people in view: per-person accuracy on composites of held-out actors, and speed with 1, 3, 6 people.

    python benchmarks/multiperson.py accuracy --loao runs/cv_weizmann.json [--root ../shared/data/weizmann]
    python benchmarks/multiperson.py speed [--baseline REV] [--threads 2]

accuracy: for every leave-one-actor-out fold (checkpoints from ``benchmarks/cross_validate.py``), the held-out
actor's clips are keyed out of Weizmann's shared background (``pipeline.data.composite``) and put together in
one 180x144 frame, people at their own size: every pair and five triples of the in-place actions (bend,
jack, pjump, wave1, wave2; each actor moved so as to stand at a given column, apart, so nobody crosses),
and five pairs where a moving action (jump, run, side, skip, walk) crosses an in-place one. Each person is matched frame by frame to a track whose box holds
their pixels (MOT-style, the previous match kept while it still holds them); a person's label is that of the
track matched most often; an id switch is a change of the matched track, a duplicate a second track on
the same person that is never their match. Clips that cannot be keyed
(shot with another framing than any empty scene, ``pipeline.data.composite.keyable``) are left out and listed. Printed: per-person
video-level top-1 beside the single-person top-1 of the same clips run alone, and id switches (tracks per
person beyond the first) where nobody crosses.

speed: file mode (``infer.py``'s ``analyse_video``) and live (one frame at a time, drawing included) with 1,
3 and 6 people in one frame size: a 2x3 grid of 180x144 Weizmann tiles (540x288) at imgsz 640, where
the pose model finds people that small; and keyed 180x144 composites with 1, 2, 3 people at the default
imgsz 320. Also the single-person file-mode rate of ``--baseline`` (the commit before multi-person
tracking) on the same clips in the same run, from a git worktree, interleaved with this tree's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipeline.data.composite import background, best_background, centre_x, composite, keyable, read_frames, write_video  # noqa: E402
from pipeline.inference.annotate import Overlay, Person, draw  # noqa: E402
from pipeline.inference.files import OutputPaths, analyse_video  # noqa: E402
from pipeline.inference.predictor import ActionPredictor  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WEIZMANN = ROOT.parent / "shared" / "data" / "weizmann"
IN_PLACE = ("bend", "jack", "pjump", "wave1", "wave2")
MOVING = ("jump", "run", "side", "skip", "walk")
PAIRS = [(a, b) for i, a in enumerate(IN_PLACE) for b in IN_PLACE[i + 1 :]]
TRIPLES = [tuple(IN_PLACE[(i + k) % 5] for k in range(3)) for i in range(5)]
CROSSING = list(zip(IN_PLACE, MOVING))  # the moving one passes in front of the one in place
PLACES = {2: [55, 125], 3: [32, 90, 148]}  # where the people of a pair / triple stand (pixel column, of 180)


def empty_scenes(root: Path) -> list[np.ndarray]:
    """The empty scene of every walk, run and side clip (people pass through): one per session, more or less."""
    return [background([read_frames(p)]) for c in ("walk", "run", "side") for p in sorted((root / c).glob("*.avi"))]


def match_tracks(doc: dict, masks: np.ndarray) -> list[dict]:
    """Per person (index into ``masks``, their visible pixels per frame), MOT-style: in each frame the person
    is matched to a track whose box holds at least 30% of their pixels, keeping the previous match while it
    still qualifies (else the one holding most). Returns per person the track matched most often
    (``main``, None if never), ``switches`` (changes of the matched track) and ``duplicates`` (other tracks
    seen at least 3 frames that cover this person more than anyone else, never matched to them)."""
    k_people = len(masks)
    matched: list[int | None] = [None] * k_people
    counts = [dict() for _ in range(k_people)]
    switches = [0] * k_people
    votes: dict[int, np.ndarray] = {}
    for f in doc["frames"]:
        t = f["frame"]
        pixels = masks[:, t].sum(axis=(1, 2))
        held: dict[int, np.ndarray] = {}
        for p in f["tracks"]:
            x0, y0, x1, y1 = (max(int(round(v)), 0) for v in p["box"])
            held[p["id"]] = masks[:, t, y0:y1, x0:x1].sum(axis=(1, 2))
            votes.setdefault(p["id"], np.zeros(k_people))[int(held[p["id"]].argmax())] += held[p["id"]].max() > 0
        for k in range(k_people):
            ok = {tid: h[k] for tid, h in held.items() if pixels[k] > 50 and h[k] >= 0.3 * pixels[k]}
            if not ok:
                continue
            tid = matched[k] if matched[k] in ok else max(ok, key=ok.get)
            switches[k] += matched[k] is not None and tid != matched[k]
            matched[k] = tid
            counts[k][tid] = counts[k].get(tid, 0) + 1
    out = []
    for k in range(k_people):
        mine = {tid for tid, v in votes.items() if v.sum() >= 3 and int(v.argmax()) == k}
        out.append({
            "main": max(counts[k], key=counts[k].get) if counts[k] else None, "switches": switches[k],
            "duplicates": len(mine - set(counts[k])),
        })  # fmt: skip
    return out


def accuracy(a: argparse.Namespace) -> dict:
    summary = json.loads(Path(a.loao).read_text())
    scenes = empty_scenes(Path(a.root))
    rows, skipped, t0 = [], [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        first_seed = summary["folds"][0].get("seed")
        for fold in (f for f in summary["folds"] if f.get("seed") == first_seed):  # one checkpoint per fold
            report = json.loads((ROOT / fold["report"]).read_text())
            actor = fold["test"]
            predictor = ActionPredictor(ROOT / report["checkpoint"] if not Path(report["checkpoint"]).is_absolute() else report["checkpoint"], device=a.device)
            clips = {c: read_frames(Path(a.root) / c / f"{actor}_{c}.avi") for c in IN_PLACE + MOVING}
            key = {c: best_background(f, scenes) for c, f in clips.items()}
            centre = {c: centre_x(f, key[c]) for c, f in clips.items()}
            bad = [c for c, f in clips.items() if not keyable(f, key[c])]
            if bad:
                print(f"{actor}: not keyable, left out of composites: {', '.join(bad)}", flush=True)
                skipped.extend(f"{actor}_{c}" for c in bad)
            single = {c: analyse_video(str(Path(a.root) / c / f"{actor}_{c}.avi"), predictor, progress=False).label for c in clips}
            for kind, sets in (("pair", PAIRS), ("triple", TRIPLES), ("crossing", CROSSING)):
                for actions in sets:
                    if any(c in bad for c in actions):
                        continue
                    places = PLACES[len(actions)] if kind != "crossing" else [135, None]  # the moving one as shot
                    shifts = [0 if x is None else round(x - centre[c]) for c, x in zip(actions, places)]
                    frames, masks = composite([clips[c] for c in actions], shifts, key[actions[0]], masks=True, keys=[key[c] for c in actions])
                    path = write_video(Path(tmp) / f"{actor}_{'_'.join(actions)}.avi", frames, 25.0)
                    json_path = Path(tmp) / "out.json"
                    r = analyse_video(str(path), predictor, OutputPaths(json=json_path), progress=False)
                    doc = json.loads(json_path.read_text())
                    labels = {t["id"]: t["label"] for t in doc["tracks"]}
                    for k, (action, m) in enumerate(zip(actions, match_tracks(doc, masks))):
                        predicted = labels[m["main"]] if m["main"] is not None else None
                        rows.append({
                            "fold": fold["fold"], "actor": actor, "kind": kind, "scene": "+".join(actions), "action": action,
                            "track": m["main"], "switches": m["switches"], "duplicates": m["duplicates"], "predicted": predicted,
                            "correct": predicted == action, "single_correct": single[action] == action,
                        })  # fmt: skip
                    print(f"{actor:7s} {kind:8s} {'+'.join(actions):20s} -> " + ", ".join(
                        f"{q['action']}: {q['predicted']} (switches {q['switches']}, duplicates {q['duplicates']})" for q in rows[-len(actions):]
                    ) + f" | {len(r.tracks)} tracks in all", flush=True)  # fmt: skip
    out = {"rows": rows, "not_keyable": skipped, "seconds": round(time.perf_counter() - t0, 1)}
    print(f"\nclips that could not be keyed (shot with another framing than any empty scene): {len(skipped)} {skipped}")
    print("\nper-person video top-1, single-person top-1 of the same clips alone, id switches, duplicate tracks, people never found")
    for kind in ("pair", "triple", "crossing", "all"):
        for who in ("all actors", "without lena"):
            sel = [r for r in rows if (kind == "all" or r["kind"] == kind) and (who == "all actors" or r["actor"] != "lena")]
            acc = float(np.mean([r["correct"] for r in sel]))
            single = float(np.mean([r["single_correct"] for r in sel]))
            per_fold = [float(np.mean([r["correct"] for r in sel if r["fold"] == f])) for f in sorted({r["fold"] for r in sel})]
            stats = {"people": len(sel), "per_person_top1": acc, "per_fold_sd": float(np.std(per_fold, ddof=1)), "single_top1": single,
                     "id_switches": sum(r["switches"] for r in sel), "duplicates": sum(r["duplicates"] for r in sel),
                     "missed": sum(r["track"] is None for r in sel)}  # fmt: skip
            out[f"{kind} ({who})"] = stats
            print(f"{kind:9s} {who:13s} {len(sel):4d} people  per-person {acc:.3f} (sd over folds {stats['per_fold_sd']:.3f})  "
                  f"single {single:.3f}  id switches {stats['id_switches']}  duplicates {stats['duplicates']}  missed {stats['missed']}")  # fmt: skip
    print(f"{out['seconds']:.0f} s")
    return out


def untrained_checkpoint(path: Path, imgsz: int, config: str = "configs/weizmann.yaml") -> Path:
    """The default config's model (untrained: speed does not depend on the weights) at ``imgsz``."""
    import yaml

    from pipeline.data.extract import extractor_record
    from pipeline.data.features import ExtractorConfig, FeatureExtractor
    from pipeline.data.videoset import DatasetDefinition
    from pipeline.model.classifier import ActionClassifier

    cfg = yaml.safe_load((ROOT / config).read_text())["data"]["extractor"]
    record = extractor_record(FeatureExtractor(ExtractorConfig.from_dict({**cfg, "imgsz": imgsz})))
    clf = ActionClassifier(record["feature_dim"], DatasetDefinition.load("weizmann").classes, record)
    torch.save({"hyper_parameters": dict(clf.hparams), "state_dict": clf.state_dict()}, path)
    return path


def file_fps(predictor: ActionPredictor, paths: list[Path], repeats: int) -> tuple[float, float]:
    """Best-of-``repeats`` processed frames per second over ``paths``, and people tracked per frame."""
    best, people = 0.0, 0.0
    for _ in range(repeats):
        n, seen, t0 = 0, 0, time.perf_counter()
        for p in paths:
            r = analyse_video(str(p), predictor, progress=False)
            n += r.processed_frames
            seen += sum(t.frames for t in r.tracks)
        best, people = max(best, n / (time.perf_counter() - t0)), seen / n
    return best, people


def live_fps(predictor: ActionPredictor, path: Path, repeats: int) -> tuple[float, float, float]:
    """One frame at a time as the live loop runs it (predictor step, per-person overlay drawn), the best of
    ``repeats`` passes: fps, p50, p95 ms."""
    return max((_live_pass(predictor, read_frames(path)) for _ in range(repeats)), key=lambda r: r[0])


def _live_pass(predictor: ActionPredictor, frames: np.ndarray) -> tuple[float, float, float]:
    predictor.reset(25.0)
    names = predictor.class_names
    lat = []
    for f in frames:
        t0 = time.perf_counter()
        p = predictor(f[None])
        people = [Person(int(p.track[r]), p.boxes[r], p.keypoints[r], names[int(p.probs[r].argmax())], float(p.probs[r].max())) for r in range(len(p.track))]
        draw(f, Overlay(people[0].label if people else "nobody", 0.5, [], people, people[0].track if people else None))
        lat.append(1000 * (time.perf_counter() - t0))
    lat = np.asarray(lat[5:])  # the first frames warm the caches
    return 1000 / lat.mean(), float(np.percentile(lat, 50)), float(np.percentile(lat, 95))


def speed_rows(predictor: ActionPredictor, paths: dict[int, Path], what: str, repeats: int) -> list[dict]:
    """Rows for each people count, the counts interleaved pass by pass (1, 3, 6, 1, 3, 6, ...) so that the
    machine's drift over a run falls on all of them alike; best of ``repeats`` each."""
    best: dict[int, tuple] = {}
    for _ in range(repeats):
        for k, path in paths.items():
            f, lv = file_fps(predictor, [path], 1), live_fps(predictor, path, 1)
            old = best.get(k)
            best[k] = (max(f, old[0]) if old else f, max(lv, old[1], key=lambda r: r[0]) if old else lv)
    return [speed_row(k, what, *best[k]) for k in paths]


def speed_row(people: int, what: str, file: tuple[float, float], live: tuple[float, float, float]) -> dict:
    (fps, tracked), (lfps, p50, p95) = file, live
    print(f"{what}, {people} people ({tracked:.1f} tracked/frame): file {fps:.1f} fps, live {lfps:.1f} fps "
          f"(p50 {p50:.1f} ms, p95 {p95:.1f} ms)", flush=True)  # fmt: skip
    return {"people": people, "tracked_per_frame": round(tracked, 2), "file_fps": round(fps, 1), "live_fps": round(lfps, 1),
            "live_p50_ms": round(p50, 1), "live_p95_ms": round(p95, 1)}  # fmt: skip


BASELINE = """
import sys, time, json, torch
torch.set_num_threads(int(sys.argv[2]))
from pipeline.inference.files import analyse_video
from pipeline.inference.predictor import ActionPredictor
p = ActionPredictor(sys.argv[1], device="cpu")
paths = sys.argv[4:]
best = 0.0
for _ in range(int(sys.argv[3])):
    n, t0 = 0, time.perf_counter()
    for s in paths:
        n += analyse_video(s, p, progress=False).processed_frames
    best = max(best, n / (time.perf_counter() - t0))
print(json.dumps({"fps": best}))
"""


def baseline_fps(rev: str, ckpt: Path, paths: list[Path], threads: int, repeats: int, tree: Path) -> float:
    if not tree.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], cwd=ROOT, check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    r = subprocess.run([sys.executable, "-c", BASELINE, str(ckpt), str(threads), str(repeats), *map(str, paths)],
                       cwd=tree, env=env, capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(r.stdout.strip().splitlines()[-1])["fps"]


def speed(a: argparse.Namespace) -> dict:
    torch.set_num_threads(a.threads)
    root = Path(a.root)
    scenes = empty_scenes(root)
    tiles = [read_frames(root / c / f"{actor}_{c}.avi") for actor, c in
             (("daria", "jack"), ("ido", "wave1"), ("moshe", "jack"), ("eli", "pjump"), ("shahar", "wave2"), ("ira", "bend"))]  # fmt: skip
    keys = [best_background(t, scenes) for t in tiles]
    bg = keys[0]
    n = min(len(t) for t in tiles)
    out: dict = {"threads": a.threads, "device": a.device}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # 2x3 grid, imgsz 640: 1, 3, 6 people, the same frame size
        ckpt640 = untrained_checkpoint(tmp / "u640.ckpt", 640, a.config)
        predictor = ActionPredictor(ckpt640, device=a.device)
        grid = {}
        for k in (1, 3, 6):
            cells = [t[:n] if i < k else np.repeat(bg[None], n, 0) for i, t in enumerate(tiles)]
            grid[k] = write_video(tmp / f"grid{k}.avi", np.concatenate([np.concatenate(cells[:3], 2), np.concatenate(cells[3:], 2)], 1), 25.0)
        out["grid640"] = speed_rows(predictor, grid, "grid 540x288 imgsz 640", a.repeats)
        # keyed 180x144 composites, default imgsz 320: 1, 2, 3 people
        ckpt320 = untrained_checkpoint(tmp / "u320.ckpt", 320, a.config)
        predictor = ActionPredictor(ckpt320, device=a.device)
        keyed = {}
        for k in (1, 2, 3):
            shifts = [round(x - centre_x(t, b)) for t, b, x in zip(tiles, keys, {1: [90], 2: PLACES[2], 3: PLACES[3]}[k])]
            keyed[k] = write_video(tmp / f"keyed{k}.avi", composite(tiles[:k], shifts, bg, keys=keys[:k]), 25.0)
        out["keyed320"] = speed_rows(predictor, keyed, "keyed 180x144 imgsz 320", a.repeats)
        # one person, default config, today's code against the baseline, interleaved: A B A B
        clips = sorted(root.glob("*/daria_*.avi"))[:5]
        if a.baseline:
            tree = Path(tempfile.gettempdir()) / f"baseline-{a.baseline}"
            new, old = [], []
            for _ in range(2):
                old.append(baseline_fps(a.baseline, ckpt320, clips, a.threads, a.repeats, tree))
                new.append(file_fps(predictor, clips, a.repeats)[0])
            out["single_person"] = {"clips": [str(c) for c in clips], "baseline": a.baseline, "baseline_fps": round(max(old), 1),
                                    "fps": round(max(new), 1), "ratio": round(max(new) / max(old), 3)}  # fmt: skip
            print(f"one person, 5 Weizmann clips, imgsz 320: this tree {max(new):.1f} fps, {a.baseline} {max(old):.1f} fps "
                  f"-> {max(new) / max(old):.2f}x", flush=True)  # fmt: skip
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    acc = sub.add_parser("accuracy")
    acc.add_argument("--loao", default="runs/cv_weizmann.json", help="Weizmann summary written by benchmarks/cross_validate.py")
    spd = sub.add_parser("speed")
    spd.add_argument("--baseline", default="418b867", help="git revision to compare single-person speed with ('' to skip)")
    spd.add_argument("--repeats", type=int, default=3)
    spd.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 2))
    for s in (acc, spd):
        s.add_argument("--root", default=str(WEIZMANN))
        s.add_argument("--config", default="configs/weizmann.yaml", help="whose extractor settings an untrained checkpoint takes")
        s.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
        s.add_argument("--out", help="write the figures here as JSON")
    a = p.parse_args(argv)
    result = accuracy(a) if a.what == "accuracy" else speed(a)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
