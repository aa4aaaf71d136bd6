"""The ``unimusic`` command line.

Every user-facing failure prints one line ``unimusic: error: <input>: <problem>``
to stderr and exits non-zero; tracebacks are shown only with UNIMUSIC_DEBUG=1.
Heavy libraries are imported inside the commands, so ``unimusic --help`` is fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import traceback
from pathlib import Path

from unimusic import __version__
from unimusic.errors import InputError, UnimusicError

EXIT_INPUT = 2
EXIT_INTERNAL = 1
EVENTS_HEADER = "# unimusic midi-events"


def _err(message: str) -> None:
    print(f"unimusic: error: {message}", file=sys.stderr)


def _warn(message: str) -> None:
    print(f"unimusic: warning: {message}", file=sys.stderr)


# -- file kinds ---------------------------------------------------------------------


def _input_kind(path: Path) -> tuple[str, bytes]:
    """('score' | 'midi' | 'lmx' | 'events', bytes) of an input file, checked against its content."""
    from unimusic import scores

    data = scores.read_bytes(path)
    ext = path.suffix.lower()
    sniffed = scores.sniff_kind(data)
    if ext in scores.MIDI_EXTENSIONS:
        if sniffed != "midi":
            what = f"looks like {sniffed}" if sniffed else "is not MIDI (no MThd header)"
            raise InputError(str(path), f"extension says MIDI but the content {what}")
        return "midi", data
    if ext in scores.LMX_EXTENSIONS:
        if sniffed not in ("lmx", None) or b"\x00" in data[:4096]:
            raise InputError(str(path), f"extension says LMX but the content looks like {sniffed or 'binary data'}")
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(str(path), "LMX file is not UTF-8 text") from None
        return "lmx", data
    if ext in scores.EVENTS_EXTENSIONS:
        return "events", data
    scores.score_kind(path, data)  # raises a precise error for wrong/unknown content
    return "score", data


def _lmx_tokens(path: Path, data: bytes) -> list[str]:
    from unimusic.tokens.lmx import LmxCodec, tokens_from_text

    tokens = tokens_from_text(data.decode("utf-8"))
    if not tokens:
        raise InputError(str(path), "LMX file holds no tokens")
    LmxCodec().encode(tokens, source=str(path))  # strict: names the first unknown token
    return tokens


def _midi_codec(args):
    from unimusic.tokens.midi import MidiCodecConfig, MidiEventCodec

    return MidiEventCodec(config=MidiCodecConfig(window_seconds=args.window, velocity_bins=args.velocity_bins))


def _write_events(codec, windows, out: Path) -> None:
    config = codec.config
    lines = [
        f"{EVENTS_HEADER} v{codec.version} codec={codec.hash} window={config.window_seconds} "
        f"velocity_bins={config.velocity_bins} steps_per_second={config.steps_per_second}"
    ]
    for start, ids in windows:
        lines.append(f"{start:.3f}: " + " ".join(codec.token_to_string(i) for i in ids))
    out.write_text("\n".join(lines) + "\n")


def _read_events(args, path: Path, data: bytes):
    """(codec, windows) of an event file; the header's codec settings win over the CLI's."""
    from unimusic.tokens.midi import MidiCodecConfig, MidiEventCodec

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(str(path), "event file is not UTF-8 text") from None
    codec = _midi_codec(args)
    windows = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line.startswith(EVENTS_HEADER):
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            try:
                config = MidiCodecConfig(
                    window_seconds=float(fields.get("window", args.window)),
                    velocity_bins=int(fields.get("velocity_bins", args.velocity_bins)),
                    steps_per_second=int(fields.get("steps_per_second", 100)),
                )
            except (ValueError, InputError) as exc:
                raise InputError(f"{path}:{number}", f"bad event-file header: {exc}") from None
            codec = MidiEventCodec(config=config)
            if fields.get("codec", codec.hash) != codec.hash:
                raise InputError(
                    f"{path}:{number}", f"written by MIDI codec {fields['codec']}, this version is {codec.hash}"
                )
            continue
        if not line or line.startswith("#"):
            continue
        head, sep, body = line.partition(":")
        try:
            start = float(head)
        except ValueError:
            raise InputError(f"{path}:{number}", f"expected '<window start seconds>: <tokens>', got {line[:40]!r}") from None
        if not sep:
            raise InputError(f"{path}:{number}", "missing ':' after the window start")
        try:
            ids = [codec.string_to_token(t) for t in body.split()]
        except InputError as exc:
            raise InputError(f"{path}:{number}", exc.problem + f" ({exc.source})") from None
        windows.append((start, ids))
    if not windows:
        raise InputError(str(path), "event file holds no windows")
    return codec, windows


# -- commands -----------------------------------------------------------------------


def cmd_convert(args) -> int:
    from unimusic.render.lmx import delinearize, linearize
    from unimusic.scores import musicxml_bytes
    from unimusic.tokens.lmx import lmx_text

    src, dst = Path(args.input), Path(args.output)
    kind, data = _input_kind(src)
    out_ext = dst.suffix.lower()
    if dst.exists() and dst.is_dir():
        raise InputError(str(dst), "output is a directory")

    if kind == "score" and out_ext == ".lmx":
        tokens = linearize(musicxml_bytes(src, data), source=str(src))
        dst.write_text(lmx_text(tokens))
        print(f"{src} -> {dst}: {len(tokens)} LMX tokens, {tokens.count('measure')} measures")
    elif kind == "score" and out_ext in (".musicxml", ".xml"):
        dst.write_bytes(musicxml_bytes(src, data))
        print(f"{src} -> {dst}: MusicXML")
    elif kind == "lmx" and out_ext in (".musicxml", ".xml"):
        xml, stats = delinearize(_lmx_tokens(src, data))
        if stats.invalid_tokens:
            message = f"{src}: {stats.invalid_tokens} of {stats.tokens} tokens did not fit the LMX grammar: {dict(stats.reasons)}"
            if args.strict:
                raise InputError(str(src), message.split(": ", 1)[1])
            _warn(message + " (dropped)")
        dst.write_text(xml)
        print(f"{src} -> {dst}: MusicXML ({stats.tokens} tokens)")
    elif kind == "midi" and out_ext in (".events", ".midi-events"):
        from unimusic.tokens.midi import notes_from_midi

        codec = _midi_codec(args)
        notes = notes_from_midi(data, name=str(src))
        windows = codec.encode(notes)
        _write_events(codec, windows, dst)
        print(f"{src} -> {dst}: {len(notes)} notes, {len(windows)} windows, {sum(len(w) for _, w in windows)} tokens")
    elif kind in ("events", "midi") and out_ext in (".mid", ".midi"):
        from unimusic.tokens.midi import notes_from_midi, notes_to_midi

        if kind == "midi":  # MIDI -> event tokens -> MIDI: the codec's normalization, as a file
            codec = _midi_codec(args)
            windows = codec.encode(notes_from_midi(data, name=str(src)))
        else:
            codec, windows = _read_events(args, src, data)
        notes, stats = codec.decode(windows)
        if stats.invalid_tokens:
            _warn(f"{src}: {stats.invalid_tokens} invalid event tokens dropped: {dict(stats.reasons)}")
        notes_to_midi(notes).write(str(dst))
        print(f"{src} -> {dst}: {len(notes)} notes from {len(windows)} windows")
    elif kind in ("score", "lmx") and out_ext in (".svg", ".png"):
        from unimusic.render.engrave import engrave_svg_pages, svg_to_png

        if kind == "lmx":
            xml, stats = delinearize(_lmx_tokens(src, data))
            if stats.invalid_tokens:
                _warn(f"{src}: {stats.invalid_tokens} tokens did not fit the LMX grammar: {dict(stats.reasons)} (dropped)")
        else:
            xml = musicxml_bytes(src, data)
        pages = engrave_svg_pages(xml, source=str(src))
        if not 1 <= args.page <= len(pages):
            raise InputError(str(src), f"--page {args.page} but the score engraves to {len(pages)} page(s)")
        svg = pages[args.page - 1]
        if out_ext == ".svg":
            dst.write_text(svg)
        else:
            dst.write_bytes(svg_to_png(svg))
        print(f"{src} -> {dst}: page {args.page} of {len(pages)} (Verovio)")
    elif kind in ("midi", "events") and out_ext == ".png":
        from unimusic.render.pianoroll import piano_roll_png
        from unimusic.tokens.midi import notes_from_midi

        if kind == "midi":
            notes = notes_from_midi(data, name=str(src))
        else:
            codec, windows = _read_events(args, src, data)
            notes, _ = codec.decode(windows)
        piano_roll_png([(src.name, notes)], dst, title=str(src.name))
        print(f"{src} -> {dst}: piano roll of {len(notes)} notes")
    else:
        raise InputError(
            f"{src} -> {dst}",
            f"no deterministic conversion from {kind} to {out_ext or 'a file without extension'} "
            "(available: score->.lmx/.musicxml/.svg/.png, .lmx->.musicxml/.svg/.png, "
            ".mid->.events/.mid/.png, .events->.mid/.png)",
        )
    return 0


def _score_info(path: Path, data: bytes) -> dict:
    import music21

    from unimusic.scores import musicxml_bytes

    xml = musicxml_bytes(path, data)
    try:
        score = music21.converter.parse(xml, format="musicxml", forceSource=True)
    except Exception as exc:
        raise InputError(str(path), f"music21 cannot read the score: {type(exc).__name__}: {exc}") from None
    parts = list(score.parts)
    notes = sum(len(n.pitches) for n in score.recurse().notes if not isinstance(n, music21.harmony.Harmony))
    quarters = float(score.highestTime)
    marks = score.recurse().getElementsByClass(music21.tempo.MetronomeMark)
    bpm = float(marks[0].getQuarterBPM()) if marks and marks[0].getQuarterBPM() else 120.0
    return {
        "parts": len(parts),
        "part_names": [p.partName or f"Part {i + 1}" for i, p in enumerate(parts)],
        "measures": max((len(p.getElementsByClass(music21.stream.Measure)) for p in parts), default=0),
        "notes": notes,
        "duration_quarters": round(quarters, 3),
        "duration_seconds": round(quarters * 60.0 / bpm, 3),
        "tempo_bpm": bpm,
    }


def cmd_info(args) -> int:
    path = Path(args.file)
    kind, data = _input_kind(path)
    info: dict = {"file": str(path), "kind": kind}
    if kind == "score":
        from unimusic.scores import score_kind

        info["format"] = score_kind(path, data)
        info.update(_score_info(path, data))
    elif kind == "midi":
        from unimusic.tokens.midi import notes_from_midi

        notes = notes_from_midi(data, name=str(path))
        programs = sorted({("drums" if n.is_drum else n.program) for n in notes}, key=str)
        info.update(
            {
                "parts": len(programs),
                "programs": programs,
                "notes": len(notes),
                "duration_seconds": round(max((n.end for n in notes), default=0.0), 3),
            }
        )
    elif kind == "lmx":
        from unimusic.render.lmx import delinearize

        tokens = _lmx_tokens(path, data)
        _, stats = delinearize(tokens)
        pitches = {t for t in tokens if len(t) == 2 and t[0] in "ABCDEFG" and t[1].isdigit()}
        info.update(
            {
                "tokens": len(tokens),
                "measures": tokens.count("measure"),
                "parts": max([1, *(int(t.split(":")[1]) for t in tokens if t.startswith("part:"))]),
                "notes": sum(t in pitches for t in tokens),
                "invalid_tokens": stats.invalid_tokens,
            }
        )
    else:
        codec, windows = _read_events(args, path, data)
        notes, stats = codec.decode(windows)
        info.update(
            {
                "windows": len(windows),
                "tokens": sum(len(w) for _, w in windows),
                "notes": len(notes),
                "duration_seconds": round(max((n.end for n in notes), default=0.0), 3),
                "invalid_tokens": stats.invalid_tokens,
            }
        )
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        width = max(len(k) for k in info)
        for key, value in info.items():
            print(f"{key.ljust(width)}  {value}")
    return 0


def cmd_demo(args) -> int:
    from unimusic.demo import run_demo

    return run_demo(pieces=args.pieces, seed=args.seed, out_dir=Path(args.out), processes=args.processes)


def cmd_corpus_build(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from pipelines.build_corpus import build_corpus
    from unimusic import config as config_mod
    from unimusic.corpus import SPLITS, CorpusConfig

    config = config_mod.load(CorpusConfig, args.config, args.overrides)
    collections = tuple(c for c in (args.collections or "").split(",") if c)
    manifest = build_corpus(
        inputs=args.input, out_dir=args.out, config=config, limit=args.limit, collections=collections,
        concurrency=args.concurrency, num_cpus=args.num_cpus,
    )
    console = Console(width=None if sys.stdout.isatty() else 120)
    table = Table(title=f"corpus {args.out}")
    for column in ("pieces", "rows", *SPLITS, "shards written", "shards skipped", "MB", "errors", "seconds"):
        table.add_column(column, justify="right")
    table.add_row(
        str(manifest["pieces"]), str(manifest["rows"]), *(str(manifest["rows_per_split"][s]) for s in SPLITS),
        str(manifest["shards_written"]), str(manifest["shards_skipped"]), f"{manifest['bytes'] / 1e6:.1f}",
        str(manifest["failures"]), str(manifest["seconds"]),
    )
    console.print(table)
    if manifest["failures"]:
        print(f"{manifest['failures']} input(s) failed and were skipped (listed in {args.out}/manifest.json):")
        for error in manifest["errors"][:10]:
            print(f"  {error['path']}: {error['stage']}: {error['message']}")
    if args.contact_sheet:
        from unimusic.contact_sheet import write_contact_sheet

        print(f"contact sheet: {write_contact_sheet(args.out, args.contact_sheet, seed=config.seed)}")
    return 0


def cmd_corpus_tokenize(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from pipelines.tokenize import tokenize_corpus
    from unimusic.models.shipped import shipped_path
    from unimusic.tokenize import read_corpus_manifest

    read_corpus_manifest(args.input)  # a bad SRC is reported before any missing default weights
    def weights(flag: str | None, off: bool, modality: str):
        if off:
            if flag:
                raise InputError(f"--{modality}-weights", f"given together with --no-{modality}")
            return None
        return flag or shipped_path(modality)

    image = weights(args.image_weights, args.no_image, "image")
    audio = weights(args.audio_weights, args.no_audio, "audio")
    if image is None and audio is None:
        raise InputError("--no-image --no-audio", "nothing to do: at least one tokenizer is needed")
    manifest = tokenize_corpus(
        corpus_dir=args.input, out_dir=args.out, image_weights=image, audio_weights=audio,
        concurrency=args.concurrency, num_cpus=args.num_cpus,
    )
    console = Console(width=None if sys.stdout.isatty() else 120)
    table = Table(title=f"tokenized corpus {args.out}")
    for column in ("rows", "input rows", "audio s", "shards written", "shards skipped", "MB", "errors", "seconds"):
        table.add_column(column, justify="right")
    table.add_row(
        str(manifest["rows"]), str(manifest["input_rows"]), f"{manifest['audio_seconds']:.0f}",
        str(manifest["shards_written"]), str(manifest["shards_skipped"]), f"{manifest['bytes'] / 1e6:.1f}",
        str(manifest["failures"]), str(manifest["seconds"]),
    )
    console.print(table)
    tokenizers = manifest["tokenizers"]
    print("tokenizers: " + ", ".join(
        f"{m} {tokenizers[m]['hash']} ({tokenizers[m]['weights']})" if tokenizers[m] else f"{m} none"
        for m in ("image", "audio")
    ))
    if manifest["failures"]:
        print(f"{manifest['failures']} row(s)/shard(s) failed and were left out (listed in {args.out}/manifest.json):")
        for error in manifest["errors"][:10]:
            print(f"  {error['path']}: {error['stage']}: {error['message']}")
    if manifest["other_shard_files"]:
        _warn(f"{args.out}/shards also holds {manifest['other_shard_files']} shard file(s) of other tokenizers; "
              "the manifest lists only this run's")
    print(f"tokenized shards in {args.out} (shard set {manifest['tokset']}, manifest {args.out.rstrip('/')}/manifest.json)")
    return 0


def cmd_videos_ingest(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from pipelines.ingest_videos import ingest_videos
    from unimusic import config as config_mod
    from unimusic.video.ingest import VideoConfig

    config = config_mod.load(VideoConfig, args.config, args.overrides)
    manifest = ingest_videos(
        inputs=args.input, out_dir=args.out, config=config, metadata_csv=args.metadata, limit=args.limit,
        concurrency=args.concurrency, num_cpus=args.num_cpus,
    )
    console = Console(width=None if sys.stdout.isatty() else 120)
    table = Table(title=f"videos {args.out}")
    for column in ("videos", "failed", "video s", "slides", "kept", "systems", "kept ", "skipped", "seconds"):
        table.add_column(column, justify="right")
    table.add_row(
        str(manifest["videos"]), str(manifest["videos_failed"]), f"{manifest['video_seconds']:.0f}",
        str(manifest["slides"]), str(manifest["slides_kept"]), str(manifest["systems"]), str(manifest["systems_kept"]),
        str(manifest["shards_skipped"]), str(manifest["seconds"]),
    )
    console.print(table)
    drops = manifest["dropped"]
    print("dropped by filter: " + ", ".join(
        f"{kind}.{name}={n}" for kind in ("videos", "slides", "systems") for name, n in drops[kind].items() if n
    ) or "dropped by filter: none")
    if manifest["failures"]:
        print(f"{manifest['failures']} video(s) failed and were skipped (listed in {args.out}/manifest.json):")
        for error in manifest["errors"][:10]:
            print(f"  {error['path']}: {error['stage']}: {error['message']}")
    return 0


def cmd_train_tokenizer(args) -> int:
    from unimusic import config as config_mod

    if args.modality == "image":
        from pipelines.train_rqvae import JOB_PRESETS, train_rqvae as train
    else:
        from pipelines.train_codec import JOB_PRESETS, train_codec as train
    from pipelines.train_common import RunConfig

    if args.preset not in JOB_PRESETS:
        raise InputError(f"--preset {args.preset}", f"unknown; expected one of {', '.join(JOB_PRESETS)}")
    job = JOB_PRESETS[args.preset]
    job = config_mod.load(type(job), args.config, args.overrides, base=job)
    name = args.name or f"{args.modality}-{args.preset}"
    run = RunConfig(name=name, storage_path=args.storage, workers=args.workers, cpus_per_worker=args.cpus_per_worker,
                    use_gpu=args.gpu)
    export = args.export or os.path.join("exports", name)
    os.makedirs(os.path.dirname(os.path.abspath(export)), exist_ok=True)
    print(f"training {args.modality} tokenizer: run {name!r} in {args.storage} ({job.steps} steps; rerun to resume)")
    if args.modality == "image":
        summary = train(corpus_dir=args.corpus, run=run, job=job, export=export, picture=export + ".png", num_cpus=args.num_cpus)
    else:
        summary = train(corpus_dir=args.corpus, run=run, job=job, export=export, report_dir=export + "-report",
                        num_cpus=args.num_cpus)
    exported = summary["export"]
    print(f"trained {summary['final'].get('step')} steps in {summary['seconds']} s; checkpoint {summary['checkpoint']}")
    print(f"weights: {exported['weights']} (+ {exported['meta']})")
    shown = {k: v for k, v in exported.items() if isinstance(v, (int, float, list)) and k not in ("weights", "meta")}
    print("held-out: " + json.dumps(shown))
    if exported.get("picture"):
        print(f"picture: {exported['picture']}")
    if exported.get("report_dir"):
        print(f"report: {exported['report_dir']} (spectrogram.png, original.wav, reconstruction.wav)")
    return 0


def cmd_train(args) -> int:
    from unimusic import config as config_mod
    from pipelines.train import JOB_PRESETS, train
    from pipelines.train_common import RunConfig

    if args.preset not in JOB_PRESETS:
        raise InputError(f"--preset {args.preset}", f"unknown; expected one of {', '.join(JOB_PRESETS)}")
    job = config_mod.load(type(JOB_PRESETS[args.preset]), args.config, args.overrides, base=JOB_PRESETS[args.preset])
    name = args.name or f"translator-{args.preset}"
    run = RunConfig(name=name, storage_path=args.storage, workers=args.workers, min_workers=args.min_workers,
                    cpus_per_worker=args.cpus_per_worker, use_gpu=args.gpu)
    export = args.export or os.path.join("exports", name)
    os.makedirs(os.path.dirname(os.path.abspath(export)), exist_ok=True)
    print(f"training the translator: run {name!r} in {args.storage}, {job.steps} steps, {job.engine}"
          f"{f' ZeRO-{job.zero_stage}' if job.engine == 'deepspeed' else ''}, {args.workers} worker(s); rerun to resume")
    summary = train(tokens_dir=args.tokens, run=run, job=job, export=export, num_cpus=args.num_cpus,
                    stop_at=args.stop_at, log_dir=args.log_dir)
    final = summary["final"] or {}
    print(f"trained to step {final.get('step')} in {summary['seconds']} s; checkpoint {summary['checkpoint']}")
    print(f"logs: {summary['log_dir']} (metrics.jsonl, tensorboard/)")
    if summary.get("export"):
        print(f"model: {summary['export']['weights']} (+ {summary['export']['meta']})")
    return 0


def cmd_export(args) -> int:
    from pipelines.train import export_checkpoint

    written = export_checkpoint(args.checkpoint, args.out)
    print(f"exported step {written['step']} of {written['checkpoint']}")
    print(f"model: {written['weights']} (+ {written['meta']})")
    return 0


def cmd_translate(args) -> int:
    import warnings

    from unimusic import io_files
    from unimusic.inference import Options, Translator, needs_model

    if args.to is None:
        if not args.output:
            raise InputError("--to", "say what to translate into (--to musicxml|lmx|midi|audio|image) or give -o FILE")
        args.to = io_files.output_kind(args.output)
    via = tuple(v for v in (args.via or "").split(",") if v)
    options = Options(engine=args.engine, strategy=args.strategy, beam_size=args.beam_size, seed=args.seed,
                      batch_size=args.batch_size, progress=not args.quiet)
    many = len(args.inputs) > 1
    outputs = []
    for path in args.inputs:
        if args.output and not many:
            out = Path(args.output)
        else:
            folder = Path(args.output) if args.output else Path(path).parent
            out = folder / (Path(path).stem + io_files.TARGET_EXT[args.to])
        allowed = ("musicxml", "lmx") if args.to in ("musicxml", "lmx") else (args.to,)
        if io_files.output_kind(out) not in allowed:
            raise InputError(str(out), f"the extension does not fit --to {args.to} (use {io_files.TARGET_EXT[args.to]})")
        if out.exists() and out.resolve() == Path(path).resolve():
            raise InputError(str(out), "the output would overwrite the input; give -o")
        outputs.append(out)
    failures = 0
    loaded, kept = [], []
    for path, out in zip(args.inputs, outputs):
        try:
            item = io_files.read_input(path)
        except InputError as exc:
            if not many:
                raise
            _err(str(exc))
            failures += 1
            continue
        for note in item.warnings:
            _warn(f"{item.source}: {note}")
        loaded.append(item)
        kept.append(out)
    outputs = kept
    translator = Translator()  # converters only, unless a hop needs the model
    if any(needs_model(item.modality, args.to, via=via, engine=options.engine) for item in loaded):
        translator = Translator.load(args.checkpoint)
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(loaded):
        groups.setdefault(item.modality, []).append(i)
    for modality, indices in groups.items():
        values = [loaded[i].value for i in indices]
        sources = [loaded[i].source for i in indices]
        results = translator.translate_many(values, args.to, via=via, options=options, sources=sources)
        for i, result in zip(indices, results):
            for note in result.warnings:
                _warn(note)
            if result.error:
                _err(result.error)
                failures += 1
                continue
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                written = io_files.write_output(result.value, outputs[i])
            for w in caught:
                _warn(str(w.message))
            extra = f", {result.invalid_tokens} invalid model tokens dropped" if result.invalid_tokens else ""
            print(f"{loaded[i].source} -> {', '.join(written)} [{' | '.join(result.hops) or 'copy'}] "
                  f"{result.chunks} chunk(s), {result.seconds:.1f} s{extra}")
            if args.picture:
                picture = _translation_picture(loaded[i], result, outputs[i].with_suffix(outputs[i].suffix + ".png"))
                if picture:
                    print(f"picture: {picture}")
    return EXIT_INPUT if failures else 0


def cmd_pipeline(args) -> int:
    from pipelines.workflow import load_config, run_pipeline, serve_forever

    config = load_config(args.config, args.overrides, size=args.size)
    if args.serve:
        config = dataclasses.replace(config, serve=dataclasses.replace(config.serve, enabled=True))
    where = os.environ.get("RAY_ADDRESS") or "a local Ray cluster"
    print(f"unimusic pipeline ({args.size}) on {where}: corpus {config.corpus.source} (limit {config.corpus.limit}) -> "
          f"tokenize -> train {config.train.preset} ({config.train.steps or 'preset'} steps, {config.train.workers} "
          f"worker(s){', GPU' if config.train.gpu else ''}) -> eval -> {config.out}")
    summary = run_pipeline(config)
    stages, paths = summary["stages"], summary["paths"]
    if "eval" in stages:
        print(stages["eval"]["table"])
    print(f"finished in {summary['seconds']} s; artifacts:")
    for label, key in (("corpus (Parquet shards, manifest.json)", "corpus"), ("tokenized corpus", "tokens"),
                       ("training runs (checkpoints)", "runs"), ("training logs (metrics.jsonl, tensorboard/)", "logs"),
                       ("exported model", "export"), ("eval table (eval.md, eval.json, pictures/)", "eval")):
        print(f"  {label}: {paths[key]}")
    print(f"  run summary: {config.out.rstrip('/')}/pipeline.json")
    print(f"translate with it: unimusic translate FILE --to midi --checkpoint {paths['export']}")
    if config.serve.enabled:
        serve_forever(config, paths)
    else:
        print(f"serve it: unimusic serve --checkpoint {paths['export']}  (or rerun with --serve)")
    return 0


def cmd_datasets_list(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from unimusic import datasets

    console = Console(width=None if sys.stdout.isatty() else 160)
    table = Table(title="data set adapters (nothing is downloaded: point SRC at your copy)")
    for column in ("name", "forms", "licence", "commercial use", "splits", "SRC"):
        table.add_column(column)
    for adapter in datasets.all_adapters():
        info = adapter.info
        table.add_row(info.name, ",".join(info.modalities) or "metadata", info.licence,
                      "yes" if info.commercial_use else "no", info.splits, info.layout)
    console.print(table)
    return 0


def cmd_datasets_import(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from pipelines.import_dataset import import_dataset
    from unimusic import config as config_mod
    from unimusic import datasets
    from unimusic.corpus import SPLITS
    from unimusic.datasets.base import ImportConfig

    adapter = datasets.get(args.name)  # an unknown name fails before Ray starts
    config = config_mod.load(ImportConfig, args.config, args.overrides)
    info = adapter.info
    print(f"{info.title}: licence {info.licence}" + ("" if info.commercial_use else " -- NOT for commercial use")
          + f"; cite: {info.citation}" * bool(info.citation))
    manifest = import_dataset(name=info.name, source=args.src, out_dir=args.out, config=config, limit=args.limit,
                              concurrency=args.concurrency, num_cpus=args.num_cpus, progress=not args.quiet)
    console = Console(width=None if sys.stdout.isatty() else 140)
    table = Table(title=f"{info.name} -> {args.out}")
    for column in ("examples", "rows", *SPLITS, "image", "lmx", "midi", "audio", "shards written", "shards skipped",
                   "MB", "errors", "seconds"):
        table.add_column(column, justify="right")
    table.add_row(str(manifest["examples"]), str(manifest["rows"]),
                  *(str(manifest["rows_per_split"][s]) for s in SPLITS),
                  *(str(manifest["rows_with"][m]) for m in ("image", "lmx", "midi", "audio")),
                  str(manifest["shards_written"]), str(manifest["shards_skipped"]), f"{manifest['bytes'] / 1e6:.1f}",
                  str(manifest["failures"]), str(manifest["seconds"]))
    console.print(table)
    for path in manifest.get("extras", []):
        print(f"wrote {path}")
    if manifest["failures"]:
        print(f"{manifest['failures']} problem(s) recorded, the rest imported (all in {args.out}/errors.parquet):")
        for error in manifest["errors"][:10]:
            print(f"  {error['path']}: {error['stage']}: {error['message']}")
    print(f"licence recorded in {args.out}/manifest.json: {info.licence}")
    return 0


def cmd_translate_batch(args) -> int:
    from pipelines.batch_translate import translate_batch
    from unimusic.inference import Options

    via = tuple(v for v in (args.via or "").split(",") if v)
    options = Options(engine=args.engine)
    summary = translate_batch(args.src, to=args.to, out=args.out, checkpoint=args.checkpoint, via=via,
                              options=options, actors=args.actors, batch_size=args.batch_size,
                              overwrite=args.overwrite, progress=not args.quiet)
    print(f"translate-batch: {summary['done']} done, {summary['failed']} failed, {summary['skipped']} skipped "
          f"of {summary['inputs']} input(s) in {summary['seconds']:.1f} s; manifest: {summary['manifest']}")
    return 0


def _translation_picture(item, result, path):
    """A piano roll of a MIDI result; the OMR result engraved under the input's first system."""
    from unimusic import io_files

    value = result.value
    if isinstance(value, io_files.Midi):
        from unimusic.render.pianoroll import piano_roll_png

        layers = [("prediction", list(value.notes))]
        if isinstance(item.value, io_files.Midi):
            layers.insert(0, ("input", list(item.value.notes)))
        return piano_roll_png(layers, path, title=f"{item.source} -> MIDI")
    if isinstance(value, (io_files.Lmx, io_files.Score)) and item.modality == "image":
        from unimusic.inference import page_systems
        from unimusic.render.lmx import linearize
        from unimusic.render.pictures import omr_side_by_side

        crops, _ = page_systems(item.value.images, source=item.source)
        if not crops:
            return None
        tokens = list(value.tokens) if isinstance(value, io_files.Lmx) else linearize(value.musicxml)
        return omr_side_by_side(crops[0], tokens, path, title=item.source)
    return None


