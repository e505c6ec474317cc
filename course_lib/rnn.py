"""Recurrent networks for Part I: a vanilla RNN step, and a GRU encoder-decoder with optional attention.

`Seq2SeqRNN` follows the course's seq2seq contract, so `course_lib.training` trains and scores it
like the transformer of later notebooks:

    model(src, tgt_in)                              -> logits (B, L_t, V)   (teacher forcing)
    model.greedy_decode(src, max_len, bos_id, eos_id) -> ids (B, <= max_len), EOS then PAD

Without attention the decoder starts from the encoder's last state and sees nothing else: one
vector must carry the whole input (the bottleneck of notebook 01). With attention the decoder
reads a weighted mix of *all* encoder states at every step (notebook 02): Bahdanau's additive
score, or Luong's dot / general (bilinear) score. PAD is on the right and never attended to.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .utils import check_token_ids, evaluating, expect_ndim, fmt_shape

ATTENTION_KINDS = (None, "additive", "dot", "general")


def rnn_cell_step(
    x: torch.Tensor,
    h: torch.Tensor,
    W_ih: torch.Tensor,
    W_hh: torch.Tensor,
    b_ih: torch.Tensor | None = None,
    b_hh: torch.Tensor | None = None,
) -> torch.Tensor:
    """One vanilla RNN step, h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh), as in nn.RNNCell.

    x (B, D_in), h (B, H), W_ih (H, D_in), W_hh (H, H), biases (H,) -> h' (B, H).
    """
    if x.shape[-1] != W_ih.shape[1] or h.shape[-1] != W_hh.shape[1]:
        raise ValueError(
            f"shapes do not fit: x {fmt_shape(x.shape)} with W_ih {fmt_shape(W_ih.shape)}, "
            f"h {fmt_shape(h.shape)} with W_hh {fmt_shape(W_hh.shape)}; W_ih is (H, D_in)"
        )
    pre = x @ W_ih.T + h @ W_hh.T  # (B, H)
    if b_ih is not None:
        pre = pre + b_ih
    if b_hh is not None:
        pre = pre + b_hh
    return torch.tanh(pre)


def rnn_step_jacobian(h_new: torch.Tensor, W_hh: torch.Tensor) -> torch.Tensor:
    """d h_new / d h for a tanh RNN step: diag(1 - h_new^2) W_hh, batched.

    h_new (B, H) is the step's output (tanh' = 1 - tanh^2), W_hh (H, H) -> (B, H, H).
    """
    expect_ndim("h_new", h_new, 2, "(B, H)")
    if W_hh.shape != (h_new.shape[1], h_new.shape[1]):
        raise ValueError(
            f"W_hh must be (H, H) = ({h_new.shape[1]}, {h_new.shape[1]}), got {fmt_shape(W_hh.shape)}"
        )
    return (1 - h_new**2)[:, :, None] * W_hh  # (B, H, H): row i scaled by tanh'(pre_i)


def _masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Softmax over the last axis of scores (B, L) where mask (B, L) is True; zero elsewhere.

    A row whose mask is all False gets all-zero weights (and so a zero context), never NaN.
    """
    if mask is not None:
        if mask.shape != scores.shape or mask.dtype != torch.bool:
            raise ValueError(
                f"mask must be boolean {fmt_shape(scores.shape)} (B, L_s), True at real "
                f"source positions; got {mask.dtype} {fmt_shape(mask.shape)}"
            )
        empty = ~mask.any(dim=-1, keepdim=True)  # (B, 1): a row with nothing to attend to
        scores = scores.masked_fill(~mask, float("-inf")).masked_fill(empty, 0.0)  # no all -inf
        return torch.softmax(scores, dim=-1).masked_fill(empty, 0.0)  # (B, L_s), never NaN
    return torch.softmax(scores, dim=-1)  # (B, L_s)


def _check_query_keys(query: torch.Tensor, keys: torch.Tensor) -> None:
    expect_ndim("query", query, 2, "(B, D_q)")
    expect_ndim("keys", keys, 3, "(B, L_s, D_k)")
    if query.shape[0] != keys.shape[0]:
        raise ValueError(
            f"query {fmt_shape(query.shape)} and keys {fmt_shape(keys.shape)} have different "
            "batch sizes; one decoder state per source sentence"
        )


