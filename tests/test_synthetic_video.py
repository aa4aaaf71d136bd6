"""Synthetic score-following videos (unimusic.video.synthetic): files, frames, audio and truth."""

from __future__ import annotations

import json
import math
import os
import subprocess
from fractions import Fraction

import numpy as np
import pytest

from unimusic.errors import InputError
from unimusic.video import synthetic
from unimusic.video.synthetic import VideoSpec, make_broken_files, make_video, plan_video, standard_specs

SR = 44100
TRUTH_KEYS = {"video", "width", "height", "fps", "duration", "container", "sample_rate", "slides", "transitions", "music"}
SLIDE_KEYS = {"index", "kind", "start", "end", "page", "systems", "measures"}

# Small, fast videos that between them have every slide kind and transition.
SPECS = {
    # mp4, crossfades, title card, text page mid-piece, outro, four staves, one system per slide
    "mp4": VideoSpec(
        piece="bach/bwv269.mxl", width=854, height=480, fps=25.0, container="mp4", transition="crossfade",
        transition_seconds=0.6, title_seconds=2.0, outro_seconds=2.0, text_page_seconds=2.0, max_measures=12,
        systems_per_page=1, seed=3,
    ),
    # webm, scroll, single staff with repeats
    "webm": VideoSpec(
        piece="ryansMammoth/7thRegimentReel.abc", width=640, height=360, fps=24.0, container="webm",
        transition="scroll", transition_seconds=0.5, max_measures=8, systems_per_page=1, seed=1,
    ),
}  # fmt: skip
# Drawn (not encoded) for the geometry checks: grand staff, cuts, several layouts and sizes.
PLAN_SPECS = (
    VideoSpec(piece="bach/bwv66.6.mxl", width=1280, height=720, piano_reduction=True, seed=0),
    VideoSpec(piece="bach/bwv104.6.mxl", width=1920, height=1080, fps=24.0, systems_per_page=2, seed=5),
    VideoSpec(piece="ryansMammoth/LadusReel.abc", width=854, height=480, max_measures=12, seed=2),
    VideoSpec(piece="bach/bwv140.7.mxl", width=1280, height=720, max_measures=8, systems_per_page=3, piano_reduction=True, seed=7),
)


def _ffprobe(path: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", path], capture_output=True, text=True
    )


def _frame(path: str, n: int, fps: float, width: int, height: int) -> np.ndarray:
    """Decoded frame ``n`` (gray): accurate seek to just before its timestamp n / fps."""
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-ss", f"{max(0.0, (n - 0.4) / fps):.6f}", "-i", path, "-frames:v", "1",
         "-f", "rawvideo", "-pix_fmt", "gray", "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    return np.frombuffer(out, np.uint8).reshape(height, width)


def _audio(path: str) -> np.ndarray:
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", path, "-f", "f32le", "-ac", "1", "-ar", str(SR), "-"], capture_output=True, check=True
    ).stdout
    return np.frombuffer(out, np.float32)


def _dbfs(x: np.ndarray) -> float:
    return 20 * math.log10(math.sqrt(float(np.mean(np.square(x, dtype=np.float64)))) + 1e-12)


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.fixture(scope="session")
def videos(tmp_path_factory):
    """{name: (spec, path, truth, plan)} for SPECS, generated once."""
    out_dir = tmp_path_factory.mktemp("synthetic_videos")
    made = {}
    for name, spec in SPECS.items():
        path = str(out_dir / f"{name}.{spec.container}")
        truth = make_video(spec, path)
        made[name] = (spec, path, truth, plan_video(spec))
    return made


