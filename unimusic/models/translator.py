"""The multitask translator: one encoder-decoder Transformer for every direction.

A batch is one direction (``source`` -> ``target`` modality). Every sequence is a
stream of *steps*; a step holds up to ``K`` (the most codebooks of any modality)
token slots: single-stream modalities (``lmx``, ``midi``) use slot 0, multi-codebook
ones (``image`` cells, ``audio`` frames) slots ``0..L-1``; special single tokens
(task, SOS, EOS, SEP, image height) use slot 0. Unused slots hold PAD.

Inputs. A step's embedding is the sum of its slots' token embeddings (one shared
``nn.Embedding`` with ``padding_idx=PAD``, so PAD slots add nothing; each codebook
level owns its own id range, so this is a per-codebook embedding), plus a learned
modality embedding, plus two learned position embeddings per modality, one per
axis of the 2-axis positions of :mod:`unimusic.models.positions` (index / time for
MIDI, column / row for image cells...). Positions come from one rule
(:class:`~unimusic.models.positions.PositionTracker`) for training batches and for
generation, so a generated stream is embedded exactly as a training stream.

Network. Pre-LayerNorm encoder (self-attention masked to the real source tokens)
and decoder (causal self-attention, cross-attention to the encoder memory masked
by ``src_mask``), written on ``F.scaled_dot_product_attention`` so generation keeps
a KV cache of the decoder self-attention and computes the cross-attention keys and
values once.

Depth decoder. One decoder step of an image cell or audio frame must produce ``L``
codes that depend on each other (residual quantization: level k refines what
levels < k left). Predicting them independently from the step's hidden state
``h_t`` would mix codes of different modes; flattening them into ``L`` decoder
steps would make sequences ``L`` times longer. A small causal Transformer over the
``L`` levels of one step (RQ-Transformer style) does the factorization
``p(c_0 | h_t) p(c_1 | h_t, c_0) ...`` at the cost of ``L`` tiny positions: input at
level 0 is ``h_t``, at level k it is ``h_t`` + embedding of the level-(k-1) code,
plus a learned (modality, level) embedding. Training uses teacher forcing from
``tgt_out``. Single-stream targets skip it and read logits off ``h_t`` directly.

Masks. The output head spans the whole vocabulary (optionally tied to the input
embedding); logits outside the ids a target modality may emit at that level are
masked (``allowed_mask``): an lmx decoder can only emit LMX ids or EOS, level 2 of
an audio frame only ``audio:2`` codes... So generation never produces a token of
another modality or level, and the loss is spent on the real choices only. When
level 0 of a step is a special token (EOS, SEP, image height) the step has no
other levels: they are PAD in ``tgt_out`` (not scored) and not sampled.

The model takes plain keyword arguments (``translator_kwargs`` builds them from a
:class:`TranslatorConfig` and a vocabulary); it never sees either object.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unimusic.errors import InputError
from unimusic.models.positions import MODALITIES, PositionRules, PositionTracker

MASK_VALUE = -1e4  # logit of a token the target may not emit (finite: exp() is exactly 0 in fp16/fp32)
STRATEGIES = ("greedy", "sample", "beam")


# -- config ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TranslatorConfig:
    d_model: int = 512
    heads: int = 8
    encoder_layers: int = 6
    decoder_layers: int = 6
    ffn: int = 2048  # hidden size of each block's MLP
    depth_layers: int = 2  # layers of the depth decoder (multi-codebook targets)
    dropout: float = 0.1
    max_positions: int = 4096  # per position axis (positions are clamped below it)
    tie_embeddings: bool = True  # output head = input token embedding

    def __post_init__(self):
        def bad(field: str, problem: str):
            raise InputError(f"TranslatorConfig.{field}", problem)

        def is_int(v) -> bool:
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        for name, low in (("d_model", 1), ("heads", 1), ("encoder_layers", 1), ("decoder_layers", 1), ("ffn", 1),
                          ("depth_layers", 0), ("max_positions", 2)):
            value = getattr(self, name)
            if not (is_int(value) and value >= low):
                bad(name, f"expected an integer >= {low}, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.d_model % self.heads:
            bad("heads", f"d_model {self.d_model} is not a multiple of heads {self.heads}")
        if not (isinstance(self.dropout, (int, float, np.floating)) and not isinstance(self.dropout, bool)
                and 0.0 <= float(self.dropout) < 1.0):
            bad("dropout", f"expected a number in [0, 1), got {self.dropout!r}")
        object.__setattr__(self, "dropout", float(self.dropout))
        if not isinstance(self.tie_embeddings, bool):
            bad("tie_embeddings", f"expected true/false, got {self.tie_embeddings!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TranslatorConfig":
        if not isinstance(data, dict):
            raise InputError("translator config", f"expected a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"translator config key {unknown[0]!r}", f"unknown (known: {', '.join(sorted(known))})")
        return cls(**data)


PRESETS: dict[str, dict] = {
    # CPU smoke runs and tests: ~4.5 M parameters, most of them the 10k-token
    # embedding and the position tables.
    "tiny": dict(d_model=128, heads=4, encoder_layers=2, decoder_layers=2, ffn=512, depth_layers=1, dropout=0.0,
                 max_positions=2048, tie_embeddings=True),
    "base": dict(d_model=512, heads=8, encoder_layers=6, decoder_layers=6, ffn=2048, depth_layers=2, dropout=0.1,
                 max_positions=4096, tie_embeddings=True),
    # the reference model's size
    "large": dict(d_model=1024, heads=16, encoder_layers=12, decoder_layers=12, ffn=4096, depth_layers=2,
                  dropout=0.1, max_positions=4096, tie_embeddings=True),
}


def translator_config(preset: str = "tiny", **overrides) -> TranslatorConfig:
    """A preset's config with some fields replaced (unknown preset or field: InputError)."""
    if preset not in PRESETS:
        raise InputError(f"translator preset {preset!r}", f"unknown (have {', '.join(PRESETS)})")
    return TranslatorConfig.from_dict({**PRESETS[preset], **overrides})


