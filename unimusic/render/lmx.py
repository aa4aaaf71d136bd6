"""MusicXML <-> LMX, both directions, written from the format's description.

``linearize`` is strict: MusicXML it cannot represent raises an InputError that
names the place (part, measure) and the problem. ``delinearize`` is tolerant:
any token stream (model output is untrusted) gives valid MusicXML; tokens that
do not fit the grammar are counted by reason and dropped.

Pitch spelling: LMX keeps step and octave on every note and the *displayed*
accidental; the sounding alteration follows from the key signature, earlier
accidentals in the measure (per staff, step and octave) and ties. Both
directions run the same :class:`AccidentalState`, and the linearizer adds an
accidental token wherever the written alteration would not follow from those
rules, so every pitch round-trips exactly.
"""

from __future__ import annotations

import dataclasses
import math
import xml.etree.ElementTree as ET
from collections import Counter
from fractions import Fraction
from typing import Iterable

from unimusic.errors import InputError
from unimusic.tokens import lmx as V

# Quarter-note length of each note type.
TYPE_QUARTERS = {name: Fraction(2) ** (i - V.NOTE_TYPES.index("quarter")) for i, name in enumerate(V.NOTE_TYPES)}
SHARP_ORDER = "FCGDAEB"
MUSICXML_ACCIDENTALS = {
    "sharp": "sharp",
    "flat": "flat",
    "natural": "natural",
    "double-sharp": "double-sharp",
    "sharp-sharp": "double-sharp",
    "flat-flat": "flat-flat",
    "double-flat": "flat-flat",
    "natural-sharp": "natural-sharp",
    "natural-flat": "natural-flat",
}
ARTICULATIONS = ("staccato", "staccatissimo", "accent", "strong-accent", "tenuto")
MAX_DOTS = 4
MAX_DIVISIONS = 2**20


def key_alter(fifths: int, step: str) -> int:
    if fifths > 0 and step in SHARP_ORDER[:fifths]:
        return 1
    if fifths < 0 and step in SHARP_ORDER[::-1][: -fifths]:
        return -1
    return 0


class AccidentalState:
    """Which alteration a note without an accidental token gets (shared by both directions)."""

    def __init__(self):
        self.fifths = 0
        self.measure: dict[tuple[int, str, int], int] = {}
        self.tied: dict[tuple[str, int], int] = {}

    def new_measure(self):
        self.measure = {}

    def implied(self, *, staff: int, step: str, octave: int, tie_stop: bool) -> int:
        if tie_stop and (step, octave) in self.tied:
            return self.tied[(step, octave)]
        if (staff, step, octave) in self.measure:
            return self.measure[(staff, step, octave)]
        return key_alter(self.fifths, step)

    def record(self, *, staff: int, step: str, octave: int, alter: int, explicit: bool, tie_start: bool, tie_stop: bool):
        if explicit:
            self.measure[(staff, step, octave)] = alter
        if tie_stop:
            self.tied.pop((step, octave), None)
        if tie_start:
            self.tied[(step, octave)] = alter


def note_type_for(quarters: Fraction) -> tuple[str, int] | None:
    """(type, dots) whose plain length is ``quarters``, if any."""
    for name, base in TYPE_QUARTERS.items():
        length, add = base, base / 2
        for dots in range(MAX_DOTS + 1):
            if length == quarters:
                return name, dots
            length += add
            add /= 2
    return None


def written_form(quarters: Fraction) -> tuple[str, int, int, int] | None:
    """(type, dots, actual, normal) for a length no plain type spells (a note the
    source gave no <type>): the simplest tuplet ratio that makes it exact."""
    plain = note_type_for(quarters)
    if plain is not None:
        return plain[0], plain[1], 1, 1
    ratios = [tuple(int(x) for x in token.split("in")) for token in V.TIME_MODIFICATION_TOKENS]
    candidates = []
    for actual, normal in ratios:
        found = note_type_for(quarters * Fraction(actual, normal))
        if found is not None:
            candidates.append((found[1], actual + normal, (found[0], found[1], actual, normal)))
    return min(candidates)[2] if candidates else None  # fewest dots, then the simplest ratio


def _span_signature(kind: str, quarters: Fraction) -> list[tuple[str, str | None]] | None:
    try:
        tokens = span_tokens(kind, quarters)
    except ValueError:
        return None
    out: list[tuple[str, str | None]] = []
    for token in tokens:
        if token == kind:
            out.append(("", None))
        elif token in TYPE_QUARTERS:
            out[-1] = (token, None)
        else:
            out[-1] = (out[-1][0], token)
    return out


def typed_length(note_type: str, dots: int, actual: int = 1, normal: int = 1) -> Fraction:
    base = TYPE_QUARTERS[note_type]
    length = base * (2 - Fraction(1, 2**dots))
    return length * Fraction(normal, actual)


def span_tokens(kind: str, quarters: Fraction) -> list[str]:
    """``backup``/``forward`` tokens for a span: greedy note types, largest first.

    A span that is not a sum of plain note types (inside tuplets) is written as
    note types under one time-modification token N-in-M, where N is the odd part
    of its denominator and M the largest power of two below N.
    """
    odd = quarters.denominator
    while odd % 2 == 0:
        odd //= 2
    suffix: list[str] = []
    scaled = quarters
    if odd > 1:
        normal = 2 ** int(math.log2(odd))
        token = f"{odd}in{normal}"
        if token not in V.TIME_MODIFICATION_TOKENS:
            raise ValueError(f"cannot express a {kind} of {quarters} quarters")
        suffix = [token]
        scaled = quarters * Fraction(odd, normal)  # plain-type length before the tuplet ratio
    out: list[str] = []
    for name in reversed(V.NOTE_TYPES):
        while scaled >= TYPE_QUARTERS[name]:
            out += [kind, name, *suffix]
            scaled -= TYPE_QUARTERS[name]
    if scaled != 0:  # pragma: no cover - the scaled span is dyadic by construction
        raise ValueError(f"cannot express a {kind} of {quarters} quarters")
    return out


