"""The whole workflow as one job: corpus build -> tokenize -> train -> export -> eval (-> serve).

    unimusic pipeline                                  # the embedded default: local Ray, music21, offline
    unimusic pipeline --size small                     # a bigger preset
    RAY_ADDRESS=auto unimusic pipeline --config cluster/pipeline-aws.yaml   # the same stages on a cluster

Every stage is the library's own job (``pipelines.build_corpus``, ``pipelines.tokenize``,
``pipelines.train``, ``unimusic.evaluation``, ``serve.app``) run with the paths under ``out``
(a folder or an ``s3://`` prefix) and the stage's resources: CPU stages ask for
``resources.preprocess`` (custom Ray resources of preprocessing nodes), training workers for
``resources.train`` (and a GPU each with ``train.gpu``), so one config file places the stages
on a cluster's node types and runs unchanged on a laptop (empty resources). Every stage
resumes: a rerun skips finished shards and continues training from the last checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

from unimusic.errors import InputError


@dataclasses.dataclass(frozen=True)
class CorpusStage:
    source: str = "music21"  # 'music21', a folder, a glob or an s3:// prefix of scores
    limit: int | None = 24  # scores (spread over the input); None: all
    collections: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()  # CorpusConfig key=value


@dataclasses.dataclass(frozen=True)
class TokenizeStage:
    image_weights: str | None = None  # None: the shipped RQ-VAE
    audio_weights: str | None = None  # None: the shipped codec


@dataclasses.dataclass(frozen=True)
class TrainStage:
    preset: str = "tiny"
    steps: int | None = None  # None: the preset's
    workers: int = 1
    min_workers: int = 0
    cpus_per_worker: float = 1.0
    gpu: bool = False
    overrides: tuple[str, ...] = ()  # TrainJob key=value


@dataclasses.dataclass(frozen=True)
class EvalStage:
    enabled: bool = True
    split: str = "test"
    limit: int | None = 16  # items; None: the whole split
    directions: tuple[str, ...] = ("image->lmx", "audio->midi", "lmx->midi", "midi->lmx")
    peers: tuple[str, ...] = ("basic-pitch",)


@dataclasses.dataclass(frozen=True)
class ServeStage:
    enabled: bool = False  # deploy the trained model at the end and keep serving (Ctrl-C stops)
    config: str | None = None  # a serve config YAML (its first application's args); the checkpoint is ours
    host: str = "127.0.0.1"  # 0.0.0.0 on a cluster head that others reach
    port: int = 8000


@dataclasses.dataclass(frozen=True)
class StageResources:
    preprocess: dict = dataclasses.field(default_factory=dict)  # custom resources per corpus/tokenize actor
    train: dict = dataclasses.field(default_factory=dict)  # custom resources per training worker


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    out: str = "artifacts/pipeline"
    # The driver's own files (the exported model, the eval report, training logs) when `out` is
    # s3://: kept here and copied under `out`. Default: artifacts/pipeline-<last part of out>.
    local: str | None = None
    name: str = "translator"  # the training run's name (and the export's)
    num_cpus: int | None = None  # local Ray only; ignored with RAY_ADDRESS
    corpus: CorpusStage = CorpusStage()
    tokenize: TokenizeStage = TokenizeStage()
    train: TrainStage = TrainStage()
    eval: EvalStage = EvalStage()
    serve: ServeStage = ServeStage()
    resources: StageResources = StageResources()
    # Most actors per corpus/tokenize stage (None: what the cluster's CPUs or node resources allow
    # now). On an autoscaling cluster set it: the pool then grows and nodes are added for it.
    concurrency: int | None = None

    def __post_init__(self):
        for stage, res in (("preprocess", self.resources.preprocess), ("train", self.resources.train)):
            if not isinstance(res, dict) or not all(isinstance(v, (int, float)) and v > 0 for v in res.values()):
                raise InputError(f"config key 'resources.{stage}'", f"expected a mapping of resource -> amount > 0, "
                                                                    f"got {res!r}")


# Size presets: the embedded default fits the README's 20 minutes on 2 cores.
SIZES = {
    "tiny": {},
    "small": {"corpus": {"limit": 120}, "train": {"preset": "learn", "steps": 1000}, "eval": {"limit": 64}},
    "full": {"corpus": {"limit": None}, "train": {"preset": "learn", "steps": 20000}, "eval": {"limit": None},
             "resources": {}},
}


def load_config(path: str | None = None, overrides=(), *, size: str = "tiny") -> PipelineConfig:
    from unimusic import config as config_mod

    if size not in SIZES:
        raise InputError(f"--size {size}", f"unknown (have {', '.join(SIZES)})")
    base = config_mod.from_dict(PipelineConfig, config_mod._deep_merge(dataclasses.asdict(PipelineConfig()), SIZES[size]))
    return config_mod.load(PipelineConfig, path, overrides, base=base)


def paths(config: PipelineConfig) -> dict:
    from unimusic import storage

    out = config.out
    local_out = out if not storage.is_remote(out) else \
        config.local or os.path.join("artifacts", "pipeline-" + out.rstrip("/").rsplit("/", 1)[-1])
    return {
        "corpus": storage.join(out, "corpus"), "tokens": storage.join(out, "tokens"), "runs": storage.join(out, "runs"),
        # The export and the eval report are read and written by the driver: local files, copied to `out` too.
        "export": os.path.join(local_out, "exports", config.name), "eval": os.path.join(local_out, "eval"),
        "logs": os.path.join(local_out, "logs"),
    }


def run_pipeline(config: PipelineConfig, *, log=print) -> dict:
    """Run every stage; returns ``{"paths": ..., "stages": {name: summary}, "seconds": ...}`` (also
    written as ``pipeline.json`` under ``out``)."""
    from pipelines.build_corpus import build_corpus, init_ray
    from pipelines.tokenize import tokenize_corpus
    from pipelines.train import JOB_PRESETS, train
    from pipelines.train_common import RunConfig
    from unimusic import config as config_mod
    from unimusic import storage
    from unimusic.corpus import CorpusConfig
    from unimusic.models.shipped import shipped_path

    where = paths(config)
    t_start = time.perf_counter()
    stages: dict[str, dict] = {}
    if config.train.preset not in JOB_PRESETS:
        raise InputError(f"config key 'train.preset' {config.train.preset!r}", f"unknown (have {', '.join(JOB_PRESETS)})")
    job = config_mod.apply_overrides(JOB_PRESETS[config.train.preset], config.train.overrides)
    if config.train.steps is not None:
        job = dataclasses.replace(job, steps=config.train.steps)
    corpus_config = config_mod.apply_overrides(CorpusConfig(), config.corpus.overrides)
    num_cpus = None if os.environ.get("RAY_ADDRESS") else config.num_cpus
    # Training needs one CPU beside its workers for Ray Data's readers (a local cluster is sized for it).
    if num_cpus is None and not os.environ.get("RAY_ADDRESS"):
        num_cpus = max(os.cpu_count() or 1, int(config.train.workers * config.train.cpus_per_worker) + 1)
    init_ray(num_cpus)

    def stage(name: str, fn):
        log(f"== {name}")
        t0 = time.perf_counter()
        summary = fn()
        summary = {k: v for k, v in summary.items() if k not in ("errors", "shards", "config")}
        summary["stage_seconds"] = round(time.perf_counter() - t0, 1)
        stages[name] = summary
        log(f"   {name} done in {summary['stage_seconds']} s")

    def corpus() -> dict:
        from unimusic.contact_sheet import write_contact_sheet

        manifest = build_corpus(inputs=config.corpus.source, out_dir=where["corpus"], config=corpus_config,
                                limit=config.corpus.limit, collections=config.corpus.collections, num_cpus=num_cpus,
                                resources=config.resources.preprocess, concurrency=config.concurrency)
        if not storage.is_remote(where["corpus"]) and manifest["rows"]:  # random systems with their LMX engraved back
            manifest["contact_sheet"] = str(write_contact_sheet(where["corpus"], os.path.join(where["corpus"],
                                                                                              "contact_sheet.png")))
        return manifest

    stage("corpus", corpus)
    stage("tokenize", lambda: tokenize_corpus(
        corpus_dir=where["corpus"], out_dir=where["tokens"],
        image_weights=config.tokenize.image_weights or shipped_path("image"),
        audio_weights=config.tokenize.audio_weights or shipped_path("audio"),
        num_cpus=num_cpus, resources=config.resources.preprocess, concurrency=config.concurrency))
    run = RunConfig(name=config.name, storage_path=where["runs"], workers=config.train.workers,
                    min_workers=config.train.min_workers, cpus_per_worker=config.train.cpus_per_worker,
                    use_gpu=config.train.gpu, resources=config.resources.train)
    os.makedirs(os.path.dirname(os.path.abspath(where["export"])), exist_ok=True)
    stage("train", lambda: train(tokens_dir=where["tokens"], run=run, job=job, export=where["export"],
                                 num_cpus=num_cpus, log_dir=where["logs"]))
    if config.eval.enabled:
        stage("eval", lambda: _evaluate(config, where))
    summary = {"paths": where, "stages": stages, "seconds": round(time.perf_counter() - t_start, 1),
               "config": dataclasses.asdict(config)}
    storage.write_bytes(storage.join(config.out, "pipeline.json"), json.dumps(summary, indent=1, default=str).encode())
    if storage.is_remote(config.out):
        for suffix in (".safetensors", ".json"):
            _upload_file(where["export"] + suffix, storage.join(config.out, "exports", config.name + suffix))
        if config.eval.enabled:
            for root, _, files in os.walk(where["eval"]):
                for f in files:
                    path = os.path.join(root, f)
                    _upload_file(path, storage.join(config.out, "eval", os.path.relpath(path, where["eval"])))
    return summary


def _evaluate(config: PipelineConfig, where: dict) -> dict:
    from unimusic import evaluation
    from unimusic.inference import Options, Translator

    items = evaluation.items_from_tokens(where["tokens"], split=config.eval.split, limit=config.eval.limit)
    wanted = set(config.eval.directions)
    directions = [d for d in evaluation.DIRECTIONS if not wanted or d.name in wanted]
    translator = Translator.load(where["export"])
    report = evaluation.evaluate(translator, items, directions=directions, peers=list(config.eval.peers),
                                 options=Options(progress=False), pictures_dir=os.path.join(where["eval"], "pictures"),
                                 pictures=1, log=lambda *_: None)
    report["source"], report["split"] = where["tokens"], config.eval.split
    json_path, md_path = evaluation.write_report(report, where["eval"])
    return {"items": len(items), "report": md_path, "table": evaluation.report_markdown(report)}


def _upload_file(path: str, remote: str) -> None:
    from unimusic import storage

    with open(path, "rb") as fh:
        storage.write_bytes(remote, fh.read())


def serve_settings(config: PipelineConfig, where: dict):
    """The serve config file's settings (if any) with this run's model, host and port."""
    from serve.app import ServeSettings, config_file_values

    values = config_file_values(config.serve.config) if config.serve.config else {}
    values.update(checkpoint=where["export"], host=config.serve.host, port=config.serve.port)
    return ServeSettings.from_mapping(values)


def serve_forever(config: PipelineConfig, where: dict, *, log=print) -> None:
    """Deploy the trained model and block until Ctrl-C or SIGTERM."""
    from ray import serve

    from serve.app import deploy, wait_until_stopped

    url = deploy(serve_settings(config, where))
    log(f"serving {where['export']} at {url} (Ctrl-C stops)")
    try:
        wait_until_stopped()
    finally:
        serve.shutdown()