def translator_kwargs(config: TranslatorConfig, vocab) -> dict:
    """Plain keyword arguments for :class:`Translator` (the model never sees config or vocabulary)."""
    if not isinstance(config, TranslatorConfig):
        raise InputError("translator config", f"expected a TranslatorConfig, got {type(config).__name__}")
    r = vocab.ranges
    eos = (vocab.eos, vocab.eos + 1)
    sep = (vocab.sep, vocab.sep + 1)

    def span(name: str) -> tuple[int, int]:
        return (r[name].start, r[name].stop)

    codebooks = {"lmx": 1, "midi": 1, "image": vocab.config.image_codebooks, "audio": vocab.config.audio_codebooks}
    level_ranges, code_ranges = [], []
    for m in MODALITIES:
        if m in ("lmx", "midi"):
            level_ranges.append(((span(m), eos),))
            code_ranges.append((span(m),))
            continue
        levels = [(span(f"{m}:0"), span("image_height"), sep, eos) if m == "image" else (span(f"{m}:0"), eos)]
        levels += [(span(f"{m}:{k}"),) for k in range(1, codebooks[m])]
        level_ranges.append(tuple(levels))
        code_ranges.append((span(f"{m}:0"),))
    return dict(
        vocab_size=int(vocab.size), pad_id=int(vocab.pad), eos_id=int(vocab.eos),
        sos_ids=tuple(int(vocab.sos(m)) for m in MODALITIES),
        d_model=config.d_model, heads=config.heads, encoder_layers=config.encoder_layers,
        decoder_layers=config.decoder_layers, ffn=config.ffn, depth_layers=config.depth_layers,
        dropout=config.dropout, max_positions=config.max_positions, tie_embeddings=config.tie_embeddings,
        codebooks=tuple(codebooks[m] for m in MODALITIES), level_ranges=tuple(level_ranges),
        code_ranges=tuple(code_ranges),
        position_rules=PositionRules.from_vocabulary(vocab, max_positions=config.max_positions),
        modality_names=tuple(MODALITIES),
    )


def build_translator(config: TranslatorConfig, vocab) -> "Translator":
    return Translator(**translator_kwargs(config, vocab))


# -- building blocks -----------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head attention on ``F.scaled_dot_product_attention``; keys/values projected separately (caching)."""

    def __init__(self, d_model: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, H, T, d/H)
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv(x).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: torch.Tensor | None = None,
               causal: bool = False) -> torch.Tensor:
        """``x`` queries (B, Tq, d) over keys/values (B, H, Tk, d/H); ``mask`` bool, True = may attend.

        ``causal``: query i is the last ``Tq - i - 1``-th from the end of the keys
        (the queries are the newest ``Tq`` positions, as with a KV cache).
        """
        q = self._split(self.q(x))
        tq, tk = q.shape[2], k.shape[2]
        is_causal = False
        if causal and tq > 1:
            if tq == tk and mask is None:
                is_causal = True
            else:
                tri = torch.ones(tq, tk, dtype=torch.bool, device=x.device).tril(tk - tq)
                mask = tri if mask is None else mask & tri
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        b, h, t, dh = y.shape
        return self.out(y.transpose(1, 2).reshape(b, t, h * dh))

    def self_attend(self, x: torch.Tensor, *, mask: torch.Tensor | None = None, causal: bool = False,
                    cache: dict | None = None) -> torch.Tensor:
        k, v = self.keys_values(x)
        if cache is not None:
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        return self.attend(x, k, v, mask=mask, causal=causal)


class MLP(nn.Module):
    def __init__(self, d_model: int, ffn: int, dropout: float):
        super().__init__()
        self.up = nn.Linear(d_model, ffn)
        self.down = nn.Linear(ffn, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.drop(F.gelu(self.up(x))))


