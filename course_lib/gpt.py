"""A decoder-only language model in the style of GPT-2 / nanoGPT, with a KV cache and beam search.

    tokens (B, T) -> token embedding + position embedding -> N pre-LN blocks of causal
    self-attention and feed-forward -> final LayerNorm -> linear head (tied to the token
    embedding) -> logits (B, T, V) for the *next* token at every position.

The KV cache: `forward(idx, past_kv=past, use_cache=True)` returns `(logits, loss, present_kv)`
where `present_kv` holds, for every layer, the keys and values of all positions so far as a
pair `(k, v)` of (B, H, T_past + T, d_k) tensors. Feeding only the newest token with that cache
gives the same logits as recomputing the whole prefix.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MultiHeadAttention, merge_heads, scaled_dot_product_attention, split_heads
from .blocks import FeedForward
from .masks import causal_mask
from .positional import sinusoidal_encoding
from .sampling import Hypothesis, beam_search, sample_next
from .utils import check_token_ids, evaluating, fmt_shape

KV = tuple[torch.Tensor, torch.Tensor]  # one layer's (keys, values), each (B, H, T, d_k)
PastKV = tuple[KV, ...]  # one (k, v) pair per layer


class CausalSelfAttention(MultiHeadAttention):
    """Multi-head self-attention where position t sees positions <= t, with an optional KV cache.

    The projections w_q, w_k, w_v, w_o are those of `course_lib.attention.MultiHeadAttention`.
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0):
        super().__init__(d_model, num_heads, dropout)
        self.record_attention = False  # True (or blocks.recording_attention) keeps the weights
        self.attn_weights: torch.Tensor | None = None  # (B, H, T, T_past + T) when recorded

    def forward(self, x: torch.Tensor, past_kv: KV | None = None) -> tuple[torch.Tensor, KV]:
        """x (B, T, D), past (k, v) (B, H, T_past, d_k) -> (out (B, T, D), (k, v) of all T_past + T)."""
        self._check_inputs(x=x)
        q = split_heads(self.w_q(x), self.num_heads)  # (B, H, T, d_k)
        k = split_heads(self.w_k(x), self.num_heads)  # (B, H, T, d_k)
        v = split_heads(self.w_v(x), self.num_heads)
        if past_kv is not None:  # the cached positions come first
            k = torch.cat([past_kv[0], k], dim=2)  # (B, H, T_past + T, d_k)
            v = torch.cat([past_kv[1], v], dim=2)
        T, T_all = q.shape[2], k.shape[2]
        p = self.dropout if self.training else 0.0
        if self.record_attention:
            mask = causal_mask(T_all, device=x.device)[..., T_all - T :, :]  # (1, 1, T, T_all)
            out, weights = scaled_dot_product_attention(q, k, v, mask, dropout_p=p)
            self.attn_weights = weights.detach()
        elif T == 1:  # one new token may see every cached one: no mask needed
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        elif T == T_all:  # no cache: the plain lower-triangular mask
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:  # several new tokens after a cache: query i sits at position T_past + i
            mask = causal_mask(T_all, device=x.device)[..., T_all - T :, :]  # (1, 1, T, T_all)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.w_o(merge_heads(out)), (k, v)  # (B, T, D)


