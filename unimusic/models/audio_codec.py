"""Audio <-> discrete codes with the Descript Audio Codec (``descript-audio-codec``, ``import dac``).

The translator reads and writes audio as DAC codes: the first ``K`` residual
codebooks (``codebooks_used``, 4 by default) of a 44.1 kHz model, one code per
codebook per frame of ``hop`` samples (hop 512: ~86.13 frames/s).

* :class:`AudioCodecConfig` pins the architecture (DAC's own constructor
  arguments) plus ``codebooks_used``; :data:`PRESETS` has the official 44 kHz
  architecture and a ``tiny`` one that trains on a CPU.
* :func:`build_codec` turns a config into a ``dac.DAC`` (the model only ever sees
  plain keyword arguments, :func:`dac_kwargs`).
* :class:`AudioCodec` wraps a model for the tokenize stage and inference:
  ``encode`` (float mono audio -> int codes ``[K, T]``, ``T = ceil(n / hop)``)
  and ``decode`` (codes -> ``T * hop`` float32 samples). Both use the tensor path
  (``model.encode(x, n_quantizers=K)``, ``model.quantizer.from_codes``,
  ``model.decode``), never DAC's file-oriented ``compress``/``decompress``, and
  process long inputs in chunks with context on both sides (see ``encode`` and
  ``decode``), so memory stays bounded and the result matches a whole pass.
* :func:`load_official` reads the official DAC checkpoints (``dac.utils.download``'s
  cache, or a local file given by ``path``); :func:`save_codec` / :func:`load_codec`
  store our own weights as safetensors + JSON (:mod:`unimusic.models.weights`).
* :class:`CodecTrainer`: one GAN training step as in DAC's recipe (its
  discriminator, mel/GAN/VQ losses and loss weights), resumable.
* :func:`mel_distance` (DAC's multi-scale mel loss as a metric) and :func:`snr_db`.

No loudness normalization is applied by ``encode`` (DAC's ``compress`` normalizes
to -16 LUFS and restores the level afterwards): the project's audio is
peak-normalized by the synthesizer and codes are taken as is.

``torch`` and ``dac`` are imported lazily: importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import numbers
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from unimusic.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import dac
    import torch

KIND = "audio_codec"  # weights.py record kind
FORMAT_VERSION = 1  # bump when the saved state-dict layout changes

# Context (frames) added on each side of a chunk. The encoder's receptive field
# reaches ~8.3 frames (3733 / 4244 samples) to each side of a frame and the
# decoder's ~10 frames, for DAC's kernel/stride layout whatever the channel
# counts (measured with gradients); 16 frames leaves a 2x margin, so a chunk's
# kept frames never see its edges and chunked == whole up to float rounding.
ENCODE_CONTEXT_FRAMES = 16
DECODE_CONTEXT_FRAMES = 16
# Decoded chunks overlap by 2 * DECODE_CROSSFADE_FRAMES and are crossfaded there
# with complementary raised-cosine weights (they sum to exactly 1).
DECODE_CROSSFADE_FRAMES = 4

# DAC's training recipe (descript-audio-codec conf/base.yml).
DEFAULT_LOSS_WEIGHTS = {
    "mel/loss": 15.0,
    "adv/feat_loss": 2.0,
    "adv/gen_loss": 1.0,
    "vq/commitment_loss": 0.25,
    "vq/codebook_loss": 1.0,
}
MEL_LOSS_KWARGS = {
    "n_mels": [5, 10, 20, 40, 80, 160, 320],
    "window_lengths": [32, 64, 128, 256, 512, 1024, 2048],
    "mel_fmin": [0.0] * 7,
    "mel_fmax": [None] * 7,
    "pow": 1.0,
    "clamp_eps": 1.0e-5,
    "mag_weight": 0.0,
}
# DAC's discriminator is periods [2, 3, 5, 7, 11] + fft_sizes [2048, 1024, 512];
# each period discriminator (MPD) alone has ~8M parameters and dominates the CPU
# cost of a step, so the default here keeps three of them and two STFT sizes.
# Measured on one busy CPU thread, tiny preset, batch 4 x 0.5 s: ~13 s per step with
# this default, ~4.5 s with the STFT discriminators alone (periods=[]), ~1-2.5 s
# without adversarial losses (adversarial_start); DAC_DISCRIMINATOR is for GPUs.
DEFAULT_DISCRIMINATOR = {"rates": [], "periods": [2, 3, 5], "fft_sizes": [1024, 512]}
DAC_DISCRIMINATOR = {"rates": [], "periods": [2, 3, 5, 7, 11], "fft_sizes": [2048, 1024, 512]}
# Shortest training window / metric input: the longest mel window (2048) pads by
# 1024 samples with reflection, which needs a longer signal.
MIN_TRAIN_SAMPLES = 4096
_MIN_METRIC_SAMPLES = 2049

OFFICIAL_MODEL_TYPES = ("44khz", "24khz", "16khz")
OFFICIAL_BITRATES = ("8kbps", "16kbps")


def _import_dac():
    """``import dac`` without torch's weight_norm deprecation noise."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.nn.utils.weight_norm
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script (dac's Snake1d)
        import dac  # noqa: F401
    return dac


# -- configuration --------------------------------------------------------------


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class AudioCodecConfig:
    """DAC architecture (its constructor arguments) + ``codebooks_used`` (K).

    ``latent_dim=None`` means DAC's default ``encoder_dim * 2**len(encoder_rates)``
    and is resolved here, so equal architectures have equal configs (and hashes).
    ``quantizer_dropout`` only matters while training (DAC's recipe uses 1.0 so
    that the first codebooks work on their own; DAC's class default is 0).
    """

    sample_rate: int = 44100
    encoder_dim: int = 64
    encoder_rates: tuple[int, ...] = (2, 4, 8, 8)
    latent_dim: int | None = None
    decoder_dim: int = 1536
    decoder_rates: tuple[int, ...] = (8, 8, 4, 2)
    n_codebooks: int = 9
    codebook_size: int = 1024
    codebook_dim: int = 8
    codebooks_used: int = 4
    quantizer_dropout: float = 0.0

    def __post_init__(self):
        def bad(field: str, problem: str):
            raise InputError(f"AudioCodecConfig.{field}", problem)

        for name in ("encoder_rates", "decoder_rates"):
            rates = getattr(self, name)
            if isinstance(rates, (list, tuple)):
                object.__setattr__(self, name, tuple(rates))
            rates = getattr(self, name)
            if not isinstance(rates, tuple) or not rates or not all(_is_int(r) and r >= 1 for r in rates):
                bad(name, f"must be a non-empty tuple of positive integers, got {rates!r}")
            if any(r > 1 and r % 2 for r in rates):
                # DAC's strided convs (kernel 2s, padding ceil(s/2)) give exactly n/s frames only for even s
                bad(name, f"strides must be 1 or even, got {rates!r}")
        if not _is_int(self.sample_rate) or not 8000 <= self.sample_rate <= 192000:
            bad("sample_rate", f"must be an integer in 8000..192000, got {self.sample_rate!r}")
        for name in ("encoder_dim", "decoder_dim", "n_codebooks", "codebook_dim", "codebooks_used"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                bad(name, f"must be a positive integer, got {value!r}")
        if not _is_int(self.codebook_size) or not 2 <= self.codebook_size <= 2**31 - 1:
            bad("codebook_size", f"must be an integer >= 2, got {self.codebook_size!r}")
        if self.latent_dim is None:
            object.__setattr__(self, "latent_dim", self.encoder_dim * 2 ** len(self.encoder_rates))
        elif not _is_int(self.latent_dim) or self.latent_dim < 1:
            bad("latent_dim", f"must be a positive integer or None, got {self.latent_dim!r}")
        if math.prod(self.encoder_rates) != math.prod(self.decoder_rates):
            bad(
                "decoder_rates",
                f"product {math.prod(self.decoder_rates)} differs from the encoder's hop {math.prod(self.encoder_rates)}",
            )
        if self.decoder_dim % 2 ** len(self.decoder_rates):
            bad(
                "decoder_dim",
                f"must be divisible by 2**len(decoder_rates) = {2 ** len(self.decoder_rates)} "
                f"(channels halve in each block), got {self.decoder_dim}",
            )
        if self.codebooks_used > self.n_codebooks:
            bad("codebooks_used", f"{self.codebooks_used} exceeds n_codebooks = {self.n_codebooks}")
        qd = self.quantizer_dropout
        if isinstance(qd, bool):
            object.__setattr__(self, "quantizer_dropout", float(qd))
        elif not isinstance(qd, numbers.Real) or not 0.0 <= qd <= 1.0:
            bad("quantizer_dropout", f"must be a fraction in [0, 1], got {qd!r}")
        else:
            object.__setattr__(self, "quantizer_dropout", float(qd))

    @property
    def hop(self) -> int:
        return math.prod(self.encoder_rates)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "AudioCodecConfig") -> "AudioCodecConfig":
        if not isinstance(data, dict):
            raise InputError(source, f"config must be a mapping, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InputError(source, f"unknown config field(s) {unknown}")
        return cls(**data)


PRESETS: dict[str, AudioCodecConfig] = {
    # DAC 44 kHz (8 kbps, 9 codebooks): the architecture of dac.utils.download("44khz")
    "official-44khz": AudioCodecConfig(),
    # reduced channels, same rates (hop 512, ~86 frames/s), 4 codebooks: ~2M params,
    # trains on a CPU (see the module's report for seconds per step)
    "tiny": AudioCodecConfig(encoder_dim=16, decoder_dim=128, n_codebooks=4, codebooks_used=4),
}


def dac_kwargs(config: AudioCodecConfig) -> dict:
    """``dac.DAC(**dac_kwargs(config))`` builds the architecture (plain Python values only)."""
    if not isinstance(config, AudioCodecConfig):
        raise InputError("config", f"expected an AudioCodecConfig, got {type(config).__name__}")
    return {
        "encoder_dim": config.encoder_dim,
        "encoder_rates": list(config.encoder_rates),
        "latent_dim": config.latent_dim,
        "decoder_dim": config.decoder_dim,
        "decoder_rates": list(config.decoder_rates),
        "n_codebooks": config.n_codebooks,
        "codebook_size": config.codebook_size,
        "codebook_dim": config.codebook_dim,
        "quantizer_dropout": config.quantizer_dropout,
        "sample_rate": config.sample_rate,
    }


def build_codec(config: AudioCodecConfig, *, seed: int | None = None) -> "dac.DAC":
    """A freshly initialized ``dac.DAC`` (CPU, train mode); ``seed`` makes the init reproducible
    without touching the global RNG."""
    import torch

    dac = _import_dac()
    kwargs = dac_kwargs(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.nn.utils.weight_norm deprecation
        if seed is None:
            return dac.DAC(**kwargs)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return dac.DAC(**kwargs)


# -- the wrapper ----------------------------------------------------------------


def _mono_float(audio, source: str) -> np.ndarray:
    x = np.asarray(audio)
    if x.ndim != 1:
        raise InputError(source, f"expected mono audio as a 1-D array, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise InputError(source, f"expected float samples in [-1, 1], got dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    if not np.all(np.isfinite(x)):
        raise InputError(source, "audio holds NaN or infinite samples")
    return x


def _chunk_count(value, name: str, *, positive_real: bool = False):
    if value is None:
        return None
    if positive_real:
        if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
            raise InputError(name, f"must be a positive number or None, got {value!r}")
        return value
    if not _is_int(value) or value < 1:
        raise InputError(name, f"must be a positive integer or None, got {value!r}")
    return int(value)


def _raised_cosine(n: int) -> np.ndarray:
    """Fade-in of length n; ``w + w[::-1] == 1`` exactly (up to rounding)."""
    t = (np.arange(n, dtype=np.float64) + 0.5) / n
    return (0.5 - 0.5 * np.cos(np.pi * t)).astype(np.float32)


class AudioCodec:
    """A DAC model + its config: float mono audio <-> int codes ``[K, T]``."""

    def __init__(self, model: "dac.DAC", config: AudioCodecConfig):
        dac = _import_dac()
        if not isinstance(model, dac.model.DAC):
            raise InputError("model", f"expected a dac.DAC, got {type(model).__name__}")
        if not isinstance(config, AudioCodecConfig):
            raise InputError("config", f"expected an AudioCodecConfig, got {type(config).__name__}")
        found = {
            "sample_rate": int(model.sample_rate),
            "hop": int(model.hop_length),
            "latent_dim": int(model.latent_dim),
            "n_codebooks": int(model.n_codebooks),
            "codebook_size": int(model.codebook_size),
        }
        expected = {
            "sample_rate": config.sample_rate,
            "hop": config.hop,
            "latent_dim": config.latent_dim,
            "n_codebooks": config.n_codebooks,
            "codebook_size": config.codebook_size,
        }
        diffs = [f"{k}: model {found[k]}, config {expected[k]}" for k in found if found[k] != expected[k]]
        if diffs:
            raise InputError("AudioCodec", "model does not match config (" + "; ".join(diffs) + ")")
        self.model = model
        self.config = config
        self.sample_rate: int = config.sample_rate
        self.hop: int = config.hop
        self.frame_rate: float = config.frame_rate
        self.codebooks_used: int = config.codebooks_used
        self.code_dtype = np.int16 if config.codebook_size <= 2**15 else np.int32
        model.eval()

    def __repr__(self) -> str:
        return (
            f"AudioCodec(sample_rate={self.sample_rate}, hop={self.hop}, K={self.codebooks_used}, "
            f"codebook_size={self.config.codebook_size})"
        )

    def num_frames(self, n_samples: int) -> int:
        """Frames for ``n_samples`` at the codec's rate: ``ceil(n / hop)``."""
        return -(-int(n_samples) // self.hop)

    @property
    def device(self):
        return next(self.model.parameters()).device

    @contextlib.contextmanager
    def _inference(self):
        import torch

        model = self.model
        was_training = model.training
        padding = model.padding
        model.eval()
        if not padding:  # left off by an interrupted DAC compress(): our frame maths needs it on
            model.padding = True
        try:
            with torch.inference_mode():
                yield
        finally:
            if not padding:
                model.padding = False
            model.train(was_training)

    # -- encode -----------------------------------------------------------------

    def _encode_frames(self, x):
        """x: tensor [1, 1, F*hop] -> codes tensor [K, F]."""
        _, codes, _, _, _ = self.model.encode(x, n_quantizers=self.codebooks_used)
        return codes[0, : self.codebooks_used]

    def encode(
        self,
        audio: np.ndarray,
        sample_rate: int,
        *,
        chunk_seconds: float | None = 30.0,
        context_frames: int = ENCODE_CONTEXT_FRAMES,
    ) -> np.ndarray:
        """Float mono audio -> codes ``[K, T]`` (int16, or int32 for codebooks over 32768 entries).

        Audio at another ``sample_rate`` is resampled (librosa, soxr high quality)
        first; ``T = ceil(n / hop)`` for the resampled length ``n`` (the end is
        zero-padded to whole frames, as DAC does). Audio longer than
        ``chunk_seconds`` is encoded in chunks of that many frames, each with
        ``context_frames`` of real audio on both sides whose codes are dropped;
        ``chunk_seconds=None`` encodes in one pass.
        """
        import torch

        x = _mono_float(audio, "audio")
        if not _is_int(sample_rate) or not 1000 <= sample_rate <= 768000:
            raise InputError("sample_rate", f"must be an integer in 1000..768000, got {sample_rate!r}")
        chunk_seconds = _chunk_count(chunk_seconds, "chunk_seconds", positive_real=True)
        if not _is_int(context_frames) or context_frames < 0:
            raise InputError("context_frames", f"must be an integer >= 0, got {context_frames!r}")
        if sample_rate != self.sample_rate and x.size:
            import librosa

            x = librosa.resample(x, orig_sr=int(sample_rate), target_sr=self.sample_rate).astype(np.float32)
        K, hop = self.codebooks_used, self.hop
        T = self.num_frames(x.size)
        if T == 0:
            return np.zeros((K, 0), dtype=self.code_dtype)
        x = np.pad(x, (0, T * hop - x.size))
        chunk = None if chunk_seconds is None else max(1, round(chunk_seconds * self.sample_rate / hop))
        with self._inference():
            xt = torch.from_numpy(x).to(self.device)[None, None]
            if chunk is None or T <= chunk:
                codes = self._encode_frames(xt)
            else:
                parts = []
                for s in range(0, T, chunk):
                    e = min(T, s + chunk)
                    a, b = max(0, s - context_frames), min(T, e + context_frames)
                    c = self._encode_frames(xt[..., a * hop : b * hop])
                    parts.append(c[:, s - a : e - a])
                codes = torch.cat(parts, dim=-1)
        out = codes.to("cpu").numpy().astype(self.code_dtype)
        assert out.shape == (K, T), (out.shape, K, T)
        return out

    # -- decode -----------------------------------------------------------------

    def _check_codes(self, codes) -> np.ndarray:
        c = np.asarray(codes)
        if c.ndim != 2:
            raise InputError("codes", f"expected codes of shape [codebooks, frames], got shape {c.shape}")
        if not np.issubdtype(c.dtype, np.integer):
            raise InputError("codes", f"expected integer codes, got dtype {c.dtype}")
        if not 1 <= c.shape[0] <= self.config.n_codebooks:
            raise InputError("codes", f"{c.shape[0]} codebooks; this codec has 1..{self.config.n_codebooks}")
        if c.size and (c.min() < 0 or c.max() >= self.config.codebook_size):
            raise InputError(
                "codes", f"values {int(c.min())}..{int(c.max())} outside [0, {self.config.codebook_size})"
            )
        return c.astype(np.int64)

    def decode(
        self,
        codes: np.ndarray,
        *,
        chunk_frames: int | None = 2600,
        context_frames: int = DECODE_CONTEXT_FRAMES,
        crossfade_frames: int = DECODE_CROSSFADE_FRAMES,
    ) -> np.ndarray:
        """Codes ``[k, T]`` (any ``1 <= k <= n_codebooks``, normally K) -> float32 audio of ``T * hop`` samples.

        Sequences longer than ``chunk_frames`` (2600 frames ~ 30 s) are decoded
        in chunks of that many frames, each with ``context_frames`` of codes on
        both sides; neighbouring chunks overlap by ``2 * crossfade_frames`` and
        are crossfaded with complementary raised-cosine weights.
        ``chunk_frames=None`` decodes in one pass.
        """
        import torch

        c = self._check_codes(codes)
        chunk = _chunk_count(chunk_frames, "chunk_frames")
        for name, value in (("context_frames", context_frames), ("crossfade_frames", crossfade_frames)):
            if not _is_int(value) or value < 0:
                raise InputError(name, f"must be an integer >= 0, got {value!r}")
        if crossfade_frames > context_frames:
            raise InputError("crossfade_frames", f"{crossfade_frames} exceeds context_frames = {context_frames}")
        hop, T = self.hop, c.shape[1]
        if T == 0:
            return np.zeros(0, dtype=np.float32)
        with self._inference():
            ct = torch.from_numpy(c).to(self.device)[None]
            z = self.model.quantizer.from_codes(ct)[0]  # [1, latent_dim, T]
            if chunk is None or T <= chunk:
                audio = self.model.decode(z)[0, 0].to("cpu", torch.float32).numpy()
            else:
                f = min(crossfade_frames, chunk // 2)
                up = _raised_cosine(2 * f * hop) if f else None
                audio = np.zeros(T * hop, dtype=np.float32)
                for s in range(0, T, chunk):
                    e = min(T, s + chunk)
                    a, b = max(0, s - context_frames), min(T, e + context_frames)
                    y = self.model.decode(z[..., a:b])[0, 0].to("cpu", torch.float32).numpy()
                    p, q = max(0, s - f), min(T, e + f)  # frames kept from this chunk
                    seg = y[(p - a) * hop : (q - a) * hop].copy()
                    # a boundary's fade spans frames [b - f, b + f), cut at T for
                    # both chunks alike, so the two weights still sum to 1
                    if f and s > 0:
                        n = min(2 * f * hop, seg.size)
                        seg[:n] *= up[:n]
                    if f and e < T:
                        start = (e - f - p) * hop
                        n = min(2 * f * hop, seg.size - start)
                        seg[start : start + n] *= up[::-1][:n]
                    audio[p * hop : q * hop] += seg
        if audio.size != T * hop:  # pragma: no cover - DAC's layout guarantees it for even strides
            raise RuntimeError(f"decoder returned {audio.size} samples for {T} frames (hop {hop})")
        return audio.astype(np.float32, copy=False)


# -- official checkpoints -------------------------------------------------------


def _config_from_dac_kwargs(kwargs: dict, *, codebooks_used: int, source: str) -> AudioCodecConfig:
    """An AudioCodecConfig from the ``metadata["kwargs"]`` of a DAC checkpoint."""
    dac = _import_dac()
    params = set(inspect.signature(dac.DAC).parameters)
    kw = {k: v for k, v in kwargs.items() if k in params}  # as DAC.load: unknown keys are dropped
    cd = kw.get("codebook_dim", 8)
    if isinstance(cd, (list, tuple)):
        if len(set(cd)) != 1:
            raise InputError(source, f"per-codebook codebook_dim {list(cd)} is not supported (one size for all)")
        kw["codebook_dim"] = cd[0]
    for name in ("encoder_rates", "decoder_rates"):
        if name in kw:
            kw[name] = tuple(kw[name])
    n_codebooks = kw.get("n_codebooks", AudioCodecConfig.n_codebooks)
    return AudioCodecConfig(**kw, codebooks_used=min(codebooks_used, n_codebooks))


def _load_dac_checkpoint(path, *, codebooks_used: int) -> AudioCodec:
    """Load a file in DAC's weights format: ``torch.save({"state_dict": ..., "metadata": {"kwargs": ...}})``.

    This is what ``DAC.save(path, package=False)`` writes, what the released
    ``weights*.pth`` files hold and what ``DAC.load`` falls back to. Unlike
    ``DAC.load`` it reads with ``torch.load(weights_only=True)`` (only tensors and
    plain containers are unpickled; a ``torch.package`` file, which would run
    pickled code, is refused), builds the model through :func:`build_codec`
    and loads the state dict strictly (every key must match).
    """
    import torch

    source = os.fspath(path)
    if not Path(source).is_file():
        raise InputError(source, "no such DAC weights file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ckpt = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(
            source,
            "not a DAC weights file readable with torch.load(weights_only=True) "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); "
            "torch.package files (DAC.save(package=True)) are not loaded since they run pickled code: "
            "re-save with DAC.save(path, package=False)",
        ) from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise InputError(source, "not a DAC weights file: no 'state_dict' entry")
    metadata = ckpt.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("kwargs"), dict):
        raise InputError(source, "not a DAC weights file: no 'metadata' with the model's 'kwargs'")
    config = _config_from_dac_kwargs(metadata["kwargs"], codebooks_used=codebooks_used, source=source)
    model = build_codec(config)
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as exc:
        raise InputError(source, f"weights do not fit the architecture in its metadata: {str(exc)[:300]}") from None
    model.metadata = metadata  # as DAC.load does
    return AudioCodec(model, config)


def load_official(
    model_type: str = "44khz",
    *,
    path: str | os.PathLike | None = None,
    model_bitrate: str = "8kbps",
    codebooks_used: int = 4,
) -> AudioCodec:
    """The official pretrained DAC model as an :class:`AudioCodec` (CPU).

    ``path=None``: ``dac.utils.download(model_type=..., model_bitrate=...)`` finds
    the file in dac's cache (``~/.cache/descript/dac/weights_<type>_<bitrate>_<tag>.pth``)
    or downloads it; without network and cache this raises InputError. With
    ``path``, that local file (same format) is loaded through the same code path.
    ``codebooks_used`` (K) is capped at the checkpoint's codebook count.
    """
    if model_type not in OFFICIAL_MODEL_TYPES:
        raise InputError("model_type", f"{model_type!r}; DAC publishes {', '.join(OFFICIAL_MODEL_TYPES)}")
    if model_bitrate not in OFFICIAL_BITRATES or (model_bitrate == "16kbps" and model_type != "44khz"):
        raise InputError("model_bitrate", f"{model_bitrate!r} for {model_type}; DAC publishes 8kbps (and 16kbps for 44khz)")
    if not _is_int(codebooks_used) or codebooks_used < 1:
        raise InputError("codebooks_used", f"must be a positive integer, got {codebooks_used!r}")
    if path is None:
        dac = _import_dac()
        try:
            path = dac.utils.download(model_type=model_type, model_bitrate=model_bitrate)
        except Exception as exc:
            raise InputError(
                f"DAC {model_type} {model_bitrate} weights",
                f"unavailable offline: neither in dac's cache (~/.cache/descript/dac/) nor downloadable "
                f"({type(exc).__name__}: {str(exc)[:240]}); fetch the released weights file on a machine "
                f"with network (python -m dac download --model_type {model_type}) and pass "
                f"load_official(path='/path/to/weights.pth')",
            ) from None
    return _load_dac_checkpoint(path, codebooks_used=codebooks_used)


# -- our own weights files ------------------------------------------------------


def save_codec(codec: AudioCodec, path: str | os.PathLike, *, meta: dict | None = None) -> tuple[Path, Path]:
    """Write ``path.safetensors`` + ``path.json`` (kind ``audio_codec``, the config, hashes; ``meta`` added)."""
    from unimusic.models.weights import save_weights

    if not isinstance(codec, AudioCodec):
        raise InputError("codec", f"expected an AudioCodec, got {type(codec).__name__}")
    record = dict(meta or {})
    record.update(kind=KIND, format_version=FORMAT_VERSION, config=codec.config)
    return save_weights(codec.model.state_dict(), record, path)


def load_codec(
    path: str | os.PathLike,
    *,
    expected_config: AudioCodecConfig | None = None,
    device: str = "cpu",
) -> AudioCodec:
    """Read weights written by :func:`save_codec`; refuses another kind, format version or
    (given ``expected_config``) config, and a tensor file changed after saving."""
    from unimusic.models.weights import load_weights, weight_paths

    state, meta = load_weights(
        path, kind=KIND, format_version=FORMAT_VERSION, expected_config=expected_config, device="cpu"
    )
    json_path = str(weight_paths(path)[1])
    config = AudioCodecConfig.from_dict(meta["config"], source=json_path)
    model = build_codec(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(json_path, f"weights do not fit the recorded config: {str(exc)[:300]}") from None
    return AudioCodec(model.to(device), config)


# -- metrics --------------------------------------------------------------------


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    x = _mono_float(a, "reference").astype(np.float64)
    y = _mono_float(b, "estimate").astype(np.float64)
    if x.shape != y.shape:
        raise InputError("estimate", f"length {y.size} differs from the reference's {x.size}")
    return x, y


_MEL_LOSS = None


def mel_distance(a: np.ndarray, b: np.ndarray, sample_rate: int) -> float:
    """DAC's multi-scale mel distance (its training mel loss: 7 scales, windows 32..2048,
    L1 of log10 mel magnitudes); 0 for identical signals. Inputs shorter than 2049
    samples are zero-padded (the longest window needs it)."""
    import torch

    global _MEL_LOSS
    x, y = _pair(a, b)
    if not _is_int(sample_rate) or sample_rate <= 0:
        raise InputError("sample_rate", f"must be a positive integer, got {sample_rate!r}")
    if x.size < _MIN_METRIC_SAMPLES:
        x = np.pad(x, (0, _MIN_METRIC_SAMPLES - x.size))
        y = np.pad(y, (0, _MIN_METRIC_SAMPLES - y.size))
    dac = _import_dac()
    from audiotools import AudioSignal

    if _MEL_LOSS is None:
        _MEL_LOSS = dac.nn.loss.MelSpectrogramLoss(**MEL_LOSS_KWARGS)
    # no_grad, not inference_mode: audiotools caches STFT windows (lru_cache) made
    # here, and an inference-mode tensor in that cache breaks any later training
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="stft_data changed shape")
        sx = AudioSignal(torch.from_numpy(x.astype(np.float32))[None, None], int(sample_rate))
        sy = AudioSignal(torch.from_numpy(y.astype(np.float32))[None, None], int(sample_rate))
        return float(_MEL_LOSS(sy, sx))


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """``10 log10(sum ref^2 / sum (ref - est)^2)``; ``inf`` when they are identical."""
    x, y = _pair(reference, estimate)
    signal, noise = float(np.sum(x * x)), float(np.sum((x - y) ** 2))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


# -- training -------------------------------------------------------------------


class CodecTrainer:
    """One DAC training step (GAN: discriminator update, then generator update), as in
    DAC's ``scripts/train.py``: AdamW (betas 0.8/0.99) + ExponentialLR for both
    networks, gradient clipping (generator 1e3, discriminator 10), loss
    ``sum(loss_weights[k] * losses[k])`` over mel / feature-matching / adversarial /
    VQ commitment / codebook losses.

    ``adversarial_start``: steps before it train the generator on mel + VQ losses
    only (the discriminator is neither run nor updated), a cheap warm-up.
    ``gradient_sync(module)`` runs after each backward (data-parallel averaging).
    ``state_dict()`` holds only tensors and plain data: ``torch.save`` it and read it
    back with ``torch.load(weights_only=True)``.
    """

    def __init__(
        self,
        codec_model: "dac.DAC",
        *,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.8, 0.99),
        lr_gamma: float = 0.999996,
        discriminator_kwargs: dict | None = None,
        loss_weights: dict | None = None,
        grad_clip_generator: float = 1e3,
        grad_clip_discriminator: float = 10.0,
        adversarial_start: int = 0,
        gradient_sync=None,
    ):
        import torch

        dac = _import_dac()
        if not isinstance(codec_model, dac.model.DAC):
            raise InputError("codec_model", f"expected a dac.DAC, got {type(codec_model).__name__}")
        weights = dict(DEFAULT_LOSS_WEIGHTS if loss_weights is None else loss_weights)
        allowed = set(DEFAULT_LOSS_WEIGHTS) | {"waveform/loss"}
        unknown = sorted(set(weights) - allowed)
        if unknown:
            raise InputError("loss_weights", f"unknown loss name(s) {unknown}; known: {sorted(allowed)}")
        if not weights or not all(isinstance(w, numbers.Real) and math.isfinite(w) and w >= 0 for w in weights.values()):
            raise InputError("loss_weights", f"need at least one finite weight >= 0, got {weights!r}")
        if not _is_int(adversarial_start) or adversarial_start < 0:
            raise InputError("adversarial_start", f"must be an integer >= 0, got {adversarial_start!r}")
        self.loss_weights = weights
        self.sample_rate = int(codec_model.sample_rate)
        dkw = dict(DEFAULT_DISCRIMINATOR if discriminator_kwargs is None else discriminator_kwargs)
        dkw.setdefault("sample_rate", self.sample_rate)
        self.discriminator_kwargs = dkw
        device = next(codec_model.parameters()).device
        self.generator = codec_model
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            self.discriminator = dac.model.Discriminator(**dkw).to(device)
        self.optimizer_g = torch.optim.AdamW(self.generator.parameters(), lr=lr, betas=tuple(betas))
        self.optimizer_d = torch.optim.AdamW(self.discriminator.parameters(), lr=lr, betas=tuple(betas))
        self.scheduler_g = torch.optim.lr_scheduler.ExponentialLR(self.optimizer_g, lr_gamma)
        self.scheduler_d = torch.optim.lr_scheduler.ExponentialLR(self.optimizer_d, lr_gamma)
        self.mel_loss = dac.nn.loss.MelSpectrogramLoss(**MEL_LOSS_KWARGS)
        self.waveform_loss = dac.nn.loss.L1Loss()
        self.gan_loss = dac.nn.loss.GANLoss(self.discriminator)
        self.grad_clip_generator = float(grad_clip_generator)
        self.grad_clip_discriminator = float(grad_clip_discriminator)
        self.adversarial_start = int(adversarial_start)
        # Called as gradient_sync(module) after each backward (e.g. averaging over data-parallel workers).
        self.gradient_sync = gradient_sync
        self.step_count = 0

    def _check_batch(self, batch):
        import torch

        if not isinstance(batch, torch.Tensor):
            raise InputError("batch", f"expected a torch.Tensor [B, 1, N], got {type(batch).__name__}")
        if batch.ndim != 3 or batch.shape[1] != 1 or batch.shape[0] < 1:
            raise InputError("batch", f"expected shape [B, 1, N], got {tuple(batch.shape)}")
        if batch.shape[2] < MIN_TRAIN_SAMPLES:
            raise InputError("batch", f"windows of {batch.shape[2]} samples; need >= {MIN_TRAIN_SAMPLES}")
        if not batch.is_floating_point() or not bool(torch.isfinite(batch).all()):
            raise InputError("batch", "expected finite float audio")
        return batch.to(next(self.generator.parameters()).device, torch.float32)

    def step(self, batch: "torch.Tensor") -> dict[str, float]:
        """One update of both networks on ``batch`` [B, 1, N] (float audio at the model's rate).

        Returns the losses (``loss`` is the weighted generator total) and
        ``other/grad_norm``, ``other/grad_norm_d``, ``other/learning_rate``, ``step``.
        """
        import torch
        from audiotools import AudioSignal

        batch = self._check_batch(batch)
        g, d = self.generator, self.discriminator
        g.train()
        d.train()
        adversarial = self.step_count >= self.adversarial_start
        signal = AudioSignal(batch, self.sample_rate)
        out = g(batch, self.sample_rate)
        recons = AudioSignal(out["audio"], self.sample_rate)
        losses: dict[str, Any] = {}

        if adversarial:
            losses["adv/disc_loss"] = self.gan_loss.discriminator_loss(recons, signal)
            self.optimizer_d.zero_grad(set_to_none=True)
            losses["adv/disc_loss"].backward()
            if self.gradient_sync is not None:
                self.gradient_sync(d)
            losses["other/grad_norm_d"] = torch.nn.utils.clip_grad_norm_(
                d.parameters(), self.grad_clip_discriminator
            )
            self.optimizer_d.step()
            self.scheduler_d.step()

        with warnings.catch_warnings():  # audiotools re-runs its STFT at each scale and says so
            warnings.filterwarnings("ignore", message="stft_data changed shape")
            losses["mel/loss"] = self.mel_loss(recons, signal)
        losses["waveform/loss"] = self.waveform_loss(recons, signal)
        if adversarial:
            d.requires_grad_(False)  # the generator loss needs no discriminator weight gradients
            try:
                losses["adv/gen_loss"], losses["adv/feat_loss"] = self.gan_loss.generator_loss(recons, signal)
            finally:
                d.requires_grad_(True)
        losses["vq/commitment_loss"] = out["vq/commitment_loss"]
        losses["vq/codebook_loss"] = out["vq/codebook_loss"]
        total = sum(w * losses[k] for k, w in self.loss_weights.items() if k in losses)
        if not isinstance(total, torch.Tensor):
            raise InputError("loss_weights", f"none of {sorted(self.loss_weights)} is computed at step {self.step_count}")
        if not bool(torch.isfinite(total)):
            raise FloatingPointError(f"non-finite generator loss at step {self.step_count}: {float(total)}")
        losses["loss"] = total
        self.optimizer_g.zero_grad(set_to_none=True)
        total.backward()
        if self.gradient_sync is not None:
            self.gradient_sync(g)
        losses["other/grad_norm"] = torch.nn.utils.clip_grad_norm_(g.parameters(), self.grad_clip_generator)
        self.optimizer_g.step()
        self.scheduler_g.step()
        self.step_count += 1
        result = {k: float(v.detach() if hasattr(v, "detach") else v) for k, v in sorted(losses.items())}
        result["other/learning_rate"] = float(self.optimizer_g.param_groups[0]["lr"])
        result["step"] = float(self.step_count)
        return result

    def state_dict(self) -> dict:
        return {
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "optimizer_g": self.optimizer_g.state_dict(),
            "optimizer_d": self.optimizer_d.state_dict(),
            "scheduler_g": self.scheduler_g.state_dict(),
            "scheduler_d": self.scheduler_d.state_dict(),
            "step": self.step_count,
        }

    def load_state_dict(self, state: dict) -> None:
        keys = ("generator", "discriminator", "optimizer_g", "optimizer_d", "scheduler_g", "scheduler_d", "step")
        missing = [k for k in keys if k not in state]
        if missing:
            raise InputError("trainer state", f"missing entries {missing}")
        try:
            self.generator.load_state_dict(state["generator"], strict=True)
            self.discriminator.load_state_dict(state["discriminator"], strict=True)
        except RuntimeError as exc:
            raise InputError("trainer state", f"does not fit these networks: {str(exc)[:300]}") from None
        self.optimizer_g.load_state_dict(state["optimizer_g"])
        self.optimizer_d.load_state_dict(state["optimizer_d"])
        self.scheduler_g.load_state_dict(state["scheduler_g"])
        self.scheduler_d.load_state_dict(state["scheduler_d"])
        self.step_count = int(state["step"])
