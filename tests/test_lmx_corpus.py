"""MusicXML -> LMX -> MusicXML over music21-corpus scores, judged by music21."""

import pytest

from tests.lmx_corpus import KNOWN_EXCEPTIONS, check, run_corpus


def test_lmx_roundtrip_corpus_sample():
    summary = check(run_corpus(40, seed=1))
    print(summary)


@pytest.mark.slow
def test_lmx_roundtrip_corpus_330():
    results = run_corpus(330, seed=0)
    summary = check(results)
    print(summary)
    assert len(results) >= 300
    # Every listed exception is in this sample and still fails as described.
    failing = {r.piece for _, r, _ in results if r and not (r.exact_notes and r.canonical and not r.differences)}
    assert failing == set(KNOWN_EXCEPTIONS), f"exception list is stale: {failing ^ set(KNOWN_EXCEPTIONS)}"
