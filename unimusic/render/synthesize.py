"""Score MIDI -> audio with FluidSynth (44.1 kHz mono float32), with seeded augmentation.

Augmentation is the default (DESIGN.md section 6): every piece is rendered with a
soundfont, tempo scale, velocity scale and reverb amount drawn deterministically
from ``(seed, piece_id)`` (:func:`draw_augmentation`), so a rerun of a corpus
build renders exactly the same audio.

Rendering drives libfluidsynth directly (not ``PrettyMIDI.fluidsynth``):

* float output (``fluid_synth_write_float``): no int16 clipping or dither inside
  FluidSynth; the result is peak-normalized to :data:`PEAK` afterwards;
* one pass for the whole score, each instrument on its own MIDI channel (drum
  instruments on channels 9, 25, ... with bank 128), so rendering time grows with
  the music's length, not with the number of parts;
* FluidSynth's own reverb and chorus are off; reverb is our own deterministic
  convolution (:func:`add_reverb`);
* after the MIDI's end, releases (and notes held by a pedal) ring out naturally
  for up to :data:`RING_OUT_SECONDS`, then pedals are lifted and every note is
  released; rendering stops when no voice sounds (at most :data:`MAX_TAIL_SECONDS`
  after the end), so the output covers the last note's release;
* every piece gets a fresh synthesizer (FluidSynth voices keep a little state
  from note to note, so reusing one would make the audio depend on what was
  rendered before); the loaded soundfont is cached per thread and lent to it
  (loading FluidR3_GM takes ~0.5 s, a fresh synthesizer ~3 ms).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import math
import numbers
import os
import random
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np

from unimusic.errors import InputError
from unimusic.tokens.midi import load_midi  # the project's one MIDI loader

if TYPE_CHECKING:  # imported lazily: importing this module stays cheap
    import pretty_midi

FLUIDR3_GM = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
# Output peak after normalization: below full scale, so int16/FLAC never clips.
PEAK = 0.99
# After the MIDI's end, voices ring out on their own (releases, pedal) for up to
# RING_OUT_SECONDS; then pedals are lifted and notes released; rendering stops when
# no voice sounds, at most MAX_TAIL_SECONDS after the end.
RING_OUT_SECONDS = 4.0
MAX_TAIL_SECONDS = 8.0
# Trailing samples quieter than this (relative to the peak, -80 dB) are trimmed,
# never before the MIDI's end time.
SILENCE = 1e-4
# FluidSynth renders in blocks of this many samples.
_BLOCK = 64
# Each instrument gets its own channel; drum channels are those with ch % 16 == 9.
_MIDI_CHANNELS = 256
_POLYPHONY = 1024
# Reverb impulse response: exponentially decaying noise from a fixed seed.
_REVERB_SEED = 20250519
_REVERB_RT60 = 1.2  # seconds to decay by 60 dB
_REVERB_SECONDS = 1.5
_REVERB_PREDELAY = 0.012

MidiInput = Union[bytes, bytearray, str, os.PathLike, "pretty_midi.PrettyMIDI"]


# -- configuration --------------------------------------------------------------


def _check_range(name: str, value, lo: float, hi: float | None = None, *, positive: bool = False) -> tuple[float, float]:
    src = "SynthConfig"
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise InputError(src, f"{name} must be a (low, high) pair, got {value!r}")
    a, b = value
    for x in (a, b):
        if not isinstance(x, numbers.Real) or isinstance(x, bool) or not math.isfinite(x):
            raise InputError(src, f"{name} bounds must be finite numbers, got {value!r}")
    if a > b:
        raise InputError(src, f"{name} low bound {a} exceeds high bound {b}")
    if positive and a <= 0:
        raise InputError(src, f"{name} must be positive, got {value!r}")
    if a < lo or (hi is not None and b > hi):
        raise InputError(src, f"{name} must lie in [{lo}, {hi}], got {value!r}")
    return float(a), float(b)


@dataclasses.dataclass(frozen=True)
class SynthConfig:
    """How pieces are rendered. ``soundfonts=()`` means :func:`default_soundfonts`."""

    sample_rate: int = 44100
    soundfonts: tuple[str, ...] = ()
    tempo_range: tuple[float, float] = (0.9, 1.1)  # >1 plays faster
    velocity_range: tuple[float, float] = (0.8, 1.15)
    reverb_range: tuple[float, float] = (0.0, 0.25)  # wet mix
    augment: bool = True

    def __post_init__(self):
        src = "SynthConfig"
        if not isinstance(self.sample_rate, numbers.Integral) or isinstance(self.sample_rate, bool):
            raise InputError(src, f"sample_rate must be an integer, got {self.sample_rate!r}")
        if not 8000 <= self.sample_rate <= 192000:
            raise InputError(src, f"sample_rate {self.sample_rate} outside 8000..192000")
        if isinstance(self.soundfonts, str) or not all(isinstance(s, (str, os.PathLike)) for s in self.soundfonts):
            raise InputError(src, f"soundfonts must be a tuple of paths, got {self.soundfonts!r}")
        object.__setattr__(self, "soundfonts", tuple(os.fspath(s) for s in self.soundfonts))
        object.__setattr__(self, "tempo_range", _check_range("tempo_range", self.tempo_range, 0.1, 10.0, positive=True))
        object.__setattr__(
            self, "velocity_range", _check_range("velocity_range", self.velocity_range, 0.0, 10.0, positive=True)
        )
        object.__setattr__(self, "reverb_range", _check_range("reverb_range", self.reverb_range, 0.0, 1.0))
        if self.augment not in (True, False):
            raise InputError(src, f"augment must be a bool, got {self.augment!r}")

    def resolved_soundfonts(self) -> tuple[str, ...]:
        """The soundfonts to draw from: the configured ones (checked) or the defaults."""
        if not self.soundfonts:
            return default_soundfonts()
        for sf in self.soundfonts:
            check_soundfont(sf)
        return self.soundfonts


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """One piece's rendering choices (recorded next to the audio it produced)."""

    soundfont: str
    tempo_scale: float  # >1 plays faster: every time is divided by it
    velocity_scale: float
    reverb: float  # wet mix 0..1

    def describe(self) -> dict:
        d = dataclasses.asdict(self)
        d["soundfont"] = Path(self.soundfont).name
        return d