# -- the files -----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SPECS))
def test_ffprobe_streams(videos, name):
    spec, path, truth, _ = videos[name]
    probe = _ffprobe(path)
    assert probe.returncode == 0, probe.stderr
    info = json.loads(probe.stdout)
    video = [s for s in info["streams"] if s["codec_type"] == "video"]
    audio = [s for s in info["streams"] if s["codec_type"] == "audio"]
    assert len(video) == 1 and len(audio) == 1
    v, a = video[0], audio[0]
    assert (v["width"], v["height"]) == (spec.width, spec.height)
    assert float(Fraction(v["r_frame_rate"])) == pytest.approx(spec.fps)
    assert v["codec_name"] == {"mp4": "h264", "webm": "vp9"}[spec.container]
    assert v["pix_fmt"] == "yuv420p"
    assert a["codec_name"] == {"mp4": "aac", "webm": "opus"}[spec.container]
    # AAC keeps the synthesized 44.1 kHz; Opus streams are always 48 kHz.
    assert int(a["sample_rate"]) == truth["sample_rate"] == {"mp4": 44100, "webm": 48000}[spec.container]
    assert float(info["format"]["duration"]) == pytest.approx(truth["duration"], abs=0.1)
    # Decoded audio covers the video too.
    assert len(_audio(path)) / SR == pytest.approx(truth["duration"], abs=0.1)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_truth_file_and_timeline(videos, name):
    spec, path, truth, plan = videos[name]
    with open(path + ".truth.json", encoding="utf-8") as f:
        assert json.load(f) == truth
    assert set(truth) == TRUTH_KEYS
    assert truth["video"] == os.path.basename(path)
    assert (truth["width"], truth["height"], truth["fps"], truth["container"]) == (spec.width, spec.height, spec.fps, spec.container)
    assert truth == dict(plan.truth, video=truth["video"])
    slides, transitions, fps = truth["slides"], truth["transitions"], spec.fps
    assert len(transitions) == len(slides) - 1
    assert slides[0]["start"] == 0 and slides[-1]["end"] == truth["duration"]
    for i, s in enumerate(slides):
        assert set(s) == SLIDE_KEYS and s["index"] == i
        assert s["start"] < s["end"]
        for t in (s["start"], s["end"]):  # frame times
            assert t * fps == pytest.approx(round(t * fps), abs=1e-4)
        if s["kind"] == "music":
            assert s["page"] >= 1 and s["systems"] and s["measures"][0] <= s["measures"][1]
        else:
            assert s["page"] is None and s["systems"] == [] and s["measures"] is None
    for i, tr in enumerate(transitions):
        assert tr["kind"] == spec.transition
        assert tr["start"] == slides[i]["end"] and tr["end"] == slides[i + 1]["start"]
        assert tr["end"] > tr["start"]  # crossfade / scroll: at least one frame in between
    kinds = [s["kind"] for s in slides]
    if spec.title_seconds:
        assert kinds[0] == "title" and slides[0]["end"] == pytest.approx(spec.title_seconds, abs=1 / fps)
        assert truth["music"]["start"] == pytest.approx(spec.title_seconds + spec.transition_seconds / 2)
    if spec.outro_seconds:
        assert kinds[-1] == "outro" and slides[-1]["end"] - slides[-1]["start"] == pytest.approx(spec.outro_seconds, abs=1 / fps)
        assert slides[-1]["start"] > truth["music"]["end"]
    if spec.text_page_seconds:
        (k,) = [i for i, kind in enumerate(kinds) if kind == "text"]
        assert kinds[k - 1] == kinds[k + 1] == "music"
        assert slides[k]["end"] - slides[k]["start"] == pytest.approx(spec.text_page_seconds, abs=1 / fps)
    # Every drawn frame of a slide's range is its image; transitions lie between.
    for (a, b), s in zip(plan.frame_ranges, slides):
        assert (a / fps, b / fps) == pytest.approx((s["start"], s["end"]), abs=1e-6)


def test_page_turns_follow_the_music(videos):
    """A music slide starts (cut) or its transition is centred at its first played measure."""
    spec, _, truth, plan = videos["webm"]
    music = [s for s in truth["slides"] if s["kind"] == "music"]
    # The reel repeats its first half: the same slide (same measures) comes back.
    assert len({tuple(s["measures"]) for s in music}) < len(music)
    for prev, nxt in zip(truth["slides"], truth["slides"][1:]):
        centre = (prev["end"] + nxt["start"]) / 2
        assert truth["music"]["start"] <= centre <= truth["music"]["end"]


