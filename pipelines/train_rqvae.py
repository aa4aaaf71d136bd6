"""Ray Train job: the score-image RQ-VAE on corpus staff-system crops.

    unimusic train-tokenizer image --corpus artifacts/corpus --name rqvae --storage runs/ --export rqvae-tiny
    python -m pipelines.train_rqvae --corpus artifacts/corpus ...   (same options)

Every worker reads its share of the corpus's ``train`` rows through Ray Data
(only the PNG column), cuts random ``window_height x window_width`` windows
(at least ``min_ink`` ink, so batches are not blank paper) and trains with AdamW,
linear warm-up and cosine decay, gradients averaged over workers. The codebooks
are EMA-updated from all workers' statistics (see ``unimusic.models.rqvae``).
Rank 0 evaluates on held-out (``val``/``test``) crops every ``eval_every`` steps.
The driver exports the final model as safetensors + JSON with its held-out
numbers and a PNG grid of originals vs reconstructions.
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
    learning_rate,
    load_checkpoint_state,
    report_every,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from unimusic.errors import InputError
from unimusic.models.rqvae import PRESETS, RQVAEConfig



@dataclasses.dataclass(frozen=True)
class RQVAETrainConfig:
    model: RQVAEConfig = PRESETS["tiny"]
    steps: int = 2000
    batch_size: int = 16  # windows per worker per step
    window_height: int = 64
    window_width: int = 256
    windows_per_crop: int = 4  # windows cut from each crop read per epoch
    min_ink: float = 0.03  # fraction of ink pixels a window needs (retries, then takes what it has)
    lr: float = 2e-3
    warmup_steps: int = 20  # full-size first Adam steps park the decoder on the blank-page mean
    lr_floor: float = 0.05  # cosine decay ends at lr * lr_floor
    grad_clip: float = 1.0
    seed: int = 0
    threads: int = 1  # torch threads per worker
    checkpoint_every: int = 200
    log_every: int = 25
    eval_every: int = 0  # 0: evaluate only at the end
    eval_crops: int = 24
    crops_per_fetch: int = 16

    def __post_init__(self):
        p = self.model.patch
        if self.window_height % p or self.window_width % p or self.window_height <= 0 or self.window_width <= 0:
            raise InputError("window_height/window_width", f"must be positive multiples of the patch ({p})")
        for name in ("steps", "batch_size", "windows_per_crop", "threads", "crops_per_fetch"):
            if getattr(self, name) < 1:
                raise InputError(name, "must be >= 1")
        if not 0 <= self.min_ink < 1:
            raise InputError("min_ink", "must be in [0, 1)")


# Named job presets (the shipped weights come from "shipped"; "smoke" is for tests and CI).
JOB_PRESETS = {
    "smoke": RQVAETrainConfig(
        model=dataclasses.replace(PRESETS["tiny"], commitment_warmup=10), steps=30, batch_size=8,
        checkpoint_every=10, log_every=5, eval_crops=4, crops_per_fetch=8,
    ),
    "tiny": RQVAETrainConfig(),
    "shipped": RQVAETrainConfig(steps=9000, checkpoint_every=250, eval_every=1000),
}


def decode_png(data: bytes):
    import cv2
    import numpy as np

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise InputError("image_png", "not a decodable PNG")
    return image


def cut_window(crop, rng, *, height: int, width: int, min_ink: float, tries: int = 10):
    """A ``height x width`` window of ``crop`` (white-padded), retried until it holds ``min_ink`` ink."""
    import numpy as np

    for _ in range(tries):
        y = int(rng.integers(0, max(1, crop.shape[0] - height + 1)))
        x = int(rng.integers(0, max(1, crop.shape[1] - width + 1)))
        window = np.full((height, width), 255, np.uint8)
        part = crop[y : y + height, x : x + width]
        window[: part.shape[0], : part.shape[1]] = part
        if (window < 128).mean() >= min_ink:
            break
    return window


def epoch_batches(shard, *, job: RQVAETrainConfig, epoch: int, rank: int):
    """The window batches of one epoch over this worker's shard: a function of (seed, epoch, rank)."""
    import numpy as np
    import torch

    rng = np.random.default_rng([job.seed, epoch, rank])
    for rows in shard.iter_batches(batch_size=job.crops_per_fetch, batch_format="numpy", prefetch_batches=1):
        crops = [decode_png(b) for b in rows["image_png"]]
        windows = [
            cut_window(crops[int(rng.integers(len(crops)))], rng, height=job.window_height, width=job.window_width, min_ink=job.min_ink)
            for _ in range(len(crops) * job.windows_per_crop)
        ]
        for i in range(0, len(windows) - job.batch_size + 1, job.batch_size):
            yield torch.from_numpy(np.stack(windows[i : i + job.batch_size]))


def evaluate(model, crops: list) -> dict:
    """Pooled ink F1 / PSNR and per-level code perplexity of ``model`` on whole crops (eval mode)."""
    import numpy as np
    import torch

    from unimusic.models.rqvae import codebook_perplexity, ink_f1, psnr, to_uint8

    was_training = model.training
    model.eval()
    originals, recons, codes = [], [], []
    with torch.no_grad():
        for crop in crops:
            c = model.encode(crop[None])
            originals.append(crop.ravel())
            recons.append(to_uint8(model.decode(c)).ravel())
            codes.append(c.reshape(1, c.shape[1], -1))
    model.train(was_training)
    o, r = np.concatenate(originals), np.concatenate(recons)
    return {
        "ink_f1": ink_f1(o, r),
        "psnr": psnr(o, r),
        "perplexity": codebook_perplexity(torch.cat(codes, 2), model.codebook_size),
    }


