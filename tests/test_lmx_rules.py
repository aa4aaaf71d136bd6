"""Single rules of the LMX codec (hand-written streams are fine here)."""

from fractions import Fraction

import music21
import pytest

from unimusic.errors import InputError
from unimusic.render.lmx import AccidentalState, delinearize, key_alter, linearize, note_type_for, span_tokens
from unimusic.tokens.lmx import ALL_TOKENS, LmxCodec, lmx_text, tokens_from_text


def parse(xml: str):
    return music21.converter.parse(xml, format="musicxml", forceSource=True)


def test_codec_strict_encode_tolerant_decode():
    codec = LmxCodec()
    ids = codec.encode(["measure", "C4", "quarter"])
    assert codec.decode(ids) == (["measure", "C4", "quarter"], 0)
    with pytest.raises(InputError, match="unknown LMX token 'H9' at position 1"):
        codec.encode(["measure", "H9"])
    tokens, invalid = codec.decode([0, -1, codec.num_classes, "x", 1])
    assert tokens == [ALL_TOKENS[0], ALL_TOKENS[1]] and invalid == 3


def test_codec_hash_changes_with_tokens():
    assert LmxCodec().hash == LmxCodec().hash
    assert LmxCodec(ALL_TOKENS[:-1]).hash != LmxCodec().hash


def test_key_alter_follows_circle_of_fifths():
    assert [key_alter(3, s) for s in "FCGDAEB"] == [1, 1, 1, 0, 0, 0, 0]
    assert [key_alter(-2, s) for s in "BEADGCF"] == [-1, -1, 0, 0, 0, 0, 0]


def test_accidental_carries_through_measure_and_ties_across_barline():
    acc = AccidentalState()
    acc.fifths = 0
    acc.record(staff=1, step="F", octave=4, alter=1, explicit=True, tie_start=True, tie_stop=False)
    assert acc.implied(staff=1, step="F", octave=4, tie_stop=False) == 1
    assert acc.implied(staff=1, step="F", octave=5, tie_stop=False) == 0  # other octave
    assert acc.implied(staff=2, step="F", octave=4, tie_stop=False) == 0  # other staff
    acc.new_measure()
    assert acc.implied(staff=1, step="F", octave=4, tie_stop=False) == 0
    assert acc.implied(staff=1, step="F", octave=4, tie_stop=True) == 1  # tied over the barline


def test_note_type_for_and_spans():
    assert note_type_for(Fraction(3, 2)) == ("quarter", 1)
    assert note_type_for(Fraction(7, 4)) == ("quarter", 2)
    assert note_type_for(Fraction(5, 2)) is None
    assert span_tokens("backup", Fraction(3)) == ["backup", "half", "backup", "quarter"]
    # a triplet quarter (2/3 of a quarter) is a tuplet span
    assert span_tokens("forward", Fraction(2, 3)) == ["forward", "quarter", "3in2"]


def test_accidental_inference_roundtrip_spelling():
    # key of D (2 sharps): F# needs no token, F natural does, and the second
    # F in the measure inherits the natural.
    lmx = "measure key:fifths:2 time beats:2 beat-type:4 clef:G2 F4 quarter natural F4 quarter measure F4 half"
    xml, stats = delinearize(lmx)
    assert stats.invalid_tokens == 0
    names = [n.pitch.nameWithOctave for n in parse(xml).recurse().notes]
    assert names == ["F4", "F4", "F#4"]
    assert linearize(xml) == tokens_from_text(lmx)


def test_linearizer_adds_accidental_the_source_forgot():
    # The source spells F#4 but shows no accidental in C major: LMX must carry it.
    xml = """<?xml version="1.0"?><score-partwise><part-list><score-part id="P1"><part-name/></score-part></part-list>
    <part id="P1"><measure number="1"><attributes><divisions>1</divisions><key><fifths>0</fifths></key>
    <time><beats>1</beats><beat-type>4</beat-type></time><clef><sign>G</sign><line>2</line></clef></attributes>
    <note><pitch><step>F</step><alter>1</alter><octave>4</octave></pitch><duration>1</duration><type>quarter</type></note>
    </measure></part></score-partwise>"""
    tokens = linearize(xml)
    assert tokens[-3:] == ["F4", "quarter", "sharp"]
    assert [n.pitch.name for n in parse(delinearize(tokens)[0]).recurse().notes] == ["F#"]


