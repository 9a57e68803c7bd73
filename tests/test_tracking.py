"""Several people: tracking, one GRU state per track, the main-subject rule, per-person outputs.

Scripted scenes give the predictor exact detections (people walking, entering, leaving, crossing), so the
tracking and state logic is tested without a detector; composites of real Weizmann clips test the whole
chain with the real weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REAL_WEIGHTS, WEIZMANN, make_checkpoint, needs_shared, write_clip

from pipeline.data.features import POSE_DIM, Detections
from pipeline.data.tracking import main_track, subject_weight, track_sequence
from pipeline.inference.files import OutputPaths, analyse_video
from pipeline.inference.predictor import ActionPredictor

W, H = 200, 100


def person(cx: float, seed: int, dim: int) -> np.ndarray:
    """One detection row: a 20x50 box centred at ``cx``, features fixed by ``seed`` with a pose block."""
    rng = np.random.default_rng(seed)
    f = rng.normal(size=dim).astype(np.float32)
    f[-POSE_DIM:][:6] = [1, 0.9, cx / W, 0.5, 20 / W, 50 / H]
    return f


class Scene:
    """Stands in for the extractor: frame t shows the people ``script(t) -> [(cx, seed), ...]``."""

    def __init__(self, script, like, max_people: int = 16):
        self.script, self.dim, self.max_people, self.t = script, like.feature_dim, max_people, 0
        self.config, self.feature_dim = like.config, like.feature_dim
        self.rows: list[tuple[int, int, np.ndarray]] = []  # (t, seed, features) of every detection given

    def __call__(self, frames) -> Detections:
        feats, frame, boxes = [], [], []
        for i in range(len(frames)):
            for cx, seed in self.script(self.t)[: self.max_people]:
                f = person(cx, seed * 1000 + self.t, self.dim)
                feats.append(f)
                frame.append(i)
                boxes.append([cx - 10, 25, cx + 10, 75])
                self.rows.append((self.t, seed, f))
            self.t += 1
        n = len(feats)
        return Detections(
            torch.from_numpy(np.array(feats, np.float32).reshape(n, self.dim)), torch.tensor(frame, dtype=torch.long),
            torch.tensor(boxes, dtype=torch.float32).reshape(n, 4), torch.zeros(n, 17, 3), torch.full((n,), 0.9),
        )  # fmt: skip


@pytest.fixture
def predictor(tiny_checkpoint) -> ActionPredictor:
    return ActionPredictor(tiny_checkpoint, device="cpu")


def run(predictor: ActionPredictor, script, frames: int, batch: int = 8, max_people: int = 16) -> tuple[Scene, list]:
    """Feed ``frames`` scripted frames in batches; return the scene and per frame [(track, seed, probs)]."""
    scene = Scene(script, predictor.extractor, max_people)
    predictor.extractor = scene
    predictor.reset(fps=25)
    dummy = np.zeros((batch, H, W, 3), np.uint8)
    out: list = []
    for start in range(0, frames, batch):
        n = min(batch, frames - start)
        p = predictor(dummy[:n])
        for i, rows in enumerate(p.rows()):
            t = start + i
            seeds = [s for tt, s, _ in scene.rows if tt == t]  # detections of frame t, in order
            by_box = {round(float(scene.script(t)[k][0])): seeds[k] for k in range(len(seeds))}
            out.append([(int(p.track[r]), by_box[round(float((p.boxes[r, 0] + p.boxes[r, 2]) / 2))], p.probs[r]) for r in rows])
    return scene, out


def offline(predictor: ActionPredictor, frames: np.ndarray, tracks: np.ndarray, features: np.ndarray, tid: int) -> np.ndarray:
    x = torch.from_numpy(track_sequence(frames, tracks, features, tid))
    with torch.inference_mode():
        return predictor.model(x[None])[0][0].softmax(-1).numpy()


def check_streaming_equals_offline(predictor, scene, out) -> None:
    """Every track's per-frame outputs equal a full-sequence forward over that track's own features."""
    frames, tracks, feats, probs = [], [], [], []
    for t, rows in enumerate(out):
        for tid, seed, p in rows:
            f = next(f for tt, s, f in scene.rows if tt == t and s == seed)
            frames.append(t), tracks.append(tid), feats.append(f), probs.append(p)
    frames, tracks, feats, probs = np.array(frames), np.array(tracks), np.stack(feats), np.stack(probs)
    for tid in np.unique(tracks):
        rows = np.flatnonzero(tracks == tid)
        full = offline(predictor, frames, tracks, feats, tid)
        np.testing.assert_allclose(probs[rows], full[frames[rows] - frames[rows].min()], atol=1e-5)


def test_two_people_apart_keep_their_ids_and_get_a_state_each(predictor):
    scene, out = run(predictor, lambda t: [(40 + t, 1), (160 - t, 2)], frames=40)
    assert all(len(rows) == 2 for rows in out)
    ids = {seed: {tid for rows in out for tid, s, _ in rows if s == seed} for seed in (1, 2)}
    assert len(ids[1]) == 1 and len(ids[2]) == 1 and ids[1] != ids[2]  # no id switch
    check_streaming_equals_offline(predictor, scene, out)
    # the two people see different features, so their labels' probabilities differ
    assert np.abs(out[-1][0][2] - out[-1][1][2]).max() > 1e-4


def test_all_tracks_step_as_one_batch_per_frame(predictor):
    calls: list[int] = []
    hook = predictor.model.rnn.register_forward_hook(lambda m, inp, o: calls.append(inp[0].shape[0]))
    try:
        run(predictor, lambda t: [(20 + 30 * k, k) for k in range(6)], frames=16)
    finally:
        hook.remove()
    assert len(calls) == 16 and set(calls) == {6}  # one recurrent call per frame, six people in it


def test_a_newcomer_starts_fresh_and_a_leaver_is_dropped_after_the_lost_time(predictor):
    predictor.tracker_config = type(predictor.tracker_config)(lost_s=0.4)  # 10 frames at 25 fps

    def script(t):
        people = [(40, 1)]
        if 10 <= t < 20 or t >= 45:  # person 2 comes, leaves for 25 frames (longer than lost), comes back
            people.append((150, 2))
        return people

    scene, out = run(predictor, script, frames=60)
    ids2 = [tid for rows in out for tid, s, _ in rows if s == 2]
    first, second = ids2[0], ids2[-1]
    assert first != second  # gone longer than the lost time: a new track, a new state
    assert first not in predictor.states.slot  # its state was dropped
    check_streaming_equals_offline(predictor, scene, out)  # each started from the zero state


def test_a_short_absence_keeps_the_track_and_its_state(predictor):
    script = lambda t: [(40, 1)] + ([(150, 2)] if not 20 <= t < 24 else [])  # noqa: E731 (4 frames away)
    scene, out = run(predictor, script, frames=40)
    assert len({tid for rows in out for tid, s, _ in rows if s == 2}) == 1
    check_streaming_equals_offline(predictor, scene, out)  # the gap was stepped with the "nobody" vector


def test_crossing_people_each_keep_a_state_that_follows_the_track(predictor):
    scene, out = run(predictor, lambda t: [(20 + 4 * t, 1), (181 - 4 * t, 2)], frames=40)
    assert all(len(rows) == 2 for rows in out)
    check_streaming_equals_offline(predictor, scene, out)  # whatever ids the tracker gave at the crossing


def test_batches_give_the_same_results_as_one_frame_at_a_time(predictor):
    script = lambda t: [(30 + t, 1), (100, 2)] + ([(170, 3)] if t > 5 else [])  # noqa: E731
    _, batched = run(predictor, script, frames=24, batch=8)
    _, single = run(predictor, script, frames=24, batch=1)
    for a, b in zip(batched, single):
        assert [(t, s) for t, s, _ in a] == [(t, s) for t, s, _ in b]
        np.testing.assert_allclose(np.stack([p for *_, p in a]), np.stack([p for *_, p in b]), atol=1e-5)


def test_max_people_one_is_the_single_subject_mode(predictor):
    _, out = run(predictor, lambda t: [(40, 1), (160, 2)], frames=12, max_people=1)
    assert all(len(rows) == 1 for rows in out) and len({tid for rows in out for tid, *_ in rows}) == 1


def test_main_subject_rule_prefers_long_large_sure_and_central():
    dim = 10 + POSE_DIM

    def rows(track, n, cx=0.5, size=0.3, score=0.9):
        f = np.zeros((n, dim), np.float32)
        f[:, -POSE_DIM:][:, :6] = [1, score, cx, 0.5, size, size]
        return np.full(n, track), f

    def pick(*groups):
        t = np.concatenate([g[0] for g in groups])
        return main_track(t, np.concatenate([g[1] for g in groups]))

    assert pick(rows(1, 10), rows(2, 30)) == 2  # seen longer
    assert pick(rows(1, 20, size=0.1), rows(2, 20, size=0.4)) == 2  # larger
    assert pick(rows(1, 20, cx=0.05), rows(2, 20, cx=0.5)) == 2  # more central
    assert pick(rows(1, 20, score=0.3), rows(2, 20)) == 2  # surer
    assert main_track(np.zeros(0, np.int64), np.zeros((0, dim), np.float32)) is None
    assert subject_weight(rows(1, 1)[1])[0] == pytest.approx(0.9 * 0.3)


def test_track_sequence_runs_first_to_last_frame_with_zeros_in_gaps():
    feats = np.arange(5 * 3, dtype=np.float32).reshape(5, 3) + 1
    seq = track_sequence(np.array([2, 3, 6, 3, 4]), np.array([7, 7, 7, 8, 8]), feats, 7)
    assert seq.shape == (5, 3)
    np.testing.assert_array_equal(seq[[0, 1, 4]], feats[:3])
    assert (seq[2:4] == 0).all()


def test_outputs_per_person(predictor, tmp_path):
    """JSON v2 tracks and per-frame entries, CSV track column, a band per person in the plot."""
    scene = Scene(lambda t: [(50, 1)] + ([(150, 2)] if t >= 10 else []), predictor.extractor)
    predictor.extractor = scene
    clip = write_clip(tmp_path / "two.avi", frames=30, size=(W, H))
    out = OutputPaths.in_folder(tmp_path / "out", "two")
    r = analyse_video(str(clip), predictor, out, batch_size=8, progress=False)
    doc = json.loads(out.json.read_text())
    assert doc["schema_version"] == 5 and len(doc["tracks"]) == 2 == len(r.tracks)
    first, second = doc["tracks"]
    # a newcomer is labelled from their second frame: the tracker confirms a new track on its second detection
    assert first["first_s"] == 0 and abs(second["first_s"] - 11 / 25) < 1e-6 and abs(second["last_s"] - 30 / 25) < 1e-6
    assert second["segments"][0]["start_s"] == second["first_s"]
    assert doc["main_track"] == first["id"] and doc["label"] == first["label"] and doc["segments"] == first["segments"]
    assert [len(f["tracks"]) for f in doc["frames"]] == [1] * 11 + [2] * 19
    assert {p["id"] for f in doc["frames"] for p in f["tracks"]} == {first["id"], second["id"]}
    assert all(p["box"][0] < 100 if p["id"] == first["id"] else p["box"][0] > 100 for f in doc["frames"] for p in f["tracks"])
    lines = out.csv.read_text().splitlines()
    assert lines[0].startswith("frame,time_s,track,label,score") and len(lines) == 1 + 11 + 2 * 19
    import matplotlib.image

    with_bands = matplotlib.image.imread(out.plot).shape[0]
    predictor.extractor = Scene(lambda t: [(50, 1)], predictor.extractor)
    analyse_video(str(clip), predictor, OutputPaths(plot=tmp_path / "one.png"), batch_size=8, progress=False)
    assert with_bands > matplotlib.image.imread(tmp_path / "one.png").shape[0]  # one band per person, only with several


def test_the_video_timeline_follows_the_subject_across_a_broken_track(predictor, tmp_path):
    """A cut between two shots: the person jumps across the frame and gets a new track; the video's segments
    still run from the first frame to the last, each shot under its own track's labels."""
    scene = Scene(lambda t: [(50, 1)] if t < 15 else [(150, 1)], predictor.extractor)
    predictor.extractor = scene
    clip = write_clip(tmp_path / "cut.avi", frames=30, size=(W, H))
    r = analyse_video(str(clip), predictor, OutputPaths(csv=tmp_path / "cut.csv"), batch_size=8, progress=False)
    assert len(r.tracks) == 2
    first, second = r.tracks
    assert abs(first.last_s - 15 / 25) < 1e-6 and second.first_s >= 15 / 25
    assert r.segments[0].start_s == 0 and abs(r.segments[-1].end_s - 30 / 25) < 1e-6  # both shots, not one track's
    assert all(a.end_s == b.start_s for a, b in zip(r.segments, r.segments[1:]))
    rows = [ln.split(",") for ln in (tmp_path / "cut.csv").read_text().splitlines()[1:]]
    tracks: dict[str, list[list[float]]] = {}
    for row in rows:  # one person per frame: every row counts, after its track's first 8 (the warm-up)
        tracks.setdefault(row[2], []).append([float(v) for v in row[5:]])
    mean = np.mean([p for ps in tracks.values() for p in ps[8:]], 0)
    assert np.allclose([r.probs[n] for n in predictor.class_names], mean, atol=1e-3)


