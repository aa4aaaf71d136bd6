"""unimusic.render.pictures: OMR input beside its engraved prediction; piano-roll comparison."""

from __future__ import annotations

import functools

import cv2
import numpy as np
import pytest

from unimusic.render.pictures import omr_side_by_side, roll_comparison
from unimusic.tokens.midi import Note

WORK = "bach/bwv66.6"


@functools.lru_cache(maxsize=1)
def _system():
    """(crop, true LMX tokens) of the first staff system of a corpus chorale."""
    import music21

    from unimusic.render.engrave import EngraveOptions
    from unimusic.render.lmx import linearize
    from unimusic.render.slicing import slice_measures
    from unimusic.render.systems import engrave_piece
    from unimusic.scores import musicxml_bytes

    xml = musicxml_bytes(music21.corpus.getWork(WORK))
    piece = engrave_piece(xml, options=EngraveOptions())
    system = piece.systems[0]
    first, last = system.measures[0], system.measures[-1]
    # piece.musicxml: measures renumbered as engraved; indices are document order either way.
    return system.image, linearize(slice_measures(piece.musicxml, first, last + 1))


def _read(path):
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert image is not None, f"OpenCV cannot read {path}"
    return image


def test_side_by_side_true_lmx(tmp_path):
    crop, tokens = _system()
    assert crop.dtype == np.uint8 and crop.ndim == 2 and len(tokens) > 50
    path = omr_side_by_side(crop, tokens, tmp_path / "omr.png", title=WORK)
    assert path.exists()
    image = _read(path)
    assert image.shape[1] == crop.shape[1]
    assert image.shape[0] > crop.shape[0]
    lower = image[image.shape[0] // 2 :]
    # The engraved prediction: staff lines and notes, not just a label.
    assert (lower < 128).mean() > 0.02
    # Staff lines (thin, anti-aliased gray) run across the lower half: 4 staves of 5 lines.
    assert ((lower < 200).mean(axis=1) > 0.5).sum() >= 15


@pytest.mark.parametrize("tokens", [["no", "such", "token", "@@"], [], "measure part:1 C4"])
def test_side_by_side_bad_prediction_still_draws(tmp_path, tokens):
    crop, _ = _system()
    path = omr_side_by_side(crop, tokens, tmp_path / "bad.png")
    image = _read(path)
    assert image.shape[1] == crop.shape[1]
    assert image.shape[0] > crop.shape[0]


def test_side_by_side_truncated_prediction(tmp_path):
    crop, tokens = _system()
    image = _read(omr_side_by_side(crop, tokens[: len(tokens) // 3], tmp_path / "part.png"))
    assert image.shape[1] == crop.shape[1]


def test_roll_comparison(tmp_path):
    ref = [Note(start=0.5 * i, end=0.5 * i + 0.4, pitch=60 + i) for i in range(8)]
    est = ref[:6] + [Note(start=3.0, end=3.5, pitch=40)]
    path = roll_comparison(ref, est, tmp_path / "roll.png", title="demo")
    assert path.exists()
    image = cv2.imread(str(path))
    assert image is not None and image.shape[0] > 100 and image.shape[1] > 100
    # Empty prediction: still a picture.
    assert cv2.imread(str(roll_comparison(ref, [], tmp_path / "empty.png"))) is not None