class GPTBlock(nn.Module):
    """Pre-LN decoder block without cross-attention: x + attn(LN(x)), then x + FFN(LN(x))."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, num_heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, d_ff, dropout, activation="gelu")
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, past_kv: KV | None = None) -> tuple[torch.Tensor, KV]:
        """x (B, T, D) -> (x (B, T, D), this layer's (k, v) for the cache)."""
        out, kv = self.attn(self.norm1(x), past_kv)
        x = x + self.dropout1(out)
        x = x + self.dropout2(self.ff(self.norm2(x)))
        return x, kv


class GPT(nn.Module):
    """Decoder-only Transformer language model: predicts token t+1 from tokens 0..t."""

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 128,
        num_heads: int = 4,
        num_layers: int = 4,
        d_ff: int | None = None,
        max_len: int = 64,
        dropout: float = 0.0,
        positional: str = "learned",
    ):
        super().__init__()
        if num_heads < 1 or d_model % num_heads != 0:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        if positional not in ("learned", "sinusoidal"):
            raise ValueError(f"positional must be 'learned' or 'sinusoidal', got {positional!r}")
        d_ff = 4 * d_model if d_ff is None else d_ff
        self.config = dict(
            vocab_size=vocab_size,
            d_model=d_model,
            num_heads=num_heads,
            num_layers=num_layers,
            d_ff=d_ff,
            max_len=max_len,
            dropout=dropout,
            positional=positional,
        )  # GPT(**config) rebuilds the model, e.g. from a checkpoint
        self.vocab_size, self.d_model, self.max_len = vocab_size, d_model, max_len
        self.tok_embed = nn.Embedding(vocab_size, d_model)
        if positional == "learned":
            self.pos_embed = nn.Embedding(max_len, d_model)
        else:
            self.pos_embed = None
            self.register_buffer("pos_table", sinusoidal_encoding(max_len, d_model), False)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            GPTBlock(d_model, num_heads, d_ff, dropout) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)  # pre-LN leaves the residual stream un-normalised
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.head.weight = self.tok_embed.weight  # weight tying: one (V, D) matrix, used twice
        self._init_weights(num_layers)
        assert self.head.weight is self.tok_embed.weight, "the LM head must share the embedding"

    @torch.no_grad()
    def _init_weights(self, num_layers: int) -> None:
        """GPT-2's initialisation: N(0, 0.02), zero biases, residual outputs scaled by 1/sqrt(2N)."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for block in self.blocks:  # each block adds to the residual stream twice
            for lin in (block.attn.w_o, block.ff.linear2):
                nn.init.normal_(lin.weight, std=0.02 / math.sqrt(2 * num_layers))

    def _positions(self, T: int, offset: int, device: torch.device) -> torch.Tensor:
        """(T, D) position vectors for positions offset .. offset + T - 1."""
        if self.pos_embed is None:
            return self.pos_table[offset : offset + T]
        return self.pos_embed(torch.arange(offset, offset + T, device=device))

    def _check(self, idx: torch.Tensor, past_kv: PastKV | None) -> int:
        """Validate the input ids and the cache; return the number of cached positions."""
        check_token_ids("idx", idx, self.vocab_size)
        past_len = 0
        if past_kv is not None:
            if len(past_kv) != len(self.blocks):
                raise ValueError(
                    f"past_kv has {len(past_kv)} layers, the model {len(self.blocks)}; pass "
                    "the present_kv returned by the previous call unchanged"
                )
            k0 = past_kv[0][0]
            if k0.dim() != 4 or k0.shape[0] != idx.shape[0]:
                raise ValueError(
                    f"cached keys {fmt_shape(k0.shape)} should be (B, H, T_past, d_k) with "
                    f"B = {idx.shape[0]}, the batch size of idx"
                )
            past_len = k0.shape[2]
        if past_len + idx.shape[1] > self.max_len:
            raise ValueError(
                f"{past_len} cached + {idx.shape[1]} new positions exceed max_len={self.max_len}; "
                "keep only the last max_len tokens (generate does this for you)"
            )
        return past_len

    def _check_targets(self, targets: torch.Tensor) -> None:
        """Raise a ValueError unless every target is a token id in [0, V) or the ignore mark -100."""
        if targets.dtype.is_floating_point or targets.dtype == torch.bool:
            raise ValueError(f"targets must hold integer token ids, got dtype {targets.dtype}")
        real = targets[targets != -100]  # -100 marks positions to ignore
        if real.numel() == 0:
            return
        lo, hi = (int(t) for t in torch.aminmax(real))
        if lo < 0 or hi >= self.vocab_size:
            raise ValueError(
                f"targets contains the token id {lo if lo < 0 else hi}, but the vocabulary has "
                f"{self.vocab_size} ids (0 to {self.vocab_size - 1}; -100 marks positions to "
                "ignore); were the targets made with a vocabulary from another data set?"
            )

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        past_kv: PastKV | None = None,
        use_cache: bool = False,
    ):
        """idx (B, T) -> (logits (B, T, V), loss) or, with use_cache, (logits, loss, present_kv).

        `targets` (B, T) are the next tokens, usually idx shifted left by one; loss is their mean
        cross-entropy (None without targets; -100 marks positions to ignore). With `past_kv`
        (from an earlier call) idx holds only the new tokens, which continue the cached ones.
        """
        past_len = self._check(idx, past_kv)
        B, T = idx.shape
        x = self.tok_embed(idx) + self._positions(T, past_len, idx.device)  # (B, T, D)
        x = self.drop(x)
        present = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, None if past_kv is None else past_kv[i])
            present.append(kv)
        logits = self.head(self.norm(x))  # (B, T, V)
        loss = None
        if targets is not None:
            if targets.shape != idx.shape:
                raise ValueError(
                    f"targets {fmt_shape(targets.shape)} must have the shape of idx "
                    f"{fmt_shape(idx.shape)}: one next token per input position"
                )
            self._check_targets(targets)
            loss = F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(B * T))
        return (logits, loss, tuple(present)) if use_cache else (logits, loss)

    @torch.no_grad()
    def residual_stream(self, idx: torch.Tensor, sublayers: bool = False) -> list[torch.Tensor]:
        """The (B, T, D) stream at each depth: [embeddings, after block 1, ..., after block N].

        With sublayers=True it is recorded after every attention and every feed-forward
        sublayer: [embeddings, block 1 attention, block 1 FFN, block 2 attention, ...].
        Apply `model.head(model.norm(state))` to read a next-token guess off any of them.
        """
        self._check(idx, None)
        with evaluating(self):
            x = self.tok_embed(idx) + self._positions(idx.shape[1], 0, idx.device)
            states = [x]
            for block in self.blocks:
                if sublayers:
                    x = x + block.attn(block.norm1(x))[0]
                    states.append(x)
                    x = x + block.ff(block.norm2(x))
                else:
                    x, _ = block(x)
                states.append(x)
        return states

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = False,
    ) -> torch.Tensor:
        """Continue idx (B, T) by max_new_tokens tokens -> (B, T + max_new_tokens).

        temperature 0 is greedy decoding. Without a cache every step re-reads the last max_len
        tokens. With use_cache=True the prompt is read once and each step feeds only the newest
        token; once the text outgrows max_len the window slides, every position shifts, and the
        step falls back to re-reading the window (a learned position table has no slot past
        max_len). Both paths give the same tokens.
        """
        check_token_ids("idx", idx, self.vocab_size)  # also refuses an empty prompt or batch
        if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
        with evaluating(self):
            past = None
            for _ in range(max_new_tokens):
                if use_cache and past is not None and idx.shape[1] <= self.max_len:
                    logits, _, past = self(idx[:, -1:], past_kv=past, use_cache=True)
                elif use_cache:
                    logits, _, past = self(idx[:, -self.max_len :], use_cache=True)
                else:
                    logits, _ = self(idx[:, -self.max_len :])
                next_id = sample_next(logits[:, -1], temperature, top_k, top_p, generator)  # (B,)
                idx = torch.cat([idx, next_id[:, None]], dim=1)
        return idx

    @torch.no_grad()
    def log_prob(self, idx: torch.Tensor, start: int) -> torch.Tensor:
        """idx (B, T) -> (B,): sum over t >= start of log p(idx[:, t] | idx[:, :t]) (start >= 1)."""
        check_token_ids("idx", idx, self.vocab_size)
        if idx.shape[1] < 2:
            raise ValueError(
                f"idx has shape {fmt_shape(idx.shape)}: log_prob needs at least 2 tokens, "
                "because the first one has no context to be predicted from"
            )
        if not 1 <= start <= idx.shape[1]:
            raise ValueError(f"start must be in 1..T={idx.shape[1]}, got {start}")
        with evaluating(self):
            logits, _ = self(idx[:, :-1])  # (B, T-1, V): position t-1 predicts token t
            logp = logits.log_softmax(dim=-1).gather(-1, idx[:, 1:, None])[..., 0]  # (B, T-1)
        return logp[:, start - 1 :].sum(dim=1)

    @torch.no_grad()
    def beam_search(
        self,
        prompt: torch.Tensor,
        max_new_tokens: int,
        eos_id: int,
        beam_size: int = 4,
        length_penalty: float = 0.0,
    ) -> list[Hypothesis]:
        """Continue one prompt (T,) or (1, T); return every hypothesis kept, best first.

        The search is `sampling.beam_search`: finished hypotheses (ending in `eos_id`) come
        first, ranked by log p / ((5 + length) / 6) ** length_penalty (0 favours short
        continuations, larger values longer ones); one that ran out of max_new_tokens ranks
        below every finished one. The KV cache follows the beams, so each step costs one token
        per beam. For a batch of prompts, call it once per row.
        """
        if not isinstance(prompt, torch.Tensor) or prompt.dim() not in (1, 2):
            raise ValueError(
                f"prompt must be token ids of shape (T,) or (1, T), got {prompt!r:.60}"
            )
        if prompt.dim() == 2 and prompt.shape[0] != 1:
            raise ValueError(
                f"beam_search continues one prompt, got a batch of {prompt.shape[0]} with shape "
                f"{fmt_shape(prompt.shape)}; call it once per row: "
                "[model.beam_search(p, ...) for p in prompts]"
            )
        prompt = prompt.reshape(1, -1)  # (1, T)
        check_token_ids("prompt", prompt, self.vocab_size)  # also refuses an empty prompt
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        if prompt.shape[1] + max_new_tokens > self.max_len:
            raise ValueError(
                f"prompt ({prompt.shape[1]}) + max_new_tokens ({max_new_tokens}) must fit "
                f"max_len={self.max_len}"
            )
        past: PastKV | None = None

        def step(prefixes: torch.Tensor, parents: torch.Tensor) -> torch.Tensor:
            nonlocal past
            if past is None:  # first call: read the whole prompt once
                logits, _, past = self(prompt, use_cache=True)
            else:  # reorder the cache to follow the beams, then feed each newest token
                past = tuple((k[parents], v[parents]) for k, v in past)
                logits, _, past = self(prefixes[:, -1:], past_kv=past, use_cache=True)
            return logits[:, -1].log_softmax(dim=-1)  # (k, V)

        with evaluating(self):
            return beam_search(
                step, max_new_tokens, eos_id, beam_size, length_penalty, device=prompt.device
            )


__all__ = ["GPT", "GPTBlock", "CausalSelfAttention", "KV", "PastKV"]
