"""The file layer of ``unimusic translate``: read any input, write any output, fail in one line.

Fixtures come from a real chorale of music21's corpus (bach/bwv66.6): its MusicXML,
its page engraved by Verovio (PNG and, through cairosvg, PDF), Verovio's MIDI of it,
and that MIDI synthesized by FluidSynth.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import shutil
import zipfile

import numpy as np
import pytest

from unimusic.errors import InputError
from unimusic.io_files import (
    MODALITY_OF,
    Audio,
    ConversionWarning,
    Limits,
    Lmx,
    Midi,
    Pages,
    Score,
    output_kind,
    read_input,
    write_output,
)
from unimusic.tokens.midi import Note, notes_from_midi

PIECE = "bach/bwv66.6"
SR = 22050


@dataclasses.dataclass(frozen=True, eq=False)
class Fixture:
    mxl_path: str
    xml: bytes
    svg: str
    page: np.ndarray
    png: bytes
    pdf: bytes
    midi: bytes
    notes: tuple[Note, ...]
    audio: np.ndarray


@functools.lru_cache(maxsize=1)
def chorale() -> Fixture:
    import cairosvg
    import music21

    from unimusic.render.engrave import EngraveOptions, engrave_svg_pages, svg_to_gray, svg_to_png
    from unimusic.render.synthesize import default_soundfonts, synthesize
    from unimusic.render.systems import engrave_piece
    from unimusic.scores import musicxml_bytes

    path = str(music21.corpus.getWork(PIECE))
    xml = musicxml_bytes(path)
    svg = engrave_svg_pages(xml)[0]
    midi = engrave_piece(xml, options=EngraveOptions()).midi
    return Fixture(
        mxl_path=path,
        xml=xml,
        svg=svg,
        page=svg_to_gray(svg),
        png=svg_to_png(svg),
        pdf=cairosvg.svg2pdf(bytestring=svg.encode("utf-8")),
        midi=midi,
        notes=tuple(notes_from_midi(midi)),
        audio=synthesize(midi, soundfont=default_soundfonts()[0], sample_rate=SR),
    )


@pytest.fixture
def piece() -> Fixture:
    return chorale()


def put(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def m21_note_count(path) -> int:
    import music21

    return len(music21.converter.parse(str(path), forceSource=True).flatten().notes)


def assert_input_error(path, match: str, **kw) -> InputError:
    with pytest.raises(InputError, match=match) as info:
        read_input(path, **kw)
    assert str(path) in str(info.value) and info.value.source == str(path)
    assert "\n" not in info.value.problem
    return info.value


# -- reading and writing each kind -------------------------------------------------------


def test_score_reads_as_partwise_musicxml_and_writes_musicxml_and_mxl(piece, tmp_path):
    src = tmp_path / "chorale.mxl"
    shutil.copy(piece.mxl_path, src)
    loaded = read_input(src)
    assert (loaded.source, loaded.modality, loaded.warnings) == (str(src), "score", ())
    assert loaded.value == Score(musicxml=piece.xml)
    expected = m21_note_count(src)
    for name in ("out/a.musicxml", "out/b.xml", "out/deep/c.mxl"):  # parent folders are created
        written = write_output(loaded.value, tmp_path / name)
        assert written == [str(tmp_path / name)]
        assert read_input(written[0]).value == loaded.value
        assert m21_note_count(written[0]) == expected
    with zipfile.ZipFile(tmp_path / "out/deep/c.mxl") as zf:
        assert "META-INF/container.xml" in zf.namelist()
        assert zf.read("mimetype").startswith(b"application/vnd.recordare")


@pytest.mark.parametrize("work", ["palestrina/Credo_67_c.krn", "ryansMammoth/PaddyMilesFricasseeReel.abc"])
def test_kern_and_abc_read_as_musicxml(work, tmp_path):
    import music21

    src = put(tmp_path, "piece.dat", music21.corpus.getWork(work).read_bytes())  # no telling extension
    loaded = read_input(src)
    assert loaded.modality == "score" and b"<score-partwise" in loaded.value.musicxml
    out = write_output(loaded.value, tmp_path / "piece.musicxml")[0]
    assert m21_note_count(out) > 10


def test_lmx_round_trips_and_converts_to_and_from_musicxml(piece, tmp_path):
    from unimusic.render.lmx import linearize

    tokens = tuple(linearize(piece.xml))
    out = write_output(Score(musicxml=piece.xml), tmp_path / "chorale.lmx")[0]
    text = (tmp_path / "chorale.lmx").read_text()
    assert text.count("\n") == 1 and text.split() == list(tokens)
    loaded = read_input(out)
    assert (loaded.modality, loaded.value, loaded.warnings) == ("lmx", Lmx(tokens=tokens), ())
    # the same tokens in a file whose extension says nothing are still LMX
    assert read_input(put(tmp_path, "tokens.txt", " ".join(tokens).encode())).value == loaded.value
    # Lmx -> MusicXML parses in music21 and linearizes back to the same tokens
    for name in ("back.musicxml", "back.mxl"):
        xml_path = write_output(loaded.value, tmp_path / name)[0]
        back = read_input(xml_path)
        assert back.modality == "score" and tuple(linearize(back.value.musicxml)) == tokens
        assert m21_note_count(xml_path) == m21_note_count(piece.mxl_path)
    assert read_input(write_output(loaded.value, tmp_path / "again.txt")[0]).value == loaded.value


def test_lmx_outside_the_grammar_warns_on_read_and_on_conversion(tmp_path):
    src = put(tmp_path, "odd.lmx", b"measure quarter C4 measure key:fifths:0 E4 time beats:4 beat-type:4 half\n")
    loaded = read_input(src)
    assert loaded.modality == "lmx" and loaded.warnings and "grammar" in loaded.warnings[0]
    with pytest.warns(ConversionWarning, match="dropped"):
        write_output(loaded.value, tmp_path / "odd.musicxml")


def test_midi_reads_and_round_trips_within_10_ms(piece, tmp_path):
    loaded = read_input(put(tmp_path, "chorale.mid", piece.midi))
    assert (loaded.modality, loaded.warnings) == ("midi", ())
    assert loaded.value == Midi(notes=piece.notes) and len(piece.notes) > 100
    out = write_output(loaded.value, tmp_path / "out" / "again.midi")[0]
    back = read_input(out).value.notes
    assert len(back) == len(piece.notes)
    order = lambda n: (n.start, n.pitch, n.end)  # noqa: E731
    for a, b in zip(sorted(piece.notes, key=order), sorted(back, key=order)):
        assert (a.pitch, a.velocity, a.program, a.is_drum) == (b.pitch, b.velocity, b.program, b.is_drum)
        assert abs(a.start - b.start) <= 0.010 and abs(a.end - b.end) <= 0.010


def test_midi_without_notes_is_read_with_a_warning(tmp_path):
    out = write_output(Midi(notes=()), tmp_path / "empty.mid")[0]
    loaded = read_input(out)
    assert loaded.value.notes == () and any("no notes" in w for w in loaded.warnings)


def test_audio_round_trips_through_wav_and_flac(piece, tmp_path):
    audio = Audio(samples=piece.audio, sample_rate=SR)
    assert audio.seconds == pytest.approx(piece.audio.size / SR) and audio.seconds > 20
    for name in ("chorale.wav", "chorale.flac"):
        out = write_output(audio, tmp_path / name)[0]
        loaded = read_input(out)
        assert (loaded.modality, loaded.warnings) == ("audio", ())
        back = loaded.value
        assert back.sample_rate == SR and back.samples.dtype == np.float32 and back.samples.shape == piece.audio.shape
        assert np.max(np.abs(back.samples - piece.audio)) <= 1.0 / 32768 + 1e-7  # 16-bit quantization only
    import soundfile as sf

    assert sf.info(str(tmp_path / "chorale.wav")).subtype == "PCM_16"


def test_stereo_audio_is_mixed_to_mono_and_silence_warns(piece, tmp_path):
    import soundfile as sf

    a = piece.audio[: SR * 2]
    sf.write(str(tmp_path / "stereo.wav"), np.stack([a, 0.5 * a], axis=1), SR, subtype="FLOAT")
    loaded = read_input(tmp_path / "stereo.wav")
    assert loaded.warnings == () and loaded.value.samples.ndim == 1
    np.testing.assert_allclose(loaded.value.samples, 0.75 * a, atol=1e-6)

    sf.write(str(tmp_path / "quiet.flac"), np.full(SR, 3e-5, np.float32), SR)
    assert read_input(tmp_path / "quiet.flac").warnings == ("silent audio",)


def test_pages_round_trip_as_png_one_file_per_page(piece, tmp_path):
    loaded = read_input(put(tmp_path, "page.png", piece.png))
    assert (loaded.modality, loaded.warnings) == ("image", ())
    assert loaded.value == Pages(images=(piece.page,))
    assert write_output(loaded.value, tmp_path / "one.png") == [str(tmp_path / "one.png")]
    assert read_input(tmp_path / "one.png").value == loaded.value

    second = np.ascontiguousarray(piece.page[::-1])
    written = write_output(Pages(images=(piece.page, second)), tmp_path / "out" / "book.png")
    assert written == [str(tmp_path / "out" / "book-1.png"), str(tmp_path / "out" / "book-2.png")]
    assert [read_input(p).value for p in written] == [Pages(images=(piece.page,)), Pages(images=(second,))]


def test_pdf_pages_are_rasterized_gray_at_pdf_dpi(piece, tmp_path):
    from unimusic.render.engrave import svg_to_gray

    src = put(tmp_path, "score.pdf", piece.pdf)
    (page,) = read_input(src).value.images
    reference = svg_to_gray(piece.svg, scale=150 / 96)  # cairosvg: 96 px per inch
    assert page.dtype == np.uint8 and np.all(np.abs(np.subtract(page.shape, reference.shape)) <= 2)
    h, w = min(page.shape[0], reference.shape[0]), min(page.shape[1], reference.shape[1])
    a, b = page[:h, :w].astype(float).ravel(), reference[:h, :w].astype(float).ravel()
    assert np.abs(a - b).mean() < 10 and np.corrcoef(a, b)[0, 1] > 0.9  # the same page, drawn by another rasterizer
    (small,) = read_input(src, limits=Limits(pdf_dpi=75)).value.images
    assert abs(small.shape[1] - page.shape[1] / 2) <= 1


def test_pages_written_as_pdf_read_back_at_the_same_size(piece, tmp_path):
    pages = Pages(images=(piece.page, np.ascontiguousarray(piece.page[:300])))
    assert write_output(pages, tmp_path / "book.pdf") == [str(tmp_path / "book.pdf")]
    assert (tmp_path / "book.pdf").read_bytes().startswith(b"%PDF")
    back = read_input(tmp_path / "book.pdf").value
    assert back == pages  # lossless gray images on pages of their size at 150 dpi


def test_other_image_formats_alpha_and_tiff_pages(piece, tmp_path):
    import cv2

    ok, jpg = cv2.imencode(".jpg", piece.page, [cv2.IMWRITE_JPEG_QUALITY, 95])
    (page,) = read_input(put(tmp_path, "photo.jpeg", jpg.tobytes())).value.images
    assert page.shape == piece.page.shape and np.abs(page.astype(int) - piece.page).mean() < 3

    ink = np.zeros((40, 60, 4), np.uint8)  # black ink on a transparent background
    ink[10:20, 10:50, 3] = 255
    ok, png = cv2.imencode(".png", ink)
    (page,) = read_input(put(tmp_path, "transparent.png", png.tobytes())).value.images
    assert page[15, 20] == 0 and page[0, 0] == 255 and page.dtype == np.uint8

    ok, png16 = cv2.imencode(".png", piece.page.astype(np.uint16) * 257)
    assert read_input(put(tmp_path, "deep.png", png16.tobytes())).value == Pages(images=(piece.page,))

    sheets = [piece.page, np.ascontiguousarray(piece.page[:, ::-1]), np.full((50, 70), 255, np.uint8)]
    ok, tiff = cv2.imencodemulti(".tiff", sheets)
    loaded = read_input(put(tmp_path, "scan.tiff", tiff.tobytes()))
    assert loaded.value == Pages(images=tuple(sheets))


def test_content_decides_over_the_extension(piece, tmp_path):
    loaded = read_input(put(tmp_path, "page.mid", piece.png))
    assert loaded.modality == "image" and "extension .mid says MIDI" in loaded.warnings[0]
    assert read_input(put(tmp_path, "chorale.txt", piece.xml)).modality == "score"
    loaded = read_input(put(tmp_path, "chorale.abc", piece.xml))
    assert loaded.value == Score(musicxml=piece.xml) and "extension .abc says ABC" in loaded.warnings[0]
    loaded = read_input(put(tmp_path, "notes.bin", piece.midi))
    assert (loaded.modality, loaded.warnings) == ("midi", ())
    assert read_input(put(tmp_path, "scan", piece.pdf)).modality == "image"
    assert MODALITY_OF[type(loaded.value)] == loaded.modality


# -- errors ------------------------------------------------------------------------------


def test_missing_directory_and_empty_files(tmp_path):
    assert_input_error(tmp_path / "nope.png", "no such file")
    (tmp_path / "folder.png").mkdir()
    assert_input_error(tmp_path / "folder.png", "is a directory")
    assert_input_error(put(tmp_path, "empty.wav", b""), r"empty \(0 bytes\)")


def test_unsupported_types_name_the_supported_ones(tmp_path):
    docx = io.BytesIO()
    with zipfile.ZipFile(docx, "w") as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("word/document.xml", "<w:document/>")
    err = assert_input_error(put(tmp_path, "letter.docx", docx.getvalue()), "Office document")
    assert "supported:" in err.problem and "MusicXML" in err.problem and "PDF" in err.problem
    noise = np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    assert_input_error(put(tmp_path, "noise.bin", b"\x00\x01" + noise), "unsupported file type.*supported:")
    letter = put(tmp_path, "notes.txt", b"Dear Bach, thank you for the chorale.")
    assert_input_error(letter, r"not MusicXML, \*\*kern, ABC or LMX \(unknown LMX token 'Dear'\)")
    assert_input_error(put(tmp_path, "config.yml", b"version: 3\nname: x\n"), "unknown LMX token 'version:'")
    assert_input_error(put(tmp_path, "drawing.svg", b'<svg xmlns="http://www.w3.org/2000/svg"/>'), "root <svg>")


def test_damaged_files_of_known_types(piece, tmp_path):
    assert_input_error(put(tmp_path, "cut.png", piece.png[: len(piece.png) // 2]), "damaged or unreadable PNG")
    assert_input_error(put(tmp_path, "cut.mid", piece.midi[: len(piece.midi) // 2]), "truncated MIDI")
    junk = put(tmp_path, "junk.pdf", b"%PDF-1.7\n" + b"\x8f garbage \x00" * 200)
    assert_input_error(junk, "damaged or unreadable PDF")
    assert_input_error(put(tmp_path, "cut.mxl", open(piece.mxl_path, "rb").read()[:900]), "damaged compressed MusicXML")
    assert_input_error(put(tmp_path, "bad.musicxml", piece.xml[: len(piece.xml) // 2]), "malformed XML")
    assert_input_error(put(tmp_path, "bad.lmx", b"measure quarter C4 fff-please"), "unknown LMX token 'fff-please'")
    assert_input_error(put(tmp_path, "fake.png", b"this is not an image at all"), "damaged or unreadable PNG")
    assert_input_error(put(tmp_path, "fake.wav", b"this is not audio at all"), "unreadable audio")


def test_wav_header_without_data(piece, tmp_path):
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.zeros(0, np.int16), SR, format="WAV", subtype="PCM_16")
    assert_input_error(put(tmp_path, "nothing.wav", buf.getvalue()), "no samples")
    buf = io.BytesIO()
    sf.write(buf, piece.audio[:SR], SR, format="WAV", subtype="PCM_16")
    assert_input_error(put(tmp_path, "header-only.wav", buf.getvalue()[:44]), "no samples|unreadable audio")


def test_limits(piece, tmp_path):
    png = put(tmp_path, "page.png", piece.png)
    err = assert_input_error(png, "too large", limits=Limits(max_bytes=1000))
    assert str(len(piece.png)) in err.problem
    assert_input_error(png, r"page 1 is too large \(840x631", limits=Limits(max_pixels=500_000))

    wav = write_output(Audio(samples=piece.audio, sample_rate=SR), tmp_path / "long.wav")[0]
    assert_input_error(wav, r"audio is too long \(2\d\.\d s > limit 10 s\)", limits=Limits(max_audio_seconds=10))

    pdf = write_output(Pages(images=(piece.page,) * 3), tmp_path / "three.pdf")[0]
    assert len(read_input(pdf).value.images) == 3
    assert_input_error(pdf, r"too many pages \(3 > limit 2\)", limits=Limits(max_pages=2))
    assert_input_error(pdf, "page 1 is too large", limits=Limits(max_pixels=500_000))

    import cv2

    ok, tiff = cv2.imencodemulti(".tiff", [piece.page] * 3)
    assert_input_error(put(tmp_path, "scan.tif", tiff.tobytes()), "too many pages", limits=Limits(max_pages=2))


def test_size_limit_is_checked_before_reading(tmp_path, monkeypatch):
    import pathlib

    big = put(tmp_path, "big.flac", b"fLaC" + b"\x00" * 5000)
    monkeypatch.setattr(pathlib.Path, "read_bytes", lambda self: pytest.fail("read a file over the limit"))
    assert_input_error(big, "too large", limits=Limits(max_bytes=100))


# -- writing errors ----------------------------------------------------------------------


def test_output_kind_from_the_extension(tmp_path):
    expected = {
        "a.musicxml": "musicxml", "a.XML": "musicxml", "a.mxl": "musicxml", "a.lmx": "lmx", "a.txt": "lmx",
        "a.mid": "midi", "a.midi": "midi", "a.wav": "audio", "a.flac": "audio", "a.png": "image", "a.pdf": "image",
    }
    assert {name: output_kind(tmp_path / name) for name in expected} == expected
    for name in ("a.docx", "noext"):
        with pytest.raises(InputError, match="unsupported output extension") as info:
            output_kind(tmp_path / name)
        assert str(tmp_path / name) in str(info.value)


def test_values_that_cannot_go_to_the_extension(piece, tmp_path):
    audio = Audio(samples=piece.audio[:100], sample_rate=SR)
    cases = [
        (audio, "x.mid", "cannot write audio to a .mid file"),
        (Pages(images=(piece.page,)), "x.wav", "cannot write image to a .wav file"),
        (Midi(notes=piece.notes), "x.musicxml", "cannot write midi to a .musicxml file"),
        (Score(musicxml=piece.xml), "x.png", "cannot write score to a .png file"),
        (audio, "x.docx", "unsupported output extension"),
        ("just text", "x.lmx", "cannot write a str"),
    ]
    for value, name, message in cases:
        with pytest.raises(InputError, match=message) as info:
            write_output(value, tmp_path / name)
        assert info.value.source == str(tmp_path / name)
        assert not (tmp_path / name).exists()
    (tmp_path / "taken.wav").mkdir()
    with pytest.raises(InputError, match="is a directory"):
        write_output(audio, tmp_path / "taken.wav")


def test_values_check_their_contents():
    with pytest.raises(InputError, match="uint8 gray"):
        Pages(images=(np.zeros((4, 4, 3), np.uint8),))
    with pytest.raises(InputError, match="mono"):
        Audio(samples=np.zeros((10, 2), np.float32), sample_rate=SR)
    with pytest.raises(InputError, match="sample rate"):
        Audio(samples=np.zeros(10, np.float32), sample_rate=0)
    assert Lmx(tokens="measure quarter C4").tokens == ("measure", "quarter", "C4")
    with pytest.raises(InputError, match="positive"):
        Limits(max_pages=0)