def test_multi_part_tokens_and_measure_major_order():
    score = music21.stream.Score()
    for pitch in ("C5", "C3"):
        part = music21.stream.Part()
        for _ in range(2):
            part.append(music21.note.Note(pitch, quarterLength=4))
        score.insert(0, part)
    xml = music21.musicxml.m21ToXml.GeneralObjectExporter(score).parse()
    tokens = linearize(xml)
    assert tokens.count("measure") == 2
    assert [t for t in tokens if t.startswith("part:")] == ["part:1", "part:2", "part:1", "part:2"]
    restored = parse(delinearize(tokens)[0])
    assert [[n.pitch.nameWithOctave for n in p.recurse().notes] for p in restored.parts] == [["C5", "C5"], ["C3", "C3"]]


def test_single_part_has_no_part_tokens():
    xml = music21.musicxml.m21ToXml.GeneralObjectExporter(music21.corpus.parse("bach/bwv66.6").parts[0]).parse()
    assert not [t for t in linearize(xml) if t.startswith("part:")]


def test_grand_staff_backup_staff_and_clefs():
    lmx = (
        "measure time beats:4 beat-type:4 clef:G2 staff:1 clef:F4 staff:2 "
        "A4 voice:1 whole staff:1 backup whole C3 voice:5 whole staff:2"
    )
    xml, stats = delinearize(lmx)
    assert stats.invalid_tokens == 0
    assert linearize(xml) == lmx.split()
    parts = parse(xml).parts
    assert [[n.pitch.nameWithOctave for n in p.recurse().notes] for p in parts] == [["A4"], ["C3"]]
    assert [p.recurse().getElementsByClass(music21.clef.Clef)[0].sign for p in parts] == ["G", "F"]


def test_tuplets_ties_and_chords():
    lmx = (
        "measure time beats:2 beat-type:4 clef:G2 "
        "C4 eighth 3in2 tuplet:start D4 eighth 3in2 E4 eighth 3in2 tuplet:stop "
        "G4 quarter tied:start chord B4 quarter "
        "measure G4 half tied:stop"
    )
    xml, stats = delinearize(lmx)
    assert stats.invalid_tokens == 0
    notes = list(parse(xml).recurse().notes)
    assert [float(n.duration.quarterLength) for n in notes[:3]] == pytest.approx([1 / 3] * 3)
    assert notes[3].isChord and [p.nameWithOctave for p in notes[3].pitches] == ["G4", "B4"]
    assert notes[-1].tie is not None and notes[-1].tie.type == "stop"
    assert linearize(xml) == lmx.split()


def test_tolerant_decoding_counts_by_reason():
    xml, stats = delinearize(["measure", "dot", "C4", "quarter", "bogus", "beats:3", "quarter", "rest", "sharp"])
    assert stats.invalid_tokens == 6
    assert stats.reasons == {"suffix_without_note": 2, "unknown_token": 1, "time_value_without_time": 1,
                             "type_without_note": 1, "incomplete_note": 1}
    assert [n.pitch.nameWithOctave for n in parse(xml).recurse().notes] == ["C4"]


def test_text_form_roundtrip_and_header():
    tokens = ["measure", "part:1", "C4", "quarter", "part:2", "E4", "quarter", "measure", "part:1", "D4", "quarter"]
    text = lmx_text(tokens)
    assert text.splitlines()[1].startswith("  part:1")
    assert tokens_from_text("version: 1.0\nflavor: core\n---\n" + text + "# trailing comment\n") == tokens


def test_linearize_errors_name_place_and_problem():
    xml = """<score-partwise><part-list/><part id="P1"><measure number="7"><attributes><divisions>1</divisions>
    </attributes><note><pitch><step>C</step><alter>0.5</alter><octave>4</octave></pitch><duration>1</duration>
    <type>quarter</type></note></measure></part></score-partwise>"""
    with pytest.raises(InputError, match=r"x.xml: part 1 \(P1\), measure 7: alteration 0.5 of C4"):
        linearize(xml, source="x.xml")
    with pytest.raises(InputError, match="malformed XML"):
        linearize("<score-partwise><part>", source="y.xml")
    with pytest.raises(InputError, match="expected <score-partwise>"):
        linearize("<html/>", source="z.xml")
