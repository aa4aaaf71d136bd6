"""One evaluation table for every direction, with peers, on a corpus split or paired files.

Each item is one piece of music in up to four forms (a score image, LMX, notes,
audio): a row of a tokenized corpus (one staff system) or a group of files
sharing a stem in a folder (``x.png``/``x.pdf``, ``x.musicxml``/``x.krn``/...,
``x.mid``, ``x.wav``). Every direction runs through the same :class:`~unimusic.inference.Translator`
users call (whole inputs, chunking and stitching included), batched across items, and is
scored against the item's own other forms:

* LMX targets: symbol error rate, pooled edit distance over pooled reference length;
* MIDI targets: note onset F1 and onset+offset F1 (mir_eval, 50 ms, pitches within
  50 cents), programs ignored (as peers know none), pooled over items;
* audio targets: the generated audio transcribed by basic-pitch (its weights ship in
  its wheel), onset F1 against the item's notes;
* image targets: our OMR (the same checkpoint's image->lmx) on the generated image, SER
  against the item's LMX;
* peers: basic-pitch and Transkun transcribe the same audio in the same run: onset
  F1s and seconds per audio second beside ours;
* cascades (``image -> lmx -> midi``...) beside the direct direction, and the
  deterministic converters (FluidSynth, Verovio) as reference rows.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from unimusic.errors import InputError


@dataclasses.dataclass(frozen=True)
class Item:
    """One piece in several forms (any may be None)."""

    name: str
    image: object = None  # io_files.Pages or inference.Systems
    lmx: tuple[str, ...] | None = None
    notes: tuple | None = None  # unimusic.tokens.midi.Note, seconds from the piece start
    audio: object = None  # io_files.Audio


@dataclasses.dataclass(frozen=True)
class Direction:
    """One row of the table."""

    name: str  # shown in the table
    source: str  # lmx | midi | image | audio
    to: str  # lmx | midi | audio | image
    via: tuple[str, ...] = ()
    engine: str = "model"
    metric: str = "ser"  # ser | notes | judge | omr
    kind: str = "model"  # model | cascade | converter


DIRECTIONS = (
    Direction("image->lmx", "image", "lmx", metric="ser"),
    Direction("audio->midi", "audio", "midi", metric="notes"),
    Direction("midi->audio", "midi", "audio", metric="judge"),
    Direction("image->audio", "image", "audio", metric="judge"),
    Direction("audio->image", "audio", "image", metric="omr"),
    Direction("lmx->image", "lmx", "image", metric="omr"),
    Direction("lmx->midi", "lmx", "midi", metric="notes"),
    Direction("midi->lmx", "midi", "lmx", metric="ser"),
    Direction("audio->lmx", "audio", "lmx", metric="ser"),
    Direction("image->midi", "image", "midi", metric="notes"),
    Direction("image->lmx->midi", "image", "midi", via=("lmx",), engine="auto", metric="notes", kind="cascade"),
    Direction("image->lmx->audio", "image", "audio", via=("lmx",), engine="auto", metric="judge", kind="cascade"),
    Direction("audio->midi->lmx", "audio", "lmx", via=("midi",), metric="ser", kind="cascade"),
    Direction("midi->audio (FluidSynth)", "midi", "audio", engine="convert", metric="judge", kind="converter"),
    Direction("lmx->image (Verovio)", "lmx", "image", engine="convert", metric="omr", kind="converter"),
)
PEER_NAMES = ("basic-pitch", "transkun")


# -- items -----------------------------------------------------------------------------------


def items_from_tokens(tokens_dir: str, *, split: str = "test", limit: int | None = None) -> list[Item]:
    """Rows of a tokenized (or plain) corpus in ``split``, in a stable order."""
    import io

    import pyarrow.parquet as pq

    from pipelines.train_common import corpus_shards
    from unimusic import storage
    from unimusic.multitask import row_key

    columns = ["piece_id", "variant", "system", "occurrence", "split", "image_png", "lmx", "notes", "audio_flac"]
    rows = []
    for f in corpus_shards(tokens_dir):
        table = pq.read_table(io.BytesIO(storage.read_bytes(f)))
        have = [c for c in columns if c in table.column_names]
        rows += [r for r in table.select(have).to_pylist() if r.get("split") == split]
    if not rows:
        raise InputError(tokens_dir, f"no rows in split {split!r}")
    rows.sort(key=row_key)
    if limit:
        rows = rows[:limit]
    return [_row_item(r, name=f"{r['piece_id']}#{r['system']}.{r['occurrence']}") for r in rows]


def _row_notes(notes, offset: float = 0.0) -> tuple | None:
    from unimusic.tokens.midi import Note

    if notes is None:
        return None
    return tuple(Note(start=float(n["start"]) + offset, end=float(n["end"]) + offset, pitch=int(n["pitch"]),
                      velocity=int(n["velocity"]), program=int(n["program"]), is_drum=bool(n["is_drum"]))
                 for n in notes)


def _row_item(r: dict, *, name: str) -> Item:
    """One corpus row as an item; forms the row lacks (imported sets) stay None."""
    from unimusic import io_files
    from unimusic.inference import Systems
    from unimusic.render.synthesize import decode_audio
    from unimusic.tokenize import decode_png_gray
    from unimusic.tokens.lmx import LmxCodec

    audio = None
    if r.get("audio_flac") is not None:
        samples, sr = decode_audio(r["audio_flac"], name=name)
        audio = io_files.Audio(samples=np.asarray(samples, dtype=np.float32), sample_rate=int(sr))
    tokens = LmxCodec().tokens
    return Item(
        name=name,
        image=Systems(crops=(decode_png_gray(r["image_png"], source=name),)) if r.get("image_png") is not None else None,
        lmx=tuple(tokens[i] for i in r["lmx"]) if r.get("lmx") is not None else None,
        notes=_row_notes(r.get("notes")),
        audio=audio,
    )


def items_from_dataset(corpus_dir: str, *, split: str = "test", limit: int | None = None) -> list[Item]:
    """Items of an imported data set's split (``unimusic datasets import``), in a stable order.

    Score rows (a system image, or a group of measures with its LMX) are one item each.
    Performance rows without a score (MAESTRO, MusicNet, Slakh2100) are joined back into one
    item per performance: its audio and notes whole, so transcription is scored on whole
    pieces (the published protocol) through the translator's own chunking, and a note that
    crossed a row boundary counts once, with its true onset. (A key struck again exactly on a
    row boundary is indistinguishable from a held one and is joined: rare, and documented.)
    ``limit``: the first N items. Memory: about 0.65 GB per hour of audio (44.1 kHz float32)."""
    import io

    import pyarrow.parquet as pq

    from pipelines.train_common import corpus_shards
    from unimusic import io_files, storage
    from unimusic.render.synthesize import decode_audio

    manifest_path = storage.join(corpus_dir, "manifest.json")
    files = corpus_shards(corpus_dir)
    if "dataset" not in json.loads(storage.read_bytes(manifest_path)):
        raise InputError(corpus_dir, "not an imported data set (no 'dataset' in its manifest): use --tokens")
    columns = ["piece_id", "example", "system", "split", "image_png", "lmx", "notes", "audio_flac", "start", "end"]
    rows = []
    for f in files:
        table = pq.read_table(io.BytesIO(storage.read_bytes(f)), columns=columns)
        rows += [r for r in table.to_pylist() if r["split"] == split]
    if not rows:
        raise InputError(corpus_dir, f"no rows in split {split!r}")
    rows.sort(key=lambda r: (r["piece_id"], r["system"]))
    performances: dict[str, list[dict]] = {}
    items: list[Item] = []
    for r in rows:
        if r["image_png"] is None and r["lmx"] is None:
            performances.setdefault(r["piece_id"], []).append(r)
        else:
            items.append(_row_item(r, name=f"{r['piece_id']}#{r['system']}"))
    for piece, parts in performances.items():
        notes: list = []
        held: dict[int, int] = {}  # pitch -> index in notes of a note cut at the previous row's end
        chunks, rate = [], None
        for r in parts:
            span = r["end"] - r["start"]
            now: dict[int, int] = {}
            for n in _row_notes(r["notes"], r["start"]) or ():
                i = held.get(n.pitch) if abs(n.start - r["start"]) < 1e-6 else None
                if i is not None:
                    notes[i] = dataclasses.replace(notes[i], end=n.end)
                else:
                    notes.append(n)
                    i = len(notes) - 1
                if abs(n.end - (r["start"] + span)) < 1e-6:
                    now[n.pitch] = i
            held = now
            if r["audio_flac"] is not None:
                samples, rate = decode_audio(r["audio_flac"], name=piece)
                chunks.append(samples)
        audio = None
        if chunks and len(chunks) == len(parts):
            audio = io_files.Audio(samples=np.concatenate(chunks), sample_rate=int(rate))
        items.append(Item(name=piece, notes=tuple(notes) if any(r["notes"] is not None for r in parts) else None,
                          audio=audio))
    items.sort(key=lambda it: it.name)
    return items[:limit] if limit else items


def items_from_folder(folder: str, *, limit: int | None = None) -> list[Item]:
    """Files grouped by stem: an image/PDF, a score or LMX file, a MIDI file, an audio file.
    A score gives both the LMX and (through Verovio) the notes unless a MIDI file is there."""
    from unimusic import io_files
    from unimusic.inference import score_to_lmx, score_to_notes

    root = Path(folder)
    if not root.is_dir():
        raise InputError(folder, "not a folder")
    groups: dict[str, list[Path]] = {}
    for path in sorted(root.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            groups.setdefault(path.stem, []).append(path)
    items = []
    for stem, paths in sorted(groups.items()):
        forms: dict[str, object] = {}
        for path in paths:
            try:
                loaded = io_files.read_input(path)
            except InputError:
                continue  # not a music file: ignored
            forms.setdefault(loaded.modality, loaded.value)
        score = forms.get("score")
        lmx = forms.get("lmx")
        tokens = tuple(lmx.tokens) if lmx is not None else tuple(score_to_lmx(score.musicxml)) if score else None
        notes = tuple(forms["midi"].notes) if "midi" in forms else \
            tuple(score_to_notes(score.musicxml)) if score else None
        item = Item(name=stem, image=forms.get("image"), lmx=tokens, notes=notes, audio=forms.get("audio"))
        if sum(x is not None for x in (item.image, item.lmx, item.notes, item.audio)) >= 2:
            items.append(item)
    if not items:
        raise InputError(folder, "no pieces with at least two forms (files sharing a stem)")
    return items[:limit] if limit else items


def dataset_directions(items: Sequence[Item]) -> list[Direction]:
    """The recognition directions an imported set can score (OMR, transcription...): model
    directions from an image or audio to LMX or MIDI whose input and reference some item has."""
    return [d for d in DIRECTIONS
            if d.kind == "model" and d.source in ("image", "audio") and d.to in ("lmx", "midi")
            and any(_value(it, d.source) is not None and _reference(it, d) is not None for it in items)]


def _value(item: Item, modality: str):
    from unimusic import io_files

    if modality == "lmx":
        return io_files.Lmx(tokens=item.lmx) if item.lmx else None
    if modality == "midi":
        return io_files.Midi(notes=item.notes) if item.notes is not None else None
    return getattr(item, modality)


# -- metrics ----------------------------------------------------------------------------------


def flat_notes(notes: Sequence) -> list:
    """Notes with programs ignored and drums left out (how transcription is compared with peers)."""
    from unimusic.judge import _for_judging

    return _for_judging(list(notes), "notes")


def pooled_note_scores(pairs: Sequence[tuple[Sequence, Sequence]]) -> dict:
    """Onset F1 and onset+offset F1 (50 ms) pooled over ``(reference, estimate)`` pairs."""
    from unimusic.metrics import note_f1

    totals = {"onset": [0, 0, 0], "onset_offset": [0, 0, 0]}  # match, ref, est
    for ref, est in pairs:
        ref, est = flat_notes(ref), flat_notes(est)
        for key, offset in (("onset", False), ("onset_offset", True)):
            s = note_f1(ref, est, offset=offset)
            totals[key][0] += s["n_match"]
            totals[key][1] += s["n_ref"]
            totals[key][2] += s["n_est"]
    out = {}
    for key, (match, n_ref, n_est) in totals.items():
        out[f"{key}_f1"] = 2.0 * match / (n_ref + n_est) if n_ref + n_est else 1.0
    out["n_ref"], out["n_est"] = totals["onset"][1], totals["onset"][2]
    return out


# -- the table --------------------------------------------------------------------------------


def evaluate(translator, items: Sequence[Item], *, directions: Sequence[Direction] = DIRECTIONS,
             peers: Sequence[str] = PEER_NAMES, options=None,
             pictures_dir: str | None = None, pictures: int = 2, log=print, partial: str | None = None) -> dict:
    """Every direction (and peer) over ``items``: ``{"rows": [...], "items": n, ...}``.

    ``peers``: names, each optionally limited to the first N items (``"transkun:8"``: Transkun
    needs about 3 s per audio second on a CPU); for such a subset our audio->midi on the same
    items gets its own row. ``partial``: a folder where the report so far is written after
    every row (a long run that is stopped keeps its finished rows)."""
    from unimusic.inference import Options

    options = options or Options()
    rows = []
    report = {"items": len(items), "rows": rows, "checkpoint": getattr(translator, "path", ""),
              "step": (getattr(translator, "meta", {}) or {}).get("step")}
    transcriptions = {}  # our audio->midi per item name, for the row beside the peers
    for d in directions:
        pairs = [(it, _value(it, d.source)) for it in items]
        pairs = [(it, v) for it, v in pairs if v is not None and _reference(it, d) is not None]
        if not pairs:
            rows.append({"direction": d.name, "kind": d.kind, "items": 0, "note": "no items with both forms"})
            continue
        log(f"[eval] {d.name}: {len(pairs)} item(s)")
        t0 = time.perf_counter()
        opts = dataclasses.replace(options, engine=d.engine)
        results = translator.translate_many([v for _, v in pairs], d.to, via=d.via, options=opts,
                                            sources=[it.name for it, _ in pairs])
        seconds = time.perf_counter() - t0
        ok = [(it, r) for (it, _), r in zip(pairs, results) if r.error is None]
        row = {"direction": d.name, "kind": d.kind, "items": len(pairs), "failed": len(pairs) - len(ok),
               "seconds_per_item": round(seconds / len(pairs), 3),
               "invalid_tokens": sum(r.invalid_tokens for _, r in ok)}
        if d.source == "audio":
            audio_seconds = sum(it.audio.seconds for it, _ in pairs)
            row["seconds_per_audio_second"] = round(seconds / max(audio_seconds, 1e-9), 4)
        row.update(_score(translator, d, ok, options))
        rows.append(row)
        if d.name == "audio->midi":
            transcriptions = {it.name: r.value.notes for it, r in ok}
        if partial:
            write_report(report, partial)
        log(f"[eval] {d.name}: " + ", ".join(f"{k}={v}" for k, v in row.items() if k not in ("direction", "kind")))
        if pictures_dir and pictures:
            _pictures(d, ok[:pictures], pictures_dir)
    subsets_done = set()
    for peer, limit in parse_peers(peers):
        subset = list(items[:limit]) if limit else list(items)
        if len(subset) < len(items) and transcriptions and limit not in subsets_done:
            subsets_done.add(limit)
            same = [it for it in subset if it.name in transcriptions and it.notes is not None]
            s = pooled_note_scores([(it.notes, transcriptions[it.name]) for it in same])
            rows.append({"direction": f"audio->midi (ours, first {limit} items)", "kind": "model", "items": len(same),
                         **{k: round(v, 4) if isinstance(v, float) else v for k, v in s.items()}})
        row = _peer_row(peer, subset, log)
        if len(subset) < len(items):
            row["direction"] += f" (first {limit} items)"
        rows.append(row)
        if partial:
            write_report(report, partial)
    return report


def parse_peers(peers: Sequence[str]) -> list[tuple[str, int | None]]:
    """``["basic-pitch", "transkun:8"]`` -> ``[("basic-pitch", None), ("transkun", 8)]``."""
    out = []
    for spec in peers:
        name, _, limit = str(spec).partition(":")
        if name not in PEER_NAMES:
            raise InputError(f"peer {spec!r}", f"unknown (have {', '.join(PEER_NAMES)})")
        if limit and not (limit.isdigit() and int(limit) > 0):
            raise InputError(f"peer {spec!r}", "the item limit after ':' must be a positive integer")
        out.append((name, int(limit) if limit else None))
    return out


def _reference(item: Item, d: Direction):
    if d.metric in ("ser", "omr"):
        return item.lmx
    return item.notes


def _score(translator, d: Direction, ok, options) -> dict:
    from unimusic import judge
    from unimusic.metrics import symbol_error_rate

    if not ok:
        return {}
    if d.metric == "ser":
        s = symbol_error_rate([it.lmx for it, _ in ok], [list(r.value.tokens) for _, r in ok])
        return {"ser": round(s["ser"], 4), "edits": s["edits"], "ref_tokens": s["ref_tokens"]}
    if d.metric == "notes":
        s = pooled_note_scores([(it.notes, r.value.notes) for it, r in ok])
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in s.items()}
    if d.metric == "judge":
        pairs = []
        for it, r in ok:
            est = judge.transcribe(r.value.samples, r.value.sample_rate)
            pairs.append((it.notes, est))
        s = pooled_note_scores(pairs)
        return {"judge": "basic-pitch", "onset_f1": round(s["onset_f1"], 4), "n_ref": s["n_ref"], "n_est": s["n_est"]}
    # omr: our image->lmx on the generated image
    from unimusic.inference import Systems

    images, refs = [], []
    for it, r in ok:  # generated systems are read as systems; engraved pages go through detection
        images.append(Systems(crops=tuple(_pad16(c) for c in r.systems)) if r.systems else r.value)
        refs.append(it.lmx)
    omr = translator.translate_many(images, "lmx", options=dataclasses.replace(options, engine="model"),
                                    sources=[it.name for it, _ in ok])
    ests = [list(o.value.tokens) if o.error is None else [] for o in omr]
    s = symbol_error_rate(refs, ests)
    return {"omr_ser": round(s["ser"], 4), "edits": s["edits"], "ref_tokens": s["ref_tokens"],
            "omr_failed": sum(o.error is not None for o in omr)}


def _pad16(image: np.ndarray) -> np.ndarray:
    """A generated system image padded (white) to the 16-pixel grid the tokenizer reads."""
    h, w = image.shape
    out = np.full((-(-h // 16) * 16, -(-w // 16) * 16), 255, dtype=np.uint8)
    out[:h, :w] = image
    return out


def _peer_row(peer: str, items: Sequence[Item], log) -> dict:
    row = {"direction": f"audio->midi ({peer})", "kind": "peer"}
    try:
        from unimusic.peers import available_peers, transcribe_with
    except ImportError:
        return {**row, "items": 0, "note": "unimusic.peers is missing"}
    if peer not in available_peers():
        return {**row, "items": 0, "note": f"{peer} is not installed"}
    with_audio = [it for it in items if it.audio is not None and it.notes is not None]
    if not with_audio:
        return {**row, "items": 0, "note": "no items with audio and notes"}
    transcribe_with(peer, with_audio[0].audio.samples[: with_audio[0].audio.sample_rate], with_audio[0].audio.sample_rate)
    t0 = time.perf_counter()
    pairs = [(it.notes, transcribe_with(peer, it.audio.samples, it.audio.sample_rate)) for it in with_audio]
    seconds = time.perf_counter() - t0
    s = pooled_note_scores(pairs)
    row.update(items=len(with_audio), seconds_per_item=round(seconds / len(with_audio), 3),
               seconds_per_audio_second=round(seconds / sum(it.audio.seconds for it in with_audio), 4),
               **{k: round(v, 4) if isinstance(v, float) else v for k, v in s.items()})
    log(f"[eval] {row['direction']}: onset_f1={row['onset_f1']}, onset_offset_f1={row['onset_offset_f1']}")
    return row


def _pictures(d: Direction, ok, folder: str) -> None:
    from unimusic.inference import Systems

    os.makedirs(folder, exist_ok=True)
    slug = "".join(c if c.isalnum() else "_" for c in d.name)
    for k, (it, r) in enumerate(ok):
        try:
            if d.to == "midi":
                from unimusic.render.pictures import roll_comparison

                roll_comparison(list(it.notes), list(r.value.notes), os.path.join(folder, f"{slug}-{k}.png"),
                                title=f"{d.name}: {it.name}")
            elif d.to == "lmx" and d.source == "image" and isinstance(it.image, Systems):
                from unimusic.render.pictures import omr_side_by_side

                omr_side_by_side(it.image.crops[0], list(r.value.tokens), os.path.join(folder, f"{slug}-{k}.png"),
                                 title=f"{d.name}: {it.name}")
            elif d.to == "image":
                import cv2

                cv2.imwrite(os.path.join(folder, f"{slug}-{k}.png"), r.value.images[0])
        except InputError:
            continue  # a picture is a convenience: a prediction that cannot be drawn is skipped


# -- output -----------------------------------------------------------------------------------


_COLUMNS = (
    ("direction", "direction"), ("kind", "kind"), ("items", "items"),
    ("ser", "SER"), ("omr_ser", "OMR SER of output"), ("onset_f1", "onset F1"), ("onset_offset_f1", "onset+offset F1"),
    ("seconds_per_item", "s/item"), ("seconds_per_audio_second", "s per audio s"), ("invalid_tokens", "invalid ids"),
)


def report_markdown(report: dict) -> str:
    """The table in Markdown (blank cells where a metric does not apply)."""
    lines = ["| " + " | ".join(title for _, title in _COLUMNS) + " |",
             "|" + "|".join("---" for _ in _COLUMNS) + "|"]
    for row in report["rows"]:
        cells = []
        for key, _ in _COLUMNS:
            v = row.get(key, "")
            cells.append(f"{v:.4f}" if isinstance(v, float) and key not in ("seconds_per_item",) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {r['direction']}: {r['note']}" for r in report["rows"] if r.get("note")]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def write_report(report: dict, out: str) -> tuple[str, str]:
    """``out/eval.json`` and ``out/eval.md``."""
    os.makedirs(out, exist_ok=True)
    json_path, md_path = os.path.join(out, "eval.json"), os.path.join(out, "eval.md")
    with open(json_path, "w") as f:
        json.dump(report, f, indent=1, sort_keys=True, default=lambda x: None if isinstance(x, float) and math.isnan(x) else str(x))
    with open(md_path, "w") as f:
        f.write(report_markdown(report))
    return json_path, md_path
