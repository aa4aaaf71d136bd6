"""Ray Train job: a DAC-architecture audio codec on corpus audio.

    unimusic train-tokenizer audio --corpus artifacts/corpus --name codec --storage runs/ --export codec-tiny
    python -m pipelines.train_codec --corpus artifacts/corpus ...   (same options)

Every worker reads its share of the corpus's ``train`` rows through Ray Data
(only the FLAC column), cuts random windows of ``window_seconds`` (skipping
near-silent ones) and runs DAC's training step (``CodecTrainer``: its
generator, discriminator, mel / feature / adversarial / VQ losses), gradients
averaged over workers. ``adversarial_start`` trains on the mel and VQ losses
alone first: on a CPU the discriminators cost ~4x a generator step.
Rank 0 measures mel distance and SNR on held-out (``val``/``test``) audio every
``eval_every`` steps. The driver exports the final codec as safetensors + JSON
with its held-out numbers (including basic-pitch onset F1 on the reconstruction
vs on the original), a spectrogram PNG and the WAV pair.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

from pipelines.train_common import (
    HELD_OUT,
    RunConfig,
    ResumableBatches,
    allreduce_gradients,
    fit_on_splits,
    load_checkpoint_state,
    report_every,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from unimusic.errors import InputError
from unimusic.models.audio_codec import DEFAULT_DISCRIMINATOR, DAC_DISCRIMINATOR, PRESETS, AudioCodecConfig

DISCRIMINATORS = {
    "stft": {"rates": [], "periods": [], "fft_sizes": [1024, 512]},  # cheapest: multi-resolution STFT only
    "default": DEFAULT_DISCRIMINATOR,
    "dac": DAC_DISCRIMINATOR,
}


@dataclasses.dataclass(frozen=True)
class CodecTrainConfig:
    model: AudioCodecConfig = PRESETS["tiny"]
    steps: int = 1000
    batch_size: int = 4  # windows per worker per step
    window_seconds: float = 0.5
    windows_per_clip: int = 4  # windows cut from each clip read per epoch
    min_rms_db: float = -45.0  # windows quieter than this (dBFS) are re-drawn (a few tries)
    lr: float = 1e-3
    lr_gamma: float = 0.99995  # per-step exponential decay (DAC's recipe uses 0.999996 over 400k steps)
    adversarial_start: int = 0
    discriminator: str = "stft"  # a key of DISCRIMINATORS
    seed: int = 0
    threads: int = 1
    checkpoint_every: int = 100
    log_every: int = 10
    eval_every: int = 0  # 0: evaluate only at the end
    eval_seconds: float = 20.0
    clips_per_fetch: int = 8

    def __post_init__(self):
        if self.discriminator not in DISCRIMINATORS:
            raise InputError("discriminator", f"unknown {self.discriminator!r}; expected one of {sorted(DISCRIMINATORS)}")
        if self.window_seconds * self.model.sample_rate < 4096:
            raise InputError("window_seconds", "windows must hold at least 4096 samples (the longest mel window)")
        for name in ("steps", "batch_size", "windows_per_clip", "threads", "clips_per_fetch"):
            if getattr(self, name) < 1:
                raise InputError(name, "must be >= 1")


JOB_PRESETS = {
    "smoke": CodecTrainConfig(
        steps=6, batch_size=2, window_seconds=0.25, adversarial_start=3, checkpoint_every=3, log_every=1,
        eval_seconds=2.0, clips_per_fetch=4,
    ),
    "tiny": CodecTrainConfig(),
    "shipped": CodecTrainConfig(steps=2000, adversarial_start=1800, checkpoint_every=100, eval_every=500),
}


def decode_clip(data: bytes, sample_rate: int):
    """FLAC bytes -> float32 mono at ``sample_rate``."""
    import numpy as np

    from unimusic.render.synthesize import decode_audio

    audio, sr = decode_audio(data)
    if sr != sample_rate:
        import librosa

        audio = librosa.resample(audio, orig_sr=sr, target_sr=sample_rate, res_type="soxr_hq")
    return np.ascontiguousarray(audio, dtype=np.float32)


def cut_window(clip, rng, *, length: int, min_rms_db: float, tries: int = 8):
    import numpy as np

    for _ in range(tries):
        start = int(rng.integers(0, max(1, clip.size - length + 1)))
        window = np.zeros(length, np.float32)
        part = clip[start : start + length]
        window[: part.size] = part
        rms = float(np.sqrt(np.mean(window.astype(np.float64) ** 2)))
        if rms > 0 and 20 * np.log10(rms) >= min_rms_db:
            break
    return window


def epoch_batches(shard, *, job: CodecTrainConfig, epoch: int, rank: int):
    """Window batches ``[B, 1, N]`` of one epoch over this worker's shard: a function of (seed, epoch, rank)."""
    import numpy as np
    import torch

    rng = np.random.default_rng([job.seed, epoch, rank])
    length = int(round(job.window_seconds * job.model.sample_rate))
    for rows in shard.iter_batches(batch_size=job.clips_per_fetch, batch_format="numpy", prefetch_batches=1):
        clips = [decode_clip(b, job.model.sample_rate) for b in rows["audio_flac"]]
        windows = [
            cut_window(clips[int(rng.integers(len(clips)))], rng, length=length, min_rms_db=job.min_rms_db)
            for _ in range(len(clips) * job.windows_per_clip)
        ]
        for i in range(0, len(windows) - job.batch_size + 1, job.batch_size):
            yield torch.from_numpy(np.stack(windows[i : i + job.batch_size]))[:, None]


