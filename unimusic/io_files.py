"""The file layer of ``unimusic translate``: any supported file in, any value out.

:func:`read_input` turns a file into a typed value (:class:`Pages`, :class:`Audio`,
:class:`Midi`, :class:`Score` or :class:`Lmx`); :func:`write_output` writes a
value in the format its path's extension names. The type of an input comes from
its content (magic bytes, XML root, text markers); the extension only decides
when the content says nothing.

Every problem -- a missing, empty, oversized, unsupported or damaged file, a
value that cannot go to the requested extension -- is an
:class:`~unimusic.errors.InputError` naming the path and the problem in one line.
Library exceptions (OpenCV, libsndfile, PDFium, mido, music21) never escape.
Heavy libraries are imported inside the functions that need them.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np

from unimusic.errors import InputError
from unimusic.tokens.midi import Note

SUPPORTED_INPUTS = (
    "score images (PNG, JPEG, TIFF, BMP, WebP, GIF), PDF, audio (WAV, FLAC, OGG, MP3, AIFF), "
    "MIDI (.mid), MusicXML (.musicxml/.xml/.mxl), Humdrum **kern (.krn), ABC (.abc), LMX text (.lmx)"
)
MXL_MIMETYPE = b"application/vnd.recordare.musicxml"
_MXL_CONTAINER = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<container>\n  <rootfiles>\n"
    b'    <rootfile full-path="score.musicxml" media-type="application/vnd.recordare.musicxml+xml"/>\n'
    b"  </rootfiles>\n</container>\n"
)


class UnsupportedType(InputError):
    """Content of a kind unimusic does not read (a Word file, a zip, random bytes)."""


class TooLarge(InputError):
    """An input over a size limit (bytes, pixels per page, audio seconds)."""


class ConversionWarning(UserWarning):
    """:func:`write_output` converted a value and dropped something (e.g. LMX tokens outside the grammar)."""


# -- values ---------------------------------------------------------------------------


# Arrays have no single truth value, so Pages and Audio compare their arrays
# explicitly (eq=False keeps dataclasses from generating a field-wise __eq__).
@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class Pages:
    """Score images, one per page: uint8 gray ``(H, W)``, 0 = ink, 255 = paper."""

    images: tuple[np.ndarray, ...]

    def __post_init__(self):
        images = tuple(self.images) if not isinstance(self.images, np.ndarray) else (self.images,)
        for i, img in enumerate(images):
            if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 2 or img.size == 0:
                got = f"{img.dtype} array of shape {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
                raise InputError(f"page {i + 1}", f"expected a non-empty uint8 gray (H, W) array, got {got}")
        object.__setattr__(self, "images", images)

    def __eq__(self, other):
        if not isinstance(other, Pages):
            return NotImplemented
        return len(self.images) == len(other.images) and all(
            a.shape == b.shape and np.array_equal(a, b) for a, b in zip(self.images, other.images)
        )

    __hash__ = None


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class Audio:
    """Mono float32 audio."""

    samples: np.ndarray
    sample_rate: int

    def __post_init__(self):
        a = np.asarray(self.samples)
        if a.ndim != 1 or not np.issubdtype(a.dtype, np.number):
            raise InputError("audio", f"expected 1-D (mono) numeric samples, got {a.dtype} array of shape {a.shape}")
        rate = self.sample_rate
        if not isinstance(rate, (int, np.integer)) or isinstance(rate, bool) or not 1 <= rate <= 655350:
            raise InputError("audio", f"invalid sample rate {self.sample_rate!r}")
        object.__setattr__(self, "samples", np.ascontiguousarray(a, dtype=np.float32))
        object.__setattr__(self, "sample_rate", int(self.sample_rate))

    @property
    def seconds(self) -> float:
        return self.samples.size / self.sample_rate

    def __eq__(self, other):
        if not isinstance(other, Audio):
            return NotImplemented
        return self.sample_rate == other.sample_rate and np.array_equal(self.samples, other.samples)

    __hash__ = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Midi:
    notes: tuple[Note, ...]

    def __post_init__(self):
        notes = tuple(self.notes)
        for i, n in enumerate(notes):
            if not isinstance(n, Note):
                raise InputError(f"note {i}", f"expected a unimusic.tokens.midi.Note, got {type(n).__name__}")
        object.__setattr__(self, "notes", notes)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Score:
    """A score as score-partwise MusicXML bytes."""

    musicxml: bytes

    def __post_init__(self):
        xml = self.musicxml
        if isinstance(xml, str):
            xml = xml.encode("utf-8")
        if not isinstance(xml, (bytes, bytearray, memoryview)):
            raise InputError("score", f"expected MusicXML bytes, got {type(xml).__name__}")
        object.__setattr__(self, "musicxml", bytes(xml))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Lmx:
    tokens: tuple[str, ...]

    def __post_init__(self):
        tokens = self.tokens
        if isinstance(tokens, str):  # LMX text
            from unimusic.tokens.lmx import tokens_from_text

            tokens = tokens_from_text(tokens)
        tokens = tuple(tokens)
        for i, t in enumerate(tokens):
            if not isinstance(t, str) or not t or any(ch.isspace() for ch in t):
                raise InputError(f"LMX token {i}", f"expected a non-empty token without spaces, got {t!r}")
        object.__setattr__(self, "tokens", tokens)


Value = Pages | Audio | Midi | Score | Lmx
MODALITY_OF = {Pages: "image", Audio: "audio", Midi: "midi", Score: "score", Lmx: "lmx"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Limits:
    max_bytes: int = 200 * 2**20
    max_audio_seconds: float = 3600.0
    max_pages: int = 100
    max_pixels: int = 60_000_000  # per page
    pdf_dpi: int = 150

    def __post_init__(self):
        for name in ("max_bytes", "max_audio_seconds", "max_pages", "max_pixels", "pdf_dpi"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise InputError("limits", f"{name} must be a positive number, got {v!r}")
        if not 10 <= self.pdf_dpi <= 2400:
            raise InputError("limits", f"pdf_dpi must be 10..2400, got {self.pdf_dpi!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Loaded:
    source: str
    modality: str  # "image" | "audio" | "midi" | "score" | "lmx"
    value: Value
    warnings: tuple[str, ...] = ()


# -- detection ------------------------------------------------------------------------

# What the extension says when the content says nothing (or to warn on a mismatch).
_EXT_KIND = {
    ".png": "image", ".jpg": "image", ".jpeg": "image", ".tif": "image", ".tiff": "image",
    ".bmp": "image", ".webp": "image", ".gif": "image",
    ".pdf": "pdf",
    ".wav": "audio", ".wave": "audio", ".flac": "audio", ".ogg": "audio", ".oga": "audio", ".opus": "audio",
    ".mp3": "audio", ".aif": "audio", ".aiff": "audio", ".aifc": "audio",
    ".mid": "midi", ".midi": "midi",
    ".musicxml": "score", ".xml": "score", ".mxl": "score", ".krn": "score", ".abc": "score",
    ".lmx": "lmx",
}
# The format an extension names, for messages when the content is not recognized.
_EXT_FORMAT = {
    ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP",
    ".webp": "WebP", ".gif": "GIF", ".pdf": "PDF", ".wav": "WAV", ".wave": "WAV", ".flac": "FLAC",
    ".ogg": "Ogg", ".oga": "Ogg", ".opus": "Ogg", ".mp3": "MP3", ".aif": "AIFF", ".aiff": "AIFF", ".aifc": "AIFF",
    ".mid": "MIDI", ".midi": "MIDI", ".musicxml": "MusicXML", ".xml": "MusicXML", ".mxl": "compressed MusicXML",
    ".krn": "**kern", ".abc": "ABC", ".lmx": "LMX",
}
_KIND_NAME = {"image": "an image", "pdf": "a PDF", "audio": "audio", "midi": "MIDI", "score": "a score", "lmx": "LMX"}
_BMP_HEADER_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}


def _is_mp3_frame(head: bytes) -> bool:
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version, layer = (head[1] >> 3) & 3, (head[1] >> 1) & 3
    bitrate, rate = head[2] >> 4, (head[2] >> 2) & 3
    return version != 1 and layer != 0 and bitrate not in (0, 15) and rate != 3


def _sniff_binary(data: bytes) -> tuple[str, str] | None:
    """(kind, format) from magic bytes, or None."""
    head = data[:64]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image", "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "image", "JPEG"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "image", "TIFF"
    if head.startswith(b"BM") and len(head) >= 18 and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES:
        return "image", "BMP"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image", "GIF"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image", "WebP"
    if data[:1024].lstrip(b"\xef\xbb\xbf\x00 \t\r\n").startswith(b"%PDF"):
        return "pdf", "PDF"
    if head.startswith(b"MThd"):
        return "midi", "MIDI"
    if head.startswith((b"RIFF", b"RIFX", b"RF64")) and head[8:12] == b"WAVE":
        return "audio", "WAV"
    if head.startswith(b"FORM") and head[8:12] in (b"AIFF", b"AIFC"):
        return "audio", "AIFF"
    if head.startswith(b"fLaC"):
        return "audio", "FLAC"
    if head.startswith(b"OggS"):
        return "audio", "Ogg"
    if head.startswith(b"ID3") or _is_mp3_frame(head):
        return "audio", "MP3"
    if head.startswith(b"PK\x03\x04"):
        return "zip", "zip"
    return None


def _xml_root(data: bytes) -> str | None:
    """Local name of an XML document's root element, or None if it does not parse that far."""
    import xml.etree.ElementTree as ET

    parser = ET.XMLPullParser(events=("start",))
    try:
        for i in range(0, min(len(data), 8 * 2**20), 65536):
            parser.feed(data[i : i + 65536])
            for _, el in parser.read_events():
                return el.tag.rsplit("}", 1)[-1]
    except ET.ParseError:
        return None
    return None


