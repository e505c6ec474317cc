"""Helpers that keep notebook 01's cells short (02 reuses the reversal task).

- gradients through time: ||d h_T / d h_t|| for RNN, LSTM and GRU cells;
- what runs one step after another: the critical path of the autograd graph, matmul FLOPs, timing;
- a memory task (remember the first symbol) for RNN vs LSTM vs GRU;
- the reversal task: a GRU encoder-decoder without attention, accuracy by length and position.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import jacrev, vmap

from ..data import CharVocab, reverse_pairs
from ..fit import FitConfig, fit
from ..rnn import Seq2SeqRNN
from ..training import exact_match_by, train_seq2seq, translate

CELLS = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}
LAYERS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
GATES = {"rnn": 1, "gru": 3, "lstm": 4}  # weight blocks per cell: tanh / r, z, n / i, f, g, o

# ----------------------------------------------------------------------------- gradients in time


def cell_type(cell: nn.Module) -> str:
    """'rnn', 'lstm' or 'gru' for a cell or a one-layer nn.RNN / nn.LSTM / nn.GRU."""
    for name in CELLS:
        if isinstance(cell, (CELLS[name], LAYERS[name])):
            return name
    raise ValueError(f"expected an RNN/LSTM/GRU cell or layer, got {type(cell).__name__}")


@torch.no_grad()
def cell_from_layer(layer: nn.RNNBase) -> nn.RNNCellBase:
    """The step-by-step cell of a one-layer, one-direction nn.RNN/LSTM/GRU (weights copied)."""
    if layer.num_layers != 1 or layer.bidirectional:
        raise ValueError("cell_from_layer needs a one-layer, one-direction recurrent layer")
    kind = cell_type(layer)
    kwargs = {"nonlinearity": layer.nonlinearity} if kind == "rnn" else {}
    cell = CELLS[kind](layer.input_size, layer.hidden_size, **kwargs)
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        getattr(cell, name).copy_(getattr(layer, f"{name}_l0"))
    return cell.to(layer.weight_ih_l0.dtype)


# fmt: off
def make_cell(kind: str, input_size: int, hidden: int, weight_scale: float | None = None,
              forget_bias: float | None = None, seed: int = 0) -> nn.RNNCellBase:
# fmt: on
    """A cell in float64. weight_scale sets a vanilla RNN's W_hh = scale * (random orthogonal),
    so every singular value equals the scale; forget_bias sets an LSTM's forget-gate bias."""
    if kind not in CELLS:
        raise ValueError(f"kind must be one of {list(CELLS)}, got {kind!r}")
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        cell = CELLS[kind](input_size, hidden).double()
    with torch.no_grad():
        if weight_scale is not None:
            if kind != "rnn":
                raise ValueError("weight_scale is for the vanilla RNN ('rnn') only")
            q, _ = torch.linalg.qr(torch.randn(hidden, hidden, generator=g, dtype=torch.float64))
            cell.weight_hh.copy_(weight_scale * q)
        if forget_bias is not None:
            if kind != "lstm":
                raise ValueError("forget_bias is for the LSTM only")
            cell.bias_ih[hidden : 2 * hidden].fill_(forget_bias)  # gate order: i, f, g, o
            cell.bias_hh[hidden : 2 * hidden].zero_()
    return cell


def _step_fn(cell: nn.RNNCellBase):
    """state (S,), x (D,) -> next state (S,) for one sequence; an LSTM's state is [h; c].

    The cell's equations written out (as in PyTorch's docs), so torch.func can vmap them.
    """
    w_ih, w_hh = cell.weight_ih.detach(), cell.weight_hh.detach()
    b_ih, b_hh = cell.bias_ih.detach(), cell.bias_hh.detach()
    H = cell.hidden_size
    if isinstance(cell, nn.LSTMCell):

        def lstm_step(s, x):
            h, c = s[:H], s[H:]
            i, f, g, o = (w_ih @ x + b_ih + w_hh @ h + b_hh).chunk(4)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            return torch.cat([torch.sigmoid(o) * torch.tanh(c), c])

        return lstm_step
    if isinstance(cell, nn.GRUCell):

        def gru_step(h, x):
            xr, xz, xn = (w_ih @ x + b_ih).chunk(3)
            hr, hz, hn = (w_hh @ h + b_hh).chunk(3)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            n = torch.tanh(xn + r * hn)
            return (1 - z) * n + z * h

        return gru_step
    if getattr(cell, "nonlinearity", "tanh") != "tanh":
        raise ValueError("only tanh RNN cells are supported")
    return lambda h, x: torch.tanh(w_ih @ x + b_ih + w_hh @ h + b_hh)