def evaluate(codec, audio) -> dict:
    from unimusic.models.audio_codec import mel_distance, snr_db

    recon = codec.decode(codec.encode(audio, codec.sample_rate))[: audio.size]
    was_training = codec.model.training
    codec.model.eval()
    out = {"mel_distance": mel_distance(audio, recon, codec.sample_rate), "snr_db": snr_db(audio, recon)}
    codec.model.train(was_training)
    return out


def train_loop(config: dict) -> None:
    """Ray Train worker loop (see the module docstring)."""
    import numpy as np
    import ray.train
    import torch

    from unimusic.config import from_dict
    from unimusic.models.audio_codec import AudioCodec, CodecTrainer, build_codec

    job = from_dict(CodecTrainConfig, config["job"])
    torch.set_num_threads(job.threads)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(job.seed)
    model = build_codec(job.model, seed=job.seed)
    trainer = CodecTrainer(
        model, lr=job.lr, lr_gamma=job.lr_gamma, discriminator_kwargs=DISCRIMINATORS[job.discriminator],
        adversarial_start=job.adversarial_start, gradient_sync=allreduce_gradients,
    )
    saved_positions = None
    history: list[float] = []  # per-step mel loss since step 0 (kept in checkpoints)
    state = load_checkpoint_state(ray.train.get_checkpoint())
    if state is not None:
        trainer.load_state_dict(state["trainer"])
        saved_positions = state["positions"]
        history = list(state["losses"])
        set_rng_state(state["rng"])
    shard = ray.train.get_dataset_shard("train")
    held_out = None
    if rank == 0:
        clips, total = [], 0
        for row in ray.train.get_dataset_shard("held_out").iter_rows():
            clips.append(decode_clip(row["audio_flac"], job.model.sample_rate))
            total += clips[-1].size
            if total >= job.eval_seconds * job.model.sample_rate:
                break
        held_out = np.concatenate(clips)[: int(job.eval_seconds * job.model.sample_rate)] if clips else None
    codec = AudioCodec(model, job.model)  # shares the generator's weights (for evaluation)
    recent: list[dict] = []
    started = time.perf_counter()

    stream = ResumableBatches(lambda e: epoch_batches(shard, job=job, epoch=e, rank=rank), saved=saved_positions, rank=rank, world=world)
    while trainer.step_count < job.steps:
        losses = trainer.step(next(stream))
        step = trainer.step_count
        recent.append(losses)
        history.append(losses["mel/loss"])
        window = recent[-job.log_every :]
        metrics = {"step": step, "epoch": stream.epoch, "seconds": round(time.perf_counter() - started, 1),
                   "lr": losses["other/learning_rate"], "adversarial": "adv/disc_loss" in losses}
        for key in ("loss", "mel/loss", "waveform/loss", "adv/disc_loss", "adv/gen_loss", "vq/commitment_loss"):
            values = [r[key] for r in window if key in r]
            if values:
                metrics[key.replace("/", "_")] = float(np.mean(values))
        if rank == 0 and held_out is not None and (report_every(step, job.eval_every, job.steps) or step == job.steps):
            metrics.update({f"held_out_{k}": v for k, v in evaluate(codec, held_out).items()})
        if rank == 0 and report_every(step, job.log_every, job.steps):
            print(json.dumps(metrics), flush=True)
        if report_every(step, job.checkpoint_every, job.steps) or step == job.steps:
            save_checkpoint(
                {"trainer": trainer.state_dict(), "positions": stream.positions(), "rng": rng_state(),
                 "losses": history},
                metrics,
                job_config=config["job"],
            )


