"""The Ray Serve translation service: every endpoint and every error code, over real HTTP.

Inputs come from a real score (music21's bwv66.6): its MusicXML, the audio FluidSynth
renders from it, its engraved page. Bad inputs are real bad files: an Office document,
an executable, a truncated PNG, a blank page, a WAV over the upload limit.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import urllib.error
import urllib.request
import uuid
import zipfile

import numpy as np
import pytest

from tests.conftest import SERVE_TEST_SETTINGS

pytestmark = pytest.mark.timeout(600)


# -- inputs from a real score ------------------------------------------------------------------


@pytest.fixture(scope="module")
def piece():
    from music21 import corpus

    from unimusic import io_files
    from unimusic.inference import notes_to_audio, score_to_lmx, score_to_notes, score_to_pages

    score = corpus.parse("bach/bwv66.6")
    xml = score.write("musicxml").read_bytes()
    excerpt = score.measures(0, 3).write("musicxml").read_bytes()
    notes = score_to_notes(xml)
    head = [n for n in notes if n.start < 3.0]
    audio = io_files.Audio(samples=notes_to_audio(head, sample_rate=22050), sample_rate=22050)
    page = score_to_pages(excerpt)[0]
    encode = io_files.encode_output
    return {
        "xml": xml,
        "notes": notes,
        "wav": encode(audio, "a.wav")[0][1],
        "png": encode(io_files.Pages(images=(page,)), "p.png")[0][1],
        "lmx": encode(io_files.Lmx(tokens=tuple(score_to_lmx(excerpt))), "e.lmx")[0][1],
        "blank_png": encode(io_files.Pages(images=(np.full((600, 800), 255, np.uint8),)), "b.png")[0][1],
    }


def _post(url, *, files=None, fields=None, json_body=None, headers=None, raw=None, content_type=None):
    """(status, headers, body bytes) of a POST; multipart built by hand (no client library)."""
    headers = dict(headers or {})
    if json_body is not None:
        data, headers["Content-Type"] = json.dumps(json_body).encode(), "application/json"
    elif raw is not None:
        data, headers["Content-Type"] = raw, content_type or "application/octet-stream"
    else:
        boundary = uuid.uuid4().hex
        parts = []
        for k, v in (fields or {}).items():
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
        for k, (name, content) in (files or {}).items():
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{name}"\r\n'
                         f"Content-Type: application/octet-stream\r\n\r\n".encode() + content + b"\r\n")
        data = b"".join(parts) + f"--{boundary}--\r\n".encode()
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
    req = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def _get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def _error_of(status, headers, body, expected):
    assert status == expected, body[:400]
    err = json.loads(body)["error"]
    assert err["status"] == expected and err["message"] and err["request_id"]
    assert headers.get("x-request-id") == err["request_id"]
    return err


def _midi_notes(data: bytes):
    from unimusic.tokens.midi import notes_from_midi

    return notes_from_midi(data, name="response")


# -- endpoints -------------------------------------------------------------------------------------


def test_healthz_and_directions(serve_url):
    status, _, body = _get(serve_url + "/healthz")
    health = json.loads(body)
    assert status == 200 and health["status"] == "ok"
    assert health["checkpoint"].endswith("translator-tiny") and "image->lmx" in health["tasks"]
    status, _, body = _get(serve_url + "/v1/directions")
    d = json.loads(body)
    assert status == 200 and d["targets"] == ["musicxml", "lmx", "midi", "audio", "image"]
    rows = {(r["from"], r["to"]): r["hops"] for r in d["directions"]}
    assert rows[("image", "musicxml")] == ["model image->lmx", "convert lmx->score"]
    assert rows[("score", "midi")] == ["convert score->midi"]
    assert d["formats"]["audio"] == ["wav", "flac"]
    assert d["limits"]["max_upload_bytes"] == SERVE_TEST_SETTINGS["max_upload_bytes"]


def test_openapi_docs(serve_url):
    status, headers, body = _get(serve_url + "/docs")
    assert status == 200 and b"swagger" in body.lower()
    assert b"https://" not in body and b"http://" not in body  # offline: no CDN
    status, headers, js = _get(serve_url + "/docs-assets/swagger-ui-bundle.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript") and len(js) > 100_000
    _error_of(*_get(serve_url + "/docs-assets/..%2F..%2Fapp.py"), 404)
    _error_of(*_get(serve_url + "/docs-assets/app.py"), 404)
    assert _error_of(*_get(serve_url + "/v2/translate"), 404)["type"] == "not_found"
    spec = json.loads(_get(serve_url + "/openapi.json")[2])
    content = spec["paths"]["/v1/translate"]["post"]["requestBody"]["content"]
    assert content["multipart/form-data"]["schema"]["properties"]["file"]["format"] == "binary"
    assert "data" in content["application/json"]["schema"]["properties"]
    assert "/v1/directions" in spec["paths"] and "/healthz" in spec["paths"]


def test_page_is_served(serve_url):
    status, headers, body = _get(serve_url + "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b"v1/translate" in body and b"<script" in body


def test_score_to_midi_file(serve_url, piece):
    """A converter direction, the file as the body: the notes Verovio plays for the score."""
    status, headers, body = _post(serve_url + "/v1/translate", files={"file": ("bwv66.6.musicxml", piece["xml"])},
                                  fields={"to": "midi"})
    assert status == 200, body[:300]
    assert headers["content-type"] == "audio/midi"
    assert headers["content-disposition"] == 'attachment; filename="bwv66.6.mid"'
    assert headers["x-unimusic-hops"] == "convert score->midi"
    got = _midi_notes(body)
    assert [n.pitch for n in got] == [n.pitch for n in piece["notes"]]


def test_score_to_mxl_and_lmx_json(serve_url, piece):
    status, headers, body = _post(serve_url + "/v1/translate", files={"file": ("x.musicxml", piece["xml"])},
                                  fields={"to": "musicxml", "format": "mxl"})
    assert status == 200 and headers["content-type"] == "application/vnd.recordare.musicxml"
    assert "mimetype" in zipfile.ZipFile(io.BytesIO(body)).namelist()
    status, _, body = _post(serve_url + "/v1/translate", files={"file": ("x.musicxml", piece["xml"])},
                            fields={"to": "lmx", "response": "json", "preview": "true"})
    out = json.loads(body)
    assert status == 200 and out["input"]["modality"] == "score"
    assert out["tokens"][0] == "measure" and base64.b64decode(out["file"]["base64"]).decode().split() == out["tokens"]
    assert out["preview"]["svg"] and out["preview"]["svg"][0].lstrip().startswith("<svg")


def test_audio_to_midi_json_base64(serve_url, piece):
    """A model direction through JSON + base64: notes, tokens metadata, a MIDI file, a preview."""
    status, headers, body = _post(serve_url + "/v1/translate", json_body={
        "data": base64.b64encode(piece["wav"]).decode(), "filename": "take.wav", "to": "midi",
        "response": "json", "preview": True})
    assert status == 200, body[:300]
    out = json.loads(body)
    assert out["hops"] == ["model audio->midi"] and out["chunks"] >= 1
    assert out["input"] == {"filename": "take.wav", "modality": "audio", "bytes": len(piece["wav"]), "warnings": []}
    assert out["file"]["name"] == "take.mid" and out["request_id"] == headers["x-request-id"]
    notes = _midi_notes(base64.b64decode(out["file"]["base64"]))
    assert [[n.pitch, round(n.start, 4)] for n in notes] == [[p, s] for p, s, *_ in out["notes"]]
    assert out["preview"]["notes"] == out["notes"]
    if out["notes"]:
        assert base64.b64decode(out["preview"]["audio"]["base64"])[:4] == b"RIFF"


def test_image_to_musicxml_and_pdf(serve_url, piece):
    """OMR through the model: a MusicXML music21 can parse; score -> image as a PDF."""
    from music21 import converter

    status, headers, body = _post(serve_url + "/v1/translate", files={"file": ("page.png", piece["png"])},
                                  fields={"to": "musicxml"})
    assert status == 200, body[:300]
    assert headers["x-unimusic-hops"] == "model image->lmx, convert lmx->score"
    assert converter.parse(body, format="musicxml") is not None
    status, headers, body = _post(serve_url + "/v1/translate", files={"file": ("x.musicxml", piece["xml"])},
                                  fields={"to": "image", "format": "pdf"})
    assert status == 200 and headers["content-type"] == "application/pdf" and body[:5] == b"%PDF-"


def test_request_names_never_reach_the_filesystem(serve_url, piece, tmp_path):
    """A name with a path is only a label: content decides the type, the download name is cleaned."""
    status, headers, body = _post(serve_url + "/v1/translate",
                                  files={"file": ("../../../etc/passwd.png", piece["xml"])},
                                  fields={"to": "midi", "response": "json"})
    out = json.loads(body)
    assert status == 200 and out["input"]["filename"] == "passwd.png" and out["file"]["name"] == "passwd.mid"
    assert out["input"]["modality"] == "score"
    assert any("extension .png" in w for w in out["input"]["warnings"])


# -- errors ------------------------------------------------------------------------------------------


def test_413_upload_too_large(serve_url, piece):
    from unimusic import io_files

    limit = SERVE_TEST_SETTINGS["max_upload_bytes"]
    samples, sr = io_files.read_bytes(piece["wav"], name="a.wav").value.samples, 22050
    reps = limit // (2 * len(samples)) + 2  # 16-bit mono: over the limit
    big = io_files.encode_output(io_files.Audio(samples=np.tile(samples, reps), sample_rate=sr), "big.wav")[0][1]
    assert limit < len(big) < limit * 4 // 3
    err = _error_of(*_post(serve_url + "/v1/translate", files={"file": ("big.wav", big)}, fields={"to": "midi"}), 413)
    assert "big.wav" in err["message"] and str(limit) in err["message"]
    huge = big * 2  # over the raw-body limit: refused before the form is parsed
    err = _error_of(*_post(serve_url + "/v1/translate", files={"file": ("huge.wav", huge)}, fields={"to": "midi"}), 413)
    assert "limit" in err["message"]


def test_415_unsupported_content(serve_url):
    docx = io.BytesIO()
    with zipfile.ZipFile(docx, "w") as zf:
        zf.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/'
                    'package/2006/content-types"/>')
        zf.writestr("word/document.xml", "<w:document/>")
    err = _error_of(*_post(serve_url + "/v1/translate", files={"file": ("score.docx", docx.getvalue())},
                           fields={"to": "midi"}), 415)
    assert "score.docx" in err["message"] and "Office document" in err["message"]
    binary = open(shutil.which("true"), "rb").read()  # an executable
    err = _error_of(*_post(serve_url + "/v1/translate", files={"file": ("true", binary)}, fields={"to": "midi"}), 415)
    assert "unsupported file type" in err["message"]
    err = _error_of(*_post(serve_url + "/v1/translate", raw=b"hello", content_type="text/plain"), 415)
    assert "multipart/form-data" in err["message"]


def test_422_invalid_parameters(serve_url, piece):
    upload = {"file": ("x.musicxml", piece["xml"])}
    for fields, needle in [({"to": "flac"}, "to"), ({"to": "midi", "beam_size": "0"}, "beam_size"),
                           ({"to": "midi", "engine": "fast"}, "engine"), ({"to": "midi", "via": "lmx,mp3"}, "mp3"),
                           ({"to": "midi", "format": "wav"}, "format 'wav'"), ({"to": "midi", "color": "red"}, "color"),
                           ({}, "to")]:
        err = _error_of(*_post(serve_url + "/v1/translate", files=upload, fields=fields), 422)
        assert needle in err["message"], (fields, err)


def test_422_unusable_files(serve_url, piece):
    truncated = piece["png"][: len(piece["png"]) // 2]
    err = _error_of(*_post(serve_url + "/v1/translate", files={"file": ("page.png", truncated)},
                           fields={"to": "musicxml"}), 422)
    assert "page.png" in err["message"]
    err = _error_of(*_post(serve_url + "/v1/translate", files={"file": ("blank.png", piece["blank_png"])},
                           fields={"to": "musicxml"}), 422)
    assert "no staff systems" in err["message"]


def test_400_malformed_bodies(serve_url, piece):
    err = _error_of(*_post(serve_url + "/v1/translate", json_body={"data": "%%%not base64", "to": "midi"}), 400)
    assert "base64" in err["message"]
    err = _error_of(*_post(serve_url + "/v1/translate", fields={"to": "midi"}), 400)
    assert "'file'" in err["message"]
    err = _error_of(*_post(serve_url + "/v1/translate", files={"file": ("e.mid", b"")}, fields={"to": "midi"}), 400)
    assert "empty" in err["message"]
    err = _error_of(*_post(serve_url + "/v1/translate", raw=b"{not json", content_type="application/json"), 400)
    assert "JSON" in err["message"]


# -- a second app: API key, a model that fails, a short timeout ---------------------------------------


@pytest.fixture(scope="module")
def strict_url(serve_url, tmp_path_factory):
    """An app with an API key, a 5 s timeout and a checkpoint exported from a run that diverged
    (NaN weights, a real failure mode): sampling from it raises inside the model."""
    from ray import serve
    from safetensors.numpy import load_file, save_file

    from serve.app import ServeSettings, deploy
    from unimusic.inference import shipped_translator_path

    shipped = str(shipped_translator_path())
    folder = tmp_path_factory.mktemp("diverged")
    weights = load_file(shipped + ".safetensors")
    weights["encoder_norm.weight"] = np.full_like(weights["encoder_norm.weight"], np.nan)
    save_file(weights, str(folder / "diverged.safetensors"))
    meta = json.loads(open(shipped + ".json").read())
    meta["sha256"] = hashlib.sha256((folder / "diverged.safetensors").read_bytes()).hexdigest()
    (folder / "diverged.json").write_text(json.dumps(meta))
    port = int(serve_url.rsplit(":", 1)[1])
    settings = {**SERVE_TEST_SETTINGS, "request_timeout_s": 5.0}
    url = deploy(ServeSettings(port=port, checkpoint=str(folder / "diverged"), api_key="s3cret", **settings),
                 name="unimusic-strict", route_prefix="/strict")
    yield url
    serve.delete("unimusic-strict")


@pytest.mark.slow  # deploys a second app (another model load)
def test_401_api_key(strict_url, piece):
    assert _get(strict_url + "/healthz")[0] == 200  # health stays open
    _error_of(*_get(strict_url + "/v1/directions"), 401)
    _error_of(*_post(strict_url + "/v1/translate", files={"file": ("x.musicxml", piece["xml"])},
                     fields={"to": "midi"}, headers={"X-API-Key": "wrong"}), 401)
    status, _, _ = _post(strict_url + "/v1/translate", files={"file": ("x.musicxml", piece["xml"])},
                         fields={"to": "midi"}, headers={"X-API-Key": "s3cret"})
    assert status == 200


@pytest.mark.slow  # deploys a second app (another model load)
def test_500_model_error_keeps_the_replica(strict_url, piece):
    import ray

    def replicas():  # Serve names each replica actor with a fresh id: a restart changes the name
        return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                      if a["name"].startswith("SERVE_REPLICA::unimusic-strict#TranslatorModel#"))

    before = replicas()
    assert len(before) == 1
    key = {"X-API-Key": "s3cret"}
    # LMX -> MIDI through the model: no encoder before the first sampled step, which fails
    err = _error_of(*_post(strict_url + "/v1/translate", files={"file": ("bars.lmx", piece["lmx"])},
                           fields={"to": "midi", "engine": "model", "strategy": "sample"}, headers=key), 500)
    assert err["type"] == "model_error" and err["request_id"] in err["message"]
    assert "probability tensor" in err["message"]
    assert _get(strict_url + "/healthz")[0] == 200  # the replica answers its next call
    assert replicas() == before  # the same replica, not a restarted one


@pytest.mark.slow  # deploys a second app (another model load)
def test_504_timeout(strict_url, piece):
    from unimusic import io_files

    samples = io_files.read_bytes(piece["wav"], name="a.wav").value.samples
    long = io_files.encode_output(io_files.Audio(samples=np.tile(samples, 20), sample_rate=22050), "l.wav")[0][1]
    err = _error_of(*_post(strict_url + "/v1/translate", files={"file": ("long.wav", long)}, fields={"to": "midi"},
                           headers={"X-API-Key": "s3cret"}), 504)
    assert "5 s" in err["message"]
