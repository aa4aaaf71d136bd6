"""Measure slices of MusicXML stand alone: same notes, same clefs/keys/times in force, LMX round trip."""

import random
import warnings
import xml.etree.ElementTree as ET
from fractions import Fraction

import pytest

from unimusic.errors import InputError
from unimusic.music21_corpus import CorpusPiece, load_musicxml
from unimusic.render.lmx import delinearize, linearize
from unimusic.render.slicing import measure_count, renumber_measures, slice_measures

# Each has a clef, key or time change after its first measure (found by scanning
# the corpus), so a slice starting mid-piece needs the restated attributes.
PIECES = {
    "handel/rinaldo/Lascia_chio_pianga.mxl": "clef, key and time changes; voice + piano",
    "schumann_clara/polonaise_op1n1.mxl": "piano; clef and key changes",
    "haydn/opus1no1/movement2.mxl": "string quartet; key change",
    "bach/bwv846.mxl": "piano; clef change",
    "bach/bwv66.6.mxl": "chorale with a pickup",
    "palestrina/Agnus_01.krn": "kern via music21",
    "ryansMammoth/HasteToTheWeddingJig.abc": "ABC via music21; repeats and endings",
}


def parse(xml):
    import music21

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return music21.converter.parse(xml, format="musicxml", forceSource=True)


def measure_notes(score) -> list[tuple[int, int, list]]:
    """(part/staff, measure, sorted (onset in measure, spelled pitch, duration)) for every measure."""
    out = []
    for pi, part in enumerate(score.parts):
        for mi, m in enumerate(part.getElementsByClass("Measure")):
            rows = []
            for n in m.recurse().notes:
                onset = Fraction(n.getOffsetInHierarchy(m)).limit_denominator(10_000)
                for p in n.pitches:
                    rows.append((onset, p.nameWithOctave, Fraction(n.quarterLength).limit_denominator(10_000), n.duration.isGrace))
            out.append((pi, mi, sorted(rows)))
    return out


def in_force(score, index: int) -> list[tuple]:
    """Per part/staff: (clef, key sharps, time) in force where measure ``index`` starts."""
    import music21

    out = []
    for part in score.parts:
        start = part.getElementsByClass("Measure")[index].offset
        flat = part.flatten()
        state = []
        for cls in (music21.clef.Clef, music21.key.KeySignature, music21.meter.TimeSignature):
            found = [el for el in flat.getElementsByClass(cls) if el.offset <= start]
            el = found[-1] if found else None
            state.append(None if el is None else el.name if cls is music21.clef.Clef else el.sharps if cls is music21.key.KeySignature else el.ratioString)
        out.append(tuple(state))
    return out


def slices_for(relpath: str, xml: bytes, count: int = 3) -> list[tuple[int, int]]:
    n = measure_count(xml)
    rng = random.Random(relpath)
    ranges = [(rng.randrange(1, n), None) for _ in range(count)]
    return [(a, min(n, a + rng.randint(1, 5))) for a, _ in ranges] + [(0, min(n, 3))]


@pytest.fixture(scope="module")
def originals():
    out = {}
    for rel in PIECES:
        xml = load_musicxml(CorpusPiece(rel))
        out[rel] = (xml, parse(xml))
    return out


@pytest.mark.parametrize("relpath", list(PIECES))
def test_slice_keeps_notes_and_context(relpath, originals):
    xml, score = originals[relpath]
    notes = measure_notes(score)
    for start, stop in slices_for(relpath, xml):
        sliced = slice_measures(xml, start, stop, source=relpath)
        s = parse(sliced)
        got = measure_notes(s)
        want = [(pi, mi - start, rows) for pi, mi, rows in notes if start <= mi < stop]
        assert got == want, (relpath, start, stop)
        assert sum(len(r) for _, _, r in got) > 0
        assert in_force(s, 0) == in_force(score, start), (relpath, start)
        # The slice's LMX reads back to the same notes and the same context.
        restored, stats = delinearize(linearize(sliced, source=relpath))
        assert stats.invalid_tokens == 0
        r = parse(restored)
        assert measure_notes(r) == got, (relpath, start, stop)
        assert in_force(r, 0) == in_force(score, start)


