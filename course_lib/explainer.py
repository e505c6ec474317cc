"""A transformer explainer for the course's GPT: type a prompt, step through one forward pass.

The stages follow the data: token + position embedding -> in every block, where the last
position's attention looks (head by head) and what the stream predicts after the block's
feed-forward -> the final next-token probabilities -> the token the model picks. Beside each
stage, `gpt_diagram` highlights the part of the architecture that is working.

    from course_lib.explainer import transformer_explainer, explainer_frames
    transformer_explainer(model, vocab, "The if statement ")   # live: a text box and a stage slider
    for _ in explainer_frames(model, vocab, "The if statement "):  # static: one figure per stage
        plt.show()
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from .blocks import recording_attention
from .data import CharVocab
from .diagrams import gpt_diagram
from .gpt import GPT
from .plots import token_label
from .utils import evaluating
from .widgets import Explorer

TOP = 8  # next-token candidates shown in a bar chart
MAX_CHARS = 48  # longer prompts keep their last MAX_CHARS characters (readable tick labels)


@dataclass
class Trace:
    """Everything one forward pass of a GPT computed for one prompt, kept for plotting."""

    tokens: list[str]  # the prompt's characters, (T,)
    embedding: torch.Tensor  # (T, D) token + position vectors entering block 1
    attention: list[torch.Tensor]  # per block: (H, T, T) weights, rows = queries
    guesses: list[torch.Tensor]  # per block: (V,) next-token probabilities read off the stream
    probs: torch.Tensor  # (V,) the model's next-token probabilities
    vocab: CharVocab

    @property
    def layers(self) -> int:
        """Number of blocks."""
        return len(self.attention)

    def top(self, probs: torch.Tensor, k: int = TOP) -> list[tuple[str, float]]:
        """The k likeliest next tokens with their probabilities, best first."""
        p, ids = probs.topk(min(k, probs.numel()))
        return [(self.vocab.itos[i], float(q)) for q, i in zip(p, ids.tolist(), strict=True)]


def trace(model: GPT, vocab: CharVocab, prompt: str) -> Trace:
    """Run `model` on `prompt` once and keep the embeddings, attention and predictions."""
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"the prompt must be a non-empty string, got {prompt!r}")
    if len(vocab) != model.vocab_size:
        raise ValueError(
            f"the vocabulary has {len(vocab)} tokens but the model predicts {model.vocab_size}: "
            "pass the vocabulary the model was trained with"
        )
    text = prompt[-min(MAX_CHARS, model.max_len) :]
    ids = torch.tensor([vocab.encode(text)])  # (1, T); unknown characters become UNK
    with evaluating(model), torch.no_grad():
        states = model.residual_stream(ids)  # [embeddings, after block 1, ..., after block N]
        with recording_attention(model):
            logits, _ = model(ids)  # (1, T, V)
        attention = [block.attn.attn_weights[0] for block in model.blocks]  # each (H, T, T)
        guesses = [model.head(model.norm(s))[0, -1].softmax(-1) for s in states[1:]]
    return Trace(
        tokens=[vocab.itos[i] for i in ids[0].tolist()],
        embedding=states[0][0],
        attention=attention,
        guesses=guesses,
        probs=logits[0, -1].softmax(-1),
        vocab=vocab,
    )


def stages(layers: int) -> list[tuple[str, int | None]]:
    """The stages in data order: (kind, block index or None)."""
    per_block = [(kind, i) for i in range(layers) for kind in ("attention", "feed-forward")]
    return [("embedding", None), *per_block, ("logits", None), ("next token", None)]


def stage_name(kind: str, layer: int | None) -> str:
    """A stage as the slider and the figure title say it, e.g. 'block 2: attention'."""
    return kind if layer is None else f"block {layer + 1}: {kind}"


_PART = {
    "embedding": "embedding",
    "attention": "blocks",
    "feed-forward": "blocks",
    "logits": "head",
    "next token": "sampling",
}


def draw_stage(t: Trace, index: int) -> Figure:
    """One stage of the explainer as a figure (the diagram is drawn separately)."""
    all_stages = stages(t.layers)
    if not 0 <= index < len(all_stages):
        raise ValueError(f"stage must be in 0..{len(all_stages) - 1}, got {index}")
    kind, layer = all_stages[index]
    labels = [token_label(c) for c in t.tokens]
    fig, ax = plt.subplots(figsize=(9.0, 3.0))
    title = f"Stage {index + 1}/{len(all_stages)} · {stage_name(kind, layer)}"
    if kind == "embedding":
        image = ax.imshow(t.embedding.T[:32].numpy(), aspect="auto", cmap="RdBu_r")
        ax.set_xticks(range(len(labels)), labels)
        ax.set_ylabel("first 32 of D\nfeatures")
        fig.colorbar(image, ax=ax, fraction=0.03)
        ax.set_title(f"{title}\neach column: one character's vector plus its position's vector")
    elif kind == "attention":
        last = t.attention[layer][:, -1, :].numpy()  # (H, T): the last query, every head
        image = ax.imshow(last, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(len(labels)), labels)
        ax.set_yticks(range(last.shape[0]), [f"head {h + 1}" for h in range(last.shape[0])])
        fig.colorbar(image, ax=ax, fraction=0.03, label="weight")
        ax.set_title(f"{title}\nwhere the last position ({labels[-1]!r}) looks; each row sums to 1")
    elif kind in ("feed-forward", "logits"):
        probs = t.guesses[layer] if kind == "feed-forward" else t.probs
        top = t.top(probs)
        ax.bar(range(len(top)), [p for _, p in top], color="#4C72B0")
        ax.set_xticks(range(len(top)), [token_label(c) for c, _ in top])
        ax.set_ylim(0, 1)
        ax.set_ylabel("probability")
        what = (
            f"the next-token guess read off the stream after block {layer + 1}"
            if kind == "feed-forward"
            else "LayerNorm + linear head + softmax: the model's next-token probabilities"
        )
        ax.set_title(f"{title}\n{what}")
    else:  # next token
        choice, p = t.top(t.probs, 1)[0]
        ax.axis("off")
        shown = repr("".join(t.tokens[-30:]))[1:-1]
        prompt_text = ax.text(0.02, 0.55, shown, family="monospace", fontsize=13, va="center")
        ax.annotate(  # placed right after the prompt's text, whatever its length
            token_label(choice),
            xy=(1.0, 0.5),
            xycoords=prompt_text,
            va="center",
            family="monospace",
            fontsize=13,
            color="#C44E52",
            weight="bold",
        )
        ax.set_title(f"{title}\ngreedy choice: {choice!r} (p = {p:.2f}); append it and run again")
    if fig.get_layout_engine() is None:  # the course style already lays figures out (constrained)
        fig.tight_layout()
    return fig


def explainer_frames(model: GPT, vocab: CharVocab, prompt: str) -> Iterator[Figure]:
    """Every stage as a figure, in order, each after its diagram: for static exports and decks."""
    t = trace(model, vocab, prompt)
    for index, (kind, _) in enumerate(stages(t.layers)):
        yield gpt_diagram(layers=t.layers, highlight=_PART[kind])
        yield draw_stage(t, index)


def transformer_explainer(model: GPT, vocab: CharVocab, prompt: str) -> Explorer:
    """Live: a prompt box and a stage slider; the diagram and the stage's picture follow."""
    layers = len(model.blocks)
    names = [stage_name(k, i) for k, i in stages(layers)]
    text = widgets.Text(value=prompt, description="prompt", continuous_update=False)
    stage = widgets.SelectionSlider(
        options=list(zip(names, range(len(names)), strict=True)),
        value=0,
        description="stage",
        continuous_update=False,
        layout=widgets.Layout(width="70%"),
    )
    cache: dict[str, Trace] = {}

    def render(prompt: str, stage: int) -> None:
        if prompt not in cache:  # one forward pass per prompt; moving the slider only redraws
            cache.clear()
            cache[prompt] = trace(model, vocab, prompt or " ")
        t = cache[prompt]
        gpt_diagram(layers=t.layers, highlight=_PART[stages(t.layers)[stage][0]])
        draw_stage(t, stage)

    return Explorer(
        {"prompt": text, "stage": stage}, render, title="Inside the GPT, stage by stage"
    )