def train_loop(config: dict) -> None:
    """Ray Train worker loop (see the module docstring)."""
    import numpy as np
    import ray.train
    import torch

    from unimusic.config import from_dict
    from unimusic.models.rqvae import build_rqvae

    job = from_dict(RQVAETrainConfig, config["job"])
    torch.set_num_threads(job.threads)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(job.seed)  # same initial weights on every worker
    model = build_rqvae(job.model).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=job.lr, betas=(0.9, 0.99), weight_decay=0.0)
    step, saved_positions = 0, None
    history: list[float] = []  # this worker's per-step reconstruction loss since step 0 (kept in checkpoints)
    state = load_checkpoint_state(ray.train.get_checkpoint())
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, saved_positions = int(state["step"]), state["positions"]
        history = list(state["losses"])
        set_rng_state(state["rng"])
    shard = ray.train.get_dataset_shard("train")
    held_out = None
    if rank == 0:
        held_out = [decode_png(r["image_png"]) for r in ray.train.get_dataset_shard("held_out").iter_rows()][: job.eval_crops]
    recent: list[float] = []
    started = time.perf_counter()

    stream = ResumableBatches(lambda e: epoch_batches(shard, job=job, epoch=e, rank=rank), saved=saved_positions, rank=rank, world=world)
    while step < job.steps:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, base=job.lr, warmup=job.warmup_steps, total=job.steps, floor=job.lr_floor)
        out = model(next(stream))
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        allreduce_gradients(model)
        torch.nn.utils.clip_grad_norm_(model.parameters(), job.grad_clip)
        optimizer.step()
        step += 1
        recent.append(float(out.recon_loss))
        history.append(recent[-1])
        metrics = {
            "step": step, "epoch": stream.epoch, "seconds": round(time.perf_counter() - started, 1), "recon_loss": float(np.mean(recent[-job.log_every :])),
            "commit_loss": float(out.commit_loss), "lr": optimizer.param_groups[0]["lr"],
            "perplexity": [round(float(p), 1) for p in out.perplexity],
        }
        if rank == 0 and (report_every(step, job.eval_every, job.steps) or step == job.steps) and held_out:
            metrics.update({f"held_out_{k}": v for k, v in evaluate(model, held_out).items()})
        if report_every(step, job.log_every, job.steps) and rank == 0:
            print(json.dumps(metrics), flush=True)
        if report_every(step, job.checkpoint_every, job.steps) or step == job.steps:
            save_checkpoint(
                {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                 "positions": stream.positions(), "rng": rng_state(), "losses": history},
                metrics,
                job_config=config["job"],
            )


def train_rqvae(
    *,
    corpus_dir: str,
    run: RunConfig = RunConfig(name="rqvae"),
    job: RQVAETrainConfig = RQVAETrainConfig(),
    export: str | None = None,
    picture: str | None = None,
    num_cpus: int | None = None,
) -> dict:
    """Train (or resume) the run; export the final weights (+ held-out numbers) if ``export`` is given."""
    result, summary = fit_on_splits(train_loop, {"job": dataclasses.asdict(job)}, corpus_dir=corpus_dir,
                                    columns=["image_png"], run=run, num_cpus=num_cpus)
    if export:
        summary["export"] = export_rqvae(result.checkpoint, job=job, corpus_dir=corpus_dir, path=export, picture=picture)
    return summary


SAMPLE_CROPS = 8  # held-out crops saved beside exported weights: the fixed sample their numbers are re-checked on


def export_rqvae(checkpoint, *, job: RQVAETrainConfig, corpus_dir: str, path: str, picture: str | None = None) -> dict:
    """Weights of ``checkpoint`` -> ``path.safetensors/.json`` with held-out numbers (all val/test crops),
    plus ``path-sample.npz`` (the first held-out crops) and the numbers on that fixed sample."""
    import numpy as np

    from unimusic.models.rqvae import build_rqvae, save_rqvae
    from unimusic.models.tokenizer_report import held_out_crops, image_report

    state = load_checkpoint_state(checkpoint)
    model = build_rqvae(job.model)
    model.load_state_dict(state["model"])
    model.eval()
    crops = held_out_crops(corpus_dir, splits=HELD_OUT)
    if not crops:
        raise InputError(corpus_dir, "no held-out (val/test) rows to measure the exported model on")
    report = image_report(model, crops, out_png=picture)
    sample = crops[:SAMPLE_CROPS]
    sample_path = f"{path}-sample.npz"
    np.savez_compressed(sample_path, *sample)
    on_sample = image_report(model, sample)
    metrics = {
        "steps": int(state["step"]),
        "held_out": {k: report[k] for k in ("crops", "pixels", "ink_f1", "psnr", "codebook_perplexity", "crop_f1_min", "crop_f1_median")},
        "sample": {"file": os.path.basename(sample_path), **{k: on_sample[k] for k in ("crops", "ink_f1", "psnr", "codebook_perplexity")}},
        "train_job": dataclasses.asdict(job),
    }
    tensors, meta = save_rqvae(model, job.model, path, metrics=metrics)
    return {"weights": str(tensors), "meta": str(meta), "picture": picture, "sample": sample_path, **metrics["held_out"]}


def main(argv: list[str] | None = None) -> int:
    from unimusic.cli import main as cli_main

    return cli_main(["train-tokenizer", "image", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    sys.exit(main())
