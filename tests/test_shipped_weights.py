"""The tokenizer weights shipped in the package load, refuse tampering, and reproduce the
numbers recorded beside them on their fixed held-out sample."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest


def test_shipped_rqvae_reproduces_its_recorded_numbers():
    from unimusic.models.rqvae import PRESETS, load_rqvae
    from unimusic.models.shipped import shipped_path
    from unimusic.models.tokenizer_report import image_report
    from unimusic.models.weights import read_meta, weight_paths

    path = shipped_path("image")
    assert all(p.stat().st_size <= 20e6 for p in weight_paths(path))
    model, config = load_rqvae(path, expected_config=PRESETS["tiny"])
    recorded = read_meta(path)["metrics"]
    with np.load(f"{path}-sample.npz", allow_pickle=False) as data:
        crops = [data[f"arr_{i}"] for i in range(len(data.files))]
    assert len(crops) == recorded["sample"]["crops"]
    report = image_report(model, crops)
    assert report["ink_f1"] == pytest.approx(recorded["sample"]["ink_f1"], abs=2e-3)
    assert report["psnr"] == pytest.approx(recorded["sample"]["psnr"], abs=0.05)
    assert recorded["held_out"]["crops"] >= 20 and recorded["steps"] > 0


def test_shipped_codec_reproduces_its_recorded_numbers():
    import soundfile as sf

    from unimusic.models.audio_codec import PRESETS, load_codec
    from unimusic.models.shipped import shipped_path
    from unimusic.models.tokenizer_report import audio_report
    from unimusic.models.weights import read_meta, weight_paths
    from unimusic.tokens.midi import Note

    path = shipped_path("audio")
    assert all(p.stat().st_size <= 20e6 for p in weight_paths(path))
    codec = load_codec(path, expected_config=PRESETS["tiny"])
    recorded = read_meta(path)["metrics"]["sample"]
    audio, sr = sf.read(f"{path}-sample.flac", dtype="float32")
    notes = [Note(**n) for n in json.loads(open(f"{path}-sample.json").read())["notes"]]
    report = audio_report(codec, [(audio, sr, notes)])
    assert report["mel_distance"] == pytest.approx(recorded["mel_distance"], abs=0.02)
    assert report["snr_db"] == pytest.approx(recorded["snr_db"], abs=0.2)
    assert report["reconstruction_f1"] == pytest.approx(recorded["reconstruction_f1"], abs=0.05)


def test_shipped_weights_refuse_a_changed_record_or_file(tmp_path):
    from unimusic.errors import InputError
    from unimusic.models.rqvae import load_rqvae
    from unimusic.models.shipped import shipped_path, tokenizer_hash
    from unimusic.models.weights import weight_paths

    tensors, record = weight_paths(shipped_path("image"))
    for name, change in (("version", lambda m: m.update(format_version=m["format_version"] + 1)),
                         ("config", lambda m: m["config"].update(codebook_size=512))):
        folder = tmp_path / name
        folder.mkdir()
        shutil.copy(tensors, folder / tensors.name)
        meta = json.loads(record.read_text())
        change(meta)
        (folder / record.name).write_text(json.dumps(meta))
        with pytest.raises(InputError):
            load_rqvae(folder / tensors.stem)
    folder = tmp_path / "flipped"
    folder.mkdir()
    data = bytearray(tensors.read_bytes())
    data[-1] ^= 0xFF
    (folder / tensors.name).write_bytes(bytes(data))
    shutil.copy(record, folder / record.name)
    with pytest.raises(InputError):
        load_rqvae(folder / tensors.stem)
    assert tokenizer_hash(shipped_path("image")) != tokenizer_hash(shipped_path("audio"))
