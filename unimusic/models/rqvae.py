"""Score-image RQ-VAE: a staff-system crop <-> a grid of residual codes, one position per patch.

A crop (uint8 gray, 0 ink, 255 paper; normalized by ``unimusic.vision.normalize``) is
read as ``x = 1 - gray/255`` (ink 1, paper 0, so a convolution's zero padding is
paper). The encoder is fully convolutional (stride-2 stages, residual conv blocks,
no attention, no fixed-size layer), so any H x W that are multiples of the patch
(16 for the 4-stage presets) work, and each code sees only a local neighbourhood.
Normalization inside the networks is per pixel over channels (:class:`ChannelNorm`);
the latent is batch-normalized (no affine) with batch statistics in training and
running statistics in eval mode. In eval mode a patch's codes therefore depend
neither on the batch nor on the image beyond the receptive field.

Quantization is residual (RQ-VAE): level k quantizes what levels < k left over;
``codebooks`` levels of ``codebook_size`` entries, codes ``[B, K, H/p, W/p]``. The
latent's normalization fixes its spread over positions, so it cannot collapse
onto one code. Codebooks learn by exponential moving averages (no codebook loss),
the encoder by straight-through gradients and a commitment loss. Choices:

* EMA update (training mode only): per level, ``cluster_size`` <- EMA of the number of
  positions assigned to each entry in the step, ``embed_sum`` <- EMA of their sum,
  entry = embed_sum / Laplace-smoothed cluster_size.
* Data-dependent init: the first training forward fills every level with random
  residuals of that batch (level by level, plus 1% noise), counted as ``threshold``
  uses each.
* Dead-code restart: after each update, entries whose EMA count is below
  ``dead_code_threshold`` are replaced by residuals of the current batch (the most
  recent encoder outputs), drawn in proportion to their quantization error (blank
  paper, most of a crop, is fitted at once and would otherwise take every restart),
  and counted as ``threshold`` uses. Counts are per step (summed over workers under
  torch.distributed), so a threshold of 1.0 wants a step to see well over
  ``codebook_size`` positions (e.g. >= 32 windows of 64x256 = 2048 positions);
  smaller batches want a smaller threshold (``tiny`` uses 0.25 for 16 windows).
* Eval mode: no updates, no init, no restarts: codes are a pure function of input
  and weights. ``encode``/``decode`` never update anything, in any mode.
* Under torch.distributed (world size > 1) counts and sums are all-reduced and
  restart/init vectors broadcast from rank 0, so every worker keeps the same codebooks.

Losses: reconstruction is the Bernoulli KL between the pixel (as ink probability)
and the decoder's sigmoid, i.e. binary cross-entropy minus the target's own
entropy (a perfect reconstruction scores 0), weighted ``1 + (ink_weight - 1) * ink``
(weighted mean). Commitment: ``commitment`` x mean over levels of
``mse(z, sum of the first k quantized levels)``, its weight ramped up from 0 over
the first ``commitment_warmup`` training steps (with the latent normalization it keeps
the encoder from being steered by commitment alone while the decoder still
predicts the blank-page mean). Train with a learning-rate warm-up too (~20+ steps
of Adam): full-size first Adam steps park the decoder on that mean for hundreds
of steps. Under DDP, ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` makes the
latent statistics global (optional). The quantizer runs in float32 outside autocast.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unimusic.errors import InputError

KIND = "rqvae"
PAPER_LOGIT = -3.0  # initial ink logit of the decoder output (about 5% ink)
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class RQVAEConfig:
    channels: tuple[int, ...] = (64, 128, 256, 256)  # one stride-2 stage each: 4 stages = 16x downsampling per side
    res_blocks: int = 2  # residual conv blocks per stage (no attention anywhere: local detail matters)
    code_dim: int = 256
    codebooks: int = 4  # residual levels
    codebook_size: int = 1024
    ema_decay: float = 0.99  # EMA codebook updates + dead-code restarts (see module docstring)
    commitment: float = 0.25
    commitment_warmup: int = 500  # training steps over which the commitment weight ramps up from 0 (0: none)
    dead_code_threshold: float = 1.0  # EMA count per step below this -> entry restarted from a random recent encoder output
    ink_weight: float = 4.0  # reconstruction loss weight on ink pixels (thin stems/lines matter)

    def __post_init__(self):
        def bad(field: str, problem: str):
            raise InputError(f"RQVAEConfig.{field}", problem)

        def is_int(v) -> bool:
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        def is_num(v) -> bool:
            return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)

        channels = self.channels
        if isinstance(channels, list):  # from JSON/YAML
            channels = tuple(channels)
            object.__setattr__(self, "channels", channels)
        if not isinstance(channels, tuple) or not 1 <= len(channels) <= 6:
            bad("channels", f"expected a tuple of 1..6 channel counts (one per stride-2 stage), got {channels!r}")
        if not all(is_int(c) and 1 <= c <= 4096 for c in channels):
            bad("channels", f"every channel count must be an integer in 1..4096, got {channels!r}")
        object.__setattr__(self, "channels", tuple(int(c) for c in channels))
        if not (is_int(self.res_blocks) and 0 <= self.res_blocks <= 16):
            bad("res_blocks", f"expected an integer in 0..16, got {self.res_blocks!r}")
        if not (is_int(self.code_dim) and 1 <= self.code_dim <= 4096):
            bad("code_dim", f"expected an integer in 1..4096, got {self.code_dim!r}")
        if not (is_int(self.codebooks) and 1 <= self.codebooks <= 16):
            bad("codebooks", f"expected an integer in 1..16, got {self.codebooks!r}")
        if not (is_int(self.codebook_size) and 2 <= self.codebook_size <= 65536):
            bad("codebook_size", f"expected an integer in 2..65536, got {self.codebook_size!r}")
        if not (is_num(self.ema_decay) and 0 < self.ema_decay < 1):
            bad("ema_decay", f"expected a number strictly between 0 and 1, got {self.ema_decay!r}")
        if not (is_num(self.commitment) and self.commitment >= 0):
            bad("commitment", f"expected a number >= 0, got {self.commitment!r}")
        if not (is_int(self.commitment_warmup) and self.commitment_warmup >= 0):
            bad("commitment_warmup", f"expected an integer >= 0 (training steps), got {self.commitment_warmup!r}")
        if not (is_num(self.dead_code_threshold) and self.dead_code_threshold >= 0):
            bad("dead_code_threshold", f"expected a number >= 0 (0: no restarts), got {self.dead_code_threshold!r}")
        if not (is_num(self.ink_weight) and self.ink_weight > 0):
            bad("ink_weight", f"expected a number > 0, got {self.ink_weight!r}")

    @property
    def patch(self) -> int:
        """Side of the square image patch one code position covers."""
        return 2 ** len(self.channels)


PRESETS: dict[str, RQVAEConfig] = {
    # CPU-sized (1.2 M parameters, ~0.35 s per step of 16 windows of 64x256 on one
    # core): legible reconstructions after a few minutes; 4 x 1024 codes like base.
    "tiny": RQVAEConfig(
        channels=(16, 32, 64, 128), res_blocks=1, code_dim=64, commitment_warmup=100, dead_code_threshold=0.25
    ),
    "base": RQVAEConfig(),
}


def rqvae_kwargs(config: RQVAEConfig) -> dict:
    """Plain keyword arguments for :class:`RQVAE` (the model never sees the config class)."""
    if not isinstance(config, RQVAEConfig):
        raise InputError("rqvae config", f"expected an RQVAEConfig, got {type(config).__name__}")
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def build_rqvae(config: RQVAEConfig) -> "RQVAE":
    return RQVAE(**rqvae_kwargs(config))


# -- building blocks -----------------------------------------------------------------


class ChannelNorm(nn.Module):
    """LayerNorm over channels at each pixel: local, batch- and size-independent."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ResBlock(nn.Module):
    """Pre-activation residual block: x + conv(act(norm(conv(act(norm(x)))))), second conv zero-initialised."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm1 = ChannelNorm(channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = ChannelNorm(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class Encoder(nn.Module):
    """Per stage: a 4x4 stride-2 conv (halves each side), then ``res_blocks`` blocks; a 1x1 conv to code_dim."""

    def __init__(self, channels: tuple[int, ...], res_blocks: int, code_dim: int):
        super().__init__()
        stages, prev = [], 1
        for ch in channels:
            layers = [nn.Conv2d(prev, ch, 4, stride=2, padding=1)]
            layers += [ResBlock(ch) for _ in range(res_blocks)]
            stages.append(nn.Sequential(*layers))
            prev = ch
        self.stages = nn.Sequential(*stages)
        self.norm = ChannelNorm(prev)
        self.out = nn.Conv2d(prev, code_dim, 1)
        # Every latent channel has zero mean and unit variance over the positions of a
        # training batch (running statistics in eval mode, so eval stays per position).
        # The latent cannot shrink onto one point: while the decoder still predicts
        # the blank-page mean its gradient is tiny, and the commitment loss (scaled up
        # by Adam) otherwise collapses every position onto one code within steps.
        self.znorm = nn.BatchNorm2d(code_dim, affine=False, momentum=0.02)

    def forward(self, x: torch.Tensor, *, running_stats: bool = False) -> torch.Tensor:
        z = self.out(F.silu(self.norm(self.stages(x))))
        if running_stats:  # eval behaviour whatever the mode, statistics untouched
            bn = self.znorm
            return F.batch_norm(z, bn.running_mean, bn.running_var, training=False, eps=bn.eps)
        return self.znorm(z)


class Decoder(nn.Module):
    """Mirror of the encoder: 3x3 conv from code_dim, per stage blocks then a 4x4 stride-2 transposed conv; ink logits."""

    def __init__(self, channels: tuple[int, ...], res_blocks: int, code_dim: int):
        super().__init__()
        self.inp = nn.Conv2d(code_dim, channels[-1], 3, padding=1)
        stages = []
        rev = list(reversed(channels))
        for i, ch in enumerate(rev):
            out = rev[i + 1] if i + 1 < len(rev) else max(8, ch // 2)
            layers = [ResBlock(ch) for _ in range(res_blocks)]
            layers += [ChannelNorm(ch), nn.SiLU(), nn.ConvTranspose2d(ch, out, 4, stride=2, padding=1)]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        final = max(8, channels[0] // 2)
        self.out = nn.Conv2d(final, 1, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(F.silu(self.stages(self.inp(z))))


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1


def _sample_rows(x: torch.Tensor, n: int, weight: torch.Tensor | None = None, noise: float = 0.0) -> torch.Tensor:
    """``n`` random rows of ``x``, drawn in proportion to ``weight`` (uniform if None or all zero),
    without replacement when there are enough rows, plus ``noise`` x RMS(x) Gaussian noise;
    identical on every worker (rank 0's draw)."""
    m = x.shape[0]
    if weight is None or not bool((weight > 0).any()):
        weight = torch.ones(m, device=x.device)
    weight = weight.float().clamp_min(0)
    nonzero = int((weight > 0).sum())
    idx = torch.multinomial(weight, n, replacement=n > nonzero)
    rows = x[idx].clone()
    if noise:
        rows += torch.randn_like(rows) * (noise * x.pow(2).mean().sqrt())
    if _distributed():
        torch.distributed.broadcast(rows, src=0)
    return rows


class ResidualQuantizer(nn.Module):
    """``levels`` EMA codebooks of ``size`` x ``dim``; see the module docstring for the update rules."""

    def __init__(self, levels: int, size: int, dim: int, decay: float, threshold: float, eps: float = 1e-5):
        super().__init__()
        self.levels, self.size, self.dim = levels, size, dim
        self.decay, self.threshold, self.eps = float(decay), float(threshold), eps
        embed = torch.randn(levels, size, dim) / math.sqrt(dim)
        self.register_buffer("embed", embed)
        self.register_buffer("embed_sum", embed.clone())
        self.register_buffer("cluster_size", torch.ones(levels, size))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def nearest(self, residual: torch.Tensor, level: int) -> torch.Tensor:
        """Index of the closest entry of ``level`` for each row of ``residual`` [M, D] (ties: lowest index)."""
        embed = self.embed[level]
        dist = (embed * embed).sum(1)[None, :] - 2.0 * (residual @ embed.t())
        return dist.argmin(1)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Sum over levels of the entries ``codes`` [M, K] pick -> [M, D]."""
        out = self.embed[0][codes[:, 0]]
        for k in range(1, self.levels):
            out = out + self.embed[k][codes[:, k]]
        return out

    @torch.no_grad()
    def quantize(self, z: torch.Tensor, *, update: bool = False):
        """Codes [M, K] and partial sums (list of K [M, D]) for ``z`` [M, D]; updates codebooks if ``update``."""
        residual = z.float()
        total = torch.zeros_like(residual)
        codes, partials = [], []
        stats = {"restarts": torch.zeros(self.levels, dtype=torch.long)}
        init = update and not bool(self.initialized)
        for k in range(self.levels):
            if init:
                # Entries from this batch's residuals (plus a little noise, so that rows
                # drawn as entries still leave the next level something to fit).
                rows = _sample_rows(residual, self.size, noise=0.01)
                self.embed[k].copy_(rows)
                self.embed_sum[k].copy_(rows * max(self.threshold, 1e-3))
                self.cluster_size[k].fill_(max(self.threshold, 1e-3))
            idx = self.nearest(residual, k)
            q = self.embed[k][idx]  # a copy: the entries as they were when assigned
            if update:
                stats["restarts"][k] = self._update(k, residual, idx, (residual - q).pow(2).sum(1))
            codes.append(idx)
            total = total + q
            partials.append(total)
            residual = residual - q
        if init:
            self.initialized.fill_(True)
        return torch.stack(codes, 1), partials, stats

    def _update(self, k: int, residual: torch.Tensor, idx: torch.Tensor, error: torch.Tensor) -> int:
        counts = torch.bincount(idx, minlength=self.size).to(residual.dtype)
        sums = torch.zeros(self.size, self.dim, dtype=residual.dtype, device=residual.device)
        sums.index_add_(0, idx, residual)
        if _distributed():
            torch.distributed.all_reduce(counts)
            torch.distributed.all_reduce(sums)
        d = self.decay
        self.cluster_size[k].mul_(d).add_(counts, alpha=1 - d)
        self.embed_sum[k].mul_(d).add_(sums, alpha=1 - d)
        n = self.cluster_size[k].sum()
        smoothed = (self.cluster_size[k] + self.eps) / (n + self.size * self.eps) * n
        self.embed[k].copy_(self.embed_sum[k] / smoothed[:, None])
        if self.threshold <= 0:
            return 0
        dead = self.cluster_size[k] < self.threshold
        n_dead = int(dead.sum())
        if n_dead:
            # Where the codebook fits worst: draw in proportion to the quantization error
            # (blank paper, most of a crop, is fitted at once and would get every restart).
            rows = _sample_rows(residual, n_dead, error)
            self.embed[k][dead] = rows
            self.embed_sum[k][dead] = rows * self.threshold
            self.cluster_size[k][dead] = self.threshold
        return n_dead

    def forward(self, z: torch.Tensor):
        """Straight-through quantization of ``z`` [M, D]; returns (z_q, codes [M, K], commit term, stats)."""
        with torch.autocast(device_type=z.device.type, enabled=False):
            zf = z.float()
            codes, partials, stats = self.quantize(zf.detach(), update=self.training)
            errors = torch.stack([F.mse_loss(zf, p) for p in partials])
            commit = errors.mean()
            stats["residual_ratio"] = (errors.detach() / zf.detach().pow(2).mean().clamp_min(1e-12)).cpu()
            z_q = zf + (partials[-1] - zf).detach()
        return z_q, codes, commit, stats


# -- the model -------------------------------------------------------------------


@dataclasses.dataclass
class RQVAEOutput:
    recon: torch.Tensor  # float [B, 1, H, W] in [0, 1], white = 1
    loss: torch.Tensor  # recon_loss + commit_loss (scalar, differentiable)
    recon_loss: torch.Tensor  # ink-weighted Bernoulli KL (0 = perfect)
    commit_loss: torch.Tensor  # commitment weight x mean over levels of mse(z, partial sum)
    codes: torch.Tensor  # long [B, K, H/p, W/p]
    perplexity: torch.Tensor  # [K] exp(entropy) of this batch's code histogram per level
    used_codes: torch.Tensor  # [K] distinct entries used in this batch per level
    dead_codes: torch.Tensor  # [K] entries whose EMA count is below the restart threshold (after this step)
    restarts: torch.Tensor  # [K] entries restarted in this step (0 in eval mode)
    residual_ratio: torch.Tensor  # [K] mse(z, sum of levels <= k) / mean(z^2): what each depth leaves unexplained


class RQVAE(nn.Module):
    def __init__(
        self,
        *,
        channels: tuple[int, ...],
        res_blocks: int,
        code_dim: int,
        codebooks: int,
        codebook_size: int,
        ema_decay: float,
        commitment: float,
        commitment_warmup: int,
        dead_code_threshold: float,
        ink_weight: float,
    ):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if not channels:
            raise InputError("RQVAE", "needs at least one stage")
        self.patch = 2 ** len(channels)
        self.codebooks, self.codebook_size, self.code_dim = int(codebooks), int(codebook_size), int(code_dim)
        self.commitment, self.ink_weight = float(commitment), float(ink_weight)
        self.dead_code_threshold = float(dead_code_threshold)
        self.commitment_warmup = int(commitment_warmup)
        # Training forwards so far (drives the commitment warm-up; saved with the weights).
        self.register_buffer("train_steps", torch.zeros((), dtype=torch.long))
        self.encoder = Encoder(channels, int(res_blocks), self.code_dim)
        self.decoder = Decoder(channels, int(res_blocks), self.code_dim)
        self.quantizer = ResidualQuantizer(self.codebooks, self.codebook_size, self.code_dim, ema_decay, dead_code_threshold)
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        # Variance-preserving convs with zero bias: PyTorch's default init shrinks the
        # signal ~1.7x per layer, and on mostly-white crops the encoder output would be
        # bias-dominated, nearly the same vector everywhere (the commitment loss then
        # collapses it onto one code). Zero-initialised residual branches stay zero.
        for mod in self.modules():
            if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d)):
                if isinstance(mod, nn.Conv2d) and mod.weight.abs().sum() == 0:
                    continue
                fan_in = mod.weight[0].numel() if isinstance(mod, nn.Conv2d) else mod.weight.shape[0] * mod.weight[0, 0].numel() // 4
                nn.init.normal_(mod.weight, 0.0, 1.0 / math.sqrt(fan_in))
                nn.init.zeros_(mod.bias)
        # Paper is the prior: start from a low ink probability instead of 0.5.
        nn.init.constant_(self.decoder.out.bias, PAPER_LOGIT)

    # -- inputs --------------------------------------------------------------------

    def _ink(self, images) -> torch.Tensor:
        """Images -> float [B, 1, H, W] on the model's device, ink = 1, paper = 0."""
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(np.ascontiguousarray(images))
        if not isinstance(images, torch.Tensor):
            raise InputError("images", f"expected a torch tensor or numpy array, got {type(images).__name__}")
        if images.ndim == 3:
            images = images[:, None]
        if images.ndim != 4 or images.shape[1] != 1:
            raise InputError("images", f"expected [B, H, W] or [B, 1, H, W] grayscale, got shape {tuple(images.shape)}")
        b, _, h, w = images.shape
        p = self.patch
        if b == 0:
            raise InputError("images", "empty batch")
        if h == 0 or w == 0 or h % p or w % p:
            raise InputError("images", f"size {h}x{w} (HxW): both sides must be positive multiples of {p}")
        param = next(self.parameters())
        images = images.to(param.device)
        if images.dtype == torch.uint8:
            x = 1.0 - images.to(param.dtype) / 255.0
        elif images.is_floating_point():
            if not bool(torch.isfinite(images).all()) or images.min() < 0 or images.max() > 1:
                raise InputError("images", "float images must be finite and in [0, 1] (white = 1)")
            x = 1.0 - images.to(param.dtype)
        else:
            raise InputError("images", f"expected uint8 or float pixels, got {images.dtype}")
        return x

    def _quantize(self, x: torch.Tensor):
        z = self.encoder(x)  # [B, D, h, w]
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        z_q, codes, commit, stats = self.quantizer(flat)
        z_q = z_q.to(z.dtype).reshape(b, h, w, d).permute(0, 3, 1, 2)
        codes = codes.reshape(b, h, w, self.codebooks).permute(0, 3, 1, 2).contiguous()
        return z_q, codes, commit, stats

    def commitment_weight(self) -> float:
        """The commitment weight now: ramps linearly from 0 over the first ``commitment_warmup`` training steps.

        Early on the decoder hardly uses the latents, so the commitment gradient is all
        the encoder hears and (Adam scaling it up) it collapses every position onto one
        code within a few steps; the ramp lets reconstruction take hold first.
        """
        if self.commitment_warmup <= 0:
            return self.commitment
        return self.commitment * min(1.0, float(self.train_steps) / self.commitment_warmup)

    # -- public ----------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, images) -> torch.Tensor:
        """uint8 [B, H, W] / [B, 1, H, W] (0 ink) or float in [0, 1] (white 1) -> long codes [B, K, H/p, W/p].

        Never updates codebooks (in any mode); in eval mode a pure function of the input.
        """
        z = self.encoder(self._ink(images), running_stats=True)
        b, d, h, w = z.shape
        codes, _, _ = self.quantizer.quantize(z.permute(0, 2, 3, 1).reshape(-1, d).float(), update=False)
        return codes.reshape(b, h, w, self.codebooks).permute(0, 3, 1, 2).contiguous()

    @torch.no_grad()
    def decode(self, codes) -> torch.Tensor:
        """Long codes [B, K, h, w] -> float [B, 1, h*p, w*p] in [0, 1], white = 1 (no gradients: inference)."""
        if isinstance(codes, np.ndarray):
            codes = torch.from_numpy(codes)
        if not isinstance(codes, torch.Tensor) or codes.is_floating_point() or codes.dtype == torch.bool or codes.is_complex():
            raise InputError("codes", f"expected an integer tensor, got {getattr(codes, 'dtype', type(codes).__name__)}")
        if codes.ndim != 4 or codes.shape[1] != self.codebooks or 0 in codes.shape:
            raise InputError("codes", f"expected [B, {self.codebooks}, h, w] with positive sizes, got shape {tuple(codes.shape)}")
        if int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size:
            raise InputError("codes", f"values must be in [0, {self.codebook_size}), got {int(codes.min())}..{int(codes.max())}")
        codes = codes.to(self.quantizer.embed.device, torch.long)
        b, k, h, w = codes.shape
        z = self.quantizer.lookup(codes.permute(0, 2, 3, 1).reshape(-1, k))
        z = z.reshape(b, h, w, self.code_dim).permute(0, 3, 1, 2).to(next(self.decoder.parameters()).dtype)
        return torch.sigmoid(-self.decoder(z).float()).clamp(0.0, 1.0)

    def forward(self, images) -> RQVAEOutput:
        x = self._ink(images)
        z_q, codes, commit, stats = self._quantize(x)
        logits = self.decoder(z_q).float()
        target = x.float()
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        t = target.clamp(1e-6, 1 - 1e-6)
        entropy = -(t * t.log() + (1 - t) * (1 - t).log())
        weight = 1.0 + (self.ink_weight - 1.0) * target
        recon_loss = ((bce - entropy) * weight).sum() / weight.sum()
        commit_loss = self.commitment_weight() * commit
        if self.training:
            self.train_steps += 1
        hist = torch.stack([torch.bincount(codes[:, k].reshape(-1), minlength=self.codebook_size) for k in range(self.codebooks)])
        with torch.no_grad():
            probs = hist.float() / hist.sum(1, keepdim=True)
            perplexity = torch.exp(-(probs * torch.log(probs.clamp_min(1e-12))).sum(1))
            dead = (self.quantizer.cluster_size < self.dead_code_threshold).sum(1) if self.dead_code_threshold > 0 else torch.zeros(self.codebooks, dtype=torch.long)
        return RQVAEOutput(
            recon=torch.sigmoid(-logits),
            loss=recon_loss + commit_loss,
            recon_loss=recon_loss,
            commit_loss=commit_loss,
            codes=codes,
            perplexity=perplexity.cpu(),
            used_codes=(hist > 0).sum(1).cpu(),
            dead_codes=dead.cpu(),
            restarts=stats["restarts"],
            residual_ratio=stats["residual_ratio"],
        )


# -- metrics ----------------------------------------------------------------------


def to_uint8(recon) -> np.ndarray:
    """float [B, 1, H, W] or [B, H, W] in [0, 1] (white 1) -> uint8 [B, H, W] (0 ink)."""
    if isinstance(recon, torch.Tensor):
        recon = recon.detach().float().cpu().numpy()
    recon = np.asarray(recon, dtype=np.float32)
    if recon.ndim == 4:
        if recon.shape[1] != 1:
            raise InputError("recon", f"expected one channel, got shape {recon.shape}")
        recon = recon[:, 0]
    if recon.ndim != 3:
        raise InputError("recon", f"expected [B, 1, H, W] or [B, H, W], got shape {recon.shape}")
    return np.rint(np.clip(recon, 0.0, 1.0) * 255.0).astype(np.uint8)


def _pair(original, recon) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(original), np.asarray(recon)
    if a.shape != b.shape:
        raise InputError("images", f"original shape {a.shape} != reconstruction shape {b.shape}")
    if a.dtype != np.uint8 or b.dtype != np.uint8:
        raise InputError("images", f"expected uint8 images, got {a.dtype} and {b.dtype}")
    return a, b


def ink_f1(original_uint8, recon_uint8, threshold: int = 128) -> float:
    """F1 of ink pixels (value < threshold) of the reconstruction against the original, pooled over all pixels.

    No ink in either image counts as 1.0 (nothing to find, nothing invented).
    """
    a, b = _pair(original_uint8, recon_uint8)
    ink_a, ink_b = a < threshold, b < threshold
    tp = int(np.count_nonzero(ink_a & ink_b))
    fp = int(np.count_nonzero(~ink_a & ink_b))
    fn = int(np.count_nonzero(ink_a & ~ink_b))
    if tp + fp + fn == 0:
        return 1.0
    return 2.0 * tp / (2.0 * tp + fp + fn)


def psnr(original_uint8, recon_uint8) -> float:
    """Peak signal-to-noise ratio in dB over all pixels (inf for identical images)."""
    a, b = _pair(original_uint8, recon_uint8)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def codebook_perplexity(codes, codebook_size: int) -> list[float]:
    """Per level exp(entropy) of the code histogram; ``codes`` [B, K, h, w] (or [K, N])."""
    if isinstance(codes, torch.Tensor):
        codes = codes.detach().cpu().numpy()
    codes = np.asarray(codes)
    if codes.ndim < 2 or codes.size == 0:
        raise InputError("codes", f"expected [B, K, h, w], got shape {codes.shape}")
    if codes.ndim > 2:
        codes = np.moveaxis(codes, 1, 0).reshape(codes.shape[1], -1)
    if codes.min() < 0 or codes.max() >= codebook_size:
        raise InputError("codes", f"values must be in [0, {codebook_size})")
    out = []
    for level in codes:
        p = np.bincount(level.astype(np.int64), minlength=codebook_size) / level.size
        p = p[p > 0]
        out.append(float(np.exp(-(p * np.log(p)).sum())))
    return out


# -- files ------------------------------------------------------------------------


def save_rqvae(model: RQVAE, config: RQVAEConfig, path: str | os.PathLike, *, metrics: dict | None = None):
    """``path.safetensors`` + ``path.json`` (kind "rqvae", format version, config, extra ``metrics``)."""
    from unimusic.models.weights import save_weights

    if not isinstance(config, RQVAEConfig):
        raise InputError("rqvae config", f"expected an RQVAEConfig, got {type(config).__name__}")
    meta = {"kind": KIND, "format_version": FORMAT_VERSION, "config": dataclasses.asdict(config)}
    if metrics:
        meta["metrics"] = metrics
    return save_weights(model.state_dict(), meta, path)


def load_rqvae(path: str | os.PathLike, *, expected_config: RQVAEConfig | None = None, device: str = "cpu") -> tuple[RQVAE, RQVAEConfig]:
    """The model (eval mode) and its config; refuses other kinds/versions/configs and changed files."""
    from unimusic.config import from_dict
    from unimusic.models.weights import load_weights, weight_paths

    state, meta = load_weights(path, kind=KIND, format_version=FORMAT_VERSION, expected_config=expected_config, device=device)
    if not isinstance(meta.get("config"), dict):
        raise InputError(str(weight_paths(path)[1]), "recorded config is not a mapping")
    config = from_dict(RQVAEConfig, meta["config"])
    model = build_rqvae(config).to(device)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(str(weight_paths(path)[0]), f"tensors do not fit the recorded config: {exc}") from None
    return model.eval(), config
