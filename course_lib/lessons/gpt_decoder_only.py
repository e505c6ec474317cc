"""Helpers that keep notebook 10's cells short: generate text with a trained GPT and measure it.

`continue_text` samples continuations of a prompt; `distinct_ngram_ratio` and `known_word_rate`
put numbers on "repetitive" and "made-up words"; `complete_line` runs greedy decoding or beam
search up to a newline; `plot_next_token_probs` draws a next-character distribution, and
`sampling_explorer` wires temperature / top-k / top-p sliders to live samples; `CharNGram` is
the unigram / bigram baseline a GPT has to beat, and `LadderLM` the rungs from it to a block.
`plot_sorted_probs` draws a whole sorted distribution with the top-k / top-p cuts, and
`head_explorer` one attention head at a time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from matplotlib.axes import Axes
from torch import nn

from ..attention import MultiHeadAttention
from ..data import CharVocab
from ..gpt import GPT, GPTBlock
from ..lm import check_data
from ..masks import causal_mask
from ..plots import plot_attention, to_numpy, token_label
from ..sampling import next_token_probs
from ..utils import evaluating

WORD = re.compile(r"[A-Za-z]+")


def ids_to_text(vocab: CharVocab, ids: Iterable[int] | torch.Tensor) -> str:
    """Ids -> text, every id kept (a special token shows as its name, e.g. '<unk>')."""
    if isinstance(ids, torch.Tensor):
        ids = ids.reshape(-1).tolist()
    return "".join(vocab.itos[int(i)] for i in ids)


def encode_prompt(vocab: CharVocab, prompt: str) -> torch.Tensor:
    """A prompt -> (1, T) ids (unknown characters become UNK); an empty prompt becomes a newline."""
    return torch.tensor([vocab.encode(prompt or "\n")], dtype=torch.long)


def continue_text(
    model: GPT,
    vocab: CharVocab,
    prompt: str | Sequence[str],
    n_chars: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    num_samples: int = 1,
) -> list[str]:
    """Continuations (without the prompt) of n_chars characters each, generated in one batch.

    `prompt` is one string (continued num_samples times) or a list of prompts of equal length
    (one continuation each). Keep prompt + n_chars within model.max_len for full KV-cache speed.
    """
    prompts = [prompt] * num_samples if isinstance(prompt, str) else list(prompt)
    rows = [vocab.encode(p or "\n") for p in prompts]
    if len({len(r) for r in rows}) != 1:
        raise ValueError(
            f"prompts must all have the same length to share a batch, got lengths "
            f"{sorted({len(r) for r in rows})}; crop them, e.g. [p[:16] for p in prompts]"
        )
    idx = torch.tensor(rows, dtype=torch.long)  # (S, T)
    gen = torch.Generator().manual_seed(seed)
    out = model.generate(idx, n_chars, temperature, top_k, top_p, gen, use_cache=True)
    return [ids_to_text(vocab, row[idx.shape[1] :]) for row in out]


def distinct_ngram_ratio(text: str, n: int = 8) -> float:
    """Distinct character n-grams / all n-grams: near 1 for varied text, low for loops."""
    grams = [text[i : i + n] for i in range(len(text) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def word_set(text: str) -> set[str]:
    """The set of words (runs of ASCII letters) in a text."""
    return set(WORD.findall(text))


def known_word_rate(text: str, known: set[str]) -> float:
    """Fraction of the words in `text` (ASCII letter runs, the last one dropped as possibly
    cut off) that occur in `known`, e.g. the words of the training text."""
    words = WORD.findall(text)[:-1]
    return sum(w in known for w in words) / len(words) if words else 0.0


@torch.no_grad()
def next_token_distribution(
    model: GPT,
    vocab: CharVocab,
    prompt: str,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> torch.Tensor:
    """(V,) probabilities of the character after `prompt`, after temperature, top-k and top-p."""
    idx = encode_prompt(vocab, prompt)[:, -model.max_len :]
    with evaluating(model):
        logits = model(idx)[0][0, -1]  # (V,)
    return next_token_probs(logits, temperature, top_k, top_p)


def plot_next_token_probs(
    probs: torch.Tensor | Sequence[float],
    vocab: CharVocab,
    top: int = 15,
    title: str = "Next-character distribution",
    ax: Axes | None = None,
) -> Axes:
    """Bar chart of the `top` most likely next characters (blank = ␣, newline = ⏎)."""
    p = to_numpy(probs)
    order = p.argsort()[::-1][:top]
    if ax is None:
        _, ax = plt.subplots(figsize=(6.0, 2.8))
    labels = ["⏎" if vocab.itos[i] == "\n" else token_label(vocab.itos[i]) for i in order]
    ax.bar(range(len(order)), p[order], color="C0")
    ax.set_xticks(range(len(order)), labels)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel(f"next character (the {len(order)} most likely)")
    ax.set_ylabel("probability")
    kept = int((p > 0).sum())
    ax.set_title(f"{title} · {kept} of {len(p)} characters possible")
    return ax


@torch.no_grad()
def complete_line(
    model: GPT,
    vocab: CharVocab,
    prompt: str,
    max_new: int = 40,
    beam_size: int = 0,
    length_penalty: float = 0.0,
) -> tuple[str, float]:
    """Finish `prompt` up to and including a newline: greedy (beam_size 0) or beam search.

    Returns (completion without the prompt, log p of the completion under the model).
    """
    eos = vocab.stoi["\n"]
    idx = encode_prompt(vocab, prompt)
    max_new = min(max_new, model.max_len - idx.shape[1])  # the whole line must fit the context
    with evaluating(model):
        if beam_size:
            tokens = model.beam_search(idx, max_new, eos, beam_size, length_penalty)[0].tokens
        else:
            tokens = []
            logits, _, past = model(idx, use_cache=True)
            for _ in range(max_new):
                token = int(logits[0, -1].argmax())
                tokens.append(token)
                if token == eos:
                    break
                logits, _, past = model(torch.tensor([[token]]), past_kv=past, use_cache=True)
        full = torch.cat([idx, torch.tensor([tokens])], dim=1)
        return ids_to_text(vocab, tokens), model.log_prob(full, idx.shape[1]).item()


def sampling_explorer(
    model: GPT,
    vocab: CharVocab,
    prompt: str = "The ",
    n_chars: int = 160,
    title: str = "Decoding explorer",
):
    """Sliders for temperature, top-k, top-p and the seed, a prompt box; shows a sample and the
    next-character distribution after the filters. Nothing is retrained: each change is one
    generation of n_chars characters with the KV cache."""
    from ipywidgets import Text

    from ..widgets import explorer, log_slider, slider

    def render(prompt: str, temperature: float, top_k: int, top_p: float, seed: int) -> None:
        k = None if top_k == 0 else top_k
        p = None if top_p >= 1.0 else top_p
        text = continue_text(model, vocab, prompt, n_chars, temperature, k, p, seed)[0]
        print(f"{prompt}\u2502{text}")  # the bar marks where the model takes over
        probs = next_token_distribution(model, vocab, prompt, temperature, k, p)
        settings = f"T={temperature:.2f}, top-k={k or 'off'}, top-p={p or 'off'}"
        plot_next_token_probs(probs, vocab, title=f"After the prompt, {settings}")
        plt.show()

    controls = {
        "prompt": Text(value=prompt, description="prompt", continuous_update=False),
        "temperature": log_slider("temperature", -1.0, 0.5, 1.0),
        "top_k": slider("top-k (0 = off)", 0, 40, 1, 0),
        "top_p": slider("top-p (1 = off)", 0.05, 1.0, 0.05, 1.0),
        "seed": slider("seed", 0, 20, 1, 0),
    }
    return explorer(controls, render, title)


def plot_sorted_probs(
    probs: torch.Tensor, p: float, k: int, title: str, ax: Axes | None = None
) -> tuple[Axes, int]:
    """Every probability of one (V,) distribution, sorted, on a log axis, with the cut of top-p
    (bars kept in colour, a solid line) and of top-k (a dashed line). Returns (ax, nucleus size)."""
    ranked = probs.double().sort(descending=True).values
    n_keep = int(((ranked.cumsum(0) - ranked) < p).sum())  # the nucleus: mass before < p
    if ax is None:
        _, ax = plt.subplots(figsize=(6.0, 2.8))
    colours = ["C0" if i < n_keep else "0.75" for i in range(len(ranked))]
    ax.bar(range(1, len(ranked) + 1), ranked.numpy(), color=colours, width=1.0)
    ax.set_yscale("log")
    ax.set_ylim(max(float(ranked.min()) / 2, 1e-10), 1.5)
    ax.axvline(n_keep + 0.5, color="C1", label=f"top-p = {p}: {n_keep} kept")
    ax.axvline(k + 0.5, color="C2", linestyle="--", label=f"top-k = {k}")
    ax.set_xlabel("rank of the character (1 = most likely)")
    ax.set_ylabel("probability (log scale)")
    ax.set_title(title)
    ax.legend(loc="upper right")
    return ax, n_keep


def head_explorer(weights: torch.Tensor, labels: Sequence[str], layer: int, head: int, title: str):
    """One full-size attention map of weights (layers, H, T, T) at a time, chosen with sliders;
    starts (and stays, in a static export) at `layer`, `head`."""
    from ..widgets import explorer, slider

    def render(layer: int, head: int) -> None:
        plot_attention(weights[layer, head], labels, labels, f"{title}: layer {layer}, head {head}")
        plt.show()

    L, H = weights.shape[:2]
    controls = {
        "layer": slider("layer", 0, L - 1, 1, layer),
        "head": slider("head", 0, H - 1, 1, head),
    }
    return explorer(controls, render, title)


# ----------------------------------------------------------------------------- the build-up ladder

RUNGS = ("bigram", "average the past", "one head", "four heads", "block")


class LadderLM(nn.Module):
    """One rung of the ladder from a bigram to a GPT block (as in Karpathy's "Let's build GPT").

    bigram: the token's embedding alone -> logits. average the past: + positions, then add the
    plain average of positions 0..t. one head / four heads: add causal self-attention instead
    (one head of size D, or four of size D/4). block: one pre-LN GPT block (attention + FFN).
    Every rung ends with LayerNorm + a linear layer to V logits; forward(x, y) -> (logits, loss).
    """

    def __init__(self, vocab_size: int, rung: str, d_model: int = 64, max_len: int = 32):
        super().__init__()
        if rung not in RUNGS:
            raise ValueError(f"rung must be one of {RUNGS}, got {rung!r}")
        self.rung, self.max_len, self.vocab_size = rung, max_len, vocab_size
        self.tok_embed = nn.Embedding(vocab_size, d_model)
        self.pos_embed = nn.Embedding(max_len, d_model)
        if rung in ("one head", "four heads"):
            self.attn = MultiHeadAttention(d_model, 1 if rung == "one head" else 4)
        if rung == "block":
            self.block = GPTBlock(d_model, 4, 4 * d_model)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """idx (B, T) -> (logits (B, T, V), mean cross-entropy against targets or None)."""
        T = idx.shape[1]
        x = self.tok_embed(idx)  # (B, T, D)
        if self.rung != "bigram":
            x = x + self.pos_embed(torch.arange(T, device=idx.device))
        mask = causal_mask(T, device=idx.device)  # (1, 1, T, T)
        if self.rung == "average the past":
            w = mask[0, 0].float()
            x = x + (w / w.sum(dim=-1, keepdim=True)) @ x  # row t: mean of x_0 .. x_t
        elif self.rung in ("one head", "four heads"):
            x = x + self.attn(x, x, x, mask, need_weights=False)[0]
        elif self.rung == "block":
            x = self.block(x)[0]
        logits = self.head(self.norm(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss


# ----------------------------------------------------------------------------- n-gram baselines


class CharNGram:
    """A unigram (n=1) or bigram (n=2) model from counts, with add-alpha smoothing.

    p(b | a) = (count(a b) + alpha) / (count(a) + alpha V): every pair has some probability,
    so a pair never seen in training costs a finite loss. n=1 ignores the previous id.
    """

    def __init__(self, data: torch.Tensor, vocab_size: int, n: int = 2, alpha: float = 0.1):
        if n not in (1, 2):
            raise ValueError(f"n must be 1 (unigram) or 2 (bigram), got {n}")
        if alpha <= 0:
            raise ValueError(
                f"alpha must be > 0 so unseen pairs keep some probability, got {alpha}"
            )
        check_data(data, 1)
        self.n, self.vocab_size = n, vocab_size
        V = vocab_size
        if n == 1:
            counts = torch.bincount(data, minlength=V).double()[None].expand(V, V)
        else:
            counts = torch.bincount(data[:-1] * V + data[1:], minlength=V * V).double().view(V, V)
        smoothed = counts + alpha  # (V, V): row a = the counts of what follows a
        self.log_probs = (smoothed / smoothed.sum(dim=1, keepdim=True)).log().float()  # (V, V)

    def loss(self, data: torch.Tensor) -> float:
        """Mean -log p(next | previous) in nats over data[1:], the positions a GPT predicts too."""
        check_data(data, 1)
        return -self.log_probs[data[:-1], data[1:]].double().mean().item()

    def generate(
        self, start: torch.Tensor, length: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Sample `length` ids after each start id: start (B,) -> (B, 1 + length)."""
        out = [start]
        for _ in range(length):
            probs = self.log_probs[out[-1]].exp()  # (B, V)
            out.append(torch.multinomial(probs, 1, generator=generator)[:, 0])
        return torch.stack(out, dim=1)


__all__ = [
    "RUNGS",
    "CharNGram",
    "LadderLM",
    "complete_line",
    "continue_text",
    "distinct_ngram_ratio",
    "encode_prompt",
    "ids_to_text",
    "known_word_rate",
    "head_explorer",
    "next_token_distribution",
    "plot_next_token_probs",
    "plot_sorted_probs",
    "sampling_explorer",
    "word_set",
]
