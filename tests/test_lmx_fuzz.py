"""Tolerant LMX decoding: random and mutated streams never raise, give valid MusicXML."""

import xml.etree.ElementTree as ET

import music21
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unimusic.music21_corpus import CorpusPiece, load_musicxml
from unimusic.render.lmx import delinearize, linearize
from unimusic.tokens.lmx import ALL_TOKENS, LmxCodec

GARBAGE = ["", "C10", "H4", "measure:2", "part:0", "part:99", "voice:0", "key:fifths:9", "<note>", "\u00e9"]
SEED_PIECES = ("bach/bwv66.6.mxl", "joplin/maple_leaf_rag.mxl", "demos/nested_tuplet_finale_test.xml")


@pytest.fixture(scope="module")
def real_streams():
    streams = []
    for rel in SEED_PIECES:
        tokens = linearize(load_musicxml(CorpusPiece(rel)))
        streams.append(tokens[:600])
    return streams


def check_output(xml: str, stats, n_tokens: int):
    root = ET.fromstring(xml)  # well-formed
    assert root.tag == "score-partwise" and root.find("part") is not None
    assert stats.tokens == n_tokens
    assert 0 <= stats.invalid_tokens <= n_tokens
    assert stats.invalid_tokens == sum(v for k, v in stats.reasons.items() if k != "divisions_capped")


vocab_token = st.sampled_from(ALL_TOKENS)
any_token = st.one_of(vocab_token, vocab_token, vocab_token, st.sampled_from(GARBAGE), st.text(max_size=6))


@settings(max_examples=700, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(any_token, max_size=120))
def test_random_streams_never_raise(tokens):
    xml, stats = delinearize(tokens)
    check_output(xml, stats, len(tokens))
    if any(t not in ALL_TOKENS for t in tokens):
        assert stats.reasons["unknown_token"] == sum(t not in ALL_TOKENS for t in tokens)


@st.composite
def mutated(draw, streams):
    tokens = list(draw(st.sampled_from(streams)))
    for _ in range(draw(st.integers(1, 12))):
        op = draw(st.sampled_from(["delete", "insert", "swap", "replace", "truncate", "duplicate"]))
        if not tokens:
            break
        i = draw(st.integers(0, len(tokens) - 1))
        if op == "delete":
            del tokens[i]
        elif op == "insert":
            tokens.insert(i, draw(any_token))
        elif op == "swap":
            j = draw(st.integers(0, len(tokens) - 1))
            tokens[i], tokens[j] = tokens[j], tokens[i]
        elif op == "replace":
            tokens[i] = draw(vocab_token)
        elif op == "truncate":
            tokens = tokens[:i]
        else:
            tokens[i:i] = tokens[i : i + draw(st.integers(1, 20))]
    return tokens


def test_mutated_real_streams_never_raise(real_streams):
    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(mutated(real_streams))
    def run(tokens):
        xml, stats = delinearize(tokens)
        check_output(xml, stats, len(tokens))

    run()


def test_decoded_garbage_loads_in_music21_and_verovio(real_streams):
    import verovio

    toolkit = verovio.toolkit()
    toolkit.setOptions({"xmlIdSeed": 1})

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.one_of(st.lists(any_token, max_size=80), mutated(real_streams)))
    def run(tokens):
        xml, stats = delinearize(tokens)
        music21.converter.parse(xml, format="musicxml", forceSource=True)
        assert toolkit.loadData(xml), "Verovio refused decoded MusicXML"

    run()


def test_ids_decode_with_invalid_counted():
    codec = LmxCodec()

    @settings(max_examples=100, deadline=None)
    @given(st.lists(st.integers(-5, codec.num_classes + 5), max_size=100))
    def run(ids):
        tokens, invalid = codec.decode(ids)
        assert invalid == sum(not 0 <= i < codec.num_classes for i in ids)
        xml, stats = delinearize(tokens)
        check_output(xml, stats, len(tokens))

    run()
