"""The translation service on Ray Serve: a FastAPI ingress and a batched model deployment.

``Ingress`` (FastAPI, see ``serve/API.md``) reads uploads in memory, sniffs their
content with the CLI's readers (:func:`unimusic.io_files.read_bytes`), validates the
parameters with pydantic and answers errors as JSON with a request id. Directions the
deterministic converters do (score -> MIDI, MIDI -> audio ...) run in the ingress; a
direction with a model hop goes to ``TranslatorModel``, whose replicas each load the
exported checkpoint once and decode requests in batches (``@serve.batch``; a batch is
split by direction and options, each group one :meth:`Translator.translate_many`).

Build the application with :func:`build_app` (or ``serve run serve.app:build`` /
``serve/config.yaml``); :func:`deploy` runs it on the current Ray cluster and waits
until ``/healthz`` answers. Nothing happens at import time beyond defining classes.
"""

import asyncio
import base64
import binascii
import concurrent.futures
import dataclasses
import hmac
import json
import logging
import os
import re
import time
import typing
import uuid
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from unimusic.errors import InputError
from unimusic.inference import CORE, ENGINES, STRATEGIES, TARGETS  # constants only: numpy, no torch

APP_NAME = "unimusic"
INGRESS = "Ingress"
MODEL = "TranslatorModel"
PAGE = Path(__file__).with_name("page") / "index.html"
API_KEY_ENV = "UNIMUSIC_API_KEY"
log = logging.getLogger("ray.serve")

