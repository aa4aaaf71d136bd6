"""Grand-staff piano reductions of four-part scores: every note kept, two staves."""

import collections

import music21
import pytest

from unimusic.errors import InputError
from unimusic.music21_corpus import CorpusPiece, load_musicxml
from unimusic.render.lmx import linearize
from unimusic.render.reduction import piano_reduction
from unimusic.roundtrip import lmx_roundtrip

FOUR_PART = ["bach/bwv66.6.mxl", "bach/bwv277.krn", "haydn/opus74no1/movement3.mxl", "palestrina/Agnus_01.krn"]


def notes_per_measure(xml) -> dict:
    score = music21.converter.parse(xml, format="musicxml", forceSource=True)
    out = collections.defaultdict(collections.Counter)
    for part in score.parts:
        for index, measure in enumerate(part.getElementsByClass(music21.stream.Measure)):
            for n in measure.recurse().notes:
                if isinstance(n, music21.harmony.Harmony):
                    continue
                for p in n.pitches:
                    out[index][(float(n.getOffsetInHierarchy(measure)), p.nameWithOctave, float(n.quarterLength))] += 1
    return dict(out)


@pytest.mark.parametrize("relpath", FOUR_PART)
def test_reduction_keeps_every_note_on_two_staves(relpath):
    xml = load_musicxml(CorpusPiece(relpath))
    if relpath.startswith("palestrina"):
        parts = music21.converter.parse(xml, format="musicxml").parts
        if len(parts) != 4:
            assert piano_reduction(xml) is None  # five or six voices: not reduced
            return
    reduced = piano_reduction(xml, source=relpath)
    assert reduced is not None
    assert notes_per_measure(reduced) == notes_per_measure(xml)
    score = music21.converter.parse(reduced, format="musicxml", forceSource=True)
    staves = list(score.parts)  # music21 reads a two-staff part as two PartStaffs
    assert len(staves) == 2
    assert [s.recurse().getElementsByClass(music21.clef.Clef)[0].sign for s in staves] == ["G", "F"]
    tokens = linearize(reduced)
    assert "staff:2" in tokens and "backup" in tokens and not any(t.startswith("part:") for t in tokens)
    result = lmx_roundtrip(relpath, reduced)
    assert result.exact_notes and result.canonical and not result.differences


def test_not_four_parts_is_not_reduced():
    assert piano_reduction(load_musicxml(CorpusPiece("joplin/maple_leaf_rag.mxl"))) is None
    assert piano_reduction(load_musicxml(CorpusPiece("ryansMammoth/HasteToTheWeddingJig.abc"))) is None


def test_malformed_xml_names_the_source():
    with pytest.raises(InputError, match="x.musicxml: malformed XML"):
        piano_reduction(b"<score-partwise><part>", source="x.musicxml")