# ----------------------------------------------------------------------------
# MusicXML -> LMX
# ----------------------------------------------------------------------------


def _text(el: ET.Element | None, default: str | None = None) -> str | None:
    if el is None or el.text is None:
        return default
    return el.text.strip()


def _strip_namespaces(root: ET.Element) -> None:
    for el in root.iter():
        if isinstance(el.tag, str) and "}" in el.tag:
            el.tag = el.tag.split("}", 1)[1]


@dataclasses.dataclass
class _PartState:
    divisions: int = 1
    staves: int = 1
    time: tuple[int, int] | None = None
    accidentals: AccidentalState = dataclasses.field(default_factory=AccidentalState)


class _Linearizer:
    def __init__(self, source: str):
        self.source = source
        self.out: list[str] = []

    def fail(self, where: str, problem: str):
        raise InputError(self.source, f"{where}: {problem}")

    def run(self, root: ET.Element) -> list[str]:
        parts = root.findall("part")
        if not parts:
            self.fail("score", "no <part> element")
        if len(parts) > V.MAX_PARTS:
            self.fail("score", f"{len(parts)} parts, LMX supports at most {V.MAX_PARTS}")
        measures = [[m for m in p if m.tag == "measure"] for p in parts]
        states = [_PartState() for _ in parts]
        for index in range(max(len(ms) for ms in measures)):
            self.out.append("measure")
            for p, (part_measures, state) in enumerate(zip(measures, states)):
                if index >= len(part_measures):
                    continue
                if len(parts) > 1:
                    self.out.append(f"part:{p + 1}")
                where = f"part {p + 1} ({parts[p].get('id', '?')}), measure {part_measures[index].get('number', index + 1)}"
                self.measure(part_measures[index], state, where)
        return self.out

    def measure(self, measure: ET.Element, state: _PartState, where: str):
        local = {"voice": None, "staff": None, "stem": None}
        state.accidentals.new_measure()
        for el in measure:
            if el.tag == "attributes":
                self.attributes(el, state, where)
            elif el.tag == "note":
                self.note(el, state, local, where)
            elif el.tag == "barline":
                self.barline(el, where)
            elif el.tag in ("backup", "forward"):
                divisions = int(_text(el.find("duration"), "0") or 0)
                if divisions <= 0:
                    continue
                try:
                    self.out += span_tokens(el.tag, Fraction(divisions, state.divisions))
                except ValueError as exc:
                    self.fail(where, str(exc))
                if el.tag == "backup":
                    local.update(voice=None, staff=None, stem=None)

    def barline(self, el: ET.Element, where: str):
        location = el.get("location", "right")
        if location == "middle":
            return  # a dashed/tick barline inside a measure: not in LMX
        style = _text(el.find("bar-style"))
        repeat = el.find("repeat")
        direction = repeat.get("direction") if repeat is not None else None
        ending = el.find("ending")
        ending_type = ending.get("type") if ending is not None else None
        tokens: list[str] = []
        if location == "left":
            if ending_type == "start":
                for number in (ending.get("number") or "1").replace(",", " ").split():
                    if f"ending:{number}" not in V.BARLINE_TOKENS:
                        self.fail(where, f"volta ending number {number!r} (LMX has 1..{V.MAX_ENDING})")
                    tokens.append(f"ending:{number}")
            if direction == "forward":
                tokens.append("repeat:forward")
        else:
            if direction == "backward":
                tokens.append("repeat:backward")
            if ending_type in ("stop", "discontinue"):
                tokens.append(f"ending:{ending_type}")
        if direction is None and style in ("light-light", "light-heavy"):
            tokens.append("barline:double" if style == "light-light" else "barline:final")
        self.out += tokens

    def attributes(self, el: ET.Element, state: _PartState, where: str):
        div = _text(el.find("divisions"))
        if div is not None:
            try:
                state.divisions = int(float(div))
            except ValueError:
                self.fail(where, f"invalid <divisions> {div!r}")
            if state.divisions <= 0:
                self.fail(where, f"invalid <divisions> {div!r}")
        key = el.find("key")
        if key is not None and key.find("fifths") is not None:
            fifths = int(_text(key.find("fifths"), "0"))
            if not -7 <= fifths <= 7:
                self.fail(where, f"key signature with {fifths} fifths")
            self.out.append(f"key:fifths:{fifths}")
            state.accidentals.fifths = fifths
        time = el.find("time")
        if time is not None and time.find("beats") is not None:
            beats_text = _text(time.find("beats"), "")
            beat_type_text = _text(time.find("beat-type"), "")
            try:
                beats = sum(int(b) for b in beats_text.split("+"))
                beat_type = int(beat_type_text)
            except ValueError:
                self.fail(where, f"unsupported time signature {beats_text}/{beat_type_text}")
            if f"beats:{beats}" not in V.TIME_TOKENS or f"beat-type:{beat_type}" not in V.TIME_TOKENS:
                self.fail(where, f"unsupported time signature {beats}/{beat_type}")
            self.out += ["time", f"beats:{beats}", f"beat-type:{beat_type}"]
            state.time = (beats, beat_type)
        staves = _text(el.find("staves"))
        if staves is not None:
            state.staves = int(staves)
            if state.staves > V.MAX_STAVES:
                self.fail(where, f"{state.staves} staves, LMX supports at most {V.MAX_STAVES}")
        clefs = {}
        for clef in el.findall("clef"):
            sign = (_text(clef.find("sign"), "G") or "G").upper()
            number = int(clef.get("number", "1"))
            if sign in ("PERCUSSION", "TAB", "NONE"):
                token = {"PERCUSSION": "clef:percussion", "TAB": "clef:TAB", "NONE": "clef:none"}[sign]
            else:
                token = f"clef:{sign}{_text(clef.find('line'), {'G': '2', 'F': '4', 'C': '3'}.get(sign, '2'))}"
            if token not in V.CLEF_TOKENS:
                self.fail(where, f"unsupported clef {token[5:]}")
            tokens = [token]
            octave = _text(clef.find("clef-octave-change"))
            if octave not in (None, "0"):
                if f"octave-change:{int(octave)}" not in V.CLEF_OCTAVE_TOKENS:
                    self.fail(where, f"unsupported clef octave change {octave}")
                tokens.append(f"octave-change:{int(octave)}")
            if state.staves > 1:
                tokens.append(f"staff:{number}")
            clefs[number] = tokens
        for number in sorted(clefs):
            self.out += clefs[number]

    def note(self, note: ET.Element, state: _PartState, local: dict, where: str):
        out = self.out
        start = len(out)
        if note.get("print-object") == "no":
            out.append("print-object:no")
        grace = note.find("grace")
        if grace is not None:
            out.append("grace")
            if grace.get("slash") == "yes":
                out.append("grace:slash")
        if note.find("chord") is not None:
            out.append("chord")
        rest = note.find("rest")
        pitch = note.find("pitch")
        unpitched = note.find("unpitched")
        step = octave = alter = None
        if rest is not None:
            out.append("rest")
        elif pitch is not None or unpitched is not None:
            if pitch is not None:
                step, octave = _text(pitch.find("step")), _text(pitch.find("octave"))
                alter_text = _text(pitch.find("alter"), "0")
            else:
                step, octave = _text(unpitched.find("display-step")), _text(unpitched.find("display-octave"))
                alter_text = "0"
            token = f"{step}{octave}"
            if token not in V.PITCH_TOKENS:
                self.fail(where, f"pitch {token!r} outside C0..B9")
            alter_value = float(alter_text)
            if alter_value != int(alter_value) or abs(alter_value) > 2:
                self.fail(where, f"alteration {alter_text} of {token} (microtones and triple accidentals are not in LMX)")
            alter, octave = int(alter_value), int(octave)
            out.append(token)
        else:
            self.fail(where, "note with neither <pitch> nor <rest>")

        voice = _text(note.find("voice"))
        if voice is not None:
            if f"voice:{voice}" not in V.VOICE_TOKENS:
                self.fail(where, f"voice {voice!r} (LMX has voices 1..{V.MAX_VOICES})")
            if local["voice"] != voice:
                out.append(f"voice:{voice}")
                local["voice"] = voice

        note_type = _text(note.find("type"))
        dots = len(note.findall("dot"))
        duration_text = _text(note.find("duration"))
        duration = Fraction(int(duration_text), state.divisions) if duration_text else None
        tm = note.find("time-modification")
        actual = normal = 1
        if tm is not None:
            actual = int(_text(tm.find("actual-notes"), "1"))
            normal = int(_text(tm.find("normal-notes"), "1"))
        measure_rest = rest is not None and rest.get("measure") == "yes"
        if measure_rest and state.time and duration == Fraction(state.time[0] * 4, state.time[1]):
            out.append("rest:measure")
        else:
            if note_type is None or note_type not in TYPE_QUARTERS:
                if duration is None:
                    self.fail(where, "note has neither <type> nor <duration>")
                guessed = written_form(duration)
                if guessed is None and rest is not None and note.find("chord") is None:
                    # A rest with no written form (an editor's filler): keep the
                    # timing as a forward, which is what it means.
                    del out[start:]
                    out += span_tokens("forward", duration)
                    return
                if guessed is None:
                    self.fail(where, f"note without <type> lasting {duration} quarters has no single written form")
                note_type, dots, actual, normal = guessed
            elif grace is None and duration is not None and typed_length(note_type, dots, actual, normal) != duration:
                # Editors that cap <divisions> (MuseScore: 480) round tuplet
                # durations: within one division, the written type is right.
                if abs(typed_length(note_type, dots, actual, normal) - duration) * state.divisions >= 1:
                    guessed = note_type_for(duration)
                    if guessed is None:
                        self.fail(where, f"<type> {note_type} disagrees with <duration> {duration} quarters")
                    note_type, dots = guessed
                    actual = normal = 1
            out.append(note_type)
            if actual != normal:
                token = f"{actual}in{normal}"
                if token not in V.TIME_MODIFICATION_TOKENS:
                    self.fail(where, f"tuplet ratio {actual}:{normal} not in LMX")
                out.append(token)
            if dots > MAX_DOTS:
                self.fail(where, f"{dots} dots")
            out += ["dot"] * dots

        tied = [t.get("type") for t in note.findall("notations/tied")] or [t.get("type") for t in note.findall("tie")]
        tied = [t for t in tied if t in ("start", "stop")]
        staff_text = _text(note.find("staff"))
        staff_number = int(staff_text) if staff_text and staff_text.isdigit() else (int(local["staff"]) if local["staff"] else 1)
        if step is not None:
            displayed = MUSICXML_ACCIDENTALS.get(_text(note.find("accidental"), "") or "")
            acc = state.accidentals
            implied = acc.implied(staff=staff_number, step=step, octave=octave, tie_stop="stop" in tied)
            token = None
            if displayed is not None and V.ACCIDENTAL_ALTER[displayed] == alter:
                token = displayed
            elif implied != alter or displayed is not None:
                token = V.ALTER_ACCIDENTAL[alter]
            if token:
                out.append(token)
            acc.record(
                staff=staff_number, step=step, octave=octave, alter=alter, explicit=token is not None,
                tie_start="start" in tied, tie_stop="stop" in tied,
            )

        stem = _text(note.find("stem"))
        if stem in ("up", "down", "none") and local["stem"] != stem:
            out.append(f"stem:{stem}")
            local["stem"] = stem
        if staff_text is not None and state.staves > 1:
            if f"staff:{staff_text}" not in V.STAFF_TOKENS:
                self.fail(where, f"staff {staff_text!r}")
            if local["staff"] != staff_text:
                out.append(f"staff:{staff_text}")
                local["staff"] = staff_text
        for beam in note.findall("beam"):
            value = _text(beam)
            if value in ("begin", "end"):
                out.append(f"beam:{value}")
            elif value in ("forward hook", "backward hook"):
                out.append("beam:" + value.replace(" ", "-"))
        out += [f"tied:{t}" for t in tied]
        notations = note.find("notations")
        if notations is None:
            return
        for tuplet in notations.findall("tuplet"):
            if tuplet.get("type") in ("start", "stop"):
                out.append(f"tuplet:{tuplet.get('type')}")
        for slur in notations.findall("slur"):
            if slur.get("type") in ("start", "stop"):
                out.append(f"slur:{slur.get('type')}")
        if notations.find("fermata") is not None:
            out.append("fermata")
        if notations.find("arpeggiate") is not None:
            out.append("arpeggiate")
        for name in ARTICULATIONS:
            if notations.find(f"articulations/{name}") is not None:
                out.append(name)
        tremolo = notations.find("ornaments/tremolo")
        if tremolo is not None:
            kind = tremolo.get("type", "single")
            marks = _text(tremolo, "3")
            if f"tremolo:{kind}" in V.NOTATION_TOKENS and f"tremolo:{marks}" in V.NOTATION_TOKENS:
                out += [f"tremolo:{kind}", f"tremolo:{marks}"]
        if notations.find("ornaments/trill-mark") is not None:
            out.append("trill-mark")