# Output formats per target: the first is the default (image: png for one page, else pdf).
FORMATS = {
    "musicxml": ("musicxml", "mxl"), "lmx": ("lmx",), "midi": ("mid",), "audio": ("wav", "flac"), "image": ("png", "pdf"),
}
MEDIA_TYPES = {
    "musicxml": "application/vnd.recordare.musicxml+xml", "mxl": "application/vnd.recordare.musicxml",
    "lmx": "text/plain; charset=utf-8", "mid": "audio/midi", "wav": "audio/wav", "flac": "audio/flac",
    "png": "image/png", "pdf": "application/pdf",
}
PREVIEW_SVG_PAGES = 8
PREVIEW_AUDIO_SECONDS = 120.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServeSettings:
    """Everything the service needs; ``build_app`` turns it into deployment options."""

    checkpoint: str | None = None  # an exported translator; None: the shipped translator-tiny
    host: str = "127.0.0.1"  # loopback unless configured otherwise
    port: int = 8000
    api_key: str | None = None  # None: $UNIMUSIC_API_KEY if set, else no key needed
    max_upload_bytes: int = 50 * 2**20
    max_audio_seconds: float = 600.0
    max_pages: int = 20
    request_timeout_s: float = 120.0
    max_batch_size: int = 8  # requests decoded together by one model replica
    batch_wait_timeout_s: float = 0.05
    chunk_batch_size: int = 32  # model inputs (systems, windows) decoded together
    min_replicas: int = 1
    max_replicas: int = 2
    initial_replicas: int | None = None
    target_ongoing_requests: float = 4.0
    model_cpus: float = 1.0
    model_gpus: float | None = None  # None: one GPU per model replica when the cluster has GPUs
    ingress_replicas: int = 1
    ingress_cpus: float = 0.25

    def __post_init__(self):
        def positive(name, value):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise InputError(name, f"must be a positive number, got {value!r}")

        for name in ("port", "max_upload_bytes", "max_audio_seconds", "max_pages", "request_timeout_s",
                     "max_batch_size", "chunk_batch_size", "min_replicas", "max_replicas", "target_ongoing_requests",
                     "ingress_replicas"):
            positive(name, getattr(self, name))
        for name in ("model_cpus", "ingress_cpus"):  # 0: reserve nothing (a service beside other Ray jobs)
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise InputError(name, f"must be a number >= 0, got {value!r}")
        if self.batch_wait_timeout_s < 0:
            raise InputError("batch_wait_timeout_s", f"must be >= 0, got {self.batch_wait_timeout_s!r}")
        if self.min_replicas > self.max_replicas:
            raise InputError("min_replicas", f"{self.min_replicas} > max_replicas {self.max_replicas}")
        if not 0 < self.port < 65536:
            raise InputError("port", f"must be 1..65535, got {self.port!r}")

    @classmethod
    def from_mapping(cls, values: dict) -> "ServeSettings":
        """Settings from ``serve run`` arguments or a config file (strings converted by type)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise InputError("serve settings", f"unknown {unknown} (have {', '.join(fields)})")
        out = {}
        for name, raw in values.items():
            args = typing.get_args(fields[name].type) or (fields[name].type,)
            base = next(a for a in args if a is not type(None))
            if raw is None or raw == "" and type(None) in args:
                out[name] = None
            elif base in (int, float):
                try:
                    out[name] = base(raw)
                except (TypeError, ValueError):
                    raise InputError(name, f"expected a number, got {raw!r}") from None
            else:
                out[name] = str(raw)
        return cls(**out)

    def key(self) -> str | None:
        return self.api_key if self.api_key is not None else (os.environ.get(API_KEY_ENV) or None)


# -- what travels from the ingress to the model -------------------------------------------


@dataclasses.dataclass(frozen=True)
class Job:
    request_id: str
    value: object  # an io_files value
    to: str
    via: tuple[str, ...]
    options: object  # inference.Options
    source: str


@dataclasses.dataclass(frozen=True)
class Outcome:
    result: object | None  # inference.Result
    failure: str | None = None  # an unexpected error (the replica logged its traceback)


def _run_jobs(translator, jobs: list[Job], *, chunk_batch_size: int) -> list[Outcome]:
    """Translate jobs, one translate_many per (modality, target, via, options) group."""
    from unimusic.inference import modality_of

    groups: dict[tuple, list[int]] = {}
    for i, job in enumerate(jobs):
        groups.setdefault((modality_of(job.value), job.to, job.via, job.options), []).append(i)
    out: list[Outcome | None] = [None] * len(jobs)
    for (_, to, via, options), idx in groups.items():
        opts = dataclasses.replace(options, batch_size=max(options.batch_size, chunk_batch_size))
        try:
            results = translator.translate_many([jobs[i].value for i in idx], to, via=via, options=opts,
                                                sources=[jobs[i].source for i in idx])
        except InputError as exc:  # the whole group (e.g. a direction this checkpoint lacks)
            from unimusic.inference import Result

            results = [Result(value=None, hops=[], error=str(exc)) for _ in idx]
        except Exception as exc:  # noqa: BLE001 - the replica must stay up; the ingress answers 500
            if len(idx) > 1:  # find the culprit: the others of the batch still get their answers
                for i in idx:
                    out[i] = _run_jobs(translator, [jobs[i]], chunk_batch_size=chunk_batch_size)[0]
                continue
            log.exception("translation failed for request %s", jobs[idx[0]].request_id)
            out[idx[0]] = Outcome(result=None, failure=f"{type(exc).__name__}: {exc}")
            continue
        for i, r in zip(idx, results):
            out[i] = Outcome(result=r)
    return out  # type: ignore[return-value]


@serve.deployment(name=MODEL)
class TranslatorModel:
    """One exported translator per replica; requests decoded in batches."""

    def __init__(self, *, checkpoint: str | None, device: str, max_batch_size: int, batch_wait_timeout_s: float,
                 chunk_batch_size: int, threads: int):
        import torch

        from unimusic.inference import Translator

        torch.set_num_threads(max(1, threads))
        self.translator = Translator.load(checkpoint, device=device)
        self.translator.tokenizers  # load them now, not in the first request
        self.chunk_batch_size = chunk_batch_size
        self.device = device
        self.translate.set_max_batch_size(max_batch_size)
        self.translate.set_batch_wait_timeout_s(batch_wait_timeout_s)
        # one decoding thread: the event loop stays free for health checks and queueing
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="translate")
        # Serve collects the next batch while the current one decodes, so it closes after
        # batch_wait_timeout_s with whatever came by then; holding requests until the decoder
        # is free lets them join one full batch (mean batch 6.4 -> 10.5 of 16 measured).
        self._idle = asyncio.Event()
        self._idle.set()

    def info(self) -> dict:
        return {"checkpoint": self.translator.path, "tasks": list(self.translator.tasks), "device": self.device}

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def translate(self, jobs: list[Job]) -> list[Outcome]:
        loop = asyncio.get_running_loop()
        self._idle.clear()
        try:
            return await loop.run_in_executor(
                self._pool, lambda: _run_jobs(self.translator, jobs, chunk_batch_size=self.chunk_batch_size))
        finally:
            self._idle.set()

    async def __call__(self, job: Job) -> Outcome:
        await self._idle.wait()
        return await self.translate(job)


# -- request parameters ---------------------------------------------------------------------


class TranslateParams(BaseModel):
    """Parameters of ``POST /v1/translate`` (form fields or JSON keys)."""

    model_config = ConfigDict(extra="forbid")

    to: Literal[TARGETS]
    response: Literal["file", "json"] = "file"
    format: str | None = Field(None, description="output format; default per target (see /v1/directions)")
    preview: bool = False
    via: str = Field("", description="comma-separated cascade steps: lmx, midi, image, audio")
    engine: Literal[ENGINES] = "auto"
    strategy: Literal[STRATEGIES] = "greedy"
    beam_size: int = Field(4, ge=1, le=16)
    temperature: float = Field(1.0, gt=0, le=10)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int = Field(0, ge=0, le=2**31 - 1)

    @field_validator("via")
    @classmethod
    def _via(cls, v: str) -> str:
        steps = [s.strip() for s in v.split(",") if s.strip()]
        bad = [s for s in steps if s not in CORE]
        if bad:
            raise ValueError(f"unknown step(s) {bad}; use {', '.join(CORE)}")
        return ",".join(steps)

    def via_steps(self) -> tuple[str, ...]:
        return tuple(s for s in self.via.split(",") if s)

    def output_format(self, pages: int = 1) -> str:
        if self.format is None:
            return "pdf" if self.to == "image" and pages > 1 else FORMATS[self.to][0]
        return self.format

    def check_format(self) -> None:
        if self.format is not None and self.format not in FORMATS[self.to]:
            raise _Fail(422, "invalid_parameter", f"format {self.format!r} does not fit to={self.to} "
                        f"(use {', '.join(FORMATS[self.to])})")


class TranslateJson(TranslateParams):
    data: str = Field(..., description="the input file, base64")
    filename: str = Field("upload", max_length=255, description="names the input in messages and the download")


class _Fail(Exception):
    def __init__(self, status: int, kind: str, message: str):
        self.status, self.kind, self.message = status, kind, message
        super().__init__(message)


class _InMemoryParser(MultiPartParser):
    spool_max_size = 2**62  # uploads stay in memory: nothing from a request touches the disk


def _safe_name(name: str | None) -> str:
    """A display name for an upload: its last path part, printable characters only."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = re.sub(r"[^\w.\- ()+]", "_", base)[:120].strip(" .")
    return base or "upload"


