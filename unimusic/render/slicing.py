"""Cutting partwise MusicXML by measures: renumbering, and slices that stand alone.

A staff system shows measures [start, stop) of every part. Its LMX must be
readable on its own, so :func:`slice_measures` restates at the start of the
first kept measure what the printed system relies on from earlier measures:
divisions, key, time, staves and every staff's clef as in force at ``start``.
"""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET

from unimusic.errors import InputError

# MusicXML's order of <attributes> children (schema sequence); restated and
# existing children are merged in this order.
ATTRIBUTE_ORDER = (
    "footnote",
    "level",
    "divisions",
    "key",
    "time",
    "staves",
    "part-symbol",
    "instruments",
    "clef",
    "staff-details",
    "transpose",
    "for-part",
    "directive",
    "measure-style",
)
# Children that come in one instance per staff (or per number): keyed by @number.
NUMBERED = ("key", "time", "clef", "staff-details", "transpose")
ALL_STAVES = ("key", "time", "transpose")  # without @number these apply to every staff
# What a slice restates from the attributes in force at its start.
RESTATED = ("divisions", "key", "time", "staves", "clef", "transpose")
MUSIC_EVENTS = ("note", "backup", "forward")


def _parse(xml: bytes | str, source: str) -> ET.Element:
    from unimusic.scores import _as_utf8

    data = xml.encode("utf-8") if isinstance(xml, str) else _as_utf8(xml)
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise InputError(source, f"malformed XML: {exc}") from None
    if root.tag != "score-partwise":
        raise InputError(source, f"XML root is <{root.tag}>, expected <score-partwise>")
    parts = root.findall("part")
    if not parts:
        raise InputError(source, "MusicXML has no <part>")
    counts = {len(p.findall("measure")) for p in parts}
    if len(counts) != 1:
        raise InputError(source, f"parts have different numbers of measures: {sorted(counts)}")
    if counts == {0}:
        raise InputError(source, "MusicXML has no <measure>")
    return root


def _serialize(root: ET.Element) -> bytes:
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def measure_count(xml: bytes | str, *, source: str = "<musicxml>") -> int:
    return len(_parse(xml, source).find("part").findall("measure"))


def renumber_measures(xml: bytes | str, *, source: str = "<musicxml>") -> bytes:
    """The same score with measures numbered 1..N in document order (every part alike).

    Editions number pickups 0, split measures "4a"/"4b" and restart numbers per
    section; engravers then report those labels. Renumbered, label n is measure
    index n-1 everywhere (Verovio's SVG, its timemap, LMX slices).
    """
    root = _parse(xml, source)
    for part in root.findall("part"):
        for index, measure in enumerate(part.findall("measure")):
            measure.set("number", str(index + 1))
    return _serialize(root)


def _key(el: ET.Element) -> tuple[str, str]:
    return el.tag, el.get("number", "1") if el.tag in NUMBERED else ""


def _in_force(measures: list[ET.Element]) -> dict[tuple[str, str], ET.Element]:
    """Attributes in force after ``measures`` (later ones replace earlier ones, per staff)."""
    state: dict[tuple[str, str], ET.Element] = {}
    for measure in measures:
        for attrs in measure.findall("attributes"):
            for child in attrs:
                if child.tag not in RESTATED:
                    continue
                if child.tag in ALL_STAVES and child.get("number") is None:
                    # An un-numbered key/time/transpose applies to every staff.
                    for k in [k for k in state if k[0] == child.tag]:
                        del state[k]
                state[_key(child)] = child
    return state


def _restated_copy(el: ET.Element) -> ET.Element:
    out = copy.deepcopy(el)
    if out.tag == "clef":
        # A mid-measure clef change is drawn small; restated at a system start it is a normal clef.
        for attr in ("size", "after-barline", "additional"):
            out.attrib.pop(attr, None)
    return out


def _restate(measure: ET.Element, state: dict[tuple[str, str], ET.Element]) -> None:
    """Merge ``state`` into the <attributes> that opens ``measure`` (its own children win)."""
    opening = None
    insert_at = 0
    for i, child in enumerate(measure):
        if child.tag in MUSIC_EVENTS:
            break
        if child.tag == "attributes":
            opening = child
            break
        if child.tag == "print":
            insert_at = i + 1  # keep <print> first, as editors write it
    if opening is None:
        opening = ET.Element("attributes")
        measure.insert(insert_at, opening)
    own = list(opening)
    present = {_key(c) for c in own}
    covers_all = {c.tag for c in own if c.tag in ALL_STAVES and c.get("number") is None}
    added = [
        _restated_copy(el)
        for key, el in state.items()
        if key not in present and key[0] not in covers_all and not (key[0] not in NUMBERED and any(c.tag == key[0] for c in own))
    ]
    order = {tag: i for i, tag in enumerate(ATTRIBUTE_ORDER)}

    def rank(c: ET.Element):
        # Schema order of tags; within a numbered tag the un-numbered one first,
        # then by staff number so clefs read top to bottom.
        number = c.get("number")
        return order.get(c.tag, len(order)), 0 if number is None else 1, int(number) if (number or "").isdigit() else 0

    for c in own:
        opening.remove(c)
    opening.extend(sorted(own + added, key=rank))


def slice_measures(xml: bytes | str, start: int, stop: int, *, source: str = "<musicxml>") -> bytes:
    """Partwise MusicXML holding measures [start, stop) (0-based, document order) of every part.

    Divisions, key, time, staves, clefs (every staff) and transposition as in
    force at ``start`` are restated in an <attributes> opening the first kept
    measure, merged with the attributes already there (those win).
    """
    root = _parse(xml, source)
    n = len(root.find("part").findall("measure"))
    if not (isinstance(start, int) and isinstance(stop, int)) or not 0 <= start < stop <= n:
        raise InputError(source, f"measure range [{start}, {stop}) is not inside 0..{n}")
    for part in root.findall("part"):
        measures = part.findall("measure")
        state = _in_force(measures[:start])
        for i, m in enumerate(measures):
            if not start <= i < stop:
                part.remove(m)
        _restate(measures[start], state)
    return _serialize(root)