def cmd_eval(args) -> int:
    from unimusic import evaluation
    from unimusic.inference import Options, Translator

    if sum(bool(x) for x in (args.tokens, args.pairs, args.dataset)) != 1:
        raise InputError("eval", "give exactly one of --tokens CORPUS (a corpus split), --dataset IMPORTED "
                                 "(an imported data set's split) or --pairs FOLDER (paired files)")
    if args.tokens:
        items = evaluation.items_from_tokens(args.tokens, split=args.split, limit=args.limit)
    elif args.dataset:
        items = evaluation.items_from_dataset(args.dataset, split=args.split, limit=args.limit)
    else:
        items = evaluation.items_from_folder(args.pairs, limit=args.limit)
    wanted = [d for d in (args.directions or "").split(",") if d]
    directions = [d for d in evaluation.DIRECTIONS if not wanted or d.name in wanted or d.name.split(" ")[0] in wanted]
    if wanted and not directions:
        raise InputError(f"--directions {args.directions}", "matches no direction (have "
                         + ", ".join(d.name for d in evaluation.DIRECTIONS) + ")")
    if args.dataset and not wanted:
        directions = evaluation.dataset_directions(items)
    if args.peers is None:  # Transkun needs ~3 s per audio second on a CPU: not by default on a whole data set
        transcribable = any(it.audio is not None and it.notes is not None for it in items)
        args.peers = ("basic-pitch" if transcribable else "") if args.dataset else "basic-pitch,transkun"
    peers = [p for p in (args.peers or "").split(",") if p]
    evaluation.parse_peers(peers)  # a bad name fails before the model loads
    translator = Translator.load(args.checkpoint)
    print(f"evaluating {translator.path} (step {translator.meta.get('step')}) on {len(items)} item(s), "
          f"{len(directions)} direction(s), peers: {', '.join(peers) or 'none'}")
    report = evaluation.evaluate(translator, items, directions=directions, peers=peers,
                                 partial=args.out,
                                 options=Options(batch_size=args.batch_size, progress=not args.quiet),
                                 pictures_dir=os.path.join(args.out, "pictures") if args.pictures else None,
                                 pictures=args.pictures)
    report["source"] = args.tokens or args.dataset or args.pairs
    report["split"] = args.split if args.tokens or args.dataset else None
    json_path, md_path = evaluation.write_report(report, args.out)
    print(evaluation.report_markdown(report))
    print(f"wrote {md_path} and {json_path}")
    return 0