# -- frames ----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SPECS))
def test_frames_show_the_slides(videos, name):
    spec, path, truth, plan = videos[name]
    fps, W, H = spec.fps, spec.width, spec.height
    slides = truth["slides"]
    for i, s in enumerate(slides):
        a, b = plan.frame_ranges[i]
        decoded = _frame(path, (a + b) // 2, fps, W, H)
        mine = plan.images[i]
        assert _mad(decoded, mine) < 3.0, (i, s["kind"])
        if i + 1 < len(slides):
            other = plan.images[i + 1]
            changed = np.abs(mine.astype(np.int16) - other.astype(np.int16)) > 100
            assert changed.sum() > 200  # consecutive slides differ ...
            # ... and the decoded frame is this slide where they do.
            assert np.abs(decoded[changed].astype(np.int16) - mine[changed]).mean() < 40
            assert np.abs(decoded[changed].astype(np.int16) - other[changed]).mean() > 100


def test_crossfade_frame_is_a_blend(videos):
    spec, path, truth, plan = videos["mp4"]
    for i in range(len(truth["transitions"])):
        a, b = plan.frame_ranges[i][1], plan.frame_ranges[i + 1][0]
        n = (a + b) // 2
        decoded = _frame(path, n, spec.fps, spec.width, spec.height).astype(np.int16)
        first, second = plan.images[i].astype(np.int16), plan.images[i + 1].astype(np.int16)
        changed = np.abs(first - second) > 100
        blend = plan.frame(n).astype(np.int16)
        alpha = (n - a + 1) / (b - a + 1)
        assert 0 < alpha < 1
        assert np.abs(blend - np.round(first * (1 - alpha) + second * alpha)).max() <= 1
        err = np.abs(decoded[changed] - blend[changed]).mean()
        assert err < 20
        assert err < np.abs(decoded[changed] - first[changed]).mean() / 2
        assert err < np.abs(decoded[changed] - second[changed]).mean() / 2


def test_scroll_frame_moves_the_page_up(videos):
    spec, _, truth, plan = videos["webm"]
    a, b = plan.frame_ranges[0][1], plan.frame_ranges[1][0]
    first, second = plan.images[0], plan.images[1]
    offsets = []
    for n in range(a, b):
        frame = plan.frame(n)
        off = next(o for o in range(1, spec.height) if np.array_equal(frame, np.concatenate([first[o:], second[:o]])))
        offsets.append(off)
    assert offsets == sorted(offsets) and 0 < offsets[0] and offsets[-1] < spec.height


# -- audio -----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SPECS))
def test_audio_silent_in_cards_loud_in_music(videos, name):
    spec, path, truth, _ = videos[name]
    x = _audio(path)
    kinds = set()
    for s in truth["slides"]:
        seg = x[int((s["start"] + 0.05) * SR) : int((s["end"] - 0.05) * SR)]
        kinds.add(s["kind"])
        if s["kind"] in ("title", "text", "outro"):
            assert _dbfs(seg) < -50, s
        else:
            assert _dbfs(seg) > -35, s
    if truth["music"]["start"] > 0.5:  # silent until the music starts
        assert _dbfs(x[: int((truth["music"]["start"] - 0.05) * SR)]) < -50
    if name == "mp4":
        assert {"title", "text", "outro", "music"} <= kinds


# -- truth boxes -------------------------------------------------------------------


def _staff_lines(box_pixels: np.ndarray) -> list[float]:
    """Centres of horizontal dark lines spanning most of the box width."""
    dark = (box_pixels < 224).mean(axis=1) > 0.5  # anti-aliased lines can straddle two rows
    lines, run = [], []
    for y, d in enumerate(dark):
        if d:
            run.append(y)
        elif run:
            lines.append(sum(run) / len(run))
            run = []
    if run:
        lines.append(sum(run) / len(run))
    return lines


def _check_boxes(frame: np.ndarray, paper_box, boxes, *, exact: bool) -> None:
    H, W = frame.shape
    px0, py0, px1, py1 = paper_box
    outside = np.zeros_like(frame, dtype=bool)
    outside[py0 + 2 : py1 - 2, px0 + 2 : px1 - 2] = True
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H
        outside[y0:y1, x0:x1] = False
        lines = _staff_lines(frame[y0:y1, x0:x1])
        assert len(lines) >= 5 and len(lines) % 5 == 0, lines
        spacing = np.median(np.diff(lines)[:4])
        assert 12 <= 4 * spacing <= 40  # staff height in the frame
    if exact:
        assert (frame[outside] == 255).all()  # no ink on the paper outside the boxes
    else:
        assert frame[outside].min() > 150 and frame[outside].mean() > 250


@pytest.mark.parametrize("spec", PLAN_SPECS, ids=lambda s: f"{s.piece}-{s.width}")
def test_truth_boxes_hold_the_staves(spec):
    plan = plan_video(spec)
    music = [(i, s) for i, s in enumerate(plan.truth["slides"]) if s["kind"] == "music"]
    assert music
    seen = set()
    for i, s in music:
        _check_boxes(plan.images[i], plan.paper_boxes[i], s["systems"], exact=True)
        seen.update(range(s["measures"][0], s["measures"][1] + 1))
        assert 1 <= len(s["systems"]) <= (spec.systems_per_page or 3)
    assert seen == set(range(max(seen) + 1))  # every measure is on some slide


@pytest.mark.parametrize("name", sorted(SPECS))
def test_truth_boxes_on_decoded_frames(videos, name):
    spec, path, truth, plan = videos[name]
    for i, s in enumerate(truth["slides"]):
        if s["kind"] != "music":
            continue
        a, b = plan.frame_ranges[i]
        decoded = _frame(path, (a + b) // 2, spec.fps, spec.width, spec.height)
        _check_boxes(decoded, plan.paper_boxes[i], s["systems"], exact=False)


def test_dark_slides_are_marked_and_gray():
    spec = VideoSpec(piece="bach/bwv66.6.mxl", width=854, height=480, dark=True, max_measures=6, seed=4)
    plan = plan_video(spec)
    slides = plan.truth["slides"]
    assert slides and all(s["kind"] == "dark" and s["systems"] == [] and s["page"] is None for s in slides)
    x0, y0, x1, y1 = plan.paper_boxes[0]
    paper = plan.images[0][y0:y1, x0:x1]
    assert 135 <= np.median(paper) <= 165 and paper.std() > 3


def test_deterministic():
    spec = PLAN_SPECS[2]
    first = plan_video(spec)
    synthetic._engrave.cache_clear()
    second = plan_video(spec)
    assert first.truth == second.truth
    assert all(np.array_equal(a, b) for a, b in zip(first.images, second.images))
    assert np.array_equal(first.audio, second.audio)


# -- specs and errors ------------------------------------------------------------------


def test_standard_specs_cover_every_variant():
    specs = standard_specs(20)
    assert len(specs) == 20 and specs == standard_specs(20) and specs != standard_specs(20, seed=1)
    assert standard_specs(5) == specs[:5]
    assert {s.transition for s in specs} == {"cut", "crossfade", "scroll"}
    assert any(s.title_seconds > 0 for s in specs)
    assert any(s.outro_seconds > 0 for s in specs)
    assert any(s.text_page_seconds > 0 for s in specs)
    assert {(s.width, s.height) for s in specs} >= {(854, 480), (1280, 720), (1920, 1080)}
    assert {s.fps for s in specs} >= {24.0, 25.0, 30.0}
    assert {s.container for s in specs} == {"mp4", "webm"}
    assert sum(s.dark for s in specs) == 1
    assert any(s.piano_reduction for s in specs)  # grand staff
    assert any(s.piece.startswith("ryansMammoth/") for s in specs)  # single staff
    assert any(s.piece.startswith("bach/") and not s.piano_reduction for s in specs)  # four staves
    assert {s.systems_per_page for s in specs} >= {None, 1, 2, 3}


@pytest.mark.parametrize(
    "field,value",
    [
        ("piece", "nowhere.txt"),
        ("width", 853),
        ("height", 0),
        ("fps", 0.0),
        ("container", "avi"),
        ("transition", "wipe"),
        ("transition_seconds", -1.0),
        ("title_seconds", float("nan")),
        ("outro_seconds", 0.1),
        ("text_page_seconds", 100.0),
        ("max_measures", 0),
        ("systems_per_page", 4),
        ("dark", "yes"),
        ("seed", 1.5),
    ],
)
def test_bad_spec_names_the_field(field, value):
    with pytest.raises(InputError, match=f"VideoSpec.{field}"):
        VideoSpec(**{"piece": "bach/bwv66.6.mxl", field: value})


def test_unknown_piece_and_no_reduction(tmp_path):
    with pytest.raises(InputError, match="VideoSpec.piece"):
        plan_video(VideoSpec(piece="bach/no_such_chorale.mxl"))
    with pytest.raises(InputError, match="VideoSpec.piano_reduction"):
        plan_video(VideoSpec(piece="ryansMammoth/7thRegimentReel.abc", piano_reduction=True))


def test_ffmpeg_failure_is_an_input_error(tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic, "_codec_args", lambda container: ["-c:v", "no_such_encoder", "-f", "mp4"])
    spec = VideoSpec(piece="bach/bwv66.6.mxl", width=320, height=240, max_measures=2)
    with pytest.raises(InputError, match="ffmpeg.*no_such_encoder"):
        make_video(spec, str(tmp_path / "x.mp4"))
    assert not os.path.exists(tmp_path / "x.mp4") and not os.path.exists(tmp_path / "x.mp4.truth.json")


def test_broken_files(videos, tmp_path):
    _, path, _, _ = videos["mp4"]
    files = make_broken_files(str(tmp_path / "broken"), from_video=path)
    assert set(files.values()) == {"corrupt", "truncated", "no_audio", "not_video", "empty"}
    for p, kind in files.items():
        assert os.path.isfile(p)
        probe = _ffprobe(p)
        if kind == "no_audio":
            assert probe.returncode == 0
            streams = json.loads(probe.stdout)["streams"]
            assert [s["codec_type"] for s in streams] == ["video"]
        elif kind == "not_video" and probe.returncode == 0:  # the PNG: a still image, no audio
            streams = json.loads(probe.stdout)["streams"]
            assert [s["codec_name"] for s in streams] == ["png"]
        else:
            assert probe.returncode != 0, (kind, probe.stdout)
    assert os.path.getsize(next(p for p, k in files.items() if k == "empty")) == 0
    truncated = next(p for p, k in files.items() if k == "truncated")
    assert os.path.getsize(truncated) == pytest.approx(0.4 * os.path.getsize(path), abs=2)


# -- the standard set (slow) ---------------------------------------------------------


@pytest.mark.slow
def test_standard_videos(tmp_path):
    for i, spec in enumerate(standard_specs(20)):
        path = str(tmp_path / f"std{i:02d}.{spec.container}")
        truth = make_video(spec, path)
        assert 15 <= truth["duration"] <= 70, (i, spec.piece, truth["duration"])
        probe = _ffprobe(path)
        assert probe.returncode == 0, probe.stderr
        info = json.loads(probe.stdout)
        assert float(info["format"]["duration"]) == pytest.approx(truth["duration"], abs=0.1)
        assert {s["codec_type"] for s in info["streams"]} == {"video", "audio"}
        plan = plan_video(spec)
        for j, s in enumerate(truth["slides"]):
            if s["kind"] == "music":
                _check_boxes(plan.images[j], plan.paper_boxes[j], s["systems"], exact=True)
        os.remove(path)