def _pretty_midi_soundfont() -> str | None:
    try:
        import pretty_midi
    except ImportError:  # pragma: no cover - pretty_midi is a dependency
        return None
    path = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
    return str(path) if path.is_file() else None


def default_soundfonts() -> tuple[str, ...]:
    """FluidR3_GM (Debian's fluid-soundfont-gm) if present, and pretty_midi's TimGM6mb."""
    found = [p for p in (FLUIDR3_GM, _pretty_midi_soundfont()) if p and Path(p).is_file()]
    if not found:
        raise InputError(
            "default soundfonts",
            f"none found (looked for {FLUIDR3_GM} and pretty_midi's TimGM6mb.sf2); "
            "install fluid-soundfont-gm or pass SynthConfig(soundfonts=...)",
        )
    return tuple(found)


def check_soundfont(path) -> str:
    """The path as a string if it names a readable SoundFont 2 file; else ``InputError``."""
    src = os.fspath(path) if isinstance(path, (str, os.PathLike)) else repr(path)
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(src, "soundfont must be a path")
    p = Path(path)
    if not p.exists():
        raise InputError(src, "no such soundfont file")
    if not p.is_file():
        raise InputError(src, "soundfont path is not a file")
    try:
        with open(p, "rb") as f:
            head = f.read(12)
    except OSError as exc:
        raise InputError(src, f"cannot read soundfont ({exc.strerror or exc})") from None
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"sfbk":
        raise InputError(src, "not a SoundFont 2 (.sf2) file")
    return src


# -- augmentation ----------------------------------------------------------------