def test_nobody_in_view_is_labelled_nobody(tiny_checkpoint, tmp_path):
    predictor = ActionPredictor(tiny_checkpoint, device="cpu")
    predictor.extractor = Scene(lambda t: [], predictor.extractor)
    r = analyse_video(str(write_clip(tmp_path / "empty.avi", frames=10)), predictor, progress=False)
    assert r.label == "nobody" and r.tracks == [] and r.segments == [] and r.main_track is None


# --- composites of real clips, real weights ---------------------------------------------------------


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("real") / "real.ckpt", fps=25.0, layers=(), weights=str(REAL_WEIGHTS), imgsz=320)


@needs_shared
def test_real_composite_two_actors_two_stable_tracks(real_checkpoint, tmp_path):
    from pipeline.data.composite import background, composite, read_frames, write_video

    clips = {c: read_frames(WEIZMANN / c / f"ira_{c}.avi") for c in ("jack", "wave2")}
    bg = background([read_frames(p) for c in ("walk", "run", "side") for p in sorted((WEIZMANN / c).glob("*.avi"))[:3]])
    clip = write_video(tmp_path / "pair.avi", composite([clips["jack"], clips["wave2"]], [-40, 40], bg), 25)
    predictor = ActionPredictor(real_checkpoint, device="cpu")
    out = OutputPaths(json=tmp_path / "pair.json", video=tmp_path / "pair.mp4")
    r = analyse_video(str(clip), predictor, out, progress=False)
    assert len(r.tracks) == 2  # two people, no id switch: each keeps one id for the whole clip
    doc = json.loads(out.json.read_text())
    assert all(len(f["tracks"]) == 2 for f in doc["frames"][5:])
    for t in r.tracks:  # each track stays on its own side of the frame
        xs = [(p["box"][0] + p["box"][2]) / 2 for f in doc["frames"] for p in f["tracks"] if p["id"] == t.id]
        assert max(xs) < 90 or min(xs) > 90
    # and the cache follows the same people: extraction and inference share the tracker
    from pipeline.data.extract import extract_video

    seq = extract_video(predictor.extractor, clip)
    assert len(seq.track_ids()) == 2 and seq.subject().shape[0] == len(seq.frame_index)