def _serve_request_id() -> str:
    """The id Ray Serve gives this request (its proxy returns it as X-Request-ID and logs it)."""
    try:
        from ray.serve.context import _get_serve_request_context

        return _get_serve_request_context().request_id or uuid.uuid4().hex
    except Exception:  # noqa: BLE001 - outside a replica
        return uuid.uuid4().hex


def _error(status: int, kind: str, message: str, request_id: str) -> JSONResponse:
    return JSONResponse(status_code=status,
                        content={"error": {"status": status, "type": kind, "message": message,
                                           "request_id": request_id}})


def _pydantic_message(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors():
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        parts.append(f"{where}: {e.get('msg')}")
    return "; ".join(parts)


def _notes_json(notes) -> list[list]:
    return [[int(n.pitch), round(float(n.start), 4), round(float(n.end), 4), int(n.velocity), int(n.program)]
            for n in notes]


def _tokens_and_notes(to: str, value, name: str) -> dict:
    from unimusic.inference import score_to_lmx
    from unimusic.io_files import Lmx, Midi, Score

    if to in ("lmx", "musicxml"):
        if isinstance(value, Lmx):
            return {"tokens": list(value.tokens)}
        if isinstance(value, Score):
            try:
                return {"tokens": score_to_lmx(value.musicxml, source=name)}
            except InputError:
                return {}
    if to == "midi" and isinstance(value, Midi):
        return {"notes": _notes_json(value.notes)}
    return {}


def _preview(to: str, value, body: dict, name: str) -> dict:
    """What the web page shows: engraved SVG, audio, piano-roll notes, page images."""
    import numpy as np

    from unimusic.inference import lmx_to_score, notes_to_audio, score_to_svgs
    from unimusic.io_files import Audio, Lmx, Pages, Score, encode_output

    out: dict = {}
    try:
        if isinstance(value, (Score, Lmx)):
            xml = value.musicxml if isinstance(value, Score) else lmx_to_score(value.tokens)[0]
            out["svg"] = score_to_svgs(xml, source=name, max_pages=PREVIEW_SVG_PAGES)
        elif to == "midi":
            out["notes"] = body.get("notes", [])
            notes = [n for n in value.notes if n.start < PREVIEW_AUDIO_SECONDS]
            if notes:
                samples = notes_to_audio(notes, sample_rate=22050)
                wav = encode_output(Audio(samples=samples, sample_rate=22050), "preview.wav")[0][1]
                out["audio"] = {"media_type": "audio/wav", "base64": base64.b64encode(wav).decode()}
        # an audio target: the player plays ``file`` itself (not repeated here)
        elif isinstance(value, Pages):
            out["images"] = [base64.b64encode(b).decode() for _, b in encode_output(
                Pages(images=tuple(np.asarray(p) for p in value.images[:PREVIEW_SVG_PAGES])), "preview.png")]
    except InputError as exc:
        out["error"] = str(exc)
    return out


def _replica_gone(exc: Exception) -> bool:
    """Whether an error means the replica died or went away (so another may answer)."""
    from ray import exceptions as rex

    gone = tuple(getattr(rex, n) for n in ("RayActorError", "ActorDiedError", "ActorUnavailableError") if hasattr(rex, n))
    return isinstance(exc, gone)


# -- the ingress ---------------------------------------------------------------------------

api = FastAPI(
    title="unimusic translation service",
    version="1",
    description="Translate music between score images, MusicXML/kern/ABC, LMX, MIDI and audio. See serve/API.md.",
    docs_url=None,  # FastAPI's own /docs loads Swagger UI from a CDN; ours serves it offline (below)
    redoc_url=None,
)
_HTTP_KINDS = {404: "not_found", 405: "method_not_allowed"}


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Unknown paths and methods answer in the same JSON error shape as everything else."""
    return _error(exc.status_code, _HTTP_KINDS.get(exc.status_code, "http_error"),
                  f"{request.method} {request.url.path}: {exc.detail}", _serve_request_id())


# Swagger UI's files (the swagger-ui-bundle package), served by name from this fixed list.
_DOCS_ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
                "favicon-32x32.png": "image/png"}


def body_limit(max_upload_bytes: int) -> int:
    """The raw body may exceed the upload limit by base64's 4/3 and the form's overhead."""
    return max_upload_bytes * 4 // 3 + 2**20


_BODY_LIMIT = {"bytes": body_limit(ServeSettings().max_upload_bytes)}  # set by the ingress replica


class BodyLimit:
    """ASGI middleware: a request body larger than the limit gets 413 before anything parses it."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        limit = _BODY_LIMIT["bytes"]
        headers = dict(scope.get("headers") or [])
        request_id = _serve_request_id()
        try:
            declared = int(headers.get(b"content-length", b"-1"))
        except ValueError:
            declared = -1
        if declared > limit:
            return await _error(413, "payload_too_large", f"request body of {declared} bytes is larger than the "
                                f"limit of {limit} bytes", request_id)(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > limit:
                return await _error(413, "payload_too_large", f"request body is larger than the limit of "
                                    f"{limit} bytes", request_id)(scope, receive, send)
            chunks.append(body)
            if not message.get("more_body"):
                break
        data = b"".join(chunks)
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": data, "more_body": False}

        return await self.app(scope, replay, send)


api.add_middleware(BodyLimit)


@serve.deployment(name=INGRESS)
@serve.ingress(api)
class Ingress:
    def __init__(self, model_handle, *, settings: dict):
        from unimusic.io_files import Limits

        self.model = model_handle
        self.settings = ServeSettings.from_mapping(settings)
        self.limits = Limits(max_bytes=self.settings.max_upload_bytes, max_audio_seconds=self.settings.max_audio_seconds,
                             max_pages=self.settings.max_pages)
        _BODY_LIMIT["bytes"] = body_limit(self.settings.max_upload_bytes)
        self.page_html = PAGE.read_text(encoding="utf-8")

    # -- helpers --------------------------------------------------------------------------
    def _check_key(self, request: Request) -> None:
        key = self.settings.key()
        if key and not hmac.compare_digest(request.headers.get("x-api-key", "").encode(), key.encode()):
            raise _Fail(401, "unauthorized", "missing or wrong X-API-Key header")

    async def _model_info(self) -> dict:
        """Asked of a model replica on every call: health must notice when none answers."""
        return await self.model.info.remote()

    async def _parse(self, request: Request) -> tuple[TranslateParams, bytes, str]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        limit = self.settings.max_upload_bytes
        if ctype == "application/json":
            try:
                body = json.loads(await request.body())
            except (ValueError, UnicodeDecodeError) as exc:
                raise _Fail(400, "bad_request", f"body is not valid JSON ({exc})") from None
            if not isinstance(body, dict):
                raise _Fail(400, "bad_request", "JSON body must be an object")
            try:
                params = TranslateJson(**body)
            except ValidationError as exc:
                raise _Fail(422, "invalid_parameter", _pydantic_message(exc)) from None
            try:
                data = base64.b64decode(params.data, validate=True)
            except (binascii.Error, ValueError):
                raise _Fail(400, "bad_request", "data is not valid base64") from None
            name = _safe_name(params.filename)
            params = TranslateParams(**params.model_dump(exclude={"data", "filename"}))
        elif ctype == "multipart/form-data":
            try:
                form = await _InMemoryParser(request.headers, request.stream(), max_files=1, max_fields=20,
                                             max_part_size=64 * 1024).parse()
            except MultiPartException as exc:
                raise _Fail(400, "bad_request", f"malformed multipart body ({exc.message})") from None
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise _Fail(400, "bad_request", "multipart body has no 'file' upload")
            fields = {k: v for k, v in form.multi_items() if k != "file"}
            try:
                params = TranslateParams(**fields)
            except ValidationError as exc:
                raise _Fail(422, "invalid_parameter", _pydantic_message(exc)) from None
            data = await upload.read()
            name = _safe_name(upload.filename)
        else:
            raise _Fail(415, "unsupported_media_type",
                        f"request content type {ctype or '(none)'!r}: send multipart/form-data or application/json")
        if not data:
            raise _Fail(400, "bad_request", f"upload {name!r} is empty (0 bytes)")
        if len(data) > limit:
            raise _Fail(413, "payload_too_large", f"upload {name!r} is {len(data)} bytes, larger than the limit of "
                        f"{limit} bytes")
        params.check_format()
        return params, data, name

    async def _translate(self, job: Job, needs_model: bool):
        if not needs_model:  # a converter-only direction: no model replica needed
            from unimusic.inference import Translator

            translator = Translator()
            return await asyncio.to_thread(
                lambda: _run_jobs(translator, [job], chunk_batch_size=self.settings.chunk_batch_size)[0])
        last: Exception | None = None
        for _ in range(3):  # a replica that dies mid-request: the request is idempotent, try another
            try:
                return await self.model.remote(job)
            except Exception as exc:  # noqa: BLE001 - RayActorError, ActorDiedError, ActorUnavailableError...
                if not _replica_gone(exc):
                    raise
                last = exc
                await asyncio.sleep(0.2)
        raise _Fail(503, "unavailable", f"the model deployment is unavailable ({type(last).__name__})")

    # -- endpoints ------------------------------------------------------------------------
    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(self) -> HTMLResponse:
        return HTMLResponse(self.page_html)

    @api.get("/docs", include_in_schema=False)
    async def docs(self, request: Request) -> HTMLResponse:
        from fastapi.openapi.docs import get_swagger_ui_html

        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(openapi_url=f"{root}/openapi.json", title="unimusic API",
                                   swagger_js_url=f"{root}/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}/docs-assets/swagger-ui.css",
                                   swagger_favicon_url=f"{root}/docs-assets/favicon-32x32.png")

    @api.get("/docs-assets/{name}", include_in_schema=False)
    async def docs_asset(self, name: str) -> Response:
        if name not in _DOCS_ASSETS:  # a fixed list: the request's name never becomes a path
            return _error(404, "not_found", f"no such asset {name[:80]!r}", _serve_request_id())
        from swagger_ui_bundle import swagger_ui_path

        return Response((swagger_ui_path / name).read_bytes(), media_type=_DOCS_ASSETS[name],
                        headers={"Cache-Control": "max-age=86400"})

    @api.get("/healthz", summary="Liveness: the ingress answers and a model replica is reachable")
    async def healthz(self):
        request_id = _serve_request_id()
        try:
            info = await asyncio.wait_for(self._model_info(), timeout=10)
        except Exception as exc:  # noqa: BLE001
            return _error(503, "unavailable", f"model deployment not ready ({type(exc).__name__})", request_id)
        return {"status": "ok", "checkpoint": info["checkpoint"], "tasks": info["tasks"], "device": info["device"]}

    @api.get("/v1/directions", summary="What translates into what, the output formats and the limits")
    async def directions(self, request: Request):
        from unimusic.inference import plan_hops

        request_id = _serve_request_id()
        try:
            self._check_key(request)
            info = await self._model_info()
        except _Fail as fail:
            return _error(fail.status, fail.kind, fail.message, request_id)
        rows = []
        for source in ("image", "audio", "midi", "score", "lmx"):
            for to in TARGETS:
                try:
                    hops = plan_hops(source, to, model_tasks=info["tasks"])
                except InputError:
                    continue
                rows.append({"from": source, "to": to, "hops": [f"{k} {a}->{b}" for k, a, b in hops]})
        return {"inputs": ["image", "audio", "midi", "score", "lmx"], "targets": list(TARGETS),
                "model_tasks": info["tasks"], "directions": rows, "formats": {k: list(v) for k, v in FORMATS.items()},
                "limits": {"max_upload_bytes": self.settings.max_upload_bytes,
                           "request_timeout_s": self.settings.request_timeout_s,
                           "max_audio_seconds": self.settings.max_audio_seconds}}

    @api.post(
        "/v1/translate",
        summary="Translate one file",
        response_class=Response,
        responses={200: {"description": "the translated file, or JSON with tokens and metadata (response=json)"},
                   400: {"description": "malformed body"}, 401: {"description": "API key missing or wrong"},
                   413: {"description": "upload too large"}, 415: {"description": "unsupported content type"},
                   422: {"description": "invalid parameters or an unusable file"},
                   500: {"description": "model error (quote the request id)"}, 504: {"description": "timed out"}},
        openapi_extra={"requestBody": {"required": True, "content": {
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["file", "to"],
                "properties": {"file": {"type": "string", "format": "binary"},
                               **TranslateParams.model_json_schema()["properties"]}}},
            "application/json": {"schema": TranslateJson.model_json_schema()},
        }}},
    )
    async def translate(self, request: Request):
        request_id = _serve_request_id()
        started = time.perf_counter()
        try:
            self._check_key(request)
            params, data, name = await self._parse(request)
            return await asyncio.wait_for(self._answer(params, data, name, request_id),
                                          timeout=self.settings.request_timeout_s)
        except _Fail as fail:
            return _error(fail.status, fail.kind, fail.message, request_id)
        except asyncio.TimeoutError:
            return _error(504, "timeout", f"translation took longer than {self.settings.request_timeout_s:g} s",
                          request_id)
        except Exception as exc:  # noqa: BLE001 - never a traceback to the client
            log.exception("request %s failed after %.2f s", request_id, time.perf_counter() - started)
            return _error(500, "internal", f"the translation failed ({type(exc).__name__}); request id {request_id}",
                          request_id)

    async def _answer(self, params: TranslateParams, data: bytes, name: str, request_id: str) -> Response:
        from unimusic.inference import Options, needs_model
        from unimusic.io_files import TooLarge, UnsupportedType, read_bytes

        try:
            loaded = await asyncio.to_thread(read_bytes, data, name=name, limits=self.limits)
        except UnsupportedType as exc:
            raise _Fail(415, "unsupported_media_type", f"upload {exc}") from None
        except TooLarge as exc:
            raise _Fail(413, "payload_too_large", f"upload {exc}") from None
        except InputError as exc:
            raise _Fail(422, "unprocessable", f"upload {exc}") from None
        try:
            options = Options(engine=params.engine, strategy=params.strategy, beam_size=params.beam_size,
                              temperature=params.temperature, top_p=params.top_p, seed=params.seed)
            via = params.via_steps()
            with_model = needs_model(loaded.modality, params.to, via=via, engine=params.engine)
        except InputError as exc:
            raise _Fail(422, "invalid_parameter", str(exc)) from None
        job = Job(request_id=request_id, value=loaded.value, to=params.to, via=via, options=options, source=name)
        outcome = await self._translate(job, with_model)
        if outcome.failure:
            raise _Fail(500, "model_error", f"the model failed on this input ({outcome.failure}); "
                        f"request id {request_id}")
        result = outcome.result
        if result.error:
            raise _Fail(422, "unprocessable", result.error)
        return await asyncio.to_thread(self._respond, params, result, loaded, name, len(data), request_id)

    def _respond(self, params: TranslateParams, result, loaded, name: str, size: int, request_id: str) -> Response:
        from unimusic.io_files import Pages, encode_output

        pages = len(result.value.images) if isinstance(result.value, Pages) else 1
        fmt = params.output_format(pages)
        stem = Path(name).stem or "upload"
        filename = f"{stem}.{fmt}"
        if fmt == "png" and pages > 1:  # asked for png explicitly: the first page (json has them all)
            result.warnings.append(f"{pages} pages: the file holds page 1; ask format=pdf for all")
        try:
            file_bytes = encode_output(result.value, filename)[0][1]
        except InputError as exc:
            raise _Fail(422, "unprocessable", str(exc)) from None
        warnings = [*loaded.warnings, *result.warnings]
        if params.response == "file":
            headers = {"Content-Disposition": f'attachment; filename="{filename}"',
                       "X-Unimusic-Hops": ", ".join(result.hops), "X-Unimusic-Warnings": json.dumps(warnings)[:4000]}
            return Response(content=file_bytes, media_type=MEDIA_TYPES[fmt], headers=headers)
        body = {
            "request_id": request_id, "to": params.to,
            "input": {"filename": name, "modality": loaded.modality, "bytes": size, "warnings": list(loaded.warnings)},
            "hops": result.hops, "seconds": result.seconds, "chunks": result.chunks,
            "invalid_tokens": result.invalid_tokens, "warnings": list(result.warnings),
            "file": {"name": filename, "media_type": MEDIA_TYPES[fmt], "base64": base64.b64encode(file_bytes).decode()},
        }
        body.update(_tokens_and_notes(params.to, result.value, name))
        if params.preview:
            body["preview"] = _preview(params.to, result.value, body, name)
        return JSONResponse(body)