def parse_musicxml(xml: bytes | str, *, source: str = "<musicxml>") -> ET.Element:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise InputError(source, f"malformed XML: {exc}") from None
    _strip_namespaces(root)
    if root.tag != "score-partwise":
        raise InputError(source, f"root element <{root.tag}>, expected <score-partwise>")
    return root


def linearize(xml: bytes | str, *, source: str = "<musicxml>") -> list[str]:
    """LMX tokens of a partwise MusicXML document (strict: unrepresentable input raises)."""
    root = parse_musicxml(xml, source=source)
    try:
        return _Linearizer(source).run(root)
    except InputError:
        raise
    except (ValueError, TypeError, AttributeError, ZeroDivisionError) as exc:
        raise InputError(source, f"unexpected MusicXML content: {type(exc).__name__}: {exc}") from None


# ----------------------------------------------------------------------------
# LMX -> MusicXML
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class DecodeStats:
    """What a tolerant decoder dropped, by reason."""

    tokens: int = 0
    invalid_tokens: int = 0
    reasons: Counter = dataclasses.field(default_factory=Counter)

    def drop(self, reason: str, count: int = 1):
        if count > 0:
            self.invalid_tokens += count
            self.reasons[reason] += count

    def as_dict(self) -> dict:
        return {"tokens": self.tokens, "invalid_tokens": self.invalid_tokens, "reasons": dict(self.reasons)}


