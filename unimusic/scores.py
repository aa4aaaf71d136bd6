"""Reading user files: detect what a file is, and get MusicXML out of any score.

Every failure is an :class:`~unimusic.errors.InputError` that names the file and
the problem in one line; music21 and XML parser exceptions never reach users.
"""

from __future__ import annotations

import io
import os
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

from unimusic.errors import InputError

SCORE_EXTENSIONS = {".mxl": "mxl", ".xml": "musicxml", ".musicxml": "musicxml", ".krn": "kern", ".abc": "abc"}
MIDI_EXTENSIONS = {".mid", ".midi"}
LMX_EXTENSIONS = {".lmx"}
EVENTS_EXTENSIONS = {".events", ".midi-events"}
# Refuse to parse anything bigger: a score this large is almost surely not a score.
MAX_SCORE_BYTES = 64 * 1024 * 1024


def read_bytes(path: str | os.PathLike) -> bytes:
    p = Path(path)
    if not p.exists():
        raise InputError(str(path), "no such file")
    if p.is_dir():
        raise InputError(str(path), "is a directory, expected a file")
    size = p.stat().st_size
    if size == 0:
        raise InputError(str(path), "file is empty")
    if size > MAX_SCORE_BYTES:
        raise InputError(str(path), f"file is too large ({size} bytes > {MAX_SCORE_BYTES})")
    return p.read_bytes()


def sniff_kind(data: bytes) -> str | None:
    """What the bytes look like: midi, mxl, musicxml, kern, abc, lmx, events, or None."""
    head = data[:4096]
    if head.startswith(b"MThd"):
        return "midi"
    if head.startswith(b"PK\x03\x04"):
        return "mxl"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        try:
            text = head.decode("latin-1")
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes everything
            return None
        if sum(ch < " " and ch not in "\r\n\t" for ch in text) > 0:
            return None
    if "\x00" in text:
        return None
    stripped = text.lstrip("\ufeff \r\n\t")
    if stripped.startswith("<"):
        if "<score-partwise" in text or "<score-timewise" in text or "<!DOCTYPE score" in text:
            return "musicxml"
        return "xml"
    if "**kern" in text:
        return "kern"
    lines = [ln.strip() for ln in stripped.splitlines()]
    if any(ln.startswith("X:") for ln in lines) and any(ln.startswith("K:") for ln in lines):
        return "abc"
    if lines and lines[0].startswith("version:") or (lines and lines[0].split(" ")[0] in ("measure", "part:1")):
        return "lmx"
    return None


def _mxl_root(data: bytes, source: str) -> bytes:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = zf.namelist()
            root_name = None
            if "META-INF/container.xml" in names:
                container = ET.fromstring(zf.read("META-INF/container.xml"))
                for el in container.iter():
                    if el.tag.endswith("rootfile") and el.get("full-path"):
                        root_name = el.get("full-path")
                        break
            if root_name is None:
                candidates = [n for n in names if n.endswith((".xml", ".musicxml")) and not n.startswith("META-INF")]
                if not candidates:
                    raise InputError(source, "compressed MusicXML (.mxl) holds no score file")
                root_name = candidates[0]
            return zf.read(root_name)
    except zipfile.BadZipFile as exc:
        raise InputError(source, f"not a valid compressed MusicXML (.mxl) archive: {exc}") from None
    except KeyError as exc:
        raise InputError(source, f"compressed MusicXML names a missing file: {exc}") from None


def _as_utf8(xml: bytes) -> bytes:
    """UTF-8 bytes of an XML document (some MusicXML files are UTF-16 with a BOM)."""
    if xml.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = xml.decode("utf-16")
        head, sep, rest = text.partition("?>")
        if head.lstrip().startswith("<?xml") and sep:
            head = head.replace("UTF-16", "UTF-8").replace("utf-16", "UTF-8")
            text = head + sep + rest
        return text.encode("utf-8")
    if xml.startswith(b"\xef\xbb\xbf"):
        return xml[3:]
    return xml


def _check_partwise(xml: bytes, source: str) -> bytes:
    try:
        xml = _as_utf8(xml)
    except UnicodeDecodeError as exc:
        raise InputError(source, f"undecodable text: {exc}") from None
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise InputError(source, f"malformed XML: {exc}") from None
    if root.tag == "score-partwise":
        if root.find("part") is None:
            raise InputError(source, "MusicXML has no <part>")
        return xml
    if root.tag == "score-timewise":
        return b""  # caller converts through music21
    raise InputError(source, f"XML root is <{root.tag}>, expected <score-partwise>: not MusicXML")


def musicxml_from_music21(obj, source: str) -> bytes:
    from music21 import musicxml, stream

    if isinstance(obj, stream.Opus):
        scores = list(obj.scores)
        if not scores:
            raise InputError(source, "file holds no score")
        obj = scores[0]
    try:
        return musicxml.m21ToXml.GeneralObjectExporter(obj).parse()
    except Exception as exc:  # music21 raises many unrelated types
        raise InputError(source, f"music21 could not write MusicXML: {type(exc).__name__}: {exc}") from None


def parse_with_music21(data: bytes, kind: str, source: str):
    import music21

    fmt = {"kern": "humdrum", "abc": "abc", "musicxml": "musicxml", "mxl": "musicxml"}[kind]
    try:
        if kind == "mxl":
            return music21.converter.parse(_mxl_root(data, source), format=fmt, forceSource=True)
        text = data.decode("utf-8", errors="replace")
        return music21.converter.parse(text, format=fmt, forceSource=True)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(source, f"cannot parse as {kind}: {type(exc).__name__}: {exc}") from None


def score_kind(path: str | os.PathLike, data: bytes) -> str:
    """The score format of ``data``; the extension must agree with the content."""
    source = str(path)
    ext = Path(path).suffix.lower()
    sniffed = sniff_kind(data)
    if ext in SCORE_EXTENSIONS:
        expected = SCORE_EXTENSIONS[ext]
        if expected == "musicxml" and sniffed in ("musicxml", "xml"):
            return "musicxml"
        if sniffed == expected:
            return expected
        if sniffed is None:
            raise InputError(source, f"content is not {expected} (unrecognised or binary data)")
        raise InputError(source, f"extension says {expected} but the content looks like {sniffed}")
    if sniffed in ("musicxml", "mxl", "kern", "abc"):
        return sniffed
    raise InputError(source, f"not a score file (extension {ext or 'none'!r}; expected .musicxml/.xml/.mxl/.krn/.abc)")


def musicxml_bytes(path: str | os.PathLike, data: bytes | None = None) -> bytes:
    """Partwise MusicXML for any score file (.musicxml/.xml/.mxl as is; kern/ABC via music21)."""
    source = str(path)
    data = read_bytes(path) if data is None else data
    kind = score_kind(path, data)
    if kind == "mxl":
        xml = _check_partwise(_mxl_root(data, source), source)
    elif kind == "musicxml":
        xml = _check_partwise(data, source)
    else:
        xml = b""
    if xml:
        return xml
    return musicxml_from_music21(parse_with_music21(data, kind, source), source)