class _EncoderAttention(nn.Module):
    """Shared by both scores below: softmax the scores over the source, then mix the keys."""

    def forward(
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        mask: torch.Tensor | None = None,
        keys_proj: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (context (B, D_k), weights (B, L_s)); weights are 0 where mask is False."""
        weights = _masked_softmax(self.scores(query, keys, keys_proj), mask)  # (B, L_s)
        context = (weights[:, :, None] * keys).sum(1)  # (B, D_k): sum_j w_j k_j
        return context, weights


class AdditiveAttention(_EncoderAttention):
    """Bahdanau attention: score(q, k_j) = v^T tanh(W_q q + W_k k_j), a tiny MLP per position."""

    def __init__(self, query_dim: int, key_dim: int, attn_dim: int = 64):
        super().__init__()
        self.W_q = nn.Linear(query_dim, attn_dim, bias=False)
        self.W_k = nn.Linear(key_dim, attn_dim, bias=False)
        self.v = nn.Linear(attn_dim, 1, bias=False)

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """keys (B, L_s, D_k) -> W_k keys (B, L_s, A); a decoder computes this once per sentence."""
        return self.W_k(keys)

    def scores(
        self, query: torch.Tensor, keys: torch.Tensor, keys_proj: torch.Tensor | None = None
    ) -> torch.Tensor:
        """query (B, D_q), keys (B, L_s, D_k) -> unnormalised scores (B, L_s)."""
        _check_query_keys(query, keys)
        keys_proj = self.project_keys(keys) if keys_proj is None else keys_proj
        hidden = torch.tanh(self.W_q(query)[:, None, :] + keys_proj)  # (B, L_s, A)
        return self.v(hidden).squeeze(-1)  # (B, L_s)


class DotAttention(_EncoderAttention):
    """Luong attention: score = q . k_j ("dot") or q^T W k_j ("general", a learned bilinear form)."""

    def __init__(self, query_dim: int, key_dim: int, kind: str = "dot"):
        super().__init__()
        if kind not in ("dot", "general"):
            raise ValueError(f"kind must be 'dot' or 'general', got {kind!r}")
        if kind == "dot" and query_dim != key_dim:
            raise ValueError(
                f"dot attention needs query_dim == key_dim, got {query_dim} and {key_dim} "
                "(a bidirectional encoder doubles the key size); use kind='general'"
            )
        self.kind = kind
        self.W = nn.Linear(key_dim, query_dim, bias=False) if kind == "general" else None

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """keys (B, L_s, D_k) -> W keys (B, L_s, D_q) for "general", the keys themselves for "dot"."""
        return self.W(keys) if self.W is not None else keys

    def scores(
        self, query: torch.Tensor, keys: torch.Tensor, keys_proj: torch.Tensor | None = None
    ) -> torch.Tensor:
        """query (B, D_q), keys (B, L_s, D_k) -> unnormalised scores (B, L_s)."""
        _check_query_keys(query, keys)
        keys_proj = self.project_keys(keys) if keys_proj is None else keys_proj  # (B, L_s, D_q)
        return (keys_proj * query[:, None, :]).sum(-1)  # (B, L_s): q . k_j for every j


class Seq2SeqRNN(nn.Module):
    """GRU encoder-decoder; `attention` None keeps the last-state bottleneck, else attends.

    The decoder step (Bahdanau's order, for every score kind): the previous decoder state
    queries the encoder states, the context joins the input embedding in the GRU cell, and the
    output layer reads [state; context]. Without attention the context is absent.
    """

    def __init__(
        self,
        vocab_size: int,
        emb: int = 32,
        hidden: int = 64,
        attention: str | None = None,
        bidirectional_encoder: bool = False,
        pad_id: int = 0,
        attn_dim: int = 64,
    ):
        super().__init__()
        if attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {attention!r}")
        self.vocab_size, self.hidden, self.pad_id = vocab_size, hidden, pad_id
        self.attention_kind = attention
        self.src_emb = nn.Embedding(vocab_size, emb, padding_idx=pad_id)
        self.tgt_emb = nn.Embedding(vocab_size, emb, padding_idx=pad_id)
        self.encoder = nn.GRU(emb, hidden, batch_first=True, bidirectional=bidirectional_encoder)
        key_dim = hidden * (2 if bidirectional_encoder else 1)
        self.bridge = nn.Linear(key_dim, hidden)  # encoder summary -> decoder's first state
        if attention == "additive":
            self.attn: nn.Module | None = AdditiveAttention(hidden, key_dim, attn_dim)
        elif attention in ("dot", "general"):
            self.attn = DotAttention(hidden, key_dim, attention)
        else:
            self.attn = None
        ctx_dim = key_dim if self.attn is not None else 0
        self.decoder = nn.GRU(emb + ctx_dim, hidden, batch_first=True)
        self.out = nn.Linear(hidden + ctx_dim, vocab_size)
        self.last_attention: torch.Tensor | None = None  # (B, L_t, L_s) after each call

    # -- encoder ------------------------------------------------------------------------------
    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """src (B, L_s) -> (states (B, L_s, K), first decoder state (B, H), mask (B, L_s)).

        PAD (on the right) is packed away: the summary is the state after the last *real* token,
        and the states at PAD positions are zeros that the mask hides from attention.
        """
        check_token_ids("src", src, self.vocab_size)
        mask = src != self.pad_id  # (B, L_s)
        lengths = mask.sum(1)
        if (lengths == 0).any():
            raise ValueError("a source row is all PAD: every sentence needs at least one token")
        packed = pack_padded_sequence(
            self.src_emb(src), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        out, h_n = self.encoder(packed)  # h_n (num_dirs, B, H)
        states, _ = pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])
        summary = torch.cat(list(h_n), dim=-1)  # (B, K): last forward (+ first backward) state
        return states, torch.tanh(self.bridge(summary)), mask

    # -- decoder ------------------------------------------------------------------------------
    def _gru_step(self, inp: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """One step of the decoder GRU: inp (B, E [+ K]), h (B, H) -> h' (B, H)."""
        d = self.decoder  # one nn.GRU holds the weights; stepping it as a cell is cheaper
        return torch.gru_cell(inp, h, d.weight_ih_l0, d.weight_hh_l0, d.bias_ih_l0, d.bias_hh_l0)

    def _step(self, y_prev, h, states, mask, keys_proj):
        """One attention decoder step -> (new state (B, H), context (B, K), weights (B, L_s))."""
        context, weights = self.attn(h, states, mask, keys_proj)  # (B, K), (B, L_s)
        h = self._gru_step(torch.cat([self.tgt_emb(y_prev), context], dim=-1), h)  # (B, H)
        return h, context, weights

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: src (B, L_s), tgt_in (B, L_t) starting with BOS -> logits (B, L_t, V)."""
        check_token_ids("tgt_in", tgt_in, self.vocab_size)
        if tgt_in.shape[0] != src.shape[0]:
            raise ValueError(
                f"src {fmt_shape(src.shape)} and tgt_in {fmt_shape(tgt_in.shape)} must have the "
                "same batch size B: one target sentence per source sentence"
            )
        states, h, mask = self.encode(src)
        if self.attn is None:  # the whole target in one call: the decoder never looks back
            out, _ = self.decoder(self.tgt_emb(tgt_in), h[None])  # (B, L_t, H)
            self.last_attention = None
            return self.out(out)  # (B, L_t, V)
        keys_proj = self.attn.project_keys(states)
        hs, contexts, attn = [], [], []
        for t in range(tgt_in.shape[1]):
            h, context, w = self._step(tgt_in[:, t], h, states, mask, keys_proj)
            hs.append(h)
            contexts.append(context)
            attn.append(w)
        self.last_attention = torch.stack(attn, 1).detach()  # (B, L_t, L_s)
        read = torch.cat([torch.stack(hs, 1), torch.stack(contexts, 1)], dim=-1)  # (B, L_t, H+K)
        return self.out(read)  # (B, L_t, V)

    def greedy_decode(
        self,
        src: torch.Tensor,
        max_len: int,
        bos_id: int,
        eos_id: int,
        return_attention: bool = False,
    ):
        """Most probable token at each step -> ids (B, <= max_len) without BOS, EOS then PAD.

        With return_attention, also the weights (B, L_out, L_s) each output step put on the
        source (zeros after a row's EOS); None for a model without attention.
        Runs in eval mode without gradients.
        """
        if not isinstance(max_len, int) or max_len < 1:
            raise ValueError(
                f"max_len must be a positive integer, got {max_len!r}: the number of tokens "
                "to produce at most (EOS included)"
            )
        if not 0 <= bos_id < self.vocab_size:
            raise ValueError(
                f"bos_id={bos_id} is not in the vocabulary of {self.vocab_size} ids; "
                "pass the BOS id of the vocabulary the model was trained with"
            )
        with evaluating(self):
            states, h, mask = self.encode(src)
            keys_proj = self.attn.project_keys(states) if self.attn is not None else None
            B = src.shape[0]
            y = torch.full((B,), bos_id, dtype=torch.long, device=src.device)
            done = torch.zeros(B, dtype=torch.bool, device=src.device)
            out, attn = [], []
            for _ in range(max_len):
                if self.attn is None:
                    h = self._gru_step(self.tgt_emb(y), h)  # (B, H)
                    logits = self.out(h)
                else:
                    h, context, w = self._step(y, h, states, mask, keys_proj)
                    logits = self.out(torch.cat([h, context], dim=-1))
                    attn.append(w.masked_fill(done[:, None], 0.0))
                y = logits.argmax(-1).masked_fill(done, self.pad_id)  # after EOS: PAD
                out.append(y)
                done = done | (y == eos_id)
                if done.all():
                    break
        ids = torch.stack(out, dim=1)  # (B, L_out)
        weights = torch.stack(attn, 1) if attn else None  # (B, L_out, L_s)
        self.last_attention = weights
        return (ids, weights) if return_attention else ids


__all__ = [
    "AdditiveAttention",
    "DotAttention",
    "Seq2SeqRNN",
    "rnn_cell_step",
    "rnn_step_jacobian",
]