# -- building and running ----------------------------------------------------------------------


def _cluster_gpus() -> float:
    import ray

    try:
        return float(ray.cluster_resources().get("GPU", 0)) if ray.is_initialized() else 0.0
    except Exception:  # noqa: BLE001
        return 0.0


def build_app(settings: ServeSettings = ServeSettings()):
    """The Serve application (ingress + model) for ``settings``."""
    gpus = settings.model_gpus if settings.model_gpus is not None else (1.0 if _cluster_gpus() >= 1 else 0.0)
    device = "cuda" if gpus > 0 else "cpu"
    autoscaling = {
        "min_replicas": settings.min_replicas, "max_replicas": settings.max_replicas,
        "target_ongoing_requests": settings.target_ongoing_requests,
        "upscale_delay_s": 5.0, "downscale_delay_s": 60.0,
    }
    if settings.initial_replicas is not None:
        autoscaling["initial_replicas"] = settings.initial_replicas
    model = TranslatorModel.options(
        # a replica takes a whole batch at once and queues the next behind it
        max_ongoing_requests=max(2 * settings.max_batch_size, 4),
        autoscaling_config=autoscaling,
        ray_actor_options={"num_cpus": settings.model_cpus, "num_gpus": gpus},
        health_check_period_s=5, health_check_timeout_s=30,
    ).bind(checkpoint=settings.checkpoint, device=device, max_batch_size=settings.max_batch_size,
           batch_wait_timeout_s=settings.batch_wait_timeout_s, chunk_batch_size=settings.chunk_batch_size,
           threads=max(1, int(settings.model_cpus)))
    return Ingress.options(
        num_replicas=settings.ingress_replicas, max_ongoing_requests=256,
        ray_actor_options={"num_cpus": settings.ingress_cpus},
    ).bind(model, settings=dataclasses.asdict(settings))