@dataclasses.dataclass
class _Note:
    tokens: int = 0
    hidden: bool = False
    grace: bool = False
    grace_slash: bool = False
    chord: bool = False
    kind: str | None = None  # pitch token, "rest", "backup", "forward"
    voice: str | None = None
    root: str | None = None  # note type or "rest:measure"
    time_mod: tuple[int, int] | None = None
    dots: int = 0
    accidental: str | None = None
    stem: str | None = None
    staff: str | None = None
    beams: list[str] = dataclasses.field(default_factory=list)
    tied: list[str] = dataclasses.field(default_factory=list)
    notations: list[str] = dataclasses.field(default_factory=list)


_PREFIX = set(V.NOTE_PREFIX_TOKENS)
_KIND = set(V.NOTE_KIND_TOKENS)
_ROOT = set(V.NOTE_ROOT_TOKENS)
_TIME_MOD = set(V.TIME_MODIFICATION_TOKENS)
_STAFF = set(V.STAFF_TOKENS)
_ALL = set(V.ALL_TOKENS)
_BARLINE = set(V.BARLINE_TOKENS)


class _Parser:
    """Groups a token stream into measures -> parts -> items, dropping what does not parse."""

    def __init__(self, stats: DecodeStats):
        self.stats = stats
        self.measures: list[dict[int, list]] = []
        self.part = 1
        self.note: _Note | None = None
        self.last_clef: dict | None = None  # an immediately preceding clef takes octave/staff tokens
        self.time: dict | None = None

    def items(self) -> list:
        if not self.measures:
            self.measures.append({})
        return self.measures[-1].setdefault(self.part, [])

    def flush(self):
        note, self.note = self.note, None
        if note is None:
            return
        if note.kind is not None and note.root is not None:
            self.items().append(note)
        else:
            self.stats.drop("incomplete_note", note.tokens)

    def flush_time(self):
        time, self.time = self.time, None
        if time is None:
            return
        if time.get("beats") and time.get("beat_type"):
            self.items().append(("time", time["beats"], time["beat_type"]))
        else:
            self.stats.drop("incomplete_time_signature", time["tokens"])

    def feed(self, token: str):
        stats = self.stats
        stats.tokens += 1
        if token not in _ALL:
            stats.drop("unknown_token")
            return
        clef, self.last_clef = self.last_clef, None
        if clef is not None and token.startswith("octave-change:") and "octave" not in clef and "staff" not in clef:
            clef["octave"] = int(token.split(":")[1])
            self.last_clef = clef
            return
        if clef is not None and token in _STAFF and "staff" not in clef:
            clef["staff"] = int(token.split(":")[1])
            return
        if self.time is not None:
            if token.startswith("beats:") and "beats" not in self.time:
                self.time["beats"] = int(token.split(":")[1])
                self.time["tokens"] += 1
                return
            if token.startswith("beat-type:") and "beat_type" not in self.time:
                self.time["beat_type"] = int(token.split(":")[1])
                self.time["tokens"] += 1
                return
            self.flush_time()

        if token == "measure":
            self.flush()
            self.measures.append({})
            self.part = 1
        elif token.startswith("part:"):
            self.flush()
            self.part = int(token.split(":")[1])
            self.items()
        elif token in _BARLINE:
            self.flush()
            self.items().append(("barline", token))
        elif token.startswith("key:fifths:"):
            self.flush()
            self.items().append(("key", int(token.split(":")[2])))
        elif token == "time":
            self.flush()
            self.time = {"tokens": 1}
        elif token.startswith("beats:") or token.startswith("beat-type:"):
            stats.drop("time_value_without_time")
        elif token.startswith("clef:"):
            self.flush()
            entry = {"clef": token[5:]}
            self.items().append(("clef", entry))
            self.last_clef = entry
        elif token.startswith("octave-change:"):
            stats.drop("octave_change_without_clef")
        elif token in _PREFIX:
            note = self.note
            if note is None or note.root is not None or note.kind is not None:
                self.flush()
                note = self.note = _Note()
            attr = {"print-object:no": "hidden", "grace": "grace", "grace:slash": "grace_slash", "chord": "chord"}[token]
            if getattr(note, attr):
                stats.drop("repeated_prefix")
                return
            setattr(note, attr, True)
            note.tokens += 1
        elif token in _KIND:
            note = self.note
            if note is None or note.root is not None or note.kind is not None:
                self.flush()
                note = self.note = _Note()
            note.kind = token
            note.tokens += 1
        elif token.startswith("voice:"):
            if self.note is not None and self.note.kind is not None and self.note.root is None and self.note.voice is None:
                self.note.voice = token.split(":")[1]
                self.note.tokens += 1
            else:
                stats.drop("misplaced_voice")
        elif token in _ROOT:
            note = self.note
            if note is None or note.kind is None or note.root is not None:
                stats.drop("type_without_note")
            elif token == "rest:measure" and note.kind != "rest":
                stats.drop("measure_rest_on_non_rest")
            else:
                note.root = token
                note.tokens += 1
        else:
            self.suffix(token)

    def suffix(self, token: str):
        note, stats = self.note, self.stats
        if note is None or note.root is None:
            stats.drop("suffix_without_note")
            return
        span = note.kind in ("backup", "forward")
        if token in _TIME_MOD:
            if note.time_mod is not None or note.root == "rest:measure":
                stats.drop("misplaced_time_modification")
                return
            actual, normal = token.split("in")
            note.time_mod = (int(actual), int(normal))
        elif token == "dot":
            if note.dots >= MAX_DOTS or note.root == "rest:measure":
                stats.drop("misplaced_dot")
                return
            note.dots += 1
        elif span:
            stats.drop("notation_on_backup_forward")
            return
        elif token in V.ACCIDENTAL_ALTER:
            if note.accidental is not None or note.kind == "rest":
                stats.drop("misplaced_accidental")
                return
            note.accidental = token
        elif token.startswith("stem:"):
            if note.stem is not None:
                stats.drop("repeated_stem")
                return
            note.stem = token.split(":")[1]
        elif token in _STAFF:
            if note.staff is not None:
                stats.drop("repeated_staff")
                return
            note.staff = token.split(":")[1]
        elif token.startswith("beam:"):
            if len(note.beams) >= 8:
                stats.drop("too_many_beams")
                return
            note.beams.append(token.split(":")[1])
        elif token.startswith("tied:"):
            value = token.split(":")[1]
            if value in note.tied or note.kind == "rest":
                stats.drop("misplaced_tie")
                return
            note.tied.append(value)
        else:
            if token in note.notations and not token.startswith(("slur:", "tuplet:")):
                stats.drop("repeated_notation")
                return
            note.notations.append(token)
        note.tokens += 1


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib) -> ET.Element:
    el = ET.SubElement(parent, tag, {k.replace("_", "-"): str(v) for k, v in attrib.items()})
    if text is not None:
        el.text = str(text)
    return el