def train_codec(
    *,
    corpus_dir: str,
    run: RunConfig = RunConfig(name="codec"),
    job: CodecTrainConfig = CodecTrainConfig(),
    export: str | None = None,
    report_dir: str | None = None,
    num_cpus: int | None = None,
) -> dict:
    """Train (or resume) the run; export the final codec (+ held-out numbers) if ``export`` is given."""
    result, summary = fit_on_splits(train_loop, {"job": dataclasses.asdict(job)}, corpus_dir=corpus_dir,
                                    columns=["audio_flac"], run=run, num_cpus=num_cpus)
    if export:
        summary["export"] = export_codec(result.checkpoint, job=job, corpus_dir=corpus_dir, path=export, report_dir=report_dir)
    return summary


SAMPLE_SECONDS = 6.0  # held-out audio saved beside exported weights: the fixed sample their numbers are re-checked on


def export_codec(checkpoint, *, job: CodecTrainConfig, corpus_dir: str, path: str, report_dir: str | None = None,
                 max_clips: int | None = None) -> dict:
    """Generator weights of ``checkpoint`` -> ``path.safetensors/.json`` with held-out numbers, plus
    ``path-sample.flac`` / ``path-sample.json`` (a held-out clip and its notes) and the numbers on it."""
    import soundfile as sf

    from unimusic.models.audio_codec import AudioCodec, build_codec, save_codec
    from unimusic.models.tokenizer_report import audio_report, held_out_clips

    state = load_checkpoint_state(checkpoint)
    model = build_codec(job.model)
    model.load_state_dict(state["trainer"]["generator"])
    codec = AudioCodec(model, job.model)
    clips = held_out_clips(corpus_dir, splits=HELD_OUT, limit=max_clips)
    if not clips:
        raise InputError(corpus_dir, "no held-out (val/test) rows to measure the exported codec on")
    report = audio_report(codec, clips, out_dir=report_dir)
    audio, sr, notes = clips[0]
    cut = int(SAMPLE_SECONDS * sr)
    sample = (audio[:cut], sr, [n for n in notes if n.start < SAMPLE_SECONDS])
    sf.write(f"{path}-sample.flac", sample[0], sr, format="FLAC")
    with open(f"{path}-sample.json", "w") as f:
        json.dump({"sample_rate": sr, "notes": [dataclasses.asdict(n) for n in sample[2]]}, f)
    on_sample = audio_report(codec, [sample])
    keys = ("clips", "seconds", "mel_distance", "snr_db", "original_f1", "reconstruction_f1", "f1_ratio")
    metrics = {
        "steps": int(state["trainer"]["step"]),
        "held_out": {k: report[k] for k in keys},
        "sample": {"file": os.path.basename(path) + "-sample.flac", **{k: on_sample[k] for k in keys}},
        "train_job": dataclasses.asdict(job),
    }
    tensors, record = save_codec(codec, path, meta={"metrics": metrics})
    return {"weights": str(tensors), "meta": str(record), "report_dir": report_dir, "sample": f"{path}-sample.flac",
            **metrics["held_out"]}


def main(argv: list[str] | None = None) -> int:
    from unimusic.cli import main as cli_main

    return cli_main(["train-tokenizer", "audio", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    sys.exit(main())