def build(args: dict):
    """``serve run serve.app:build checkpoint=... max_batch_size=16`` and config files' ``args``."""
    return build_app(ServeSettings.from_mapping(dict(args)))


def config_file_values(path: str) -> dict:
    """Settings from a serve config file (``serve run``/``serve deploy`` format: the first
    application's ``args`` and ``http_options`` host/port) or a plain mapping of settings."""
    import yaml

    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(path, f"cannot read the serve config ({exc})") from None
    apps = loaded.get("applications") if isinstance(loaded, dict) else None
    values = dict((apps[0].get("args") or {}) if apps else (loaded or {}))
    http = (loaded.get("http_options") or {}) if isinstance(loaded, dict) else {}
    values.update({k: http[k] for k in ("host", "port") if k in http})
    return values


def wait_until_stopped() -> None:
    """Block until Ctrl-C or SIGTERM (a service in the foreground)."""
    import signal

    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        while not stop:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass


def deploy(settings: ServeSettings = ServeSettings(), *, name: str = APP_NAME, route_prefix: str = "/",
           wait_s: float = 300.0) -> str:
    """Run the application on the current Ray cluster (starting a local one if needed) and wait
    until its ``/healthz`` answers; returns its base URL. Several applications (other names and
    route prefixes) can share one Serve instance; the first call fixes host and port."""
    import urllib.request

    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(include_dashboard=False)
    serve.start(http_options={"host": settings.host, "port": settings.port})
    from ray.serve.context import _get_global_client

    http = _get_global_client().http_config  # a Serve already running keeps its own host and port
    if (http.host, int(http.port)) != (settings.host, settings.port):
        raise InputError(f"serve app {name}", f"Serve already runs on {http.host}:{http.port}, not "
                         f"{settings.host}:{settings.port}: deploy with those, or serve.shutdown() first")
    serve.run(build_app(settings), name=name, route_prefix=route_prefix, blocking=False)
    url = f"http://{settings.host}:{settings.port}{route_prefix.rstrip('/')}"
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=10) as r:
                if r.status == 200:
                    return url
        except Exception:  # noqa: BLE001 - not up yet
            pass
        if time.monotonic() > deadline:
            raise InputError(f"serve app {name}", f"did not become healthy within {wait_s:g} s")
        time.sleep(0.5)