def state_jacobian_norms(cell: nn.Module, xs: torch.Tensor) -> torch.Tensor:
    """||d h_T / d state_{T-d}||_2 for d = 0..T, geometric mean over the batch -> (T+1,).

    cell: an RNN/LSTM/GRU cell or one-layer layer; xs (B, T, D) inputs; the state starts at 0.
    For an LSTM the state is (h, c) and the norm is of d h_T / d (h_t, c_t).
    """
    if isinstance(cell, nn.RNNBase):
        cell = cell_from_layer(cell)
    if xs.dim() != 3:
        raise ValueError(f"xs must be (B, T, D), got shape {tuple(xs.shape)}")
    xs = xs.to(cell.weight_hh.dtype)
    B, T, _ = xs.shape
    H = cell.hidden_size
    S = 2 * H if isinstance(cell, nn.LSTMCell) else H
    step = _step_fn(cell)
    with torch.no_grad():
        states = [xs.new_zeros(B, S)]
        for t in range(T):
            states.append(vmap(step)(states[-1], xs[:, t]))  # (B, S)
    step_jac = vmap(jacrev(step, argnums=0))  # (B, S), (B, D) -> (B, S, S)
    J = torch.eye(S, dtype=xs.dtype).expand(B, S, S)  # d s_T / d s_T
    norms = [torch.ones(())]
    for t in range(T - 1, -1, -1):
        J = J @ step_jac(states[t], xs[:, t]).detach()  # d s_T / d s_t
        n = torch.linalg.matrix_norm(J[:, :H], ord=2)  # (B,): only h_T is read out
        norms.append(n.clamp_min(1e-300).log().mean().exp())
    return torch.stack(norms).float()


# fmt: off
def gradient_norms_through_time(kind: str = "rnn", weight_scale: float | None = None,
        length: int = 60, hidden: int = 32, input_size: int = 8, batch: int = 8,
        forget_bias: float | None = None, seed: int = 0) -> torch.Tensor:
# fmt: on
    """||d h_T / d h_{T-d}|| for d = 0..length on random N(0, 1) inputs -> (length+1,)."""
    cell = make_cell(kind, input_size, hidden, weight_scale, forget_bias, seed)
    g = torch.Generator().manual_seed(seed + 1)
    xs = torch.randn(batch, length, input_size, generator=g, dtype=torch.float64)
    return state_jacobian_norms(cell, xs)


def log10_slope(norms: torch.Tensor, start: int = 1) -> float:
    """Least-squares slope of log10(norm) against distance, from distance `start` on."""
    y = norms[start:].double().clamp_min(1e-300).log10()
    x = torch.arange(start, start + len(y), dtype=torch.float64)
    x = x - x.mean()
    return float((x * (y - y.mean())).sum() / (x * x).sum())


