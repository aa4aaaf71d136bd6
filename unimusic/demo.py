"""The main job on the embedded default, at this stage of the project: take bundled
music21-corpus pieces through every codec and print a summary table.

For each piece: MusicXML -> LMX -> MusicXML (judged by music21), LMX ids through
the unified vocabulary and back, and MIDI (written by music21) -> MT3-style
event windows -> MIDI (judged by mir_eval note F1 with 10 ms offsets).
Results go to ``<out>/summary.json`` and ``<out>/summary.md``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from multiprocessing import get_context
from pathlib import Path


@dataclasses.dataclass
class PieceReport:
    piece: str
    format: str
    parts: int = 0
    measures: int = 0
    lmx_tokens: int = 0
    lmx_notes_exact: bool = False
    lmx_all_facts_exact: bool = False
    lmx_differences: str = ""
    lmx_canonical: bool = False
    vocab_roundtrip: bool = False
    midi_notes: int = 0
    midi_windows: int = 0
    midi_tokens: int = 0
    midi_f1: float = 0.0
    error: str | None = None
    seconds: float = 0.0


def process_piece(piece) -> PieceReport:
    import music21

    from unimusic.errors import InputError
    from unimusic.metrics import note_f1
    from unimusic.music21_corpus import load_musicxml
    from unimusic.render.lmx import linearize
    from unimusic.roundtrip import lmx_roundtrip
    from unimusic.tokens.midi import notes_from_midi
    from unimusic.tokens.vocabulary import Vocabulary

    t0 = time.perf_counter()
    report = PieceReport(piece.piece_id, piece.kind)
    vocab = Vocabulary()
    try:
        xml = load_musicxml(piece)
        rt = lmx_roundtrip(piece.piece_id, xml)
        if rt.error:
            report.error = rt.error
        else:
            tokens = linearize(xml)
            report.lmx_tokens = len(tokens)
            report.measures = tokens.count("measure")
            report.parts = max([1, *(int(t.split(":")[1]) for t in tokens if t.startswith("part:"))])
            report.lmx_notes_exact = rt.exact_notes
            report.lmx_all_facts_exact = not rt.differences
            report.lmx_differences = ", ".join(sorted(rt.differences))
            report.lmx_canonical = rt.canonical
            ids = vocab.lmx.encode(tokens)
            back, invalid = vocab.from_model(vocab.to_model("lmx", ids), "lmx")
            report.vocab_roundtrip = back == ids and invalid == 0

        score = music21.converter.parse(xml, format="musicxml", forceSource=True)
        midi_bytes = music21.midi.translate.streamToMidiFile(score).writestr()
        notes = notes_from_midi(midi_bytes, name=piece.piece_id)
        codec = vocab.midi
        windows = codec.encode(notes)
        decoded, _ = codec.decode(windows)
        report.midi_notes = len(notes)
        report.midi_windows = len(windows)
        report.midi_tokens = sum(len(w) for _, w in windows)
        report.midi_f1 = note_f1(codec.normalize(notes), decoded, onset_tolerance=0.01, offset=True, offset_tolerance=0.01)["f1"]
    except InputError as exc:
        report.error = str(exc)
    except Exception as exc:  # one bad piece must not stop the table
        report.error = f"{type(exc).__name__}: {exc}"
    report.seconds = time.perf_counter() - t0
    return report


def run_demo(*, pieces: int = 24, seed: int = 0, out_dir: Path = Path("artifacts/demo"), processes: int = 2) -> int:
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from unimusic.music21_corpus import sample_pieces
    from unimusic.tokens.vocabulary import Vocabulary

    import sys

    # A log file or CI gets a table wide enough to read.
    console = Console(width=None if sys.stdout.isatty() else 150)
    vocab = Vocabulary()
    console.print(f"[bold]unimusic[/bold] codecs over {pieces} music21-corpus pieces (seed {seed}); {vocab!r}")
    chosen = sample_pieces(pieces, seed=seed)
    t0 = time.perf_counter()
    reports: list[PieceReport] = []
    with Progress(console=console, transient=True) as progress, get_context("fork").Pool(max(1, processes)) as pool:
        task = progress.add_task("pieces", total=len(chosen))
        for report in pool.imap_unordered(process_piece, chosen):
            reports.append(report)
            progress.advance(task)
    reports.sort(key=lambda r: r.piece)
    elapsed = time.perf_counter() - t0

    table = Table(title="Codec round trips (LMX judged by music21; MIDI by mir_eval, 10 ms onsets and offsets)")
    for column in ("piece", "fmt", "parts", "meas.", "LMX tok", "LMX notes", "all facts", "MIDI notes", "windows", "MIDI tok", "MIDI F1"):
        table.add_column(column, justify="left" if column in ("piece", "fmt") else "right")
    for r in reports:
        if r.error and not r.lmx_tokens and not r.midi_notes:
            table.add_row(r.piece, r.format, *[""] * 8, f"[red]{r.error[:60]}[/red]")
            continue
        table.add_row(
            r.piece, r.format, str(r.parts), str(r.measures), str(r.lmx_tokens),
            "[green]exact[/green]" if r.lmx_notes_exact else f"[red]{(r.error or 'differs')[:40]}[/red]",
            "yes" if r.lmx_all_facts_exact else f"[yellow]{r.lmx_differences}[/yellow]",
            str(r.midi_notes), str(r.midi_windows), str(r.midi_tokens), f"{r.midi_f1:.3f}",
        )
    console.print(table)
    n = len(reports)
    totals = {
        "pieces": n,
        "lmx_notes_exact": sum(r.lmx_notes_exact for r in reports),
        "lmx_all_facts_exact": sum(r.lmx_all_facts_exact and r.lmx_notes_exact for r in reports),
        "lmx_canonical": sum(r.lmx_canonical for r in reports),
        "vocab_roundtrip": sum(r.vocab_roundtrip for r in reports),
        "midi_f1_1.0": sum(r.midi_f1 == 1.0 for r in reports),
        "errors": sum(r.error is not None for r in reports),
        "lmx_tokens": sum(r.lmx_tokens for r in reports),
        "midi_tokens": sum(r.midi_tokens for r in reports),
        "seconds": round(elapsed, 1),
        "vocabulary_hash": vocab.hash,
    }
    console.print(
        f"LMX notes exact {totals['lmx_notes_exact']}/{n}, all facts {totals['lmx_all_facts_exact']}/{n}, "
        f"canonical {totals['lmx_canonical']}/{n}; MIDI F1=1.0 {totals['midi_f1_1.0']}/{n}; "
        f"errors {totals['errors']}; {elapsed:.1f} s"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps({"totals": totals, "pieces": [dataclasses.asdict(r) for r in reports]}, indent=1))
    lines = ["| piece | format | LMX tokens | LMX notes exact | MIDI notes | MIDI F1 |", "|---|---|---|---|---|---|"]
    lines += [f"| {r.piece} | {r.format} | {r.lmx_tokens} | {r.lmx_notes_exact} | {r.midi_notes} | {r.midi_f1:.3f} |" for r in reports]
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n")
    vocab.save(out_dir / "vocabulary.json")
    pictures = write_pictures(chosen[0], out_dir) if chosen else []
    console.print(f"artifacts: {out_dir}/summary.json, {out_dir}/summary.md, {out_dir}/vocabulary.json, " + ", ".join(map(str, pictures)))
    return 0


def write_pictures(piece, out_dir: Path) -> list[Path]:
    """For eyeballing: the first piece engraved back from its LMX, and a piano roll
    of its MIDI against the event codec's decode."""
    import music21

    from unimusic.music21_corpus import load_musicxml
    from unimusic.render.engrave import engrave_svg_pages, svg_to_png
    from unimusic.render.lmx import delinearize, linearize
    from unimusic.render.pianoroll import piano_roll_png
    from unimusic.tokens.midi import MidiEventCodec, notes_from_midi

    xml = load_musicxml(piece)
    restored, _ = delinearize(linearize(xml))
    engraved = out_dir / "lmx_roundtrip_page1.png"
    engraved.write_bytes(svg_to_png(engrave_svg_pages(restored)[0]))
    score = music21.converter.parse(xml, format="musicxml", forceSource=True)
    notes = notes_from_midi(music21.midi.translate.streamToMidiFile(score).writestr(), name=piece.piece_id)
    codec = MidiEventCodec()
    decoded, _ = codec.decode(codec.encode(notes))
    roll = piano_roll_png([("source MIDI", notes), ("event codec decode", decoded)], out_dir / "midi_roundtrip_pianoroll.png", title=piece.piece_id)
    return [engraved, roll]
