"""Whole models built from `course_lib.blocks`: the encoder-decoder Transformer.

Token ids are (B, L) integer tensors; PAD positions are found from `pad_id`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .blocks import DecoderLayer, EncoderLayer
from .masks import decoder_mask, padding_mask
from .positional import LearnedPositionalEmbedding, SinusoidalPositionalEncoding
from .sampling import beam_search
from .utils import check_token_ids, evaluating, fmt_shape

POSITIONAL = {"sinusoidal": SinusoidalPositionalEncoding, "learned": LearnedPositionalEmbedding}


def _check_config(d_model: int, num_heads: int, positional: str) -> None:
    """Raise a ValueError explaining an impossible head split or an unknown positional scheme."""
    if num_heads < 1 or d_model % num_heads != 0:
        raise ValueError(
            f"d_model={d_model} is not divisible by num_heads={num_heads}; "
            "each head gets d_model / num_heads features"
        )
    if positional not in POSITIONAL:
        raise ValueError(f"positional must be one of {sorted(POSITIONAL)}, got {positional!r}")


class Transformer(nn.Module):
    """The encoder-decoder Transformer of "Attention Is All You Need", batch-first."""

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        d_model: int = 64,
        num_heads: int = 4,
        num_encoder_layers: int = 2,
        num_decoder_layers: int = 2,
        d_ff: int = 256,
        dropout: float = 0.0,
        max_len: int = 128,
        pad_id: int = 0,
        norm_first: bool = True,
        positional: str = "sinusoidal",
    ):
        super().__init__()
        _check_config(d_model, num_heads, positional)
        self.config = dict(
            src_vocab_size=src_vocab_size,
            tgt_vocab_size=tgt_vocab_size,
            d_model=d_model,
            num_heads=num_heads,
            num_encoder_layers=num_encoder_layers,
            num_decoder_layers=num_decoder_layers,
            d_ff=d_ff,
            dropout=dropout,
            max_len=max_len,
            pad_id=pad_id,
            norm_first=norm_first,
            positional=positional,
        )  # Transformer(**config) rebuilds this model, e.g. from a checkpoint
        self.d_model, self.pad_id, self.max_len = d_model, pad_id, max_len
        self.src_embed = nn.Embedding(src_vocab_size, d_model)
        self.tgt_embed = nn.Embedding(tgt_vocab_size, d_model)
        for emb in (self.src_embed, self.tgt_embed):  # std 1/sqrt(D): unit scale after * sqrt(D)
            nn.init.normal_(emb.weight, std=d_model**-0.5)
        self.pos = POSITIONAL[positional](d_model, max_len, dropout)
        layer_args = (d_model, num_heads, d_ff, dropout, norm_first)
        self.encoder = nn.ModuleList(EncoderLayer(*layer_args) for _ in range(num_encoder_layers))
        self.decoder = nn.ModuleList(DecoderLayer(*layer_args) for _ in range(num_decoder_layers))
        # pre-LN layers leave the residual stream un-normalised, so normalise it once at the end
        self.encoder_norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()
        self.decoder_norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()
        self.head = nn.Linear(d_model, tgt_vocab_size)  # to logits over the target vocabulary

    def embed(self, tokens: torch.Tensor, table: nn.Embedding) -> torch.Tensor:
        """(B, L) ids -> (B, L, D): embedding * sqrt(D) plus positions."""
        return self.pos(table(tokens) * math.sqrt(self.d_model))  # (B, L, D)

    def encode(self, src: torch.Tensor) -> torch.Tensor:
        """src (B, L_s) ids -> memory (B, L_s, D); PAD positions are never attended to."""
        check_token_ids("src", src, self.src_embed.num_embeddings)
        mask = padding_mask(src, self.pad_id)  # (B, 1, 1, L_s)
        x = self.embed(src, self.src_embed)  # (B, L_s, D)
        for layer in self.encoder:
            x = layer(x, mask)
        return self.encoder_norm(x)  # (B, L_s, D)

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        """tgt_in (B, L_t) ids, memory (B, L_s, D), src (B, L_s) ids -> logits (B, L_t, V_tgt)."""
        check_token_ids("tgt_in", tgt_in, self.tgt_embed.num_embeddings)
        check_token_ids("src", src, self.src_embed.num_embeddings)
        if (
            not isinstance(memory, torch.Tensor)
            or memory.dim() != 3
            or memory.shape[:2] != src.shape
            or tgt_in.shape[0] != src.shape[0]
        ):
            raise ValueError(
                f"memory {fmt_shape(memory.shape)} must be (B, L_s, D) for src "
                f"{fmt_shape(src.shape)} and tgt_in {fmt_shape(tgt_in.shape)} must have the same "
                "B; memory should be encode(src) for this batch"
            )
        tgt_mask = decoder_mask(tgt_in, self.pad_id)  # (B, 1, L_t, L_t): causal AND not PAD
        memory_mask = padding_mask(src, self.pad_id)  # (B, 1, 1, L_s)
        x = self.embed(tgt_in, self.tgt_embed)  # (B, L_t, D)
        for layer in self.decoder:
            x = layer(x, memory, tgt_mask, memory_mask)
        return self.head(self.decoder_norm(x))  # (B, L_t, V_tgt)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: src (B, L_s), tgt_in (B, L_t) = BOS + target[:-1] -> (B, L_t, V_tgt)."""
        return self.decode(tgt_in, self.encode(src), src)

    def _check_decoding(self, src: torch.Tensor, max_len: int, bos_id: int) -> None:
        """Validate the arguments shared by greedy and beam decoding."""
        check_token_ids("src", src, self.src_embed.num_embeddings)
        if not isinstance(max_len, int) or not 1 <= max_len <= self.max_len:
            raise ValueError(
                f"max_len={max_len} must be between 1 and the model's max_len={self.max_len} "
                "(the decoder input BOS + max_len-1 tokens must fit the position table)"
            )
        V = self.tgt_embed.num_embeddings
        if not 0 <= bos_id < V:
            raise ValueError(
                f"bos_id={bos_id} is not in the target vocabulary of {V} ids; "
                "pass the BOS id of the vocabulary the model was trained with"
            )

    def greedy_decode(
        self, src: torch.Tensor, max_len: int, bos_id: int, eos_id: int
    ) -> torch.Tensor:
        """src (B, L_s) -> (B, <=max_len) ids: always the most likely next token.

        The output excludes BOS, includes EOS, and is PAD after EOS; decoding stops once every
        sequence has produced EOS. Runs in eval mode without gradients.
        """
        self._check_decoding(src, max_len, bos_id)
        with evaluating(self):
            memory = self.encode(src)  # (B, L_s, D)
            ys = torch.full((src.shape[0], 1), bos_id, dtype=torch.long, device=src.device)
            done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
            for _ in range(max_len):
                logits = self.decode(ys, memory, src)[:, -1]  # (B, V): only the newest position
                next_id = logits.argmax(dim=-1).masked_fill(done, self.pad_id)  # (B,)
                ys = torch.cat([ys, next_id[:, None]], dim=1)  # (B, t+1)
                done |= next_id == eos_id
                if done.all():
                    break
        return ys[:, 1:]  # drop BOS

    def beam_search(
        self,
        src: torch.Tensor,
        max_len: int,
        bos_id: int,
        eos_id: int,
        beam_size: int = 4,
        length_penalty: float = 0.6,
    ) -> torch.Tensor:
        """src (B, L_s) -> (B, <=max_len) ids, the same format as `greedy_decode`.

        Each sentence is decoded on its own by `sampling.beam_search` and its best hypothesis
        kept: a finished one (ending in EOS) if any, ranked by
        log p / ((5 + len) / 6) ** length_penalty. With beam_size=1 this is greedy decoding.
        """
        self._check_decoding(src, max_len, bos_id)
        with evaluating(self):
            memory = self.encode(src)  # (B, L_s, D)
            best = [
                self._beam_one(src[i : i + 1], memory[i : i + 1], max_len, bos_id, eos_id,
                               beam_size, length_penalty)
                for i in range(src.shape[0])
            ]  # fmt: skip
        out = torch.full((len(best), max(map(len, best))), self.pad_id, dtype=torch.long)
        for i, tokens in enumerate(best):
            out[i, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        return out.to(src.device)  # (B, <=max_len)

    def _beam_one(
        self, src: torch.Tensor, memory: torch.Tensor, max_len: int, bos_id: int, eos_id: int,
        beam_size: int, alpha: float,
    ) -> list[int]:  # fmt: skip
        """Beam search for one sentence: src (1, L_s), memory (1, L_s, D) -> best token list."""
        bos = torch.full((1, 1), bos_id, dtype=torch.long, device=src.device)

        def step(prefixes: torch.Tensor, parents: torch.Tensor) -> torch.Tensor:
            k = prefixes.shape[0]  # no cache: the decoder re-reads BOS + each prefix
            tgt_in = torch.cat([bos.expand(k, 1), prefixes], dim=1)  # (k, 1 + t)
            logits = self.decode(tgt_in, memory.expand(k, -1, -1), src.expand(k, -1))
            return logits[:, -1].log_softmax(dim=-1)  # (k, V)

        hyps = beam_search(step, max_len, eos_id, beam_size, alpha, device=src.device)
        return hyps[0].tokens


# ----------------------------------------------------------------------------
# An encoder-only model that labels every token (notebook 04: what do the heads learn?)


class EncoderTagger(nn.Module):
    """Embedding + positions + a stack of `EncoderLayer`s + a linear read-out at every position.

    tokens (B, L) -> logits (B, L, num_classes). Bidirectional: every position may attend to
    every other one, except PAD keys when `pad_id` is given.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        d_model: int = 32,
        num_heads: int = 4,
        num_layers: int = 2,
        d_ff: int | None = None,
        dropout: float = 0.0,
        max_len: int = 64,
        pad_id: int | None = None,
        norm_first: bool = True,
        positional: str = "learned",
    ):
        super().__init__()
        _check_config(d_model, num_heads, positional)
        self.d_model, self.num_heads, self.pad_id = d_model, num_heads, pad_id
        self.embed = nn.Embedding(vocab_size, d_model)
        nn.init.normal_(self.embed.weight, std=d_model**-0.5)  # unit scale after * sqrt(D)
        self.pos = POSITIONAL[positional](d_model, max_len, dropout)
        d_ff = 4 * d_model if d_ff is None else d_ff
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, num_heads, d_ff, dropout, norm_first) for _ in range(num_layers)
        )
        # pre-LN leaves the residual stream un-normalised: normalise once before the read-out
        self.norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, L) ids -> logits (B, L, num_classes)."""
        check_token_ids("tokens", tokens, self.embed.num_embeddings)
        mask = None if self.pad_id is None else padding_mask(tokens, self.pad_id)  # (B, 1, 1, L)
        x = self.pos(self.embed(tokens) * math.sqrt(self.d_model))  # (B, L, D)
        for layer in self.layers:
            x = layer(x, mask)
        return self.head(self.norm(x))  # (B, L, C)

    def attention_maps(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, L) -> every layer's self-attention weights (num_layers, B, H, L, L).

        Runs in eval mode without gradients; the model's mode is restored afterwards.
        """
        previous = [layer.record_attention for layer in self.layers]
        try:
            for layer in self.layers:
                layer.record_attention = True
            with evaluating(self):
                self(tokens)
            return torch.stack([layer.self_attn_weights for layer in self.layers])
        finally:
            for layer, was in zip(self.layers, previous, strict=True):
                layer.record_attention = was
