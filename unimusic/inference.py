"""Translate anything to anything: whole pages and whole pieces, any direction.

:class:`Translator` wraps one exported translator checkpoint (the shipped one by
default) with the tokenizers its codes came from, and turns whole inputs into
whole outputs:

* a page image (or PDF page) -> staff systems (:mod:`unimusic.vision`) -> each system
  cut at its barlines into chunks that fit the model -> batched decoding -> one LMX
  stream (measures joined across systems, parts kept) -> MusicXML, or MIDI;
* long audio -> windows -> MIDI windows stitched with their tie sections
  (:meth:`~unimusic.tokens.midi.MidiEventCodec.decode`, MT3 style) -> one MIDI;
* MIDI or a score -> audio in overlapping windows, each window's decoder prefix the
  codes generated just before it, joins crossfaded;
* image -> audio per system, in reading order; audio -> score image, one system per window.

The deterministic converters are hops too: score <-> LMX (:mod:`unimusic.render.lmx`),
score -> MIDI and score -> image (Verovio), MIDI -> audio (FluidSynth). ``engine``
picks per hop: ``auto`` (a converter where one exists, else the model), ``model``
(the model wherever it has the direction) or ``convert``; ``via`` asks for a cascade
(``image -> lmx -> midi -> audio``) to compare with the direct path.

Chunks of one direction are decoded in batches across systems, windows and input
items (:meth:`Translator.translate_many`). Model output is decoded tolerantly:
invalid tokens are counted in :attr:`Result.invalid_tokens` and dropped.
Heavy imports (torch, the tokenizers, Verovio) happen on first use.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings as warnings_mod
from typing import Sequence

import numpy as np

from unimusic.errors import InputError
from unimusic.multitask import IMAGE_PATCH, SLOTS, Caps

TARGETS = ("musicxml", "lmx", "midi", "audio", "image")
ENGINES = ("auto", "model", "convert")
STRATEGIES = ("greedy", "sample", "beam")
CORE = ("lmx", "midi", "image", "audio")  # what the model reads and writes
CONVERTERS = {("lmx", "midi"), ("lmx", "image"), ("midi", "audio"), ("lmx", "audio")}


def needs_model(source: str, to: str, *, via: Sequence[str] = (), engine: str = "auto") -> bool:
    """Whether translating ``source`` to ``to`` uses a model hop (with a checkpoint that has every direction)."""
    from unimusic.tokens.vocabulary import TASKS

    return any(kind == "model" for kind, _, _ in plan_hops(source, to, via=via, engine=engine, model_tasks=TASKS))


@dataclasses.dataclass(frozen=True)
class Systems:
    """Score images already cut into normalized staff-system crops (reading order)."""

    crops: tuple[np.ndarray, ...]  # uint8 gray (H, W), 0 ink, sides multiples of 16


@dataclasses.dataclass(frozen=True)
class Options:
    """How to translate (all keyword; defaults suit the shipped model)."""

    engine: str = "auto"
    strategy: str = "greedy"
    beam_size: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 8  # chunks decoded together
    caps: Caps = Caps()  # chunk sizes: the training caps
    overlap_seconds: float = 0.5  # generated audio windows overlap by this much, crossfaded
    join_seconds: float = 0.05  # crossfade between systems' generated audio
    progress: bool = False  # tqdm bars for long inputs

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise InputError("engine", f"{self.engine!r} is not one of {', '.join(ENGINES)}")
        if self.strategy not in STRATEGIES:
            raise InputError("strategy", f"{self.strategy!r} is not one of {', '.join(STRATEGIES)}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise InputError("batch_size", f"must be an integer >= 1, got {self.batch_size!r}")
        if not 0 <= self.overlap_seconds < self.caps.max_seconds / 2:
            raise InputError("overlap_seconds", f"must be in [0, {self.caps.max_seconds / 2}), got {self.overlap_seconds!r}")
        if not 0 <= self.join_seconds <= 1:
            raise InputError("join_seconds", f"must be in [0, 1], got {self.join_seconds!r}")


@dataclasses.dataclass
class Result:
    """One translated input."""

    value: object  # an unimusic.io_files value: Score, Lmx, Midi, Audio or Pages
    hops: list[str]  # e.g. ["model image->lmx", "convert lmx->midi"]
    invalid_tokens: int = 0  # model output ids dropped by the tolerant decoders
    chunks: int = 0  # model inputs decoded
    seconds: float = 0.0
    warnings: list[str] = dataclasses.field(default_factory=list)
    error: str | None = None  # this input could not be translated (the others still were)
    systems: tuple = ()  # image targets from the model: the generated system images (value stacks them)


# -- plans -------------------------------------------------------------------------


def modality_of(value) -> str:
    """``image``, ``audio``, ``midi``, ``score`` or ``lmx`` of an input value."""
    from unimusic import io_files as io

    kinds = {Systems: "image", io.Pages: "image", io.Audio: "audio", io.Midi: "midi", io.Score: "score", io.Lmx: "lmx"}
    for cls, name in kinds.items():
        if isinstance(value, cls):
            return name
    raise InputError("input", f"cannot translate a {type(value).__name__}")


def plan_hops(source: str, to: str, *, via: Sequence[str] = (), engine: str = "auto",
              model_tasks: Sequence[str] = ()) -> list[tuple[str, str, str]]:
    """The hops ``(kind, from, to)`` (kind ``model`` or ``convert``) that take ``source``
    (a :func:`modality_of`) to ``to`` (one of :data:`TARGETS`) through ``via``."""
    if to not in TARGETS:
        raise InputError(f"--to {to}", f"unknown target (have {', '.join(TARGETS)})")
    if engine not in ENGINES:
        raise InputError("engine", f"{engine!r} is not one of {', '.join(ENGINES)}")
    core_to = "lmx" if to == "musicxml" else to
    core_from = "lmx" if source == "score" else source
    bad = [v for v in via if v not in CORE]
    if bad:
        raise InputError(f"--via {','.join(via)}", f"unknown step(s) {bad} (have {', '.join(CORE)})")
    stops = [core_from, *via, core_to]
    hops = []
    if source == "score":
        hops.append(("convert", "score", "lmx"))
    for a, b in zip(stops, stops[1:]):
        if a == b:
            continue
        task = f"{a}->{b}"
        has_model = task in model_tasks
        has_converter = (a, b) in CONVERTERS
        if engine == "model" and not has_model:
            # the model's own output where it has the last step (LMX -> audio: LMX -> MIDI, then the model)
            step = next((m for m in CORE if (a, m) in CONVERTERS and f"{m}->{b}" in model_tasks), None)
            if step:
                hops += [("convert", a, step), ("model", step, b)]
                continue
        if engine == "model" and has_model or engine == "auto" and has_model and not has_converter:
            hops.append(("model", a, b))
        elif engine != "model" and has_converter or engine == "model" and has_converter and not has_model:
            hops.append(("convert", a, b))
        elif has_model:
            raise InputError(f"{a} -> {b}", "no deterministic converter for this direction: use engine 'auto' or 'model'")
        else:
            route = f"{a} -> {b}"
            raise InputError(route, "neither the model nor a converter translates this direction"
                             + (f" (the checkpoint has {', '.join(model_tasks)})" if model_tasks else ""))
    if to == "musicxml":
        hops.append(("convert", "lmx", "score"))
    # A score goes straight to a converter's target (no LMX round trip on the way).
    if len(hops) >= 2 and hops[0] == ("convert", "score", "lmx") and hops[1][0] == "convert":
        hops[:2] = [("convert", "score", hops[1][2])]
    if hops == [("convert", "score", "score")]:
        hops = []
    return hops


# -- deterministic converters --------------------------------------------------------


def lmx_to_score(tokens: Sequence[str]) -> tuple[bytes, int]:
    """MusicXML of LMX tokens, and how many tokens the tolerant decoder dropped."""
    from unimusic.render.lmx import delinearize

    xml, stats = delinearize(list(tokens))
    return xml.encode("utf-8"), int(stats.invalid_tokens)


def score_to_lmx(musicxml: bytes, *, source: str = "<musicxml>") -> list[str]:
    from unimusic.render.lmx import linearize

    return linearize(musicxml, source=source)


def _toolkit_for(musicxml: bytes, source: str):
    from unimusic.render.engrave import EngraveOptions, new_toolkit
    from unimusic.render.slicing import renumber_measures

    toolkit = new_toolkit()
    toolkit.setOptions({**EngraveOptions().verovio(), "header": "none", "footer": "none"})
    if not toolkit.loadData(renumber_measures(musicxml, source=source).decode("utf-8")):
        raise InputError(source, "Verovio could not load the MusicXML")
    return toolkit


def score_to_notes(musicxml: bytes, *, source: str = "<musicxml>") -> list:
    """The notes Verovio plays for a score (its MIDI export, repeats expanded)."""
    import base64

    from unimusic.tokens.midi import notes_from_midi

    toolkit = _toolkit_for(musicxml, source)
    return notes_from_midi(base64.b64decode(toolkit.renderToMIDI()), name=source)


def score_to_svgs(musicxml: bytes, *, source: str = "<musicxml>", max_pages: int | None = None) -> list[str]:
    """Engraved pages of a score as SVG (Verovio), at most ``max_pages``."""
    toolkit = _toolkit_for(musicxml, source)
    count = toolkit.getPageCount() if max_pages is None else min(max_pages, toolkit.getPageCount())
    return [toolkit.renderToSVG(p) for p in range(1, count + 1)]


def score_to_pages(musicxml: bytes, *, source: str = "<musicxml>") -> list[np.ndarray]:
    """Engraved pages (uint8 gray) of a score."""
    from unimusic.render.engrave import svg_to_gray

    return [np.asarray(svg_to_gray(svg)) for svg in score_to_svgs(musicxml, source=source)]


def notes_to_audio(notes: Sequence, *, sample_rate: int = 44100) -> np.ndarray:
    """FluidSynth rendering of notes with the default General MIDI soundfont."""
    import io

    from unimusic.render.synthesize import default_soundfonts, synthesize
    from unimusic.tokens.midi import notes_to_midi

    buffer = io.BytesIO()
    notes_to_midi(list(notes)).write(buffer)
    return synthesize(buffer.getvalue(), soundfont=default_soundfonts()[0], sample_rate=sample_rate)


# -- images: systems and barlines ---------------------------------------------------------


def page_systems(pages: Sequence[np.ndarray], *, source: str = "<image>") -> tuple[list[np.ndarray], list[str]]:
    """Normalized staff-system crops of pages in reading order, and warnings (a page without staves)."""
    from unimusic.vision.staves import crop_systems, detect_systems

    crops, notes = [], []
    for i, page in enumerate(pages, start=1):
        systems = detect_systems(page, source=f"{source} page {i}")
        if not systems:
            notes.append(f"{source} page {i}: no staff systems found")
            continue
        crops.extend(crop_systems(page, systems, source=f"{source} page {i}"))
    return crops, notes


def _staff_bands(crop: np.ndarray) -> list[tuple[int, int]]:
    """(top, bottom) line rows of the staves in a system crop (the vision module's detector)."""
    from unimusic.vision.staves import detect_systems

    try:
        systems = detect_systems(crop, source="system crop")
    except InputError:
        return []
    return [(int(round(st.top)), int(round(st.bottom))) for sy in systems for st in sy.staves]


def barline_columns(crop: np.ndarray) -> list[int]:
    """x positions of barlines in a normalized system crop: columns whose ink covers
    (nearly) the whole height of every staff; a stem covers one staff at most partly."""
    bands = _staff_bands(crop)
    if not bands:
        return []
    dark = np.asarray(crop) < 192  # thin lines are anti-aliased gray at 18 px per staff
    ok = np.ones(crop.shape[1], dtype=bool)
    for top, bottom in bands:
        ok &= dark[max(0, top) : bottom + 1].mean(axis=0) >= 0.9
    # A barline stops at the outer staff lines; a stem that spans a whole staff sticks out.
    gap = max(2, int(round((bands[0][1] - bands[0][0]) / 8)))
    top, bottom = bands[0][0], bands[-1][1]
    above = dark[max(0, top - 4 * gap) : max(0, top - gap)]
    below = dark[bottom + gap : bottom + 4 * gap]
    if above.size:
        ok &= ~above.any(axis=0)
    if below.size:
        ok &= ~below.any(axis=0)
    out: list[int] = []
    for x in np.flatnonzero(ok).tolist():  # a thick or double barline spans columns: keep its right edge
        if out and x - out[-1] <= 6:
            out[-1] = x
        else:
            out.append(x)
    return out


def image_chunks(width_cells: int, rows: int, barlines: Sequence[int], *, budget: int) -> list[tuple[int, int]]:
    """Column ranges ``[c0, c1)`` that cover a system of ``width_cells`` columns, each at most
    ``budget`` tokens (a height token plus ``rows`` cells per column), cut at barlines where
    possible, as training cut systems at measure boundaries: a chunk ends with the column
    holding its last barline and the next chunk starts with that column."""
    max_cols = max(1, (budget - 1) // max(1, rows))
    if width_cells <= max_cols:
        return [(0, width_cells)]
    # a barline at x: the chunk before it ends at ceil((x + 1) / 16), the next starts at floor(x / 16)
    cuts = sorted({(min(width_cells, (int(x) + IMAGE_PATCH) // IMAGE_PATCH), int(x) // IMAGE_PATCH)
                   for x in barlines if 0 < int(x) // IMAGE_PATCH < width_cells - 1})
    out, start = [], 0
    while start < width_cells:
        if width_cells - start <= max_cols:
            out.append((start, width_cells))
            break
        reach = [(end, nxt) for end, nxt in cuts if start < nxt and end <= start + max_cols]
        end, nxt = reach[-1] if reach else (start + max_cols, start + max_cols)  # no barline in reach: a plain cut
        out.append((start, end))
        start = nxt
    return out


# -- audio helpers ---------------------------------------------------------------------


def crossfade_join(parts: Sequence[tuple[float, np.ndarray]], *, sample_rate: int, fade: float) -> np.ndarray:
    """Place audio parts at their start times (seconds) and crossfade where they overlap
    (raised cosine over the overlap, at least ``fade`` seconds when parts just touch)."""
    if not parts:
        return np.zeros(0, dtype=np.float32)
    end = max(int(round(t * sample_rate)) + len(x) for t, x in parts)
    out = np.zeros(end, dtype=np.float64)
    weight = np.zeros(end, dtype=np.float64)
    n_fade = max(1, int(round(fade * sample_rate)))
    for t, x in parts:
        s = int(round(t * sample_rate))
        n = len(x)
        if n == 0:
            continue
        w = np.ones(n)
        k = min(n_fade, n // 2)
        if k > 0:
            ramp = 0.5 - 0.5 * np.cos(np.linspace(0, math.pi, k + 2)[1:-1])
            w[:k] = ramp
            w[n - k :] = ramp[::-1]
        out[s : s + n] += w * x
        weight[s : s + n] += w
    nz = weight > 1e-9
    out[nz] /= weight[nz]
    return out.astype(np.float32)


def time_windows(seconds: float, *, max_seconds: float, overlap: float = 0.0) -> list[tuple[float, float]]:
    """Even windows ``[t0, t1)`` on the 10 ms grid covering ``[0, seconds)``, each at most
    ``max_seconds`` long; with ``overlap``, every window after the first starts that much
    before the previous one ends."""
    total = max(1, int(round(seconds * 100)))
    width = max(1, int(math.floor(max_seconds * 100)))
    ov = int(round(overlap * 100))
    step = max(1, width - ov)
    count = max(1, math.ceil(max(0, total - ov) / step)) if total > width else 1
    step = math.ceil((total - ov) / count) if count > 1 else total
    out = []
    for i in range(count):
        a = i * step
        b = min(total, a + step + (ov if count > 1 and i < count - 1 else 0))
        if i == count - 1:
            b = total
        out.append((a / 100.0, b / 100.0))
    return out


# -- the translator ------------------------------------------------------------------------


@dataclasses.dataclass
class _Chunk:
    item: int  # which input item
    order: tuple  # position of the chunk within its item
    body: np.ndarray  # (N, SLOTS) source stream without the task token
    prefix: np.ndarray | None = None
    out: object = None  # the generated tokens
    stopped: bool = False


class Translator:
    """An exported translator with its tokenizers; thread-compatible, not thread-safe."""

    def __init__(self, *, model=None, config=None, vocab=None, meta: dict | None = None, path: str = "",
                 device: str = "cpu"):
        """``model=None``: the deterministic converters only (no checkpoint needed)."""
        from unimusic.models.positions import PositionRules

        self.model, self.config, self.vocab, self.meta = model, config, vocab, meta or {}
        self.path, self.device = path, device
        self.rules = PositionRules.from_vocabulary(vocab, max_positions=config.max_positions) if model else None
        self.tasks = tuple(self.meta.get("tasks") or ()) if model else ()
        self._tokenizers = None

    # -- loading ----------------------------------------------------------------------
    @classmethod
    def load(cls, checkpoint: str | None = None, *, device: str = "cpu") -> "Translator":
        """An exported checkpoint (``.safetensors`` + ``.json``; the shipped one when None)."""
        from unimusic.models.translator_io import load_translator

        path = str(checkpoint) if checkpoint else str(shipped_translator_path())
        model, config, vocab, meta = load_translator(path, device=device)
        return cls(model=model, config=config, vocab=vocab, meta=meta, path=path, device=device)

    @property
    def tokenizers(self):
        """The RQ-VAE and audio codec the checkpoint's codes came from (checked by hash)."""
        if self._tokenizers is None:
            self._tokenizers = load_tokenizers_for(self.meta, source=self.path, device=self.device)
        return self._tokenizers

    # -- public API -------------------------------------------------------------------
    def translate(self, value, to: str, *, via: Sequence[str] = (), options: Options = Options(),
                  source: str = "<input>") -> Result:
        """One input value (see :func:`modality_of`) to ``to`` (one of :data:`TARGETS`);
        InputError if it cannot be translated."""
        result = self.translate_many([value], to, via=via, options=options, sources=[source])[0]
        if result.error:
            raise InputError(source, result.error.split(": ", 1)[-1] if result.error.startswith(source) else result.error)
        return result

    def translate_many(self, values: Sequence, to: str, *, via: Sequence[str] = (), options: Options = Options(),
                       sources: Sequence[str] | None = None) -> list[Result]:
        """Several inputs of one modality to ``to``; the chunks of each model hop are decoded
        in batches across all of them."""
        if not values:
            return []
        sources = list(sources or [f"<input {i}>" for i in range(len(values))])
        kinds = {modality_of(v) for v in values}
        if len(kinds) != 1:
            raise InputError("inputs", f"mix modalities {sorted(kinds)}: translate each kind separately")
        hops = plan_hops(kinds.pop(), to, via=via, engine=options.engine, model_tasks=self.tasks)
        t0 = time.perf_counter()
        results = [Result(value=None, hops=[f"{k} {a}->{b}" for k, a, b in hops]) for _ in values]
        current = [self._guard(r, self._core, v, src, r) for v, src, r in zip(values, sources, results)]
        for kind, a, b in hops:
            alive = [i for i, r in enumerate(results) if r.error is None]
            if kind == "model" and alive:
                done = self._model_hop(f"{a}->{b}", [current[i] for i in alive], [results[i] for i in alive],
                                       options, [sources[i] for i in alive])
                for i, x in zip(alive, done):
                    current[i] = x
            else:
                for i in alive:
                    current[i] = self._guard(results[i], self._convert, a, b, current[i], sources[i], results[i])
        for r, x in zip(results, current):
            if r.error is None:
                r.value = self._wrap(to, x)
                if to == "image" and isinstance(x, list):
                    r.systems = tuple(x)
            r.seconds = round(time.perf_counter() - t0, 3)
        return results

    @staticmethod
    def _guard(result: Result, fn, *args):
        """``fn(*args)``; an InputError marks this one input failed instead of stopping the batch."""
        try:
            return fn(*args)
        except InputError as exc:
            result.error = str(exc)
            return None

    # -- values ---------------------------------------------------------------------------
    def _core(self, value, source: str, result: Result):
        """Internal form: score -> MusicXML bytes, lmx -> tokens, midi -> notes,
        audio -> (samples, rate), image -> system crops."""
        from unimusic import io_files as io

        if isinstance(value, io.Score):
            return value.musicxml
        if isinstance(value, io.Lmx):
            return list(value.tokens)
        if isinstance(value, io.Midi):
            return list(value.notes)
        if isinstance(value, io.Audio):
            return (np.asarray(value.samples, dtype=np.float32), int(value.sample_rate))
        if isinstance(value, Systems):
            return list(value.crops)
        crops, notes = page_systems(value.images, source=source)
        result.warnings.extend(notes)
        if not crops:
            raise InputError(source, "no staff systems found in the image")
        return crops

    def _wrap(self, to: str, x):
        from unimusic import io_files as io

        if to == "musicxml":
            return io.Score(musicxml=x)
        if to == "lmx":
            return io.Lmx(tokens=tuple(x))
        if to == "midi":
            return io.Midi(notes=tuple(x))
        if to == "audio":
            return io.Audio(samples=x[0], sample_rate=x[1])
        if isinstance(x, io.Pages):
            return x
        return io.Pages(images=(stack_systems(x),))

    def _convert(self, a: str, b: str, x, source: str, result: Result):
        if (a, b) == ("score", "lmx"):
            return score_to_lmx(x, source=source)
        if (a, b) == ("lmx", "score"):
            xml, dropped = lmx_to_score(x)
            result.invalid_tokens += dropped
            return xml
        if a in ("lmx", "score"):
            xml = x
            if a == "lmx":
                xml, dropped = lmx_to_score(x)
                result.invalid_tokens += dropped
            if b == "image":
                from unimusic import io_files as io

                return io.Pages(images=tuple(score_to_pages(xml, source=source)))
            notes = score_to_notes(xml, source=source)
            return notes if b == "midi" else (notes_to_audio(notes), 44100)
        if (a, b) == ("midi", "audio"):
            return (notes_to_audio(x), 44100)
        raise InputError(f"{a} -> {b}", "no converter")  # plan_hops never asks for one

    # -- model hops --------------------------------------------------------------------------
    def _model_hop(self, task: str, items: list, results: list[Result], options: Options, sources) -> list:
        source, target = task.split("->")
        if target == "audio" and source == "midi":
            return self._midi_to_audio(items, results, options)
        chunks, plans = [], []
        for i, x in enumerate(items):
            made = self._guard(results[i], self._chunk, source, target, x, i, options, sources[i])
            chunks += made[0] if made else []
            plans.append(made[1] if made else None)
        self._run(task, chunks, options)
        out = []
        for i, x in enumerate(items):
            if plans[i] is None:
                out.append(None)
                continue
            mine = sorted((c for c in chunks if c.item == i), key=lambda c: c.order)
            results[i].chunks += len(mine)
            value, invalid, notes = self._assemble(target, mine, plans[i], options)
            results[i].invalid_tokens += invalid
            results[i].warnings.extend(f"{sources[i]}: {n}" for n in notes)
            out.append(value)
        return out

    def _budget(self, options: Options) -> int:
        return min(options.caps.source, self.config.max_positions) - 1  # the task token

    def _chunk(self, source: str, target: str, x, item: int, options: Options, name: str):
        """Source chunks of one item, and what assembling its outputs needs."""
        from unimusic.multitask import audio_frames, image_cells, slot0

        vocab, caps, budget = self.vocab, options.caps, self._budget(options)
        if source == "image":
            from unimusic import io_files as io

            if isinstance(x, io.Pages):  # engraved by a converter hop: find its systems
                x, _ = page_systems(x.images, source=name)
                if not x:
                    raise InputError(name, "no staff systems found in the image")
            chunks = []
            for s, crop in enumerate(x):
                codes = self._image_codes(crop, name)
                cells = image_cells(vocab, codes, source=f"{name} system {s + 1}")
                w, h = cells.shape[:2]
                if h > vocab.config.image_max_rows:
                    raise InputError(name, f"system {s + 1} is {h * IMAGE_PATCH} px tall after normalization; "
                                           f"the model reads at most {vocab.config.image_max_rows * IMAGE_PATCH}")
                for k, (c0, c1) in enumerate(image_chunks(w, h, barline_columns(crop), budget=budget)):
                    body = np.concatenate([slot0(vocab, [vocab.height_token(h)]), cells[c0:c1].reshape(-1, SLOTS)])
                    chunks.append(_Chunk(item=item, order=(s, k), body=body))
            return chunks, {"systems": len(x)}
        if source == "lmx":
            measures = split_measures(x)
            groups = group_measures([len(m) for m in measures], budget=budget)
            chunks = []
            for k, (m0, m1) in enumerate(groups):
                ids = vocab.lmx.encode([t for m in measures[m0:m1] for t in m], source=name)
                body = slot0(vocab, vocab.to_model("lmx", ids)[:budget])
                chunks.append(_Chunk(item=item, order=(k,), body=body))
            return chunks, {"groups": groups}
        if source == "audio":
            samples, rate = x
            from unimusic.render.synthesize import SILENCE

            if samples.size == 0 or float(np.max(np.abs(samples))) < SILENCE:
                return [], {"silent": True}  # nothing to hear: an empty result, not a model's guess
            codes = self._audio_codes(samples, rate, name)
            frames = audio_frames(vocab, codes, source=name)
            frame_rate = self.tokenizers.codec.config.frame_rate
            seconds = len(samples) / rate
            max_seconds = min(caps.max_seconds, (budget - 1) / frame_rate)
            windows = time_windows(seconds, max_seconds=max_seconds)
            chunks = []
            for k, (t0, t1) in enumerate(windows):
                f0, f1 = int(math.floor(t0 * frame_rate + 1e-9)), int(math.ceil(t1 * frame_rate - 1e-9))
                chunks.append(_Chunk(item=item, order=(k,), body=frames[f0 : min(f1, f0 + budget)]))
            return chunks, {"windows": windows, "seconds": seconds}
        # midi
        notes = vocab.midi.normalize(list(x))
        seconds = max((n.end for n in notes), default=0.0)
        windows = time_windows(max(seconds, 0.01), max_seconds=min(caps.max_seconds, vocab.midi.config.window_seconds))
        chunks = []
        for k, (t0, t1) in enumerate(windows):
            chunks.append(_Chunk(item=item, order=(k,), body=self._midi_body(notes, t0, t1, budget)))
        return chunks, {"windows": windows, "seconds": seconds}

    def _midi_body(self, notes: Sequence, t0: float, t1: float, budget: int) -> np.ndarray:
        """The source stream of the MIDI window ``[t0, t1)`` (notes sounding at ``t0`` in its tie section)."""
        from unimusic.multitask import slot0

        ids = self.vocab.midi.encode_window([n for n in notes if n.start < t1 and n.end >= t0], start=t0, end=t1)
        return slot0(self.vocab, self.vocab.to_model("midi", ids)[:budget])

    def _max_steps(self, target: str, options: Options, prefix: int = 0) -> int:
        return max(1, min(options.caps.target, self.config.max_positions) - 1 - prefix)

    def _run(self, task: str, chunks: list[_Chunk], options: Options) -> None:
        """Generate every chunk's target, in batches of similar length."""
        import torch

        from unimusic.multitask import source_stream

        if not chunks:
            return
        source, target = task.split("->")
        order = sorted(range(len(chunks)), key=lambda i: len(chunks[i].body))
        batches = [order[i : i + options.batch_size] for i in range(0, len(order), options.batch_size)]
        bar = _progress(len(chunks), f"{task}", options.progress)
        generator = torch.Generator(device=self.device).manual_seed(options.seed) if options.strategy == "sample" else None
        pad = self.vocab.pad
        strategy = options.strategy
        if strategy == "beam" and target in ("image", "audio"):
            strategy = "greedy"  # beam search is for single-stream targets
        for batch in batches:
            streams = [source_stream(self.vocab, self.rules, task, chunks[i].body) for i in batch]
            s_max = max(len(s) for s, _ in streams)
            src = np.full((len(batch), s_max, SLOTS), pad, dtype=np.int64)
            pos = np.zeros((len(batch), s_max, 2), dtype=np.int64)
            mask = np.zeros((len(batch), s_max), dtype=bool)
            for j, (s, p) in enumerate(streams):
                src[j, : len(s)], pos[j, : len(s)], mask[j, : len(s)] = s, p, True
            prefixes = [chunks[i].prefix for i in batch]
            longest = max((len(p) for p in prefixes if p is not None), default=0)
            with torch.no_grad():
                generated = self.model.generate(
                    src=src, src_pos=pos, src_mask=mask, source=source, target=target,
                    max_steps=self._max_steps(target, options, longest), strategy=strategy,
                    temperature=options.temperature, top_p=options.top_p, beam_size=options.beam_size,
                    prefix=prefixes if longest else None, generator=generator)
            for i, g in zip(batch, generated):
                chunks[i].out, chunks[i].stopped = g.tokens, bool(g.stopped)
            bar.update(len(batch))
        bar.close()

    def _assemble(self, target: str, chunks: list[_Chunk], plan: dict, options: Options):
        """One item's value from its generated chunks: (value, invalid ids, warnings)."""
        from unimusic.multitask import decode_target

        vocab = self.vocab
        if plan.get("silent"):
            return [], 0, ["silent audio: the result is empty"]
        invalid, notes = 0, []
        unstopped = sum(not c.stopped for c in chunks)
        if unstopped:
            notes.append(f"{unstopped} of {len(chunks)} chunk(s) hit the length limit before EOS")
        if target == "lmx":
            tokens: list[str] = []
            for c in chunks:
                ids, bad = decode_target(vocab, "lmx", c.out)
                invalid += bad
                tokens += [vocab.lmx.tokens[i] for i in ids]
            return tokens, invalid, notes
        if target == "midi":
            if "windows" in plan:  # time-sliced sources: stitch windows with their tie sections
                windows = []
                for c, (t0, t1) in zip(chunks, plan["windows"]):
                    ids, bad = vocab.from_model(_until_eos(c.out[:, 0], vocab.eos).tolist(), "midi")
                    invalid += bad
                    windows.append((t0, ids))
                decoded, stats = vocab.midi.decode(windows)
                invalid += stats.invalid_tokens
                end = plan["windows"][-1][1] if plan["windows"] else 0.0
                return [dataclasses.replace(n, end=min(n.end, end)) for n in decoded if n.start < end], invalid, notes
            # score sources (image systems, LMX groups): windows laid end to end
            out, offset = [], 0.0
            for c in chunks:
                got, bad = decode_target(vocab, "midi", c.out)
                invalid += bad
                out += [dataclasses.replace(n, start=n.start + offset, end=n.end + offset) for n in got]
                offset += max((n.end for n in got), default=0.0)
            return out, invalid, notes
        if target == "image":
            crops = []
            for c in chunks:
                codes, bad = decode_target(vocab, "image", c.out)
                invalid += bad
                if codes.shape[1] and codes.shape[2]:
                    crops.append(self._image_from_codes(codes))
            if not crops:
                notes.append("the model generated no image")
            return crops, invalid, notes
        # audio from score sources: one part per chunk, laid end to end in reading order
        codec = self.tokenizers.codec
        parts, t = [], 0.0
        for c in chunks:
            codes, bad = decode_target(vocab, "audio", c.out)
            invalid += bad
            if codes.shape[1]:
                audio = self._audio_from_codes(codes)
                parts.append((t, audio))
                t += max(0.0, len(audio) / codec.sample_rate - options.join_seconds)
        return (crossfade_join(parts, sample_rate=codec.sample_rate, fade=options.join_seconds), codec.sample_rate), \
            invalid, notes

    def _midi_to_audio(self, items: list, results: list[Result], options: Options) -> list:
        """MIDI -> audio window by window: each window's decoder prefix is the codes generated
        just before it starts; windows overlap by ``overlap_seconds`` and are crossfaded."""
        from unimusic.multitask import audio_frames, decode_target

        vocab, codec = self.vocab, self.tokenizers.codec
        frame_rate = codec.config.frame_rate
        prefix_frames = options.caps.prefix_frames
        max_frames = self._max_steps("audio", options, prefix_frames) - 1
        max_seconds = min(options.caps.max_seconds, vocab.midi.config.window_seconds, max_frames / frame_rate)
        plans, generated = [], []
        for x in items:
            notes = vocab.midi.normalize(list(x))
            seconds = max(max((n.end for n in notes), default=0.0), 0.01)
            plans.append((notes, time_windows(seconds, max_seconds=max_seconds, overlap=options.overlap_seconds)))
            generated.append([])  # (t0, codes (L, n)) per window
        rounds = max(len(w) for _, w in plans)
        budget = self._budget(options)
        for k in range(rounds):
            chunks = []
            for i, (notes, windows) in enumerate(plans):
                if k >= len(windows):
                    continue
                t0, t1 = windows[k]
                body = self._midi_body(notes, t0, t1, budget)
                prefix = None
                if generated[i] and prefix_frames:
                    p0, codes = generated[i][-1]
                    upto = int(round((t0 - p0) * frame_rate))  # frames before this window's start
                    if upto > 0:
                        context = codes[:, max(0, upto - prefix_frames) : upto]
                        prefix = audio_frames(vocab, context)[:, : vocab.config.audio_codebooks]
                chunks.append(_Chunk(item=i, order=(k,), body=body, prefix=prefix))
            self._run("midi->audio", chunks, options)
            for c in chunks:
                codes, bad = decode_target(vocab, "audio", c.out)
                results[c.item].invalid_tokens += bad
                results[c.item].chunks += 1
                if not c.stopped:
                    results[c.item].warnings.append(f"window {k + 1} hit the length limit before EOS")
                t0, t1 = plans[c.item][1][k]
                generated[c.item].append((t0, codes[:, : int(math.ceil((t1 - t0) * frame_rate))]))
        out = []
        for i, windows in enumerate(generated):
            parts = []
            for (t0, codes), (_, t1) in zip(windows, plans[i][1]):
                audio = self._audio_from_codes(codes)
                n = int(round((t1 - t0) * codec.sample_rate))
                if len(audio) < n:  # the model stopped early: the rest of its window is silence
                    audio = np.concatenate([audio, np.zeros(n - len(audio), dtype=np.float32)])
                parts.append((t0, audio[:n]))
            out.append((crossfade_join(parts, sample_rate=codec.sample_rate, fade=options.overlap_seconds),
                        codec.sample_rate))
        return out

    # -- tokenizer calls ------------------------------------------------------------------
    def _image_codes(self, crop: np.ndarray, name: str) -> np.ndarray:
        import torch

        crop = np.asarray(crop)
        if crop.ndim != 2 or crop.shape[0] % IMAGE_PATCH or crop.shape[1] % IMAGE_PATCH:
            raise InputError(name, f"a system crop must be 2-D with sides multiples of {IMAGE_PATCH}, got {crop.shape}")
        with torch.no_grad():
            return self.tokenizers.image_model.encode(crop[None])[0].cpu().numpy()

    def _image_from_codes(self, codes: np.ndarray) -> np.ndarray:
        from unimusic.models.rqvae import to_uint8

        model = self.tokenizers.image_model
        k = model.codebooks
        full = np.zeros((k, codes.shape[1], codes.shape[2]), dtype=np.int64)
        full[: min(k, len(codes))] = codes[:k]
        return to_uint8(model.decode(full[None]))[0]

    def _audio_codes(self, samples: np.ndarray, rate: int, name: str) -> np.ndarray:
        if samples.size == 0:
            raise InputError(name, "empty audio")
        return np.asarray(self.tokenizers.codec.encode(samples, rate)).astype(np.int64)

    def _audio_from_codes(self, codes: np.ndarray) -> np.ndarray:
        if codes.shape[1] == 0:
            return np.zeros(0, dtype=np.float32)
        return np.asarray(self.tokenizers.codec.decode(codes), dtype=np.float32)


# -- helpers ---------------------------------------------------------------------------------


def _until_eos(ids: np.ndarray, eos: int) -> np.ndarray:
    ids = np.asarray(ids)
    hit = np.flatnonzero(ids == eos)
    return ids[: hit[0]] if len(hit) else ids


def split_measures(tokens: Sequence[str]) -> list[list[str]]:
    """LMX tokens cut before every ``measure`` token (leading tokens stay with the first measure)."""
    out: list[list[str]] = []
    for t in tokens:
        if t == "measure" and out and any(x == "measure" for x in out[-1]):
            out.append([t])
        elif not out:
            out.append([t])
        else:
            out[-1].append(t)
    return out


def group_measures(lengths: Sequence[int], *, budget: int) -> list[tuple[int, int]]:
    """Consecutive measure groups ``[m0, m1)`` of at most ``budget`` tokens (a longer measure alone)."""
    groups, start, used = [], 0, 0
    for i, n in enumerate(lengths):
        if i > start and used + n > budget:
            groups.append((start, i))
            start, used = i, 0
        used += n
    if lengths:
        groups.append((start, len(lengths)))
    return groups


def stack_systems(crops: Sequence[np.ndarray], *, gap: int = 16) -> np.ndarray:
    """One page: system crops (or pages) stacked top to bottom, left aligned, white elsewhere."""
    crops = [np.asarray(c, dtype=np.uint8) for c in crops if np.asarray(c).size]
    if not crops:
        return np.full((IMAGE_PATCH, IMAGE_PATCH), 255, dtype=np.uint8)
    if len(crops) == 1:
        return crops[0]
    width = max(c.shape[1] for c in crops)
    height = sum(c.shape[0] for c in crops) + gap * (len(crops) - 1)
    page = np.full((height, width), 255, dtype=np.uint8)
    y = 0
    for c in crops:
        page[y : y + c.shape[0], : c.shape[1]] = c
        y += c.shape[0] + gap
    return page


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool):
    if not enabled or total < 2:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="chunk", leave=False)


# -- checkpoints and tokenizers -----------------------------------------------------------------


SHIPPED_TRANSLATOR = "translator-tiny"
REPRODUCE_TRANSLATOR = ("unimusic train --tokens artifacts/tokens --preset learn --name translator-tiny "
                        "--export unimusic/weights/translator-tiny")


def shipped_translator_path():
    """Path (no suffix) of the translator shipped in the package."""
    from unimusic.models.shipped import WEIGHTS_DIR

    path = WEIGHTS_DIR / SHIPPED_TRANSLATOR
    if not (path.with_suffix(".safetensors").is_file() and path.with_suffix(".json").is_file()):
        raise InputError(str(path), f"the shipped translator is missing; rebuild it with `{REPRODUCE_TRANSLATOR}`")
    return path


def load_tokenizers_for(meta: dict, *, source: str, device: str = "cpu"):
    """The tokenizers a checkpoint records (by hash): the recorded weights path if it still
    holds that hash, else the shipped weights if they do; InputError otherwise."""
    import os

    from unimusic.models.shipped import shipped_path, tokenizer_hash
    from unimusic.tokenize import Tokenizers

    recorded = meta.get("tokenizers") or {}
    chosen = {}
    for modality in ("image", "audio"):
        entry = recorded.get(modality)
        if not entry:
            chosen[modality] = None
            continue
        want = entry.get("hash")
        candidates = [entry.get("weights"), str(shipped_path(modality))]
        for cand in candidates:
            if cand and os.path.isfile(str(cand) + ".safetensors") and tokenizer_hash(cand) == want:
                chosen[modality] = cand
                break
        else:
            raise InputError(source, f"needs the {modality} tokenizer {want} it was trained with "
                                     f"(recorded at {entry.get('weights')}); neither it nor the shipped one matches")
    if not any(chosen.values()):
        raise InputError(source, "the checkpoint records no tokenizers")
    with warnings_mod.catch_warnings():
        warnings_mod.simplefilter("ignore")
        return Tokenizers.load(chosen["image"], chosen["audio"], device=device)