def draw_augmentation(piece_id: str, *, seed: int = 0, config: SynthConfig = SynthConfig()) -> Augmentation:
    """The piece's rendering choices: a function of (seed, piece_id, config) only.

    ``augment=False`` gives the identity with the first soundfont.
    """
    if not isinstance(piece_id, str):
        raise InputError(repr(piece_id), "piece id must be a string")
    soundfonts = config.resolved_soundfonts()
    if not config.augment:
        return Augmentation(soundfont=soundfonts[0], tempo_scale=1.0, velocity_scale=1.0, reverb=0.0)
    digest = hashlib.sha256(f"unimusic-synth\0{int(seed)}\0{piece_id}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:16], "big"))
    soundfont = soundfonts[rng.randrange(len(soundfonts))]
    tempo = rng.uniform(*config.tempo_range)
    velocity = rng.uniform(*config.velocity_range)
    reverb = rng.uniform(*config.reverb_range)
    return Augmentation(soundfont=soundfont, tempo_scale=tempo, velocity_scale=velocity, reverb=reverb)


def apply_augmentation(midi: MidiInput, aug: Augmentation) -> "pretty_midi.PrettyMIDI":
    """A new ``PrettyMIDI`` with the augmentation's tempo and velocity applied.

    Every time (notes, control changes, pitch bends, time/key signatures, lyrics,
    text, the tempo map) is divided by ``tempo_scale``; velocities are multiplied
    by ``velocity_scale``, rounded and clipped to 1..127. The input is not changed.
    """
    src = "Augmentation"
    for field in ("tempo_scale", "velocity_scale"):
        v = getattr(aug, field)
        if not isinstance(v, numbers.Real) or not math.isfinite(v) or v <= 0:
            raise InputError(src, f"{field} must be a positive number, got {v!r}")
    pm = copy.deepcopy(load_midi(midi))
    s = float(aug.tempo_scale)
    if s != 1.0:
        for inst in pm.instruments:
            for n in inst.notes:
                n.start, n.end = n.start / s, n.end / s
            for e in inst.control_changes:
                e.time = e.time / s
            for e in inst.pitch_bends:
                e.time = e.time / s
        for events in (pm.time_signature_changes, pm.key_signature_changes, pm.lyrics, pm.text_events):
            for e in events:
                e.time = e.time / s
        # The tempo map: seconds per tick shrink by the same factor, so writing
        # the result to a file keeps the new times.
        pm._tick_scales = [(tick, scale / s) for tick, scale in pm._tick_scales]
        try:
            n_ticks = len(pm._PrettyMIDI__tick_to_time)
            pm._update_tick_to_time(max(0, n_ticks - 1))
        except AttributeError:  # pragma: no cover - pretty_midi internals changed
            pass
    v = float(aug.velocity_scale)
    if v != 1.0:
        for inst in pm.instruments:
            for n in inst.notes:
                n.velocity = int(min(127, max(1, round(n.velocity * v))))
    return pm


# -- FluidSynth ------------------------------------------------------------------

_lib = None  # ctypes entry points pyfluidsynth does not wrap
_cache = threading.local()
_CACHE_SIZE = 3
_SYNTH_SETTINGS = {
    "synth.reverb.active": 0,
    "synth.chorus.active": 0,
    "synth.polyphony": _POLYPHONY,
    "synth.cpu-cores": 1,
}
_FLUID_WARN = 2


def _fluidsynth():
    """The pyfluidsynth module, with the extra libfluidsynth functions bound once."""
    global _lib
    try:
        import fluidsynth
    except (ImportError, OSError) as exc:
        raise InputError("fluidsynth", f"pyfluidsynth or libfluidsynth is not installed ({exc})") from None
    if _lib is None:
        from ctypes import c_int, c_void_p

        lib = {
            "write_float": fluidsynth.cfunc(
                "fluid_synth_write_float",
                c_int,
                ("synth", c_void_p, 1),
                ("len", c_int, 1),
                ("lout", c_void_p, 1),
                ("loff", c_int, 1),
                ("lincr", c_int, 1),
                ("rout", c_void_p, 1),
                ("roff", c_int, 1),
                ("rincr", c_int, 1),
            ),
            "add_sfont": fluidsynth.cfunc(
                "fluid_synth_add_sfont", c_int, ("synth", c_void_p, 1), ("sfont", c_void_p, 1)
            ),
            "remove_sfont": fluidsynth.cfunc(
                "fluid_synth_remove_sfont", c_int, ("synth", c_void_p, 1), ("sfont", c_void_p, 1)
            ),
            "get_sfont_by_id": fluidsynth.cfunc(
                "fluid_synth_get_sfont_by_id", c_void_p, ("synth", c_void_p, 1), ("id", c_int, 1)
            ),
            "set_log_function": fluidsynth.cfunc(
                "fluid_set_log_function", c_void_p, ("level", c_int, 1), ("fun", c_void_p, 1), ("data", c_void_p, 1)
            ),
        }
        missing = [name for name, fn in lib.items() if fn is None]
        if missing:  # pragma: no cover - all exist since FluidSynth 2.0
            raise InputError("fluidsynth", f"libfluidsynth lacks {', '.join(missing)} (need FluidSynth >= 2.0)")
        # FluidSynth warns on stderr for every channel without a preset (e.g. when a
        # soundfont is detached); programs we need are checked explicitly instead.
        lib["set_log_function"](_FLUID_WARN, None, None)
        _lib = lib
    return fluidsynth


class _LoadedSoundFont:
    """A soundfont loaded once (per thread) and lent to a fresh synthesizer per piece.

    A fresh synthesizer per piece makes rendering independent of what was
    rendered before (FluidSynth's voices keep a little state between notes), and
    lending the loaded soundfont avoids re-reading it (~0.5 s for FluidR3_GM).
    """

    def __init__(self, soundfont: str):
        fluidsynth = _fluidsynth()
        self.holder = fluidsynth.Synth(gain=0.2, samplerate=44100.0, channels=16, **_SYNTH_SETTINGS)
        sfid = self.holder.sfload(soundfont)
        if sfid < 0:
            self.holder.delete()
            raise InputError(soundfont, "FluidSynth could not load this soundfont")
        self.sfont = _lib["get_sfont_by_id"](self.holder.synth, sfid)
        if not self.sfont:  # pragma: no cover
            self.holder.delete()
            raise InputError(soundfont, "FluidSynth loaded this soundfont but cannot return it")

    def delete(self) -> None:
        self.holder.delete()


class _Synth:
    """A fresh FluidSynth synthesizer playing a lent soundfont, rendering float mono."""

    def __init__(self, loaded: _LoadedSoundFont, sample_rate: int):
        fluidsynth = _fluidsynth()
        self.loaded = loaded
        self.fs = fluidsynth.Synth(gain=0.2, samplerate=float(sample_rate), channels=_MIDI_CHANNELS, **_SYNTH_SETTINGS)
        self.sfid = _lib["add_sfont"](self.fs.synth, loaded.sfont)
        if self.sfid < 0:  # pragma: no cover
            self.fs.delete()
            raise InputError("fluidsynth", "could not attach a loaded soundfont to a new synthesizer")

    def render(self, n: int) -> np.ndarray:
        """``n`` frames as float32 mono (mean of left and right)."""
        out = np.zeros((n, 2), dtype=np.float32)
        if n > 0:
            _lib["write_float"](self.fs.synth, n, out.ctypes.data, 0, 2, out.ctypes.data, 1, 2)
        return out.mean(axis=1, dtype=np.float32)

    def close(self) -> None:
        # Detach the lent soundfont first: deleting a synthesizer frees its soundfonts.
        self.fs.system_reset()
        _lib["remove_sfont"](self.fs.synth, self.loaded.sfont)
        self.fs.delete()


def _loaded_soundfont(soundfont: str) -> _LoadedSoundFont:
    st = os.stat(soundfont)
    key = (os.path.realpath(soundfont), st.st_mtime_ns, st.st_size)
    cache = getattr(_cache, "soundfonts", None)
    if cache is None:
        cache = _cache.soundfonts = OrderedDict()
    loaded = cache.pop(key, None)
    if loaded is None:
        loaded = _LoadedSoundFont(soundfont)
        while len(cache) >= _CACHE_SIZE:
            _, old = cache.popitem(last=False)
            old.delete()
    cache[key] = loaded
    return loaded


def clear_soundfont_cache() -> None:
    """Unload this thread's cached soundfonts (they are reloaded on next use)."""
    cache = getattr(_cache, "soundfonts", None) or {}
    while cache:
        _, loaded = cache.popitem()
        loaded.delete()


# Event order at one sample: note-offs, then controls and bends, then note-ons
# (a repeated note is released before it is struck again).
_OFF, _CC, _BEND, _ON = 0, 1, 2, 3


def _channels(pm, label: str) -> list[int]:
    melodic = [c for c in range(_MIDI_CHANNELS) if c % 16 != 9]
    drums = [c for c in range(_MIDI_CHANNELS) if c % 16 == 9]
    out = []
    for inst in pm.instruments:
        pool = drums if inst.is_drum else melodic
        if not pool:
            kind = "drum" if inst.is_drum else "pitched"
            raise InputError(label, f"too many {kind} instruments to render (more than {_MIDI_CHANNELS // 16} drum or "
                             f"{_MIDI_CHANNELS - _MIDI_CHANNELS // 16} pitched instruments)")
        out.append(pool.pop(0))
    return out


def _render_fluidsynth(pm, soundfont: str, sample_rate: int, label: str) -> np.ndarray:
    channels = _channels(pm, label)
    synth = _Synth(_loaded_soundfont(soundfont), sample_rate)
    fs = synth.fs
    chunks = []
    try:
        events = []
        for inst, ch in zip(pm.instruments, channels):
            if inst.is_drum:
                # Prefer the drum kit numbered like the program; fall back to the standard kit.
                if fs.program_select(ch, synth.sfid, 128, int(inst.program)) < 0:
                    fs.program_select(ch, synth.sfid, 128, 0)
            elif fs.program_select(ch, synth.sfid, 0, int(inst.program)) < 0:
                fs.program_select(ch, synth.sfid, 0, 0)
            for n in inst.notes:
                events.append((round(n.start * sample_rate), _ON, ch, int(n.pitch), int(n.velocity)))
                events.append((round(n.end * sample_rate), _OFF, ch, int(n.pitch), 0))
            for c in inst.control_changes:
                events.append((round(c.time * sample_rate), _CC, ch, int(c.number), int(c.value)))
            for b in inst.pitch_bends:
                events.append((round(b.time * sample_rate), _BEND, ch, int(b.pitch), 0))
        events.sort()
        end_sample = max(0, round(pm.get_end_time() * sample_rate))
        pos = 0
        for t, kind, ch, a, b in events:
            t = max(0, t)
            if t > pos:
                chunks.append(synth.render(t - pos))
                pos = t
            if kind == _ON:
                fs.noteon(ch, a, b)
            elif kind == _OFF:
                fs.noteoff(ch, a)
            elif kind == _CC:
                fs.cc(ch, a, b)
            else:
                fs.pitch_bend(ch, a)
        if end_sample > pos:
            chunks.append(synth.render(end_sample - pos))
            pos = end_sample
        # The tail: let releases (and notes held by a pedal) ring out naturally, then
        # lift the pedals and release everything, until no voice sounds.
        step = max(_BLOCK, (sample_rate // 20) // _BLOCK * _BLOCK)  # ~50 ms
        ring_out, max_tail = int(RING_OUT_SECONDS * sample_rate), int(MAX_TAIL_SECONDS * sample_rate)
        tail, released = 0, False
        while tail < max_tail and fs.get_active_voice_count() > 0:
            if not released and tail >= ring_out:
                for ch in sorted(set(channels)):
                    fs.cc(ch, 64, 0)
                    fs.cc(ch, 66, 0)
                    fs.all_notes_off(ch)
                released = True
            chunks.append(synth.render(step))
            tail += step
    finally:
        synth.close()
    audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    return _trim(audio, end_sample)


def _trim(audio: np.ndarray, min_len: int) -> np.ndarray:
    """Drop trailing near-silence (relative to the peak), keeping at least ``min_len`` samples."""
    if audio.size == 0:
        return np.zeros(min_len, dtype=np.float32)
    peak = float(np.max(np.abs(audio)))
    if peak == 0:
        return np.zeros(min_len, dtype=np.float32)
    loud = np.flatnonzero(np.abs(audio) > SILENCE * peak)
    n = max(min_len, int(loud[-1]) + 1 if loud.size else 0)
    if n > audio.size:
        audio = np.concatenate([audio, np.zeros(n - audio.size, dtype=np.float32)])
    return audio[:n]


# -- reverb ----------------------------------------------------------------------

_ir_cache: dict[int, np.ndarray] = {}


def reverb_ir(sample_rate: int) -> np.ndarray:
    """The fixed reverb impulse response: exponentially decaying noise (unit energy)."""
    ir = _ir_cache.get(sample_rate)
    if ir is None:
        rng = np.random.default_rng(_REVERB_SEED)
        n = int(_REVERB_SECONDS * sample_rate)
        t = np.arange(n) / sample_rate
        noise = rng.standard_normal(n)
        # Brighter early, darker late: white noise crossfades into low-passed noise
        # (an 8-sample moving average, rescaled to unit variance).
        smooth = np.convolve(noise, np.ones(8) / 8, mode="same")
        mix = np.clip(t / _REVERB_SECONDS, 0, 1)
        body = (1 - mix) * noise + mix * smooth * math.sqrt(8)
        envelope = np.exp(-6.907755 * t / _REVERB_RT60)  # -60 dB at RT60
        ir = body * envelope
        pre = int(_REVERB_PREDELAY * sample_rate)
        ir = np.concatenate([np.zeros(pre), ir])
        ir /= np.sqrt(np.sum(ir**2))
        ir = ir.astype(np.float32)
        _ir_cache[sample_rate] = ir
    return ir


def add_reverb(audio: np.ndarray, sample_rate: int, wet: float) -> np.ndarray:
    """``(1 - wet) * dry + wet * (dry convolved with the fixed IR)``; the output keeps the tail."""
    if not isinstance(wet, numbers.Real) or not math.isfinite(wet) or not 0 <= wet <= 1:
        raise InputError("reverb", f"wet mix must be in [0, 1], got {wet!r}")
    audio = np.asarray(audio, dtype=np.float32)
    if wet == 0 or audio.size == 0:
        return audio
    from scipy.signal import oaconvolve

    ir = reverb_ir(sample_rate)
    wet_sig = oaconvolve(audio.astype(np.float64), ir.astype(np.float64), mode="full")
    out = wet * wet_sig
    out[: audio.size] += (1 - wet) * audio
    return out.astype(np.float32)


# -- public rendering ------------------------------------------------------------


def synthesize(
    midi: MidiInput,
    *,
    soundfont: str,
    sample_rate: int = 44100,
    reverb: float = 0.0,
    name: str | None = None,
) -> np.ndarray:
    """Render MIDI (bytes, path or ``PrettyMIDI``) to float32 mono audio.

    The result is at least as long as the MIDI's end time and covers the release
    of its last notes (and the reverb tail), peak-normalized to :data:`PEAK`
    (all zeros if nothing sounds). A missing or invalid soundfont, or bad MIDI,
    raises ``InputError``.
    """
    soundfont = check_soundfont(soundfont)
    if not isinstance(sample_rate, numbers.Integral) or isinstance(sample_rate, bool) or not 8000 <= sample_rate <= 192000:
        raise InputError("sample_rate", f"must be an integer in 8000..192000, got {sample_rate!r}")
    if not isinstance(reverb, numbers.Real) or not math.isfinite(reverb) or not 0 <= reverb <= 1:
        raise InputError("reverb", f"wet mix must be in [0, 1], got {reverb!r}")
    pm = load_midi(midi, name=name)
    label = name or (os.fspath(midi) if isinstance(midi, (str, os.PathLike)) else "<MIDI>")
    end_time = pm.get_end_time()
    if not math.isfinite(end_time) or end_time > 24 * 3600:
        raise InputError(label, f"MIDI end time {end_time} s is not a usable length")
    audio = _render_fluidsynth(pm, soundfont, int(sample_rate), label)
    if reverb > 0:
        audio = _trim(add_reverb(audio, int(sample_rate), float(reverb)), audio.size)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak > 0:
        audio = audio * np.float32(PEAK / peak)
        # float32 rounding could land a hair above PEAK
        np.clip(audio, -PEAK, PEAK, out=audio)
    return audio.astype(np.float32, copy=False)


def render_augmented(
    midi: MidiInput, aug: Augmentation, *, sample_rate: int = 44100, name: str | None = None
) -> tuple[np.ndarray, "pretty_midi.PrettyMIDI"]:
    """Apply ``aug`` and synthesize: returns (audio, the MIDI that was played).

    The returned MIDI has the augmented timing and velocities: it is the
    reference that matches the audio.
    """
    pm = apply_augmentation(load_midi(midi, name=name), aug)
    audio = synthesize(pm, soundfont=aug.soundfont, sample_rate=sample_rate, reverb=aug.reverb, name=name)
    return audio, pm


# -- audio files -----------------------------------------------------------------


def quantize_int16(audio: np.ndarray) -> np.ndarray:
    """Float audio -> int16 as FLAC stores it: ``round(x * 32768)`` clipped to -32768..32767.

    ``decode_audio(encode_flac(x))`` is exactly ``quantize_int16(x) / 32768``.
    """
    a = np.asarray(audio, dtype=np.float64)
    return np.clip(np.round(a * 32768.0), -32768, 32767).astype(np.int16)


def encode_flac(audio: np.ndarray, sample_rate: int) -> bytes:
    """Mono (or (frames, channels)) float audio -> 16-bit FLAC bytes (lossless for int16 PCM).

    Samples are quantized by :func:`quantize_int16` (values beyond [-1, 1) clip).
    """
    import soundfile as sf

    a = np.asarray(audio)
    if a.ndim not in (1, 2) or not np.issubdtype(a.dtype, np.number):
        raise InputError("audio", f"expected a 1-D or (frames, channels) numeric array, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise InputError("audio", "contains NaN or infinite samples")
    if not isinstance(sample_rate, numbers.Integral) or not 1 <= sample_rate <= 655350:
        raise InputError("sample_rate", f"invalid sample rate {sample_rate!r}")
    if a.shape[0] == 0:
        raise InputError("audio", "is empty (0 samples): FLAC cannot hold it")
    pcm = quantize_int16(a)
    buf = io.BytesIO()
    sf.write(buf, pcm, int(sample_rate), format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def decode_audio(data: bytes, *, name: str | None = None) -> tuple[np.ndarray, int]:
    """Audio file bytes (FLAC, WAV, OGG, MP3 -- whatever libsndfile reads) -> (float32 mono, rate).

    Several channels are averaged to mono.
    """
    import soundfile as sf

    label = name or "<audio bytes>"
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputError(label, f"expected bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise InputError(label, "audio file is empty")
    try:
        audio, sr = sf.read(io.BytesIO(bytes(data)), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        raise InputError(label, f"unreadable audio ({str(exc).strip() or type(exc).__name__})") from None
    mono = audio[:, 0] if audio.shape[1] == 1 else audio.mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32), int(sr)


def cut_segment(audio: np.ndarray, sample_rate: int, *, start: float, end: float) -> np.ndarray:
    """Samples ``round(start*sr) .. round(end*sr)``, zero-padded past the audio's end.

    The length is exactly ``round(end*sr) - round(start*sr)``, so a segment's
    duration is ``end - start`` within one sample and adjacent segments tile.
    """
    for label, t in (("start", start), ("end", end)):
        if not isinstance(t, numbers.Real) or isinstance(t, bool) or not math.isfinite(t):
            raise InputError(f"segment {label}", f"{t!r} is not a finite number")
    if start < 0:
        raise InputError("segment start", f"{start} s is negative")
    if end < start:
        raise InputError("segment", f"end {end} s is before start {start} s")
    a = np.asarray(audio)
    if a.ndim != 1:
        raise InputError("audio", f"expected mono (1-D) audio, got shape {a.shape}")
    i0, i1 = int(round(start * sample_rate)), int(round(end * sample_rate))
    out = np.zeros(i1 - i0, dtype=a.dtype if a.size else np.float32)
    have = a[i0:i1]
    out[: have.size] = have
    return out
