"""The unified vocabulary: layout, both mapping directions, identity and refusal."""

import json

import pytest

from unimusic.errors import InputError, VocabularyMismatchError
from unimusic.tokens.midi import MidiCodecConfig
from unimusic.tokens.vocabulary import MODALITIES, SPECIALS, TASKS, Vocabulary, VocabularyConfig


@pytest.fixture(scope="module")
def vocab():
    return Vocabulary()


def test_ranges_are_contiguous_and_disjoint(vocab):
    position = 0
    for r in vocab.ranges.values():
        assert r.start == position and r.size > 0
        position = r.stop
    assert position == vocab.size
    assert vocab.ranges["lmx"].size == vocab.lmx.num_classes
    assert vocab.ranges["midi"].size == vocab.midi.num_classes
    assert [n for n in vocab.ranges if n.startswith("image:")] == [f"image:{i}" for i in range(4)]
    assert [n for n in vocab.ranges if n.startswith("audio:")] == [f"audio:{i}" for i in range(4)]


def test_specials_sos_and_one_token_per_task(vocab):
    ids = [vocab.special(s) for s in SPECIALS]
    assert len(set(ids)) == len(SPECIALS) and vocab.pad == 0
    assert len({vocab.sos(m) for m in MODALITIES}) == 4
    task_ids = [vocab.task(*t.split("->")) for t in TASKS]
    assert len(set(task_ids)) == 10
    assert [vocab.task_name(i) for i in task_ids] == list(TASKS)
    with pytest.raises(InputError, match="not a supported direction"):
        vocab.task("midi", "image")


@pytest.mark.parametrize("modality,level", [("lmx", None), ("midi", None), ("image", 0), ("image", 3), ("audio", 2)])
def test_codec_ids_roundtrip_both_directions(vocab, modality, level):
    size = vocab._range(modality, level).size
    ids = [0, 1, size // 2, size - 1]
    model = vocab.to_model(modality, ids, level=level)
    assert all(i in vocab._range(modality, level) for i in model)
    assert vocab.from_model(model, modality, level=level) == (ids, 0)


def test_strict_to_model_and_tolerant_from_model(vocab):
    n = vocab.lmx.num_classes
    with pytest.raises(InputError, match=f"id {n} at position 1 outside 0..{n - 1}"):
        vocab.to_model("lmx", [0, n])
    with pytest.raises(InputError, match="codebook level 4"):
        vocab.to_model("image", [0], level=4)
    lmx_start = vocab.ranges["lmx"].start
    got, invalid = vocab.from_model([lmx_start, vocab.eos, -3, vocab.size + 9, "x", lmx_start + 5], "lmx")
    assert got == [0, 5] and invalid == 4


def test_output_ranges_never_cover_other_modalities(vocab):
    for target in MODALITIES:
        allowed = set()
        for start, stop in vocab.output_ranges(target):
            allowed.update(range(start, stop))
        assert vocab.eos in allowed
        for other in MODALITIES:
            if other == target:
                continue
            names = [n for n in vocab.ranges if n == other or n.startswith(other + ":")]
            for n in names:
                assert not allowed & set(range(vocab.ranges[n].start, vocab.ranges[n].stop)), (target, n)
    assert vocab.sep in {i for a, b in vocab.output_ranges("image") for i in range(a, b)}


def test_token_names_readable(vocab):
    assert vocab.token_name(vocab.eos) == "EOS"
    assert vocab.token_name(vocab.task("image", "lmx")) == "task:image->lmx"
    assert vocab.token_name(vocab.to_model("lmx", [vocab.lmx.encode(["C4"])[0]])[0]) == "lmx:C4"
    assert vocab.token_name(vocab.height_token(5)) == "image_height:5"
    assert vocab.token_name(vocab.size + 1).startswith("<invalid")


def test_hash_tracks_config_and_codecs():
    base = Vocabulary()
    assert Vocabulary().hash == base.hash
    assert Vocabulary(VocabularyConfig(audio_codebooks=8)).hash != base.hash
    assert Vocabulary(VocabularyConfig(midi=MidiCodecConfig(velocity_bins=1))).hash != base.hash
    k8 = Vocabulary(VocabularyConfig(audio_codebooks=8))
    # a codec range keeps its ids when only the audio levels change
    assert k8.ranges["lmx"] == base.ranges["lmx"] and k8.ranges["image:0"] == base.ranges["image:0"]


def test_save_load_and_mismatch_names_both_hashes(tmp_path):
    vocab = Vocabulary(VocabularyConfig(audio_codebooks=6))
    path = tmp_path / "vocab.json"
    vocab.save(path)
    loaded = Vocabulary.load(path)
    assert loaded.hash == vocab.hash and loaded.config == vocab.config and loaded.size == vocab.size

    data = json.loads(path.read_text())
    data["hash"] = "0123456789abcdef"
    path.write_text(json.dumps(data))
    with pytest.raises(VocabularyMismatchError) as info:
        Vocabulary.load(path)
    assert vocab.hash in str(info.value) and "0123456789abcdef" in str(info.value)

    with pytest.raises(VocabularyMismatchError, match="shard x.parquet"):
        Vocabulary().check(vocab.hash, what="shard x.parquet")

    path.write_text("{not json")
    with pytest.raises(InputError, match="not a unimusic vocabulary file"):
        Vocabulary.load(path)
    with pytest.raises(InputError, match="no such vocabulary file"):
        Vocabulary.load(tmp_path / "missing.json")


def test_config_validation():
    with pytest.raises(InputError, match="audio_codebooks must be a positive integer"):
        VocabularyConfig(audio_codebooks=0)
    with pytest.raises(InputError, match="unknown keys"):
        VocabularyConfig.from_dict({"audio_books": 3})
