"""Grand-staff piano reductions of four-part scores (chorales, string quartets).

Piano music is scarce in the bundled corpus, and piano scores (two staves,
several voices per staff, backups) are what OMR and transcription see most in
the wild. A four-part score becomes one piano part: parts 1-2 on the treble
staff, parts 3-4 on the bass staff, each part its own voice, stems up for the
upper and down for the lower voice of each staff. Barlines (repeats, voltas)
and key/time changes come from part 1; lyrics and directions are dropped.
"""

from __future__ import annotations

import copy
import math
import xml.etree.ElementTree as ET

from unimusic.errors import InputError

# Where <staff> goes inside <note> (MusicXML's sequence): before these children.
_AFTER_STAFF = ("beam", "notations", "lyric", "play", "listen")


def _strip(root: ET.Element) -> None:
    for el in root.iter():
        if isinstance(el.tag, str) and "}" in el.tag:
            el.tag = el.tag.split("}", 1)[1]


def _divisions_per_measure(part: ET.Element) -> list[int]:
    """The divisions in force in each measure of ``part``."""
    current, out = 1, []
    for measure in part.findall("measure"):
        for attrs in measure.findall("attributes"):
            text = attrs.findtext("divisions")
            if text:
                current = int(float(text))
        out.append(current)
    return out


def _set_staff(note: ET.Element, staff: str) -> None:
    for old in note.findall("staff"):
        note.remove(old)
    el = ET.Element("staff")
    el.text = staff
    children = list(note)
    index = next((i for i, c in enumerate(children) if c.tag in _AFTER_STAFF), len(children))
    note.insert(index, el)


def _set_voice(note: ET.Element, voice: str) -> None:
    el = note.find("voice")
    if el is None:
        el = ET.Element("voice")
        children = list(note)
        index = next((i for i, c in enumerate(children) if c.tag in ("type", "dot", "accidental", "time-modification",
                                                                     "stem", "notehead", "staff", *_AFTER_STAFF)), len(children))
        note.insert(index, el)
    el.text = voice


def piano_reduction(xml: bytes | str, *, source: str = "<musicxml>") -> bytes | None:
    """MusicXML of the reduction, or None when the score is not four single-staff
    parts of equal length (nothing to reduce: not an error)."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise InputError(source, f"malformed XML: {exc}") from None
    _strip(root)
    parts = root.findall("part")
    if len(parts) != 4:
        return None
    measures = [p.findall("measure") for p in parts]
    if len({len(m) for m in measures}) != 1 or not measures[0]:
        return None
    for part in parts:
        for staves in part.iter("staves"):
            if (staves.text or "1").strip() != "1":
                return None
    divisions = [_divisions_per_measure(p) for p in parts]
    common = math.lcm(*{d for per_part in divisions for d in per_part})

    out_root = ET.Element("score-partwise", version="4.0")
    part_list = ET.SubElement(out_root, "part-list")
    score_part = ET.SubElement(part_list, "score-part", id="P1")
    ET.SubElement(score_part, "part-name").text = "Piano"
    instrument = ET.SubElement(score_part, "score-instrument", id="P1-I1")
    ET.SubElement(instrument, "instrument-name").text = "Piano"
    midi = ET.SubElement(score_part, "midi-instrument", id="P1-I1")
    ET.SubElement(midi, "midi-channel").text = "1"
    ET.SubElement(midi, "midi-program").text = "1"
    piano = ET.SubElement(out_root, "part", id="P1")

    for index in range(len(measures[0])):
        first = measures[0][index]
        measure = ET.SubElement(piano, "measure", number=first.get("number", str(index + 1)))
        for barline in first.findall("barline"):
            if barline.get("location") == "left":
                measure.append(copy.deepcopy(barline))
        attrs = ET.SubElement(measure, "attributes")
        if index == 0:
            ET.SubElement(attrs, "divisions").text = str(common)
        for source_attrs in first.findall("attributes"):
            for tag in ("key", "time"):
                for el in source_attrs.findall(tag):
                    attrs.append(copy.deepcopy(el))
        if index == 0:
            ET.SubElement(attrs, "staves").text = "2"
            for number, (sign, line) in ((1, ("G", "2")), (2, ("F", "4"))):
                clef = ET.SubElement(attrs, "clef", number=str(number))
                ET.SubElement(clef, "sign").text = sign
                ET.SubElement(clef, "line").text = line
        if len(attrs) == 0:
            measure.remove(attrs)
        previous_position = 0  # where the previous part's content ended in this measure
        for k in range(4):
            scale = common // divisions[k][index]
            position = 0
            if previous_position > 0:
                el = ET.SubElement(measure, "backup")
                ET.SubElement(el, "duration").text = str(previous_position)
            for el in measures[k][index]:
                if el.tag not in ("note", "backup", "forward"):
                    continue
                item = copy.deepcopy(el)
                duration = item.find("duration")
                if duration is not None and duration.text:
                    duration.text = str(int(float(duration.text)) * scale)
                    value = int(duration.text)
                else:
                    value = 0
                if item.tag == "note":
                    for lyric in item.findall("lyric"):
                        item.remove(lyric)
                    voice = (item.findtext("voice") or "1").strip()
                    _set_voice(item, str(k + 1) if voice == "1" else str(min(16, 4 * k + int(voice) if voice.isdigit() else k + 1)))
                    stem = item.find("stem")
                    if stem is not None:
                        stem.text = "up" if k % 2 == 0 else "down"
                    _set_staff(item, "1" if k < 2 else "2")
                    if item.find("chord") is None and item.find("grace") is None:
                        position += value
                elif item.tag == "backup":
                    position -= value
                    for extra in item.findall("voice") + item.findall("staff"):
                        item.remove(extra)
                else:
                    position += value
                    for extra in item.findall("staff"):
                        item.remove(extra)
                    if item.find("voice") is not None:
                        item.find("voice").text = str(k + 1)
                measure.append(item)
            previous_position = position
        for barline in first.findall("barline"):
            if barline.get("location", "right") != "left":
                measure.append(copy.deepcopy(barline))
    ET.indent(out_root, space=" ")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(out_root, encoding="unicode")).encode()
