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


def translator_reference() -> dict:
    """What the shipped translator makes of the tokenizers' held-out samples (greedy): the OMR of
    the first sample crop and the transcription of the sample clip. Stored beside the weights by
    ``python -m tests.test_shipped_weights``; the test below recomputes and compares."""
    import soundfile as sf

    from unimusic import io_files
    from unimusic.inference import Systems, Translator
    from unimusic.models.shipped import shipped_path

    translator = Translator.load()
    with np.load(f"{shipped_path('image')}-sample.npz", allow_pickle=False) as data:
        crop = data["arr_0"]
    audio, sr = sf.read(f"{shipped_path('audio')}-sample.flac", dtype="float32")
    lmx = translator.translate(Systems(crops=(crop,)), "lmx").value.tokens
    notes = translator.translate(io_files.Audio(samples=audio, sample_rate=sr), "midi").value.notes
    return {"image->lmx": list(lmx),
            "audio->midi": [[round(n.start, 3), round(n.end, 3), n.pitch, n.program] for n in notes]}


def test_shipped_translator_reproduces_its_stored_outputs():
    from unimusic.inference import SHIPPED_TRANSLATOR, shipped_translator_path
    from unimusic.metrics import note_f1, symbol_error_rate
    from unimusic.models.translator_io import load_translator
    from unimusic.models.weights import weight_paths
    from unimusic.tokens.midi import Note

    path = shipped_translator_path()
    assert path.name == SHIPPED_TRANSLATOR
    assert sum(p.stat().st_size for p in weight_paths(path)) <= 50e6
    _, _, _, meta = load_translator(path)
    assert meta["step"] > 0 and len(meta["tasks"]) == 10
    stored = json.loads(path.with_name(path.name + "-sample.json").read_text())
    now = translator_reference()
    assert stored["image->lmx"] and symbol_error_rate([stored["image->lmx"]], [now["image->lmx"]])["ser"] <= 0.02

    def notes(rows):
        return [Note(start=a, end=b, pitch=p, velocity=80, program=g) for a, b, p, g in rows]

    assert stored["audio->midi"] and note_f1(notes(stored["audio->midi"]), notes(now["audio->midi"]))["f1"] >= 0.95


if __name__ == "__main__":  # refresh the stored outputs after shipping new translator weights
    from unimusic.inference import shipped_translator_path

    target = shipped_translator_path()
    target.with_name(target.name + "-sample.json").write_text(json.dumps(translator_reference(), indent=0) + "\n")
    print(f"wrote {target.name}-sample.json")