def test_mid_piece_changes_are_restated(originals):
    """Slices that start after a change: the test above can only pass by restating it."""
    import music21

    xml, score = originals["handel/rinaldo/Lascia_chio_pianga.mxl"]
    changes = []
    for index in range(1, measure_count(xml)):
        if in_force(score, index) != in_force(score, 0):
            changes.append(index)
    assert changes, "the fixture lost its key/clef/time changes"
    start = changes[len(changes) // 2]
    s = parse(slice_measures(xml, start, start + 1))
    assert in_force(s, 0) == in_force(score, start) != in_force(score, 0)
    # Restated, not inherited: the first kept measure itself carries the elements.
    for part in s.parts:
        m = part.getElementsByClass("Measure")[0]
        assert m.getElementsByClass(music21.clef.Clef)
        assert m.getElementsByClass(music21.key.KeySignature)
        assert m.getElementsByClass(music21.meter.TimeSignature)


def test_existing_attributes_win_and_order_is_valid():
    xml = b"""<?xml version="1.0"?><score-partwise><part-list><score-part id="P1"><part-name>x</part-name></score-part></part-list>
    <part id="P1">
      <measure number="1"><attributes><divisions>2</divisions><key><fifths>2</fifths></key><time><beats>3</beats><beat-type>4</beat-type></time>
        <staves>2</staves><clef number="1"><sign>G</sign><line>2</line></clef><clef number="2"><sign>F</sign><line>4</line></clef></attributes>
        <note><pitch><step>C</step><octave>4</octave></pitch><duration>6</duration><staff>1</staff><type>half</type><dot/></note>
        <attributes><clef number="2" size="cue"><sign>G</sign><line>2</line></clef></attributes></measure>
      <measure number="2"><print new-system="yes"/><attributes><key><fifths>-1</fifths></key></attributes>
        <note><pitch><step>B</step><alter>-1</alter><octave>4</octave></pitch><duration>6</duration><staff>1</staff><type>half</type><dot/></note></measure>
      <measure number="3"><note><pitch><step>C</step><octave>4</octave></pitch><duration>6</duration><staff>1</staff><type>half</type><dot/></note></measure>
    </part></score-partwise>"""
    root = ET.fromstring(slice_measures(xml, 1, 3))
    m = root.find("part/measure")
    assert [c.tag for c in m][:2] == ["print", "attributes"]
    attrs = m.find("attributes")
    assert [c.tag for c in attrs] == ["divisions", "key", "time", "staves", "clef", "clef"]
    assert attrs.find("key/fifths").text == "-1"  # the measure's own key wins
    clefs = {c.get("number"): (c.findtext("sign"), c.get("size")) for c in attrs.findall("clef")}
    assert clefs == {"1": ("G", None), "2": ("G", None)}  # mid-measure clef change in force, drawn full size
    assert len(root.findall("part/measure")) == 2
    # Slice starting at a measure without attributes gets a fresh <attributes> first.
    m3 = ET.fromstring(slice_measures(xml, 2, 3)).find("part/measure")
    assert m3[0].tag == "attributes" and m3.find("attributes/key/fifths").text == "-1"


def test_renumber_and_bad_ranges():
    xml = load_musicxml(CorpusPiece("bach/bwv66.6.mxl"))  # pickup numbered 0
    root = ET.fromstring(renumber_measures(xml))
    for part in root.findall("part"):
        assert [m.get("number") for m in part.findall("measure")] == [str(i) for i in range(1, len(part.findall("measure")) + 1)]
    n = measure_count(xml)
    for start, stop in [(-1, 2), (2, 2), (3, 1), (0, n + 1)]:
        with pytest.raises(InputError):
            slice_measures(xml, start, stop)
    with pytest.raises(InputError):
        slice_measures(b"<score-timewise/>", 0, 1)
    with pytest.raises(InputError):
        slice_measures(b"not xml", 0, 1)