def dependency_matrix(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(L, L) matrix of ||d out_i / d x_j|| for one sequence x (L, D) through a batch-first layer."""
    if x.dim() != 2:
        raise ValueError(f"x must be one sequence (L, D), got shape {tuple(x.shape)}")

    def run(inp: torch.Tensor) -> torch.Tensor:
        out = layer(inp[None])
        return (out[0] if isinstance(out, tuple) else out)[0]  # (L, H_out)

    jac = torch.autograd.functional.jacobian(run, x)  # (L, H_out, L, D)
    return jac.pow(2).sum(dim=(1, 3)).sqrt()  # (L, L): row i = output position


# ----------------------------------------------------------------------------- sequential cost


def critical_path_length(output: torch.Tensor) -> int:
    """Longest chain of autograd operations behind `output`: steps that must run one after another.

    Operations on one chain depend on each other, so no amount of hardware runs them at once;
    independent chains could run in parallel. (A fused kernel counts as one operation.)
    """
    if output.grad_fn is None:
        raise ValueError("output has no autograd graph: compute it from tensors requiring grad")
    depth: dict[object, int] = {}
    stack = [(output.grad_fn, False)]
    while stack:  # iterative post-order DFS: graphs of long RNNs are deeper than Python's stack
        node, expanded = stack.pop()
        if node is None or (node in depth and not expanded):
            continue
        if expanded:
            kids = [n for n, _ in node.next_functions if n is not None]
            depth[node] = 1 + max((depth[k] for k in kids), default=0)
            continue
        depth[node] = -1  # visiting
        stack.append((node, True))
        stack.extend((n, False) for n, _ in node.next_functions if n is not None and n not in depth)
    return depth[output.grad_fn]


def count_operations(output: torch.Tensor) -> int:
    """How many autograd operations produced `output`: each is one kernel call, forward and back."""
    if output.grad_fn is None:
        raise ValueError("output has no autograd graph: compute it from tensors requiring grad")
    seen, todo = set(), [output.grad_fn]
    while todo:
        node = todo.pop()
        if node is not None and node not in seen:
            seen.add(node)
            todo.extend(n for n, _ in node.next_functions)
    return len(seen)


def unroll(cell: nn.RNNCellBase, xs: torch.Tensor) -> torch.Tensor:
    """Run a cell step by step over xs (B, T, D) from a zero state -> outputs h (B, T, H)."""
    B, T, _ = xs.shape
    h = c = xs.new_zeros(B, cell.hidden_size)  # (B, H); c is the LSTM's cell state
    outs = []
    for t in range(T):
        if isinstance(cell, nn.LSTMCell):
            h, c = cell(xs[:, t], (h, c))
        else:
            h = cell(xs[:, t], h)
        outs.append(h)
    return torch.stack(outs, dim=1)


def rnn_matmul_flops(kind: str, length: int, batch: int, input_size: int, hidden: int) -> int:
    """Multiply-add FLOPs (2 per MAC) of the matrix products of one layer over a sequence."""
    g = GATES[kind]
    return 2 * length * batch * g * hidden * (input_size + hidden)


def encoder_layer_matmul_flops(length: int, batch: int, d_model: int, d_ff: int) -> int:
    """FLOPs of the matrix products in one encoder layer: Q, K, V, O projections, QK^T, AV, FFN."""
    n = batch * length
    projections = 4 * 2 * n * d_model * d_model
    attention = 2 * 2 * batch * length * length * d_model  # scores and weighted sum
    ffn = 2 * 2 * n * d_model * d_ff
    return projections + attention + ffn


def time_forward_backward(
    module: nn.Module, x: torch.Tensor, repeats: int = 5, threads: int | None = None
) -> float:
    """Median wall-clock seconds of one forward + backward pass (after one warm-up run)."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        x = x.detach().requires_grad_()
        times = []
        for i in range(repeats + 1):
            start = time.perf_counter()
            out = module(x)
            out = out[0] if isinstance(out, tuple) else out
            out.sum().backward()
            if i > 0:  # the first run pays for allocations
                times.append(time.perf_counter() - start)
            module.zero_grad(set_to_none=True)
    finally:
        torch.set_num_threads(previous)
    return statistics.median(times)


# ----------------------------------------------------------------------------- memory task


def first_symbol_batch(
    batch: int, length: int, n_symbols: int = 8, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random symbols (B, length); the target is the first one, to be named after the last."""
    x = torch.randint(0, n_symbols, (batch, length), generator=generator)
    return x, x[:, 0]


class MemoryRNN(nn.Module):
    """Embedding -> one recurrent layer -> classify the first symbol from the last state."""

    def __init__(
        self,
        kind: str,
        n_symbols: int = 8,
        emb: int = 16,
        hidden: int = 32,
        forget_bias: float | None = None,
    ):
        super().__init__()
        self.kind = kind
        self.emb = nn.Embedding(n_symbols, emb)
        self.rnn = LAYERS[kind](emb, hidden, batch_first=True)
        self.out = nn.Linear(hidden, n_symbols)
        if forget_bias is not None:
            with torch.no_grad():
                self.rnn.bias_ih_l0[hidden : 2 * hidden].fill_(forget_bias)
                self.rnn.bias_hh_l0[hidden : 2 * hidden].zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T) symbols -> logits (B, n_symbols) read from the last state."""
        out, _ = self.rnn(self.emb(x))  # (B, T, H)
        return self.out(out[:, -1])


# fmt: off
def train_memory_task(kind: str, steps: int = 300, min_len: int = 2, max_len: int = 40,
        batch: int = 64, lr: float = 3e-3, forget_bias: float | None = None, seed: int = 0,
        eval_every: int = 0, eval_length: int = 30) -> tuple[MemoryRNN, list[float]]:
# fmt: on
    """Train a MemoryRNN on lengths drawn uniformly in [min_len, max_len]; -> (model, losses).
    With eval_every > 0, model.curve holds (step, accuracy at eval_length) every eval_every steps."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = MemoryRNN(kind, forget_bias=forget_bias)
    g = torch.Generator().manual_seed(seed)
    lengths = iter(lambda: int(torch.randint(min_len, max_len + 1, (1,), generator=g)), None)
    batches = (first_symbol_batch(batch, n, generator=g) for n in lengths)  # length, then symbols
    # Adam (AdamW without decay) at a constant LR, gradients clipped at norm 1
    config = FitConfig(
        steps, lr, 0.0, schedule="constant", clip=1.0, eval_every=eval_every, seed=None,
        progress=False,
    )  # fmt: skip
    loss_fn = lambda m, xy: nn.functional.cross_entropy(m(xy[0]), xy[1])  # noqa: E731
    score = lambda m: {"eval_acc": memory_accuracy(m, [eval_length], n=256)[eval_length]}  # noqa: E731
    history = fit(model, batches, loss_fn, config, score if eval_every else None)
    model.curve = [(s + 1, a) for s, a in zip(history.eval_step, history.eval_acc, strict=True)]
    return model, history.loss


@torch.no_grad()
def memory_accuracy(
    model: MemoryRNN, lengths: Sequence[int], n: int = 500, seed: int = 1
) -> dict[int, float]:
    """Accuracy at naming the first symbol, for each sequence length (fresh random sequences)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for length in lengths:
        x, y = first_symbol_batch(n, length, generator=g)
        out[int(length)] = (model(x).argmax(-1) == y).float().mean().item()
    return out


# ----------------------------------------------------------------------------- reversal task


REVERSE_ALPHABET = "abcdefghij"


def reverse_vocab() -> CharVocab:
    """The vocabulary of the reverse task: PAD, BOS, EOS, UNK and the letters a-j."""
    return CharVocab(REVERSE_ALPHABET)


def reverse_test_pairs(lengths: Sequence[int], n_per_length: int = 100, seed: int = 10_000):
    """n_per_length fresh (source, reversed) pairs at each length, for accuracy by length."""
    pairs = []
    for length in lengths:
        pairs += reverse_pairs(n_per_length, length, length, seed=seed + length)
    return pairs


# fmt: off
def reverse_experiment(attention: str | None = None, bidirectional: bool = False,
        steps: int = 400, max_len: int = 16, hidden: int = 64, batch_size: int = 64,
        lr: float = 3e-3, n_train: int = 20_000, seed: int = 0,
        eval_lengths: Sequence[int] | None = None, progress: bool = False):
# fmt: on
    """Train Seq2SeqRNN on reversing strings of length 1..max_len; -> (model, history, acc).

    acc maps each length in eval_lengths (default 2, 4, ..., max_len) to exact-match accuracy
    on 100 unseen strings. The same arguments give the same numbers (notebooks 01 and 02 share it).
    """
    vocab = reverse_vocab()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Seq2SeqRNN(
            len(vocab), emb=32, hidden=hidden, attention=attention,
            bidirectional_encoder=bidirectional, pad_id=vocab.pad_id,
        )  # fmt: skip
    train = reverse_pairs(n_train, 1, max_len, seed=seed)
    history = train_seq2seq(
        model, train, vocab, steps, batch_size=batch_size, lr=lr, seed=seed, progress=progress
    )
    lengths = list(eval_lengths) if eval_lengths is not None else list(range(2, max_len + 1, 2))
    acc = exact_match_by(model, reverse_test_pairs(lengths), vocab, key_fn=lambda p: len(p[0]))
    return model, history, acc


def accuracy_by_position(
    model: nn.Module, pairs: Sequence[Sequence[str]], vocab: CharVocab
) -> list[float]:
    """For each output position i, the fraction of pairs whose greedy output has the right
    character there (pairs of one target length; a too-short output counts as wrong)."""
    n = len(pairs[0][1])
    if any(len(p[1]) != n for p in pairs):
        raise ValueError("accuracy_by_position needs targets of one length; group pairs first")
    outs = translate(model, [p[0] for p in pairs], vocab, max_len=n + 4)
    hits = [0] * n
    for out, (_, target) in zip(outs, pairs, strict=True):
        for i in range(min(n, len(out))):
            hits[i] += out[i] == target[i]
    return [h / len(pairs) for h in hits]