@functools.lru_cache(maxsize=1)
def _lmx_codec():
    from unimusic.tokens.lmx import LmxCodec

    return LmxCodec()


def _zip_kind(source: str, data: bytes, ext: str) -> str:
    """'score' if the archive is compressed MusicXML, else an unsupported-type InputError."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = zf.namelist()
            mimetype = zf.read("mimetype")[:64] if "mimetype" in names else b""
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError, RuntimeError, NotImplementedError) as exc:
        if ext == ".mxl":
            raise InputError(source, f"damaged compressed MusicXML (.mxl) archive ({exc})") from None
        raise InputError(source, f"damaged zip archive ({exc}); supported: {SUPPORTED_INPUTS}") from None
    if "META-INF/container.xml" in names or mimetype.startswith(MXL_MIMETYPE) or ext == ".mxl":
        return "score"
    if "[Content_Types].xml" in names:
        what = "an Office document (Word/Excel/PowerPoint)"
    elif mimetype.startswith(b"application/vnd.oasis.opendocument"):
        what = "an OpenDocument file"
    else:
        what = "a zip archive that is not compressed MusicXML (.mxl)"
    raise UnsupportedType(source, f"unsupported file type: {what}; supported: {SUPPORTED_INPUTS}")


def _detect(source: str, data: bytes, ext: str) -> tuple[str, str, bool]:
    """(kind, format, by_content) of a file: kind is image | pdf | audio | midi | score | lmx.

    The content decides (by_content True); when it is not recognized, the
    extension does (by_content False) and that kind's reader names what is wrong.
    """
    from unimusic import scores

    binary = _sniff_binary(data)
    if binary is not None:
        kind, fmt = binary
        if kind == "zip":
            return _zip_kind(source, data, ext), "compressed MusicXML", True
        return kind, fmt, True
    head = data[:4096]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 text (some MusicXML exporters write it)
        try:
            text16 = data[:8192].decode("utf-16", errors="ignore")
        except UnicodeDecodeError:  # pragma: no cover - errors="ignore"
            text16 = ""
        if "<score-partwise" in text16 or "<score-timewise" in text16:
            return "score", "MusicXML", True
    sniffed = scores.sniff_kind(data)
    if sniffed in ("musicxml", "kern", "abc"):
        return "score", {"musicxml": "MusicXML", "kern": "**kern", "abc": "ABC"}[sniffed], True
    if sniffed == "xml":
        root = _xml_root(data)
        if root in ("score-partwise", "score-timewise"):
            return "score", "MusicXML", True
        if _EXT_KIND.get(ext) == "score":
            return "score", _EXT_FORMAT[ext], False  # a damaged score: the score reader names the XML error
        what = f"XML document with root <{root}>, not MusicXML" if root else "text starting with '<', not well-formed XML"
        raise UnsupportedType(source, f"unsupported file type ({what}); supported: {SUPPORTED_INPUTS}")
    # Text whose every token is an LMX token is LMX, whatever its extension.
    what = "binary data"
    if b"\x00" not in head:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = None
        if text is not None:
            from unimusic.tokens.lmx import tokens_from_text

            tokens = tokens_from_text(text)
            codec = _lmx_codec()
            unknown = next((t for t in tokens if t not in codec), None)
            if tokens and unknown is None:
                return "lmx", "LMX", True
            what = "text without content"
            if tokens:
                what = f"text that is not MusicXML, **kern, ABC or LMX (unknown LMX token {unknown[:40]!r})"
    fallback = _EXT_KIND.get(ext)
    if fallback is not None:
        return fallback, _EXT_FORMAT[ext], False  # the reader of that kind names what is wrong
    described = f"{what}, extension {ext!r}" if ext else what
    raise UnsupportedType(source, f"unsupported file type ({described}); supported: {SUPPORTED_INPUTS}")


# -- readers --------------------------------------------------------------------------


def _read_file(path, limits: Limits) -> bytes:
    source = os.fspath(path)
    p = Path(path)
    try:
        if not p.exists():
            raise InputError(source, "no such file")
        if p.is_dir():
            raise InputError(source, "is a directory, expected a file")
        if not p.is_file():
            raise InputError(source, "not a regular file")
        size = p.stat().st_size
    except OSError as exc:
        raise InputError(source, f"cannot access file ({exc.strerror or exc})") from None
    if size == 0:
        raise InputError(source, "file is empty (0 bytes)")
    if size > limits.max_bytes:
        raise TooLarge(source, f"file is too large ({size} bytes > limit {int(limits.max_bytes)} bytes)")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise InputError(source, f"cannot read file ({exc.strerror or exc})") from None
    if not data:  # changed since stat
        raise InputError(source, "file is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise TooLarge(source, f"file is too large ({len(data)} bytes > limit {int(limits.max_bytes)} bytes)")
    return data


def _check_pixels(source: str, page: int, h: int, w: int, limits: Limits) -> None:
    if h * w > limits.max_pixels:
        raise TooLarge(source, f"page {page} is too large ({w}x{h} = {w * h} pixels > limit {int(limits.max_pixels)})")


def _image_size(data: bytes, fmt: str) -> tuple[int, int] | None:
    """(height, width) from the header, before decoding, where the format makes that easy."""
    if fmt == "PNG" and len(data) >= 24 and data[12:16] == b"IHDR":
        return int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")
    if fmt == "BMP" and len(data) >= 26:
        if int.from_bytes(data[14:18], "little") == 12:
            return int.from_bytes(data[20:22], "little"), int.from_bytes(data[18:20], "little")
        h, w = (int.from_bytes(data[i : i + 4], "little", signed=True) for i in (22, 18))
        return abs(h), abs(w)
    if fmt == "JPEG":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                return int.from_bytes(data[i + 5 : i + 7], "big"), int.from_bytes(data[i + 7 : i + 9], "big")
            i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def _to_gray(img: np.ndarray) -> np.ndarray:
    """Any decoded image -> uint8 gray; transparency is composited over white paper."""
    import cv2

    if img.dtype == np.uint16:
        img = np.round(img / 257.0).astype(np.uint8)
    elif img.dtype != np.uint8:
        f = img.astype(np.float64)
        if f.size and np.nanmax(f) <= 1.0:
            f = f * 255.0
        img = np.clip(np.nan_to_num(f, nan=255.0), 0, 255).round().astype(np.uint8)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        return np.ascontiguousarray(img)
    alpha = None
    if img.shape[2] == 4:
        alpha = img[:, :, 3:4].astype(np.float32) / 255.0
        img = img[:, :, :3]
    elif img.shape[2] == 2:
        alpha = img[:, :, 1:2].astype(np.float32) / 255.0
        img = img[:, :, :1]
    if alpha is not None:
        img = np.round(img.astype(np.float32) * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    if img.shape[2] == 1:
        return np.ascontiguousarray(img[:, :, 0])
    return cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_BGR2GRAY)


def _read_image(source: str, data: bytes, fmt: str, limits: Limits) -> tuple[Pages, list[str]]:
    import cv2

    size = _image_size(data, fmt)
    if size is not None:
        _check_pixels(source, 1, *size, limits)
    buf = np.frombuffer(data, np.uint8)
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        if fmt == "JPEG":  # IMREAD_GRAYSCALE applies the EXIF orientation of camera photos
            img = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
            decoded = [] if img is None else [img]
        else:  # keep alpha (transparent background) and every page of a TIFF
            ok, decoded = cv2.imdecodemulti(buf, cv2.IMREAD_UNCHANGED)
            decoded = list(decoded) if ok else []
    except cv2.error as exc:
        raise InputError(source, f"damaged or unreadable {fmt} image ({str(exc).strip().splitlines()[-1][:200]})") from None
    finally:
        cv2.utils.logging.setLogLevel(level)
    decoded = [d for d in decoded if d is not None and d.size > 0]
    if not decoded:
        raise InputError(source, f"damaged or unreadable {fmt} image (could not be decoded)")
    if len(decoded) > limits.max_pages:
        raise InputError(source, f"too many pages ({len(decoded)} > limit {int(limits.max_pages)})")
    pages = []
    for i, img in enumerate(decoded, start=1):
        _check_pixels(source, i, img.shape[0], img.shape[1], limits)
        pages.append(_to_gray(img))
    return Pages(images=tuple(pages)), []


def _read_pdf(source: str, data: bytes, limits: Limits) -> tuple[Pages, list[str]]:
    import pypdfium2 as pdfium

    scale = limits.pdf_dpi / 72.0
    try:
        pdf = pdfium.PdfDocument(data)
    except Exception as exc:  # PdfiumError: data format, password, ...
        raise InputError(source, f"damaged or unreadable PDF ({str(exc).strip() or type(exc).__name__})") from None
    try:
        n = len(pdf)
        if n == 0:
            raise InputError(source, "PDF has no pages")
        if n > limits.max_pages:
            raise InputError(source, f"too many pages ({n} > limit {int(limits.max_pages)})")
        images = []
        for i in range(n):
            try:
                page = pdf[i]
                w, h = page.get_size()
                if not (math.isfinite(w) and math.isfinite(h)) or w <= 0 or h <= 0:
                    raise InputError(source, f"page {i + 1} has no usable size ({w} x {h} pt)")
                _check_pixels(source, i + 1, math.ceil(h * scale), math.ceil(w * scale), limits)
                # PDFium's bitmap is ceil(size * scale) pixels; a hair less scale keeps a page of
                # exactly W pixels at this resolution, stored with float rounding, at W (not W + 1).
                bitmap = page.render(scale=scale * (1 - 1e-6), grayscale=True, fill_color=(255, 255, 255, 255))
                img = bitmap.to_numpy()
            except InputError:
                raise
            except Exception as exc:
                detail = str(exc).strip() or type(exc).__name__
                raise InputError(source, f"cannot render PDF page {i + 1} ({detail})") from None
            images.append(_to_gray(np.array(img, copy=True)))
    finally:
        pdf.close()
    return Pages(images=tuple(images)), []


def _read_audio(source: str, data: bytes, fmt: str, limits: Limits) -> tuple[Audio, list[str]]:
    import soundfile as sf

    from unimusic.render.synthesize import SILENCE, decode_audio

    try:  # the length from the header first: an hour-long file is refused before decoding
        info = sf.info(io.BytesIO(data))
        frames, rate = int(info.frames), int(info.samplerate)
    except Exception:
        frames = rate = 0  # decode_audio below names the problem
    if rate > 0 and frames > 0 and frames / rate > limits.max_audio_seconds:
        raise TooLarge(source, f"audio is too long ({frames / rate:.1f} s > limit {limits.max_audio_seconds:g} s)")
    samples, sr = decode_audio(data, name=source)
    if samples.size == 0:
        raise InputError(source, f"{fmt} audio holds no samples (header without data?)")
    if samples.size / sr > limits.max_audio_seconds:
        raise TooLarge(source, f"audio is too long ({samples.size / sr:.1f} s > limit {limits.max_audio_seconds:g} s)")
    if not np.all(np.isfinite(samples)):
        raise InputError(source, "audio contains NaN or infinite samples")
    notes = []
    if float(np.max(np.abs(samples))) < SILENCE:
        notes.append("silent audio")
    return Audio(samples=samples, sample_rate=sr), notes


def _read_midi(source: str, data: bytes) -> tuple[Midi, list[str]]:
    from unimusic.tokens.midi import notes_from_midi

    try:
        notes = notes_from_midi(data, name=source)
    except InputError:
        raise
    except Exception as exc:  # defensive: notes_from_midi wraps its readers' errors
        raise InputError(source, f"unreadable MIDI file ({str(exc) or type(exc).__name__})") from None
    return Midi(notes=tuple(notes)), ([] if notes else ["MIDI file has no notes"])


_SCORE_SUFFIX = {"MusicXML": ".musicxml", "compressed MusicXML": ".mxl", "**kern": ".krn", "ABC": ".abc"}


def _read_score(source: str, data: bytes, what: str) -> tuple[Score, list[str]]:
    from unimusic.scores import musicxml_bytes

    # musicxml_bytes checks the extension against the content; here the content
    # decides, so it sees the extension of what the content is (data is passed,
    # the path is never opened) and its errors are re-sourced to the real path.
    suffix = _SCORE_SUFFIX.get(what)
    as_path = Path(source).with_name("input" + suffix) if suffix else Path(source)
    try:
        xml = musicxml_bytes(as_path, data)
    except InputError as exc:
        raise InputError(source, exc.problem) from None
    except Exception as exc:  # defensive: music21 raises anything
        raise InputError(source, f"cannot read score ({type(exc).__name__}: {exc})") from None
    return Score(musicxml=xml), []


def _read_lmx(source: str, data: bytes) -> tuple[Lmx, list[str]]:
    from unimusic.render.lmx import delinearize
    from unimusic.tokens.lmx import tokens_from_text

    if b"\x00" in data[:4096]:
        raise InputError(source, "LMX file holds binary data, expected text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(source, "LMX file is not UTF-8 text") from None
    tokens = tokens_from_text(text)
    if not tokens:
        raise InputError(source, "LMX file holds no tokens")
    _lmx_codec().encode(tokens, source=source)  # strict: names the first unknown token
    notes = []
    _, stats = delinearize(tokens)
    if stats.invalid_tokens:
        notes.append(
            f"{stats.invalid_tokens} of {stats.tokens} LMX tokens do not fit the grammar "
            f"(dropped when written as MusicXML): {dict(stats.reasons)}"
        )
    return Lmx(tokens=tuple(tokens)), notes


def read_input(path, *, limits: Limits = Limits()) -> Loaded:
    """Read any supported input file into a typed value (see the module doc).

    The type comes from the content (magic bytes, XML root, text markers), the
    extension only when the content is not recognized. Any problem raises
    :class:`InputError` naming ``path``; non-fatal findings (silent audio, a MIDI
    file without notes, an extension that disagrees with the content) are in
    ``Loaded.warnings``.
    """
    source = os.fspath(path)
    return read_bytes(_read_file(path, limits), name=source, limits=limits)


def read_bytes(data: bytes, *, name: str, limits: Limits = Limits()) -> Loaded:
    """:func:`read_input` of bytes already in memory (an upload): ``name`` only names
    the input in messages and gives the extension hint; nothing is opened."""
    source = str(name)
    if not data:
        raise InputError(source, "file is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise TooLarge(source, f"file is too large ({len(data)} bytes > limit {int(limits.max_bytes)} bytes)")
    ext = Path(source).suffix.lower() if source else ""
    kind, fmt, by_content = _detect(source, data, ext)
    if kind == "image":
        value, notes = _read_image(source, data, fmt, limits)
    elif kind == "pdf":
        value, notes = _read_pdf(source, data, limits)
    elif kind == "audio":
        value, notes = _read_audio(source, data, fmt, limits)
    elif kind == "midi":
        value, notes = _read_midi(source, data)
    elif kind == "score":
        value, notes = _read_score(source, data, fmt)
    else:
        value, notes = _read_lmx(source, data)
    said = _EXT_KIND.get(ext)
    if by_content and said is not None and (said != kind or (kind == "score" and _EXT_FORMAT[ext] != fmt)):
        what = _KIND_NAME[said] if said != kind else _EXT_FORMAT[ext]
        notes.insert(0, f"extension {ext} says {what} but the content is {fmt}; read as {fmt}")
    return Loaded(source=source, modality=MODALITY_OF[type(value)], value=value, warnings=tuple(notes))


# -- writers --------------------------------------------------------------------------

_OUTPUT_KIND = {
    ".musicxml": "musicxml", ".xml": "musicxml", ".mxl": "musicxml",
    ".lmx": "lmx", ".txt": "lmx",
    ".mid": "midi", ".midi": "midi",
    ".wav": "audio", ".flac": "audio",
    ".png": "image", ".jpg": "image", ".jpeg": "image", ".pdf": "image",
}
# The extension a target gets when no output name says otherwise.
TARGET_EXT = {"musicxml": ".musicxml", "lmx": ".lmx", "midi": ".mid", "audio": ".wav", "image": ".png"}
# Which values each output kind takes (scores and LMX convert into each other).
_ACCEPTS = {
    "musicxml": ("score", "lmx"), "lmx": ("score", "lmx"), "midi": ("midi",), "audio": ("audio",), "image": ("image",),
}


def output_kind(path) -> str:
    """What a path's extension asks for: musicxml | lmx | midi | audio | image."""
    ext = Path(os.fspath(path)).suffix.lower()
    kind = _OUTPUT_KIND.get(ext)
    if kind is None:
        raise InputError(
            os.fspath(path),
            f"unsupported output extension {ext or '(none)'!r}; use one of " + ", ".join(sorted(_OUTPUT_KIND)),
        )
    return kind


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(str(path), f"cannot write file ({exc.strerror or exc})") from None