@pytest.mark.parametrize("kind", ["bytetrack", "botsort"])
def test_both_trackers_follow_two_people(predictor, kind):
    from pipeline.data.tracking import TrackerConfig

    predictor.tracker_config = TrackerConfig(kind)
    scene, out = run(predictor, lambda t: [(40 + t, 1), (160 - t, 2)], frames=20)
    assert predictor.tracker.needs_images == (kind == "botsort")
    assert len({tid for rows in out for tid, *_ in rows}) == 2
    check_streaming_equals_offline(predictor, scene, out)


def test_tracker_settings_are_checked():
    from pipeline.data.tracking import TrackerConfig

    for bad in ({"kind": "sort"}, {"conf": 0}, {"lost_s": -1}):
        with pytest.raises(ValueError):
            TrackerConfig(**bad)


def test_a_weak_detection_on_the_track_continues_it():
    """A person whose score dips (0.3, above the start threshold) while their box changes shape keeps their
    id: association is by overlap alone, not overlap times score (which would need IoU > 0.67 at 0.3)."""
    from pipeline.data.tracking import PersonTracker

    tracker = PersonTracker(fps=25)
    ids = []
    for t in range(12):
        wide = t % 2 == 1  # a jumping jack: arms in, arms out
        box = np.array([[40.0 - 12 * wide, 20, 60 + 12 * wide, 80]])
        tid, _ = tracker.update(box, np.array([0.9 if t < 6 else 0.3]))
        ids.extend(tid.tolist())
    assert len(ids) >= 11 and len(set(ids)) == 1
