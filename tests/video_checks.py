"""Scoring of video-ingest output against the generated videos' ground truth (used by tests and benchmarks)."""

from __future__ import annotations

import dataclasses


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclasses.dataclass
class VideoScore:
    turns: int = 0  # page turns between music slides in the truth
    turns_ok: int = 0  # both edges of the turn found within the tolerance
    turn_errors: list = dataclasses.field(default_factory=list)  # seconds, both edges of every turn
    surviving_non_music: list = dataclasses.field(default_factory=list)  # kept rows that are not music
    music_slides: int = 0
    music_slides_found: int = 0
    pages_exact: int = 0
    systems: int = 0
    systems_ok: int = 0  # IoU >= threshold
    ious: list = dataclasses.field(default_factory=list)

    def add(self, other: "VideoScore") -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def truth_slide_at(truth: dict, t: float) -> dict | None:
    for slide in truth["slides"]:
        if slide["start"] <= t < slide["end"]:
            return slide
    return None


def score_video(rows: list[dict], truth: dict, *, tolerance: float = 0.2, iou_threshold: float = 0.9) -> VideoScore:
    """Compare one video's rows (all slides, kept or not) with its truth."""
    score = VideoScore()
    rows = sorted(rows, key=lambda r: r["slide_index"])
    starts = [r["start"] for r in rows]
    ends = [r["end"] for r in rows]
    slides = truth["slides"]
    for a, tr, b in zip(slides, truth["transitions"], slides[1:]):
        if a["kind"] != "music" or b["kind"] != "music":
            continue
        score.turns += 1
        e_end = min((abs(e - tr["start"]) for e in ends), default=float("inf"))
        e_start = min((abs(s - tr["end"]) for s in starts), default=float("inf"))
        score.turn_errors += [e_end, e_start]
        score.turns_ok += int(e_end <= tolerance and e_start <= tolerance)
    for row in rows:
        mid = (row["start"] + row["end"]) / 2
        slide = truth_slide_at(truth, mid)
        if row["keep"] and (slide is None or slide["kind"] != "music"):
            score.surviving_non_music.append((row["slide_index"], slide and slide["kind"]))
    for slide in slides:
        if slide["kind"] != "music":
            continue
        score.music_slides += 1
        mid = (slide["start"] + slide["end"]) / 2
        row = next((r for r in rows if r["start"] <= mid < r["end"]), None)
        if row is None:
            score.systems += len(slide["systems"])
            continue
        score.music_slides_found += 1
        boxes = [s["box"] for s in row["systems"]]
        score.pages_exact += int(len(boxes) == len(slide["systems"]))
        for truth_box in slide["systems"]:
            best = max((iou(truth_box, b) for b in boxes), default=0.0)
            score.systems += 1
            score.ious.append(best)
            score.systems_ok += int(best >= iou_threshold)
    return score