class EncoderBlock(nn.Module):
    """Pre-LN: x + attn(norm(x)); x + mlp(norm(x)). Also the depth decoder's block (causal)."""

    def __init__(self, d_model: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, ffn, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, *, mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        x = x + self.drop(self.attn.self_attend(self.norm1(x), mask=mask, causal=causal))
        return x + self.drop(self.mlp(self.norm2(x)))


class DecoderBlock(nn.Module):
    """Pre-LN: causal self-attention (KV-cacheable), cross-attention to the memory, MLP."""

    def __init__(self, d_model: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = Attention(d_model, heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.cross_attn = Attention(d_model, heads, dropout)
        self.norm3 = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, ffn, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, memory_kv: tuple[torch.Tensor, torch.Tensor], memory_mask: torch.Tensor,
                cache: dict | None = None) -> torch.Tensor:
        x = x + self.drop(self.self_attn.self_attend(self.norm1(x), causal=True, cache=cache))
        x = x + self.drop(self.cross_attn.attend(self.norm2(x), *memory_kv, mask=memory_mask))
        return x + self.drop(self.mlp(self.norm3(x)))


@dataclasses.dataclass(frozen=True, eq=False)
class Generated:
    """One generated target stream.

    ``tokens``: (n, L) int64 model ids, SOS, the prefix and EOS excluded (a step whose
    level 0 is a special token has PAD at its other levels). ``stopped``: EOS was
    produced. ``score``: sum of the model's log-probabilities (temperature 1, masked
    distribution) of every generated token, EOS included, prefix excluded.
    ``logits``: only with ``keep_logits=True``: (steps, L, V) float32 masked
    log-probabilities of each generated step (the EOS step included; greedy/sample).
    """

    tokens: np.ndarray
    stopped: bool
    score: float
    logits: np.ndarray | None = None


# -- the model -----------------------------------------------------------------------


class Translator(nn.Module):
    def __init__(
        self,
        *,
        vocab_size: int,
        pad_id: int,
        eos_id: int,
        sos_ids: Sequence[int],
        d_model: int,
        heads: int,
        encoder_layers: int,
        decoder_layers: int,
        ffn: int,
        depth_layers: int,
        dropout: float,
        max_positions: int,
        tie_embeddings: bool,
        codebooks: Sequence[int],
        level_ranges: Sequence[Sequence[Sequence[tuple[int, int]]]],
        code_ranges: Sequence[Sequence[tuple[int, int]]],
        position_rules: PositionRules,
        modality_names: Sequence[str] = MODALITIES,
    ):
        super().__init__()
        self.modality_names = tuple(modality_names)
        n_mod = len(self.modality_names)
        for name, value in (("sos_ids", sos_ids), ("codebooks", codebooks), ("level_ranges", level_ranges),
                            ("code_ranges", code_ranges)):
            if len(value) != n_mod:
                raise InputError(f"translator {name}", f"expected one entry per modality ({n_mod}), got {len(value)}")
        for m, (levels, ranges) in enumerate(zip(codebooks, level_ranges)):
            if levels < 1 or len(ranges) != levels:
                raise InputError("translator level_ranges", f"modality {self.modality_names[m]!r}: "
                                 f"{len(ranges)} level range lists for {levels} codebooks")
        if position_rules.max_positions > max_positions:
            raise InputError("translator position_rules", f"max_positions {position_rules.max_positions} exceeds "
                             f"the model's {max_positions}")
        self.vocab_size, self.pad_id, self.eos_id = int(vocab_size), int(pad_id), int(eos_id)
        self.sos_ids = tuple(int(s) for s in sos_ids)
        self.d_model, self.max_positions = int(d_model), int(max_positions)
        self.codebooks = tuple(int(c) for c in codebooks)
        self.slots = max(self.codebooks)  # K
        self.level_ranges = tuple(tuple(tuple((int(a), int(b)) for a, b in lv) for lv in m) for m in level_ranges)
        self.code_ranges = tuple(tuple((int(a), int(b)) for a, b in m) for m in code_ranges)
        self.position_rules = position_rules
        self.tie_embeddings = bool(tie_embeddings)

        self.token_emb = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        self.modality_emb = nn.Embedding(n_mod, d_model)
        self.pos_a = nn.Embedding(n_mod * max_positions, d_model)  # row m * max_positions + a
        self.pos_b = nn.Embedding(n_mod * max_positions, d_model)
        self.level_emb = nn.Embedding(n_mod * self.slots, d_model)  # depth decoder: row m * K + level
        self.encoder = nn.ModuleList(EncoderBlock(d_model, heads, ffn, dropout) for _ in range(encoder_layers))
        self.encoder_norm = nn.LayerNorm(d_model)
        self.decoder = nn.ModuleList(DecoderBlock(d_model, heads, ffn, dropout) for _ in range(decoder_layers))
        self.decoder_norm = nn.LayerNorm(d_model)
        self.depth = nn.ModuleList(EncoderBlock(d_model, heads, ffn, dropout) for _ in range(depth_layers))
        self.depth_norm = nn.LayerNorm(d_model)
        self.embed_drop = nn.Dropout(dropout)
        self.head = None if self.tie_embeddings else nn.Linear(d_model, vocab_size, bias=False)

        allowed = torch.zeros(n_mod, self.slots, vocab_size, dtype=torch.bool)
        is_code = torch.zeros(n_mod, vocab_size, dtype=torch.bool)
        for m in range(n_mod):
            for level, ranges in enumerate(self.level_ranges[m]):
                for a, b in ranges:
                    allowed[m, level, a:b] = True
            for a, b in self.code_ranges[m]:
                is_code[m, a:b] = True
        self.register_buffer("allowed_mask", allowed, persistent=False)  # (modalities, K, V)
        self.register_buffer("code_mask", is_code, persistent=False)  # level-0 ids that carry levels 1..L-1
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
        with torch.no_grad():
            self.token_emb.weight[self.pad_id].zero_()

    def count_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- pieces ------------------------------------------------------------------------
    def _modality(self, name: str) -> int:
        if name not in self.modality_names:
            raise InputError(f"modality {name!r}", f"unknown (have {', '.join(self.modality_names)})")
        return self.modality_names.index(name)

    def _embed(self, tokens: torch.Tensor, positions: torch.Tensor, m: int) -> torch.Tensor:
        """(B, T, K) ids + (B, T, 2) positions -> (B, T, d)."""
        top = self.max_positions - 1
        a = positions[..., 0].clamp(0, top) + m * self.max_positions
        b = positions[..., 1].clamp(0, top) + m * self.max_positions
        x = self.token_emb(tokens).sum(dim=-2) + self.modality_emb.weight[m] + self.pos_a(a) + self.pos_b(b)
        return self.embed_drop(x)

    def _encode(self, src: torch.Tensor, src_pos: torch.Tensor, src_mask: torch.Tensor, m: int) -> torch.Tensor:
        x = self._embed(src, src_pos, m)
        mask = src_mask[:, None, None, :]
        for block in self.encoder:
            x = block(x, mask=mask)
        return self.encoder_norm(x)

    def _memory(self, src, src_pos, src_mask, m: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Cross-attention keys/values of every decoder layer (computed once per source)."""
        memory = self._encode(src, src_pos, src_mask, m)
        return [block.cross_attn.keys_values(memory) for block in self.decoder]

    def _decode(self, tokens, positions, m: int, memory_kv, src_mask, caches: list[dict] | None = None) -> torch.Tensor:
        x = self._embed(tokens, positions, m)
        mask = src_mask[:, None, None, :]
        for i, block in enumerate(self.decoder):
            x = block(x, memory_kv[i], mask, None if caches is None else caches[i])
        return self.decoder_norm(x)

    def _depth(self, h: torch.Tensor, prev: torch.Tensor, m: int) -> torch.Tensor:
        """Depth decoder over levels ``0..n-1`` of N steps: ``h`` (N, d), ``prev`` (N, n-1) codes of levels 0..n-2."""
        n = prev.shape[1] + 1
        levels = torch.arange(n, device=h.device) + m * self.slots
        x = h[:, None, :] + self.level_emb(levels)
        if n > 1:
            x = x + F.pad(self.token_emb(prev), (0, 0, 1, 0))  # level k gets the code of level k-1; PAD adds 0
        for block in self.depth:
            x = block(x, causal=True)
        return self.depth_norm(x)

    def _logits(self, x: torch.Tensor, m: int, levels: slice) -> torch.Tensor:
        """(..., n, d) hidden states of levels ``levels`` -> (..., n, V) masked logits."""
        weight = self.token_emb.weight if self.head is None else self.head.weight
        logits = F.linear(x, weight)
        return logits.masked_fill(~self.allowed_mask[m, levels], MASK_VALUE)

    # -- training ----------------------------------------------------------------------
    def _tensors(self, *arrays):
        """Tensors on the model's device (numpy arrays from a collate function are accepted too)."""
        device = self.token_emb.weight.device
        return [None if a is None else torch.as_tensor(a, device=device) for a in arrays]

    def _check_batch(self, src, src_pos, src_mask, tgt_in, tgt_pos, tgt_out) -> None:
        b, s = src.shape[:2]
        if src.dim() != 3 or src_pos.shape != (b, s, 2) or src_mask.shape != (b, s):
            raise InputError("translator batch", f"src {tuple(src.shape)}, src_pos {tuple(src_pos.shape)}, "
                             f"src_mask {tuple(src_mask.shape)} do not fit (B, S, K), (B, S, 2), (B, S)")
        if tgt_in is not None:
            t = tgt_in.shape[1]
            if tgt_in.dim() != 3 or tgt_in.shape[0] != b or tgt_pos.shape != (b, t, 2):
                raise InputError("translator batch", f"tgt_in {tuple(tgt_in.shape)}, tgt_pos {tuple(tgt_pos.shape)} "
                                 f"do not fit (B={b}, T, K), (B, T, 2)")
            if tgt_out is not None and tgt_out.shape != tgt_in.shape:
                raise InputError("translator batch", f"tgt_out {tuple(tgt_out.shape)} differs from tgt_in "
                                 f"{tuple(tgt_in.shape)}")

    def _hidden(self, *, src, src_pos, src_mask, source, tgt_in, tgt_pos, target, tgt_out) -> tuple[torch.Tensor, int]:
        """Teacher-forced hidden states (B, T, L, d) of every target level, and the target's modality index."""
        ms, mt = self._modality(source), self._modality(target)
        src, src_pos, src_mask, tgt_in, tgt_pos, tgt_out = self._tensors(src, src_pos, src_mask, tgt_in, tgt_pos,
                                                                         tgt_out)
        self._check_batch(src, src_pos, src_mask, tgt_in, tgt_pos, tgt_out)
        src_mask = src_mask.bool()
        memory_kv = self._memory(src, src_pos, src_mask, ms)
        h = self._decode(tgt_in, tgt_pos, mt, memory_kv, src_mask)
        levels = self.codebooks[mt]
        if levels == 1:
            return h[:, :, None, :], mt
        if tgt_out is None:
            raise InputError(f"target {target!r}", f"{levels} codebooks: tgt_out is needed for teacher forcing")
        b, t, d = h.shape
        z = self._depth(h.reshape(b * t, d), tgt_out[..., : levels - 1].reshape(b * t, levels - 1), mt)
        return z.view(b, t, levels, d), mt

    def forward(self, *, src, src_pos, src_mask, source: str, tgt_in, tgt_pos, target: str, tgt_out=None):
        """Teacher-forced masked logits (B, T, L, V), L = 1 for lmx/midi, else the target's codebooks."""
        z, mt = self._hidden(src=src, src_pos=src_pos, src_mask=src_mask, source=source, tgt_in=tgt_in,
                             tgt_pos=tgt_pos, target=target, tgt_out=tgt_out)
        return self._logits(z, mt, slice(0, z.shape[2]))

    def loss(self, *, src, src_pos, src_mask, source: str, tgt_in, tgt_pos, target: str, tgt_out) -> dict:
        """``loss``: mean cross-entropy over scored entries (tgt_out != PAD); ``tokens``, ``correct``: counts.

        Equal to the cross-entropy of :meth:`forward`'s masked logits, computed only
        for scored entries and over the ids their level allows (a masked logit has
        probability exactly 0): about 10x less head work than the full vocabulary.
        A scored target id outside its level's allowed ids is an InputError.
        """
        if tgt_out is None:
            raise InputError("tgt_out", "the loss needs the targets")
        tgt_out, = self._tensors(tgt_out)
        z, mt = self._hidden(src=src, src_pos=src_pos, src_mask=src_mask, source=source, tgt_in=tgt_in,
                             tgt_pos=tgt_pos, target=target, tgt_out=tgt_out)
        weight = self.token_emb.weight if self.head is None else self.head.weight
        total, count, correct = z.new_zeros((), dtype=torch.float32), 0, 0
        for k in range(z.shape[2]):
            ids = self.allowed_mask[mt, k].nonzero()[:, 0]
            lookup = torch.full((self.vocab_size,), -1, dtype=torch.long, device=ids.device)
            lookup[ids] = torch.arange(len(ids), device=ids.device)
            labels = tgt_out[..., k]
            scored = labels != self.pad_id
            local = lookup[labels[scored]]
            if bool((local < 0).any()):
                bad = int(labels[scored][local < 0][0])
                raise InputError("tgt_out", f"id {bad} at level {k} is not a token a {target} target may emit")
            logits = F.linear(z[..., k, :][scored], weight[ids]).float()
            total = total + F.cross_entropy(logits, local, reduction="sum")
            count += int(local.numel())
            correct += int((logits.argmax(-1) == local).sum()) if local.numel() else 0
        return {"loss": total / max(count, 1), "tokens": count, "correct": correct}

    # -- generation --------------------------------------------------------------------
    def _prefixes(self, prefix, batch: int, levels: int, device) -> list[torch.Tensor]:
        if prefix is None:
            return [torch.zeros(0, self.slots, dtype=torch.long, device=device) for _ in range(batch)]
        if len(prefix) != batch:
            raise InputError("prefix", f"expected one array per batch item ({batch}), got {len(prefix)}")
        out = []
        for i, p in enumerate(prefix):
            arr = np.asarray(p if p is not None else np.zeros((0, levels)), dtype=np.int64)
            if arr.ndim == 1 and levels == 1:
                arr = arr[:, None]
            if arr.ndim != 2 or arr.shape[1] != levels:
                raise InputError(f"prefix {i}", f"expected shape (steps, {levels}), got {arr.shape}")
            if arr.size and (arr.min() < 0 or arr.max() >= self.vocab_size or (arr[:, 0] == self.eos_id).any()):
                raise InputError(f"prefix {i}", f"ids must be in 0..{self.vocab_size - 1} and not EOS")
            full = np.full((arr.shape[0], self.slots), self.pad_id, dtype=np.int64)
            full[:, :levels] = arr
            out.append(torch.as_tensor(full, device=device))
        return out

    def _step(self, h: torch.Tensor, m: int, pick: Callable, forced: torch.Tensor | None, forced_rows: torch.Tensor,
              keep_logits: bool):
        """One decoder step's codes for N rows: (N, L) ids, (N,) summed log-prob, (N, L, V) log-probs or None.

        Level by level through the depth decoder (multi-codebook). ``forced_rows`` take
        ``forced``'s codes (prefix context; log-prob 0). A row whose level 0 is not a
        code (EOS, SEP, image height) gets PAD at the other levels (log-prob 0).
        """
        levels = self.codebooks[m]
        n = h.shape[0]
        tokens = torch.full((n, levels), self.pad_id, dtype=torch.long, device=h.device)
        total = torch.zeros(n, dtype=torch.float64, device=h.device)
        special = torch.zeros(n, dtype=torch.bool, device=h.device)
        kept = []
        for k in range(levels):
            z = h if levels == 1 else self._depth(h, tokens[:, :k], m)[:, k]
            logits = self._logits(z, m, k).float()
            logits = logits.masked_fill(~self.allowed_mask[m, k], float("-inf"))
            logp = torch.log_softmax(logits, dim=-1)
            if keep_logits:
                kept.append(logp)
            choice = pick(logits)
            if forced is not None:
                choice = torch.where(forced_rows, forced[:, k], choice)
            if k == 0:
                special = ~self.code_mask[m, choice] if levels > 1 else special
            else:
                choice = torch.where(special, self.pad_id, choice)
            gained = logp.gather(1, choice[:, None])[:, 0].double()
            skip = forced_rows | special if k > 0 else forced_rows
            total += torch.where(skip, torch.zeros_like(gained), gained)
            tokens[:, k] = choice
        return tokens, total, (torch.stack(kept, dim=1) if keep_logits else None)

    @staticmethod
    def _sampler(temperature: float, top_p: float, generator) -> Callable:
        def pick(logits: torch.Tensor) -> torch.Tensor:
            probs = torch.softmax(logits / temperature, dim=-1)
            if top_p < 1.0:
                sorted_p, order = probs.sort(dim=-1, descending=True)
                keep = (sorted_p.cumsum(-1) - sorted_p) < top_p  # the most likely token is always kept
                sorted_p = sorted_p * keep
                choice = torch.multinomial(sorted_p, 1, generator=generator)
                return order.gather(1, choice)[:, 0]
            return torch.multinomial(probs, 1, generator=generator)[:, 0]

        return pick

    @torch.inference_mode()
    def generate(self, *, src, src_pos, src_mask, source: str, target: str, max_steps: int,
                 strategy: str = "greedy", temperature: float = 1.0, top_p: float = 1.0, beam_size: int = 4,
                 length_penalty: float = 0.0, prefix: Sequence[np.ndarray] | None = None,
                 generator: torch.Generator | None = None, use_cache: bool = True,
                 keep_logits: bool = False) -> list[Generated]:
        """Target streams for a batch of sources (see :class:`Generated`).

        ``max_steps``: most generated steps per item (EOS included, prefix not counted).
        ``greedy``: argmax per level; ``sample``: temperature + nucleus (``top_p``)
        sampling per level, reproducible with ``generator`` (on the model's device);
        ``beam`` (lmx/midi targets only): beam search of ``beam_size`` keeping the
        finished hypothesis of best ``score / length ** length_penalty`` (length in
        steps, EOS included; the default 0 ranks by plain summed log-probability and
        stops an item as soon as no open beam can beat its best finished one).
        ``prefix``: per item, (p, L) model ids fed after SOS as context (not returned).
        ``use_cache=False`` recomputes the whole decoder prefix each step (tests).
        Runs in eval mode (the module's mode is restored afterwards).
        """
        ms, mt = self._modality(source), self._modality(target)
        if strategy not in STRATEGIES:
            raise InputError(f"strategy {strategy!r}", f"unknown (have {', '.join(STRATEGIES)})")
        if isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer)) or max_steps < 0:
            raise InputError("max_steps", f"expected an integer >= 0, got {max_steps!r}")
        if strategy == "sample":
            if not (temperature > 0 and math.isfinite(temperature)):
                raise InputError("temperature", f"expected a number > 0, got {temperature!r}")
            if not 0.0 < top_p <= 1.0:
                raise InputError("top_p", f"expected a number in (0, 1], got {top_p!r}")
        if strategy == "beam":
            if self.codebooks[mt] != 1:
                raise InputError(f"target {target!r}", "beam search supports single-stream targets (lmx, midi) only")
            if isinstance(beam_size, bool) or not isinstance(beam_size, (int, np.integer)) or beam_size < 1:
                raise InputError("beam_size", f"expected an integer >= 1, got {beam_size!r}")
        src, src_pos, src_mask = self._tensors(src, src_pos, src_mask)
        self._check_batch(src, src_pos, src_mask, None, None, None)
        was_training = self.training
        self.eval()
        try:
            src_mask = src_mask.bool()
            prefixes = self._prefixes(prefix, src.shape[0], self.codebooks[mt], src.device)
            memory_kv = self._memory(src, src_pos, src_mask, ms)
            if strategy == "beam":
                return self._beam(memory_kv, src_mask, mt, prefixes, int(max_steps), int(beam_size),
                                  float(length_penalty), use_cache)
            pick = (lambda logits: logits.argmax(-1)) if strategy == "greedy" else \
                self._sampler(float(temperature), float(top_p), generator)
            return self._search(memory_kv, src_mask, mt, prefixes, int(max_steps), pick, use_cache, keep_logits)
        finally:
            self.train(was_training)

    def _start(self, memory_kv, src_mask, m: int, prefixes: list[torch.Tensor], use_cache: bool):
        """Decoder state after SOS + the prefix part all rows share; the rest of each prefix is forced later."""
        n = len(prefixes)
        common = min(p.shape[0] for p in prefixes)
        first = torch.full((n, 1 + common, self.slots), self.pad_id, dtype=torch.long, device=src_mask.device)
        first[:, 0, 0] = self.sos_ids[m]
        for i, p in enumerate(prefixes):
            first[i, 1:] = p[:common]
        state = _DecoderState(self, m, memory_kv, src_mask, use_cache)
        h = state.feed(first)
        forced = [p[common:] for p in prefixes]
        return state, h, forced

    def _forced(self, forced: list[torch.Tensor], t: int, device):
        rows = torch.tensor([t < len(f) for f in forced], dtype=torch.bool, device=device)
        if not rows.any():
            return None, rows
        codes = torch.stack([f[t] if t < len(f) else f.new_full((self.slots,), self.pad_id) for f in forced])
        return codes, rows

    def _search(self, memory_kv, src_mask, m: int, prefixes, max_steps: int, pick, use_cache: bool,
                keep_logits: bool) -> list[Generated]:
        n, levels = len(prefixes), self.codebooks[m]
        out: list[list[np.ndarray]] = [[] for _ in range(n)]
        kept: list[list[np.ndarray]] = [[] for _ in range(n)]
        scores = [0.0] * n
        stopped = [False] * n
        done = [max_steps == 0] * n
        if max_steps > 0:
            state, h, forced = self._start(memory_kv, src_mask, m, prefixes, use_cache)
            t = 0
            while True:
                codes, rows = self._forced(forced, t, h.device)
                step, gained, logp = self._step(h, m, pick, codes, rows, keep_logits)
                step_np, gained_np = step.cpu().numpy(), gained.cpu().numpy()
                for i in range(n):
                    if done[i] or bool(rows[i]):
                        continue
                    scores[i] += float(gained_np[i])
                    if keep_logits:
                        kept[i].append(logp[i].cpu().numpy())
                    if step_np[i, 0] == self.eos_id:
                        stopped[i] = done[i] = True
                        continue
                    out[i].append(step_np[i])
                    done[i] = len(out[i]) >= max_steps
                if all(done):
                    break
                feed = torch.full((n, 1, self.slots), self.pad_id, dtype=torch.long, device=h.device)
                feed[:, 0, :levels] = step
                feed[torch.tensor(done, device=h.device)] = self.pad_id
                h = state.feed(feed)
                t += 1
        return [
            Generated(
                tokens=np.stack(out[i]).astype(np.int64) if out[i] else np.zeros((0, levels), dtype=np.int64),
                stopped=stopped[i], score=scores[i],
                logits=(np.stack(kept[i]) if kept[i] else np.zeros((0, levels, self.vocab_size), np.float32))
                if keep_logits else None,
            )
            for i in range(n)
        ]

    def _beam(self, memory_kv, src_mask, m: int, prefixes, max_steps: int, width: int, alpha: float,
              use_cache: bool) -> list[Generated]:
        batch = len(prefixes)
        if max_steps == 0:
            return [Generated(tokens=np.zeros((0, 1), np.int64), stopped=False, score=0.0) for _ in range(batch)]
        rows = torch.arange(batch, device=src_mask.device).repeat_interleave(width)
        memory_kv = [(k[rows], v[rows]) for k, v in memory_kv]
        state, h, forced = self._start(memory_kv, src_mask[rows], m, [prefixes[i] for i in rows.tolist()], use_cache)
        offsets = [len(forced[i * width]) for i in range(batch)]  # forced steps of each item
        vocab = self.vocab_size
        scores = torch.full((batch, width), float("-inf"), dtype=torch.float64, device=h.device)
        scores[:, 0] = 0.0
        history = torch.zeros(batch * width, 0, dtype=torch.long, device=h.device)  # chosen ids (forced included)
        finished: list[list[tuple[float, float, np.ndarray]]] = [[] for _ in range(batch)]
        done = [False] * batch
        t = 0
        while True:
            logits = self._logits(h, m, 0).float().masked_fill(~self.allowed_mask[m, 0], float("-inf"))
            logp = torch.log_softmax(logits, dim=-1).double()
            codes, forced_rows = self._forced(forced, t, h.device)
            if codes is not None:
                only = torch.full_like(logp, float("-inf"))
                only.scatter_(1, codes[:, :1], 0.0)
                logp = torch.where(forced_rows[:, None], only, logp)
            cand = (scores[:, :, None] + logp.view(batch, width, vocab)).view(batch, width * vocab)
            top_scores, top_index = cand.topk(min(2 * width, width * vocab), dim=-1)
            top_scores, top_index = top_scores.cpu().numpy(), top_index.cpu().numpy()
            src_rows = np.zeros(batch * width, dtype=np.int64)
            new_tokens = np.full(batch * width, self.pad_id, dtype=np.int64)
            new_scores = np.full((batch, width), -np.inf)
            history_np = history.cpu().numpy()
            for b in range(batch):
                src_rows[b * width:(b + 1) * width] = b * width
                if done[b]:
                    continue
                generated = t - offsets[b] + 1  # steps generated for this item after this one (EOS included)
                fill = 0
                for score, flat in zip(top_scores[b], top_index[b]):
                    if not np.isfinite(score) or fill == width:
                        break
                    beam, token = divmod(int(flat), vocab)
                    if token == self.eos_id and generated > 0:
                        tokens = history_np[b * width + beam, offsets[b]:]
                        finished[b].append((score / generated ** alpha, float(score), tokens))
                        continue
                    src_rows[b * width + fill] = b * width + beam
                    new_tokens[b * width + fill] = token
                    new_scores[b, fill] = score
                    fill += 1
                best_open = new_scores[b].max()
                if generated >= max_steps or not np.isfinite(best_open):
                    done[b] = True
                elif finished[b]:
                    best = max(f[0] for f in finished[b])
                    done[b] = best >= best_open if alpha == 0.0 else len(finished[b]) >= width
            index = torch.as_tensor(src_rows, device=h.device)
            step = torch.as_tensor(new_tokens, device=h.device)
            history = torch.cat([history[index], step[:, None]], dim=1)
            scores = torch.as_tensor(new_scores, device=h.device)
            if all(done):
                break
            state.reorder(index)
            feed = torch.full((batch * width, 1, self.slots), self.pad_id, dtype=torch.long, device=h.device)
            feed[:, 0, 0] = step
            h = state.feed(feed)
            t += 1
        results = []
        history_np, scores_np = history.cpu().numpy(), scores.cpu().numpy()
        for b in range(batch):
            if finished[b]:
                _, score, tokens = max(finished[b], key=lambda f: f[0])
                results.append(Generated(tokens=tokens[:, None].astype(np.int64), stopped=True, score=score))
            else:
                beam = int(np.argmax(scores_np[b]))
                tokens = history_np[b * width + beam, offsets[b]:]
                results.append(Generated(tokens=tokens[:, None].astype(np.int64), stopped=False,
                                         score=float(scores_np[b, beam])))
        return results


class _DecoderState:
    """Decoder inputs so far (tokens, positions via one PositionTracker per row) and the KV cache."""

    def __init__(self, model: Translator, m: int, memory_kv, src_mask, use_cache: bool):
        self.model, self.m, self.memory_kv, self.src_mask = model, m, memory_kv, src_mask
        n = src_mask.shape[0]
        self.trackers = [PositionTracker(model.position_rules, model.modality_names[m]) for _ in range(n)]
        self.caches = [dict() for _ in model.decoder] if use_cache else None
        self.tokens = self.positions = None

    def feed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append (N, n, K) steps; the last step's decoder output (N, d)."""
        level0 = tokens[:, :, 0].cpu().tolist()
        pos = torch.tensor([[tr.advance(int(tok)) for tok in row] for tr, row in zip(self.trackers, level0)],
                           dtype=torch.long, device=tokens.device).view(tokens.shape[0], tokens.shape[1], 2)
        if self.tokens is None:
            self.tokens, self.positions = tokens, pos
        else:
            self.tokens = torch.cat([self.tokens, tokens], dim=1)
            self.positions = torch.cat([self.positions, pos], dim=1)
        if self.caches is not None:
            x = self.model._decode(tokens, pos, self.m, self.memory_kv, self.src_mask, self.caches)
        else:
            x = self.model._decode(self.tokens, self.positions, self.m, self.memory_kv, self.src_mask)
        return x[:, -1]

    def reorder(self, index: torch.Tensor) -> None:
        """Rows become rows ``index`` (beam search; the memory is the same within an item)."""
        self.trackers = [copy.copy(self.trackers[i]) for i in index.tolist()]
        self.tokens, self.positions = self.tokens[index], self.positions[index]
        if self.caches is not None:
            for cache in self.caches:
                cache["k"], cache["v"] = cache["k"][index], cache["v"][index]