def _mxl_bytes(xml: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(zipfile.ZipInfo("mimetype"), MXL_MIMETYPE, compress_type=zipfile.ZIP_STORED)
        zf.writestr("META-INF/container.xml", _MXL_CONTAINER, compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr("score.musicxml", xml, compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def _score_xml(value: Score | Lmx, dst: str) -> bytes:
    if isinstance(value, Score):
        return value.musicxml
    from unimusic.render.lmx import delinearize

    xml, stats = delinearize(value.tokens)
    if stats.invalid_tokens:
        warnings.warn(
            f"{dst}: {stats.invalid_tokens} of {stats.tokens} LMX tokens did not fit the grammar and were dropped: "
            f"{dict(stats.reasons)}",
            ConversionWarning,
            stacklevel=3,
        )
    return xml.encode("utf-8")


def _lmx_tokens(value: Score | Lmx, dst: str) -> tuple[str, ...]:
    if isinstance(value, Lmx):
        return value.tokens
    from unimusic.render.lmx import linearize

    return tuple(linearize(value.musicxml, source=dst))


def _midi_bytes(notes: tuple[Note, ...]) -> bytes:
    """A MIDI file of ``notes`` (:func:`~unimusic.tokens.midi.notes_to_midi`).

    Overlapping notes of the same pitch and instrument (unison voices) cannot share
    a MIDI channel: readers pair the note-offs wrongly. Such notes go to extra tracks
    of the same program, so every note reads back as written.
    """
    from unimusic.tokens.midi import notes_to_midi

    layers: list[list[Note]] = []
    ends: list[dict] = []  # per layer: (is_drum, program, pitch) -> end of its last note
    for note in sorted(notes, key=lambda n: (n.start, n.end, n.pitch)):
        key = (bool(note.is_drum), int(note.program), int(note.pitch))
        for layer, last in zip(layers, ends):
            if last.get(key, -math.inf) <= note.start:
                break
        else:
            layers.append([])
            ends.append({})
            layer, last = layers[-1], ends[-1]
        layer.append(note)
        last[key] = note.end
    pm = notes_to_midi(layers[0] if layers else [])
    for layer in layers[1:]:
        pm.instruments.extend(notes_to_midi(layer).instruments)
    buf = io.BytesIO()
    pm.write(buf)
    return buf.getvalue()


def _wav_bytes(audio: Audio) -> bytes:
    import soundfile as sf

    from unimusic.render.synthesize import quantize_int16

    buf = io.BytesIO()
    sf.write(buf, quantize_int16(audio.samples), audio.sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _png_bytes(img: np.ndarray, ext: str) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png" if ext == ".png" else ".jpg", img)
    if not ok:  # pragma: no cover - encoding a valid uint8 array does not fail
        raise RuntimeError("OpenCV could not encode the image")
    return buf.tobytes()


def _pdf_bytes(pages: Pages, dpi: int) -> bytes:
    """A PDF with one page per image, each embedded losslessly (8-bit DeviceGray, Flate)
    on a page of exactly its pixel size at ``dpi``: reading it back at that resolution
    gives images of the same size (and, for most sizes, the same pixels)."""
    import zlib

    objs: list[bytes] = []

    def add(body: bytes) -> int:
        objs.append(body)
        return len(objs)

    def stream(head: bytes, data: bytes) -> bytes:
        return b"<< " + head + b" /Length %d >>\nstream\n" % len(data) + data + b"\nendstream"

    catalog, tree = add(b""), add(b"")
    kids = []
    for img in pages.images:
        h, w = img.shape
        image = add(stream(
            b"/Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray "
            b"/BitsPerComponent 8 /Filter /FlateDecode" % (w, h),
            zlib.compress(np.ascontiguousarray(img).tobytes(), 6),
        ))
        wp, hp = (f"{n * 72.0 / dpi:.6f}".rstrip("0").rstrip(".").encode() for n in (w, h))
        content = add(stream(b"", b"q " + wp + b" 0 0 " + hp + b" 0 0 cm /Im0 Do Q"))
        kids.append(add(
            b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 %s %s] /Resources << /XObject << /Im0 %d 0 R >> >> "
            b"/Contents %d 0 R >>" % (tree, wp, hp, image, content)
        ))
    objs[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % tree
    objs[tree - 1] = b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % k for k in kids) + b"] /Count %d >>" % len(kids)
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, catalog, xref)
    return bytes(out)


def _page_paths(dst: Path, n: int) -> list[Path]:
    if n == 1:
        return [dst]
    return [dst.with_name(f"{dst.stem}-{i}{dst.suffix}") for i in range(1, n + 1)]


def write_output(value, path) -> list[str]:
    """Write ``value`` in the format ``path``'s extension names; returns the paths written.

    Score -> .musicxml/.xml (as is), .mxl (zipped), .lmx/.txt (linearized);
    Lmx -> .lmx/.txt (one line), .musicxml/.xml/.mxl (delinearized; dropped tokens
    give a :class:`ConversionWarning`); Midi -> .mid/.midi; Audio -> .wav (16-bit
    PCM) or .flac; Pages -> .png/.jpg (several pages: ``stem-1.png``, ``stem-2.png``,
    ...) or .pdf (all pages, at the default PDF resolution). Parent folders are
    created. A value that cannot go to the extension raises :class:`InputError`.
    """
    dst_name = os.fspath(path)
    dst = Path(dst_name)
    output_kind(dst)  # an unknown extension is refused before anything else
    if dst.is_dir():
        raise InputError(dst_name, "output is a directory")
    outputs = encode_output(value, dst_name)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(dst_name, f"cannot create the output folder ({exc.strerror or exc})") from None
    for p, data in outputs:
        if p.is_dir():
            raise InputError(str(p), "output is a directory")
        _atomic_write(p, data)
    return [str(p) for p, _ in outputs]


def encode_output(value, name: str) -> list[tuple[Path, bytes]]:
    """The files :func:`write_output` would write for ``name`` (its extension picks the
    format), as ``(path, bytes)`` without touching the filesystem."""
    dst_name = os.fspath(name)
    dst = Path(dst_name)
    kind = output_kind(dst)
    ext = dst.suffix.lower()
    modality = MODALITY_OF.get(type(value))
    if modality is None:
        raise InputError(dst_name, f"cannot write a {type(value).__name__} (expected Pages, Audio, Midi, Score or Lmx)")
    if modality not in _ACCEPTS[kind]:
        can = sorted(e for e, k in _OUTPUT_KIND.items() if modality in _ACCEPTS[k])
        raise InputError(
            dst_name, f"cannot write {modality} to a {ext} file ({modality} can be written as {', '.join(can)})"
        )
    outputs: list[tuple[Path, bytes]]
    try:
        if kind == "musicxml":
            xml = _score_xml(value, dst_name)
            outputs = [(dst, _mxl_bytes(xml) if ext == ".mxl" else xml)]
        elif kind == "lmx":
            outputs = [(dst, (" ".join(_lmx_tokens(value, dst_name)) + "\n").encode("utf-8"))]
        elif kind == "midi":
            outputs = [(dst, _midi_bytes(value.notes))]
        elif kind == "audio":
            if not np.all(np.isfinite(value.samples)):
                raise InputError(dst_name, "audio contains NaN or infinite samples")
            if ext == ".flac":
                from unimusic.render.synthesize import encode_flac

                outputs = [(dst, encode_flac(value.samples, value.sample_rate))]
            else:
                outputs = [(dst, _wav_bytes(value))]
        else:
            if not value.images:
                raise InputError(dst_name, "no pages to write")
            if ext == ".pdf":
                outputs = [(dst, _pdf_bytes(value, Limits().pdf_dpi))]
            else:
                paths = _page_paths(dst, len(value.images))
                outputs = [(p, _png_bytes(img, ext)) for p, img in zip(paths, value.images)]
    except InputError as exc:  # name the output; keep a detail's own source (e.g. "note 3") in the problem
        own = exc.source in (dst_name, "audio", "sample_rate")
        raise InputError(dst_name, exc.problem if own else f"{exc.source}: {exc.problem}") from None
    except Exception as exc:  # a library failing on odd content: still one line naming the output
        raise InputError(dst_name, f"cannot write {modality} ({type(exc).__name__}: {exc})") from None
    return outputs