def cmd_videos_make_test(args) -> int:
    from tqdm import tqdm

    from unimusic.video.synthetic import make_broken_files, make_video, standard_specs

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    specs = standard_specs(args.count, seed=args.seed)
    made = []
    for i, spec in enumerate(tqdm(specs, desc="videos", unit="video")):
        path = out / f"video{i:03d}.{spec.container}"
        make_video(spec, str(path))
        made.append(path)
    if args.broken and made:
        broken = make_broken_files(str(out / "broken"), from_video=str(made[0]))
        print(f"{len(broken)} broken files in {out / 'broken'}")
    print(f"{len(made)} videos with .truth.json files in {out}")
    return 0


def cmd_serve(args) -> int:
    """Deploy the translation service on a local Ray cluster (or --address) and keep it up until Ctrl-C."""
    from serve.app import ServeSettings, config_file_values, deploy, wait_until_stopped

    values = config_file_values(args.config) if args.config else {}
    for key in ("checkpoint", "host", "port", "max_batch_size", "min_replicas", "max_replicas", "max_upload_bytes",
                "request_timeout_s"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    settings = ServeSettings.from_mapping(values)
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.key():
        _err(f"warning: listening on {settings.host} without an API key (set UNIMUSIC_API_KEY)")
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if args.address:
        ray.init(address=args.address)
    else:
        ray.init(num_cpus=args.num_cpus, include_dashboard=False)
    print(f"starting the translation service ({settings.checkpoint or 'shipped translator-tiny'}) ...", flush=True)
    url = deploy(settings)
    print(f"serving on {url}/  (API: {url}/docs; health: {url}/healthz). Ctrl-C stops.", flush=True)
    wait_until_stopped()
    from ray import serve

    print("stopping ...", flush=True)
    serve.shutdown()
    ray.shutdown()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unimusic",
        description="Translate music between score images, symbolic scores, MIDI and audio.",
    )
    parser.add_argument("--version", action="version", version=f"unimusic {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def midi_options(p):
        p.add_argument("--window", type=float, default=10.0, help="MIDI event window in seconds (default 10)")
        p.add_argument("--velocity-bins", type=int, default=16, help="MIDI velocity bins (1 = on/off only)")

    p = sub.add_parser(
        "convert", help="deterministic conversion: score->LMX, LMX->MusicXML, MIDI<->event tokens, engraving, piano rolls"
    )
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--strict", action="store_true", help="fail instead of dropping LMX tokens that do not parse")
    p.add_argument("--page", type=int, default=1, help="page to engrave for .svg/.png output (default 1)")
    midi_options(p)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("info", help="what a file is: kind, duration, parts, measures, notes")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    midi_options(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("pipeline", help="the whole workflow: corpus -> tokenize -> train -> eval (-> serve)")
    p.add_argument("--config", default=None, help="YAML with PipelineConfig values (cluster/pipeline-aws.yaml)")
    p.add_argument("--size", default="tiny", help="size preset: tiny (the embedded default), small, full")
    p.add_argument("--serve", action="store_true", help="deploy the trained model at the end and keep serving")
    p.set_defaults(func=cmd_pipeline, overrides=[], takes_overrides=True)
    p.epilog = ("Overrides follow as key=value, e.g. out=s3://bucket/run1 corpus.limit=100 train.steps=500 "
                "train.workers=2. With RAY_ADDRESS set, the stages run on that cluster.")

    ds_parser = sub.add_parser("datasets", help="public data sets (OLiMPiC, GrandStaff, MAESTRO...) -> corpus shards")
    ds_sub = ds_parser.add_subparsers(dest="datasets_command", required=True, metavar="COMMAND")
    p = ds_sub.add_parser("list", help="the adapters, their forms, licences and expected layouts")
    p.set_defaults(func=cmd_datasets_list)
    p = ds_sub.add_parser("import", help="import a local or s3:// copy of a data set (Ray Data, resumable)")
    p.add_argument("name", help="the data set (see `unimusic datasets list`)")
    p.add_argument("src", help="the data set's folder or s3:// prefix, layout as distributed")
    p.add_argument("--out", required=True, help="output folder or s3:// prefix (a corpus: shards/, manifest.json)")
    p.add_argument("--limit", type=int, default=None, help="at most this many examples per split")
    p.add_argument("--config", default=None, help="YAML file with ImportConfig values")
    p.add_argument("--concurrency", type=int, default=None, help="shard builders (default: the cluster's CPUs)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray cluster (default: all)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_datasets_import, overrides=[], takes_overrides=True)
    p.epilog = "Config overrides follow as key=value, e.g. segment_seconds=8 examples_per_shard=4."

    corpus = sub.add_parser("corpus", help="multimodal corpus: engrave, synthesize, align per staff system (Ray Data)")
    corpus_sub = corpus.add_subparsers(dest="corpus_command", required=True, metavar="COMMAND")
    p = corpus_sub.add_parser("build", help="build Parquet shards from scores (local, glob, s3:// or 'music21')")
    p.add_argument("input", help="'music21' (the bundled corpus), a folder, a glob, or an s3:// prefix")
    p.add_argument("--out", required=True, help="output folder or s3:// prefix")
    p.add_argument("--limit", type=int, default=None, help="at most this many scores (spread over the input)")
    p.add_argument("--collections", default="", help="music21 collections, comma-separated (e.g. bach,palestrina)")
    p.add_argument("--config", default=None, help="YAML file with CorpusConfig values")
    p.add_argument("--concurrency", type=int, default=None, help="shard builders (default: the cluster's CPUs)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray cluster (default: all)")
    p.add_argument("--contact-sheet", default=None, help="write a PNG of random systems with their LMX engraved back")
    p.set_defaults(func=cmd_corpus_build, overrides=[], takes_overrides=True)
    p.epilog = "Config overrides follow as key=value, e.g. seed=3 synth.augment=false pieces_per_shard=8."
    p = corpus_sub.add_parser("tokenize", help="add image (RQ-VAE) and audio (DAC) codes to a corpus: a new shard set")
    p.add_argument("input", help="a built corpus folder or s3:// prefix (with manifest.json)")
    p.add_argument("--out", required=True, help="output folder or s3:// prefix")
    p.add_argument("--image-weights", default=None, help="RQ-VAE weights (default: the shipped rqvae-tiny)")
    p.add_argument("--audio-weights", default=None, help="audio codec weights (default: the shipped codec-tiny)")
    p.add_argument("--no-image", action="store_true", help="no image codes (their columns stay null)")
    p.add_argument("--no-audio", action="store_true", help="no audio codes (their columns stay null)")
    p.add_argument("--concurrency", type=int, default=None, help="tokenizer actors (default: the cluster's CPUs)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray cluster (default: all)")
    p.set_defaults(func=cmd_corpus_tokenize)

    videos = sub.add_parser("videos", help="score-following videos: slides, staff systems, audio spans (Ray Data)")
    videos_sub = videos.add_subparsers(dest="videos_command", required=True, metavar="COMMAND")
    p = videos_sub.add_parser("ingest", help="segment videos into (system images, audio segment) Parquet shards")
    p.add_argument("input", help="a video file, a folder, a glob, or an s3:// prefix")
    p.add_argument("--out", required=True, help="output folder or s3:// prefix")
    p.add_argument("--metadata", default=None, help="CSV with id,title,composer,instrumentation (id = file name stem)")
    p.add_argument("--limit", type=int, default=None, help="at most this many videos")
    p.add_argument("--config", default=None, help="YAML file with VideoConfig values")
    p.add_argument("--concurrency", type=int, default=None, help="video workers (default: the cluster's CPUs)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray cluster (default: all)")
    p.set_defaults(func=cmd_videos_ingest, overrides=[], takes_overrides=True)
    p = videos_sub.add_parser("make-test", help="generate score-following test videos with ground truth")
    p.add_argument("--out", required=True)
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--broken", action="store_true", help="also write corrupt/truncated/audio-less/non-video files")
    p.set_defaults(func=cmd_videos_make_test)

    p = sub.add_parser("train-tokenizer", help="train the score-image RQ-VAE or the audio codec (Ray Train; resumable)")
    p.add_argument("modality", choices=("image", "audio"), help="image: RQ-VAE on system crops; audio: DAC codec")
    p.add_argument("--corpus", default="artifacts/corpus", help="corpus folder or s3:// prefix (default artifacts/corpus)")
    p.add_argument("--preset", default="tiny", help="job preset: smoke, tiny, shipped (the shipped weights' recipe)")
    p.add_argument("--config", default=None, help="YAML file with job values (over the preset)")
    p.add_argument("--name", default=None, help="run name (default MODALITY-PRESET); the same name resumes")
    p.add_argument("--storage", default="runs", help="checkpoint storage: folder or s3:// prefix (default runs/)")
    p.add_argument("--workers", type=int, default=1, help="Ray Train workers (data parallel)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--gpu", action="store_true", help="one GPU per worker")
    p.add_argument("--export", default=None, help="write the final weights here (.safetensors + .json; default exports/NAME)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray cluster (default: all)")
    p.set_defaults(func=cmd_train_tokenizer, overrides=[], takes_overrides=True)
    p.epilog = "Job overrides follow as key=value, e.g. steps=500 lr=1e-3 model.codebook_size=512."

    p = sub.add_parser("train", help="train the multitask translator on a tokenized corpus (Ray Train + DeepSpeed; resumable)")
    p.add_argument("--tokens", default="artifacts/tokens", help="tokenized corpus folder or s3:// prefix (default artifacts/tokens)")
    p.add_argument("--preset", default="tiny", help="job preset: smoke, tiny, learn (the shipped translator's recipe)")
    p.add_argument("--config", default=None, help="YAML file with job values (over the preset)")
    p.add_argument("--name", default=None, help="run name (default translator-PRESET); the same name resumes")
    p.add_argument("--storage", default="runs", help="checkpoint storage: folder or s3:// prefix (default runs/)")
    p.add_argument("--workers", type=int, default=2, help="Ray Train workers (data parallel; default 2)")
    p.add_argument("--min-workers", type=int, default=0, help="elastic: run with as few as this many workers (0: fixed)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--gpu", action="store_true", help="one GPU per worker (nccl; bf16 with DeepSpeed)")
    p.add_argument("--stop-at", type=int, default=None, help="stop this invocation at that step (rerun to continue)")
    p.add_argument("--log-dir", default=None, help="metrics.jsonl + TensorBoard events (default STORAGE/NAME/logs)")
    p.add_argument("--export", default=None, help="write the final model here (.safetensors + .json; default exports/NAME)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray cluster (default: all)")
    p.set_defaults(func=cmd_train, overrides=[], takes_overrides=True)
    p.epilog = "Job overrides follow as key=value, e.g. steps=500 engine=ddp zero_stage=1 model.d_model=256."

    p = sub.add_parser("translate", help="translate files between score images/PDF, MusicXML/kern/ABC, LMX, MIDI and audio")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="input file(s); the kind is read from the content")
    p.add_argument("--to", choices=("musicxml", "lmx", "midi", "audio", "image"), default=None,
                   help="what to produce (default: from -o's extension)")
    p.add_argument("-o", "--output", default=None, help="output file (one input) or folder (several); "
                   "default: beside the input with the target's extension")
    p.add_argument("--checkpoint", default=None, help="an exported translator (default: the shipped one)")
    p.add_argument("--via", default="", help="cascade through these modalities, e.g. lmx,midi")
    p.add_argument("--engine", choices=("auto", "model", "convert"), default="auto",
                   help="auto: deterministic converters where they exist, else the model; model: the model "
                        "wherever it has the direction; convert: converters only")
    p.add_argument("--strategy", choices=("greedy", "sample", "beam"), default="greedy")
    p.add_argument("--beam-size", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=8, help="chunks decoded together")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--picture", action="store_true", help="also write OUT.png: a piano roll, or the OMR result under the input")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_translate)

    p = sub.add_parser("translate-batch", help="translate every file of a folder, glob or s3:// prefix (Ray Data)")
    p.add_argument("src", metavar="SRC", help="a folder (recursive), a glob ('scans/**/*.png') or an s3:// prefix")
    p.add_argument("--to", required=True, help="what to produce: musicxml, lmx, midi, audio or image")
    p.add_argument("--out", required=True, help="output folder or s3:// prefix; mirrors SRC's tree, holds manifest.jsonl")
    p.add_argument("--checkpoint", default=None, help="an exported translator (default: the shipped one)")
    p.add_argument("--via", default="", help="cascade through these modalities, e.g. lmx,midi")
    p.add_argument("--engine", choices=("auto", "model", "convert"), default="auto")
    p.add_argument("--actors", type=int, default=None, help="translator actors (default: one per CPU)")
    p.add_argument("--batch-size", type=int, default=8, help="inputs per actor call")
    p.add_argument("--overwrite", action="store_true", help="translate inputs already done in --out again")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_translate_batch)

    p = sub.add_parser("eval", help="one table of every direction (and peers) on a corpus split or paired files")
    p.add_argument("--tokens", default=None, help="a tokenized corpus (its --split rows are the items)")
    p.add_argument("--pairs", default=None, help="a folder of files sharing stems (x.png, x.musicxml, x.mid, x.wav)")
    p.add_argument("--dataset", default=None,
                   help="an imported data set (`unimusic datasets import`): OMR SER on its system images, "
                        "transcription F1 on its whole performances")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=None, help="first N items (stable order)")
    p.add_argument("--checkpoint", default=None, help="an exported translator (default: the shipped one)")
    p.add_argument("--directions", default="", help="comma-separated subset, e.g. image->lmx,audio->midi")
    p.add_argument("--peers", default=None,
                   help="peer transcribers run on the same audio; NAME:N limits one to the first N items "
                        "(Transkun: about 3 s per audio second on a CPU). Default: basic-pitch,transkun; "
                        "basic-pitch with --dataset; '' for none")
    p.add_argument("--out", default="eval", help="folder for eval.md, eval.json and pictures/")
    p.add_argument("--pictures", type=int, default=2, help="pictures per direction (0: none)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("export", help="consolidate a translator training checkpoint into safetensors + JSON")
    p.add_argument("checkpoint", help="a checkpoint folder or a run folder (its latest checkpoint); local or s3://")
    p.add_argument("out", help="output path without suffix (writes OUT.safetensors and OUT.json)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("serve", help="serve translation endpoints and a web page (Ray Serve; 127.0.0.1 by default)")
    p.add_argument("--config", default=None, help="a Serve config file (serve/config.yaml): its application args "
                   "and http_options; the flags below override it")
    p.add_argument("--checkpoint", default=None, help="an exported translator (default: the shipped one)")
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1; set UNIMUSIC_API_KEY before "
                   "exposing it)")
    p.add_argument("--port", type=int, default=None, help="default 8000")
    p.add_argument("--max-batch-size", type=int, default=None, help="requests one model replica decodes together")
    p.add_argument("--min-replicas", type=int, default=None)
    p.add_argument("--max-replicas", type=int, default=None)
    p.add_argument("--max-upload-bytes", type=int, default=None)
    p.add_argument("--request-timeout-s", type=float, default=None)
    p.add_argument("--address", default=None, help="join a running Ray cluster (e.g. auto) instead of starting one")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray cluster (default: all)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="the main job on the embedded default (for now: every codec over corpus pieces)")
    p.add_argument("--pieces", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--out", default="artifacts/demo")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value words anywhere on the line are config overrides, for commands that take them
    overrides = [word for word in extra if "=" in word and not word.startswith("-")]
    unknown = [word for word in extra if word not in overrides]
    if unknown or (overrides and not getattr(args, "takes_overrides", False)):
        parser.error(f"unrecognized arguments: {' '.join(unknown or overrides)}")
    if overrides:
        args.overrides = overrides
    if getattr(args, "window", 10.0) <= 0 or getattr(args, "velocity_bins", 1) < 1:
        _err("--window must be > 0 and --velocity-bins >= 1")
        return EXIT_INPUT
    try:
        return args.func(args)
    except (InputError, UnimusicError) as exc:
        _err(str(exc))
        return EXIT_INPUT
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except Exception as exc:  # a bug of ours: one line, and the way to see more
        if os.environ.get("UNIMUSIC_DEBUG"):
            traceback.print_exc()
        _err(f"internal error ({type(exc).__name__}: {exc}); rerun with UNIMUSIC_DEBUG=1 for the traceback")
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