def _note_quarters(note: _Note, measure_quarters: Fraction) -> Fraction:
    if note.root == "rest:measure":
        return measure_quarters
    actual, normal = note.time_mod or (1, 1)
    return typed_length(note.root, note.dots, actual, normal)


class _Writer:
    def __init__(self, measures: list[dict[int, list]], stats: DecodeStats):
        self.measures = measures
        self.stats = stats
        self.num_parts = max([1, *(p for m in measures for p in m)])

    def divisions(self) -> int:
        lcm = 1
        time = (4, 4)
        for measure in self.measures:
            for items in measure.values():
                for item in items:
                    if isinstance(item, tuple) and item[0] == "time":
                        time = (item[1], item[2])
                    if isinstance(item, _Note) and not item.grace:
                        q = _note_quarters(item, Fraction(4 * time[0], time[1]))
                        lcm = lcm * q.denominator // math.gcd(lcm, q.denominator)
                        if lcm > MAX_DIVISIONS:
                            self.stats.reasons["divisions_capped"] += 1
                            return 2**8 * 3 * 5 * 7 * 9
        return lcm

    def write(self) -> str:
        root = ET.Element("score-partwise", version="4.0")
        part_list = _sub(root, "part-list")
        for p in range(1, self.num_parts + 1):
            sp = _sub(part_list, "score-part", id=f"P{p}")
            _sub(sp, "part-name", f"Part {p}")
        divisions = self.divisions()
        for p in range(1, self.num_parts + 1):
            self.write_part(_sub(root, "part", id=f"P{p}"), p, divisions)
        ET.indent(root, space=" ")
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")

    def write_part(self, part_el: ET.Element, p: int, divisions: int):
        staves = 1
        for measure in self.measures:
            for item in measure.get(p, []):
                if isinstance(item, _Note) and item.staff:
                    staves = max(staves, int(item.staff))
                elif isinstance(item, tuple) and item[0] == "clef" and "staff" in item[1]:
                    staves = max(staves, item[1]["staff"])
        acc = AccidentalState()
        time = (4, 4)
        slurs: list[int] = []
        tuplets: list[tuple] = []  # open brackets: (number, cumulative ratio, opening note)
        endings: list[str] = []  # the open volta ending's number, if any
        for index, measure in enumerate(self.measures or [{}]):
            m_el = _sub(part_el, "measure", number=index + 1)
            acc.new_measure()
            if index == 0:
                attrs = _sub(m_el, "attributes")
                _sub(attrs, "divisions", divisions)
                if staves > 1:
                    _sub(attrs, "staves", staves)
            items = measure.get(p, [])
            local = {"voice": None, "staff": None, "stem": None}
            beams: dict[str | None, set[int]] = {}  # open beam levels per voice
            position = Fraction(0)
            previous_note: _Note | None = None
            pending_attrs: list = []
            barline_run: list[str] = []
            span_run = None  # (signatures, quarters) of the <backup>/<forward> just written
            wrote_music = False
            for position_in_items, item in enumerate(items + [None]):
                if isinstance(item, tuple) and item[0] == "barline":
                    if pending_attrs:
                        time = self.write_attributes(m_el, pending_attrs, acc, time, staves, index == 0 and not position)
                        pending_attrs = []
                    barline_run.append(item[1])
                    continue
                if barline_run:
                    self.write_barline(m_el, barline_run, "right" if wrote_music else "left", endings)
                    barline_run = []
                if isinstance(item, tuple):
                    pending_attrs.append(item)
                    continue
                if pending_attrs:
                    time = self.write_attributes(m_el, pending_attrs, acc, time, staves, index == 0 and not position)
                    pending_attrs = []
                if item is None:
                    break
                wrote_music = True
                measure_quarters = Fraction(4 * time[0], time[1])
                if item.kind in ("backup", "forward"):
                    quarters = _note_quarters(item, measure_quarters)
                    if item.kind == "backup":
                        if quarters > position:
                            self.stats.drop("backup_before_measure_start")
                            quarters = position
                        position -= quarters
                        local.update(voice=None, staff=None, stem=None)
                    else:
                        position += quarters
                    signature = (item.root, f"{item.time_mod[0]}in{item.time_mod[1]}" if item.time_mod else None)
                    merge = (
                        quarters > 0 and len(m_el) and m_el[-1].tag == item.kind and span_run
                        and item.dots == 0 and _span_signature(item.kind, span_run[1] + quarters) == span_run[0] + [signature]
                    )
                    if merge:
                        # `backup half backup quarter` was one <backup>: the linearizer
                        # splits a span greedily, so a greedy run merges back
                        duration_el = m_el[-1].find("duration")
                        duration_el.text = str(int(duration_el.text) + max(1, round(quarters * divisions)))
                        span_run = (span_run[0] + [signature], span_run[1] + quarters)
                    elif quarters > 0:
                        span_run = ([signature], quarters) if item.dots == 0 else None
                        span = _sub(m_el, item.kind)
                        _sub(span, "duration", max(1, round(quarters * divisions)))
                        if item.kind == "forward":
                            # A forward belongs to the voice (and staff) it skips
                            # time in: the current one, else the next note's.
                            voice, staff = self.next_voice_staff(items, position_in_items, local)
                            if voice is not None:
                                _sub(span, "voice", voice)
                            if staff is not None and staves > 1:
                                _sub(span, "staff", staff)
                    previous_note = None
                    continue
                if item.chord and (previous_note is None or previous_note.grace != item.grace):
                    self.stats.drop("chord_without_note")
                    item.chord = False
                if item.grace and item.kind == "rest":
                    self.stats.drop("grace_rest")
                    item.grace = item.grace_slash = False
                if item.root == "rest:measure" and item.kind != "rest":  # pragma: no cover - parser guarantees
                    continue
                quarters = _note_quarters(item, measure_quarters)
                self.write_note(m_el, item, quarters, divisions, local, acc, staves, slurs, beams, tuplets)
                # Chord members share the first note's onset; MusicXML advances once.
                if not item.grace and not item.chord:
                    position += quarters
                previous_note = item

    @staticmethod
    def start_tuplet(notations: ET.Element, item: _Note, tuplets: list) -> None:
        """Open a tuplet bracket; a nested one states its own ratio, since the
        note's time modification is the product of all enclosing brackets."""
        actual, normal = item.time_mod or (1, 1)
        cumulative = Fraction(actual, normal)
        parent = tuplets[-1][1] if tuplets else Fraction(1)
        starts_here = item.notations.count("tuplet:start")
        opened_here = sum(1 for t in tuplets if t[2] is item)
        remaining = max(1, starts_here - opened_here)
        own = cumulative / parent
        # several brackets opening on one note share the ratio equally when they can
        root = Fraction(round(own.numerator ** (1 / remaining)), round(own.denominator ** (1 / remaining)))
        if root ** remaining == own:
            own = root
        number = len(tuplets) + 1
        tuplets.append((number, parent * own, item))
        el = _sub(notations, "tuplet", type="start", number=number)
        if parent != 1 or own != cumulative:
            tuplet_actual = _sub(el, "tuplet-actual")
            _sub(tuplet_actual, "tuplet-number", own.numerator)
            tuplet_normal = _sub(el, "tuplet-normal")
            _sub(tuplet_normal, "tuplet-number", own.denominator)

    @staticmethod
    def next_voice_staff(items: list, index: int, local: dict) -> tuple[str | None, str | None]:
        voice, staff = local["voice"], local["staff"]
        for item in items[index + 1 :]:
            if voice is not None and staff is not None:
                break
            if isinstance(item, _Note):
                if item.kind == "backup":
                    break
                voice = voice if voice is not None else item.voice
                staff = staff if staff is not None else item.staff
        return voice, staff

    def write_barline(self, m_el, tokens: list[str], location: str, endings: list[str]):
        allowed = {
            "left": {"repeat:forward", *(t for t in V.BARLINE_TOKENS if t.split(":")[-1].isdigit())},
            "right": {"repeat:backward", "ending:stop", "ending:discontinue"},
        }[location] | {"barline:double", "barline:final"}
        kept = []
        for token in tokens:
            if token not in allowed or token in kept:
                self.stats.drop("misplaced_barline")
            else:
                kept.append(token)
        if not kept:
            return
        el = _sub(m_el, "barline", location=location)
        repeat = next((t.split(":")[1] for t in kept if t.startswith("repeat:")), None)
        style = {"forward": "heavy-light", "backward": "light-heavy"}.get(repeat or "")
        if style is None and "barline:double" in kept:
            style = "light-light"
        elif style is None and "barline:final" in kept:
            style = "light-heavy"
        if style:
            _sub(el, "bar-style", style)
        numbers = [t.split(":")[1] for t in kept if t.split(":")[-1].isdigit()]
        if numbers:
            endings[:] = [", ".join(numbers)]
            _sub(el, "ending", number=endings[0], type="start")
        for kind in ("stop", "discontinue"):
            if f"ending:{kind}" in kept:
                _sub(el, "ending", number=endings.pop() if endings else "1", type=kind)
        if repeat:
            _sub(el, "repeat", direction=repeat)

    @staticmethod
    def beam_levels(tokens: list[str], open_levels: set[int]) -> list[tuple[int, str]]:
        """MusicXML (number, value) beams: ends close the highest open levels, begins
        and hooks take the lowest free ones, other open levels continue."""
        assigned: dict[int, str] = {}
        was_open = sorted(open_levels, reverse=True)  # secondary beams end first
        for token in tokens:
            if token == "end" and was_open:
                level = was_open.pop(0)
                assigned[level] = "end"
                open_levels.discard(level)
        unmatched_ends = sum(t == "end" for t in tokens) - sum(v == "end" for v in assigned.values())
        for token in tokens:
            if token != "end" or unmatched_ends > 0:
                if token == "end":
                    unmatched_ends -= 1
                level = next(i for i in range(1, 64) if i not in assigned and i not in open_levels)
                assigned[level] = token.replace("-", " ")
                if token == "begin":
                    open_levels.add(level)
        for level in open_levels:
            assigned.setdefault(level, "continue")
        return sorted(assigned.items())

    def write_attributes(self, m_el, items, acc, time, staves, first_in_part) -> tuple[int, int]:
        # The first measure already has an <attributes> holding <divisions>.
        attrs = m_el.find("attributes") if first_in_part and m_el.find("attributes") is not None and len(m_el) == 1 else None
        attrs = attrs if attrs is not None else _sub(m_el, "attributes")
        key = new_time = None
        clefs: dict[int, dict] = {}
        for item in items:
            if item[0] == "key":
                key = item[1]
            elif item[0] == "time":
                new_time = (item[1], item[2])
            elif item[0] == "clef":
                clefs[item[1].get("staff", 1)] = item[1]
        divisions_el = attrs.find("divisions")
        staves_el = attrs.find("staves")
        for el in list(attrs):
            attrs.remove(el)
        if divisions_el is not None:
            attrs.append(divisions_el)
        if key is not None:
            k = _sub(attrs, "key")
            _sub(k, "fifths", key)
            acc.fifths = key
        if new_time is not None:
            t = _sub(attrs, "time")
            _sub(t, "beats", new_time[0])
            _sub(t, "beat-type", new_time[1])
            time = new_time
        if staves_el is not None:
            attrs.append(staves_el)
        for number in sorted(clefs):
            entry = clefs[number]
            c = _sub(attrs, "clef", number=number) if staves > 1 else _sub(attrs, "clef")
            name = entry["clef"]
            if name in ("percussion", "TAB", "none"):
                _sub(c, "sign", name if name != "none" else "none")
            else:
                _sub(c, "sign", name[0])
                _sub(c, "line", name[1])
            if "octave" in entry:
                _sub(c, "clef-octave-change", entry["octave"])
        return time

    def write_note(self, m_el, item: _Note, quarters, divisions, local, acc: AccidentalState, staves, slurs, beams, tuplets):
        if item.voice is not None:
            local["voice"] = item.voice
        if item.staff is not None:
            local["staff"] = item.staff
        if item.stem is not None:
            local["stem"] = item.stem
        n = _sub(m_el, "note", print_object="no") if item.hidden else _sub(m_el, "note")
        if item.grace:
            _sub(n, "grace", slash="yes") if item.grace_slash else _sub(n, "grace")
        if item.chord:
            _sub(n, "chord")
        if item.kind == "rest":
            _sub(n, "rest", measure="yes") if item.root == "rest:measure" else _sub(n, "rest")
        else:
            step, octave = item.kind[0], int(item.kind[1:])
            staff_number = int(local["staff"]) if local["staff"] else 1
            tie_stop, tie_start = "stop" in item.tied, "start" in item.tied
            if item.accidental is not None:
                alter = V.ACCIDENTAL_ALTER[item.accidental]
            else:
                alter = acc.implied(staff=staff_number, step=step, octave=octave, tie_stop=tie_stop)
            acc.record(
                staff=staff_number, step=step, octave=octave, alter=alter, explicit=item.accidental is not None,
                tie_start=tie_start, tie_stop=tie_stop,
            )
            pitch = _sub(n, "pitch")
            _sub(pitch, "step", step)
            if alter:
                _sub(pitch, "alter", alter)
            _sub(pitch, "octave", octave)
        if not item.grace:
            _sub(n, "duration", max(1, round(quarters * divisions)))
        for value in item.tied:
            _sub(n, "tie", type=value)
        if local["voice"] is not None:
            _sub(n, "voice", local["voice"])
        if item.root != "rest:measure":
            _sub(n, "type", item.root)
        for _ in range(item.dots):
            _sub(n, "dot")
        if item.accidental is not None:
            _sub(n, "accidental", item.accidental)
        if item.time_mod is not None:
            tm = _sub(n, "time-modification")
            _sub(tm, "actual-notes", item.time_mod[0])
            _sub(tm, "normal-notes", item.time_mod[1])
        if local["stem"] is not None:
            _sub(n, "stem", local["stem"])
        if local["staff"] is not None and staves > 1:
            _sub(n, "staff", local["staff"])
        for number, value in self.beam_levels(item.beams, beams.setdefault(local["voice"], set())):
            _sub(n, "beam", value, number=number)
        if item.tied or item.notations:
            notations = _sub(n, "notations")
            for value in item.tied:
                _sub(notations, "tied", type=value)
            articulations = ornaments = None
            for token in item.notations:
                if token == "tuplet:start":
                    self.start_tuplet(notations, item, tuplets)
                elif token == "tuplet:stop":
                    _sub(notations, "tuplet", type="stop", number=tuplets.pop()[0] if tuplets else 1)
                elif token == "slur:start":
                    number = min(set(range(1, 17)) - set(slurs)) if len(slurs) < 16 else 16
                    slurs.append(number)
                    _sub(notations, "slur", type="start", number=number)
                elif token == "slur:stop":
                    number = slurs.pop() if slurs else 1
                    _sub(notations, "slur", type="stop", number=number)
                elif token in ("fermata", "arpeggiate"):
                    _sub(notations, token)
                elif token in ARTICULATIONS:
                    articulations = articulations if articulations is not None else _sub(notations, "articulations")
                    _sub(articulations, token)
                elif token == "trill-mark" or token.startswith("tremolo:"):
                    ornaments = ornaments if ornaments is not None else _sub(notations, "ornaments")
                    if token == "trill-mark":
                        _sub(ornaments, "trill-mark")
                    elif token.split(":")[1] in ("single", "start", "stop", "unmeasured"):
                        marks = next((t.split(":")[1] for t in item.notations if t.split(":")[1].isdigit()), "3")
                        _sub(ornaments, "tremolo", marks, type=token.split(":")[1])


def delinearize(tokens: Iterable[str] | str) -> tuple[str, DecodeStats]:
    """MusicXML text for any LMX token stream, and what was dropped.

    ``tokens`` is a token sequence or LMX text. Never raises on content.
    """
    if isinstance(tokens, str):
        tokens = V.tokens_from_text(tokens)
    stats = DecodeStats()
    parser = _Parser(stats)
    for token in tokens:
        parser.feed(str(token))
    parser.flush_time()
    parser.flush()
    # Drop parts with absurd numbers before writing (model output may name part:32 alone).
    writer = _Writer(parser.measures, stats)
    return writer.write(), stats

