"""Specifications of course_lib.rnn and course_lib.lessons.rnn_bottlenecks (Part I: notebooks 01-02)."""

import pytest
import torch
from torch import nn

from course_lib.data import CharVocab, make_batch, reverse_pairs
from course_lib.lessons.rnn_bottlenecks import (
    cell_from_layer,
    critical_path_length,
    dependency_matrix,
    encoder_layer_matmul_flops,
    gradient_norms_through_time,
    log10_slope,
    make_cell,
    memory_accuracy,
    rnn_matmul_flops,
    state_jacobian_norms,
    train_memory_task,
    unroll,
)
from course_lib.rnn import (
    AdditiveAttention,
    DotAttention,
    Seq2SeqRNN,
    rnn_cell_step,
    rnn_step_jacobian,
)
from course_lib.training import sequence_loss

TOL = 1e-5
VOCAB = CharVocab("abcdefghij")


def _batch(n=6, min_len=2, max_len=7, seed=0):
    return make_batch(reverse_pairs(n, min_len, max_len, seed=seed), VOCAB)


# ----------------------------------------------------------------------------- cell step


def test_rnn_cell_step_matches_nn_rnncell():
    torch.manual_seed(0)
    cell = nn.RNNCell(5, 7)
    x, h = torch.randn(3, 5), torch.randn(3, 7)
    ours = rnn_cell_step(x, h, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    torch.testing.assert_close(ours, cell(x, h), atol=TOL, rtol=TOL)


def test_rnn_cell_step_rejects_transposed_weights():
    with pytest.raises(ValueError, match="W_ih is"):
        rnn_cell_step(torch.randn(2, 5), torch.randn(2, 7), torch.randn(5, 7), torch.randn(7, 7))


def test_rnn_step_jacobian_matches_autograd():
    torch.manual_seed(1)
    cell = nn.RNNCell(4, 6).double()
    x, h = torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 6, dtype=torch.float64)
    h_new = cell(x, h)
    ours = rnn_step_jacobian(h_new.detach(), cell.weight_hh.detach())  # (B, H, H)
    for b in range(2):
        expected = torch.autograd.functional.jacobian(
            lambda s, b=b: cell(x[b : b + 1], s), h[b : b + 1]
        )
        torch.testing.assert_close(ours[b], expected[0, :, 0, :])


# ----------------------------------------------------------------------------- attention modules


@pytest.mark.parametrize("make", [
    lambda: AdditiveAttention(6, 6, 5),
    lambda: DotAttention(6, 6, "dot"),
    lambda: DotAttention(6, 6, "general"),
])  # fmt: skip
def test_attention_weights_sum_to_one_over_real_positions_and_zero_on_pad(make):
    torch.manual_seed(2)
    attn = make()
    query, keys = torch.randn(3, 6), torch.randn(3, 5, 6)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    context, weights = attn(query, keys, mask)
    assert context.shape == (3, 6) and weights.shape == (3, 5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3))
    assert (weights[~mask] == 0).all()
    torch.testing.assert_close(context, torch.einsum("bl,bld->bd", weights, keys))


def test_additive_scores_are_v_tanh_of_projected_sum():
    torch.manual_seed(3)
    attn = AdditiveAttention(4, 6, 5)
    query, keys = torch.randn(2, 4), torch.randn(2, 3, 6)
    expected = torch.stack(
        [
            torch.stack(
                [
                    attn.v.weight[0]
                    @ torch.tanh(attn.W_q.weight @ query[b] + attn.W_k.weight @ keys[b, j])
                    for j in range(3)
                ]
            )
            for b in range(2)
        ]
    )
    torch.testing.assert_close(attn.scores(query, keys), expected, atol=TOL, rtol=TOL)


def test_dot_attention_scores_are_plain_dot_products():
    query, keys = torch.randn(2, 4), torch.randn(2, 3, 4)
    expected = torch.einsum("bd,bld->bl", query, keys)
    torch.testing.assert_close(DotAttention(4, 4).scores(query, keys), expected)


def test_dot_attention_needs_matching_sizes():
    with pytest.raises(ValueError, match="general"):
        DotAttention(4, 8, "dot")


# ----------------------------------------------------------------------------- seq2seq


@pytest.mark.parametrize("attention", [None, "additive", "dot", "general"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_seq2seq_logits_shape(attention, bidirectional):
    if attention == "dot" and bidirectional:
        pytest.skip("dot needs equal sizes; a bidirectional encoder doubles the keys")
    model = Seq2SeqRNN(len(VOCAB), 8, 12, attention, bidirectional)
    b = _batch()
    logits = model(b.src, b.tgt_in)
    assert logits.shape == (*b.tgt_in.shape, len(VOCAB))
    if attention is None:
        assert model.last_attention is None
    else:
        assert model.last_attention.shape == (b.src.shape[0], b.tgt_in.shape[1], b.src.shape[1])


@pytest.mark.parametrize("attention", [None, "additive", "general"])
def test_padding_in_source_does_not_change_outputs(attention):
    torch.manual_seed(4)
    model = Seq2SeqRNN(len(VOCAB), 8, 12, attention, bidirectional_encoder=True).eval()
    b = _batch()
    extra = torch.zeros(b.src.shape[0], 3, dtype=torch.long)  # three more PAD columns
    longer = torch.cat([b.src, extra], dim=1)
    torch.testing.assert_close(model(longer, b.tgt_in), model(b.src, b.tgt_in), atol=TOL, rtol=TOL)
    if attention is not None:
        assert (model.last_attention[..., b.src.shape[1] :] == 0).all()


def test_attention_weights_sum_to_one_over_real_source_positions():
    model = Seq2SeqRNN(len(VOCAB), 8, 12, "additive")
    b = _batch()
    model(b.src, b.tgt_in)
    w = model.last_attention  # (B, L_t, L_s)
    torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:2]))
    pad = (b.src == VOCAB.pad_id)[:, None, :].expand_as(w)
    assert (w[pad] == 0).all()


@pytest.mark.parametrize("attention", [None, "dot"])
def test_greedy_decode_format(attention):
    torch.manual_seed(5)
    model = Seq2SeqRNN(len(VOCAB), 8, 12, attention)
    with torch.no_grad():  # make EOS likely after a few steps so rows finish at different times
        model.out.bias[VOCAB.eos_id] = 1.5
    b = _batch(n=8)
    ids, weights = model.greedy_decode(b.src, 9, VOCAB.bos_id, VOCAB.eos_id, return_attention=True)
    assert ids.dim() == 2 and ids.shape[0] == 8 and ids.shape[1] <= 9
    assert (ids != VOCAB.bos_id).all()
    for row in ids.tolist():
        if VOCAB.eos_id in row:
            end = row.index(VOCAB.eos_id)
            assert all(t == VOCAB.pad_id for t in row[end + 1 :])
    if attention is None:
        assert weights is None
    else:
        assert weights.shape == (8, ids.shape[1], b.src.shape[1])


def test_greedy_decode_agrees_with_teacher_forcing_on_its_own_output():
    torch.manual_seed(6)
    model = Seq2SeqRNN(len(VOCAB), 8, 12, "additive").eval()
    b = _batch(n=4)
    ids = model.greedy_decode(b.src, 6, VOCAB.bos_id, VOCAB.eos_id)
    tgt_in = torch.cat([torch.full((4, 1), VOCAB.bos_id), ids[:, :-1]], dim=1)
    with torch.no_grad():
        logits = model(b.src, tgt_in)
    first = logits.argmax(-1)[:, 0]
    assert torch.equal(first, ids[:, 0])


def test_all_pad_source_row_is_rejected():
    model = Seq2SeqRNN(len(VOCAB), 8, 12)
    with pytest.raises(ValueError, match="all PAD"):
        model(torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 2, dtype=torch.long))


@pytest.mark.parametrize("attention", [None, "additive"])
def test_trains_on_a_tiny_reverse_task(attention):
    torch.manual_seed(7)
    model = Seq2SeqRNN(len(VOCAB), 16, 32, attention, bidirectional_encoder=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    b = _batch(n=32, min_len=2, max_len=4, seed=1)
    losses = []
    for _ in range(40):
        loss = sequence_loss(model(b.src, b.tgt_in), b.tgt_out, VOCAB.pad_id)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], f"loss should fall: {losses[0]:.3f} -> {losses[-1]:.3f}"


# ----------------------------------------------------------------------------- experiments


def test_state_jacobian_norms_match_autograd_for_a_gru():
    torch.manual_seed(8)
    cell = nn.GRUCell(3, 5).double()
    xs = torch.randn(1, 6, 3, dtype=torch.float64)
    norms = state_jacobian_norms(cell, xs)
    h0 = torch.zeros(1, 5, dtype=torch.float64)
    hs = [h0]
    for t in range(6):
        hs.append(cell(xs[:, t], hs[-1]).detach())
    for d in (1, 3, 6):
        t = 6 - d

        def run(h, t=t):
            for k in range(t, 6):
                h = cell(xs[:, k], h)
            return h

        J = torch.autograd.functional.jacobian(run, hs[t])[0, :, 0, :]
        assert abs(norms[d].item() - torch.linalg.matrix_norm(J, ord=2).item()) < 1e-4


def test_vanilla_rnn_gradients_vanish_below_scale_one_and_explode_above():
    small = gradient_norms_through_time("rnn", weight_scale=0.5, length=30)
    large = gradient_norms_through_time("rnn", weight_scale=3.0, length=30)
    assert log10_slope(small) < -0.2 and log10_slope(large) > 0.1


def test_lstm_forget_bias_sets_the_cell_bias():
    cell = make_cell("lstm", 3, 4, forget_bias=2.0)
    assert (cell.bias_ih[4:8] == 2.0).all() and (cell.bias_hh[4:8] == 0).all()


def test_cell_from_layer_reproduces_the_layer():
    torch.manual_seed(9)
    for layer in (
        nn.RNN(3, 4, batch_first=True),
        nn.LSTM(3, 4, batch_first=True),
        nn.GRU(3, 4, batch_first=True),
    ):
        xs = torch.randn(2, 5, 3)
        torch.testing.assert_close(
            unroll(cell_from_layer(layer), xs), layer(xs)[0], atol=TOL, rtol=TOL
        )


def test_critical_path_grows_with_length_for_rnn_not_for_attention():
    cell = nn.LSTMCell(4, 4)
    lengths = (8, 16, 24)
    depth = {L: critical_path_length(unroll(cell, torch.randn(1, L, 4))[:, -1]) for L in lengths}
    assert depth[24] - depth[16] == depth[16] - depth[8] > 0, "one more step, same extra depth"
    attn = nn.MultiheadAttention(4, 1, batch_first=True)
    flat = set()
    for L in lengths:
        x = torch.randn(1, L, 4, requires_grad=True)
        flat.add(critical_path_length(attn(x, x, x)[0]))
    assert len(flat) == 1, "attention's depth does not depend on the length"


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_written_out_cell_equations_match_pytorch(kind):
    from course_lib.lessons.rnn_bottlenecks import _step_fn

    cell = make_cell(kind, 3, 4, seed=11)
    x, h, c = (torch.randn(3, dtype=torch.float64), *torch.randn(2, 4, dtype=torch.float64))
    if kind == "lstm":
        expected = torch.cat(cell(x[None], (h[None], c[None])), dim=1)[0]
        torch.testing.assert_close(_step_fn(cell)(torch.cat([h, c]), x), expected)
    else:
        torch.testing.assert_close(_step_fn(cell)(h, x), cell(x[None], h[None])[0])


def test_flop_formulas_match_pytorchs_counter():
    from torch.utils.flop_counter import FlopCounterMode

    from course_lib.blocks import EncoderLayer, recording_attention

    for kind in ("rnn", "gru", "lstm"):
        cell = {"rnn": nn.RNNCell, "gru": nn.GRUCell, "lstm": nn.LSTMCell}[kind](6, 5)
        counter = FlopCounterMode(display=False)
        with counter:
            unroll(cell, torch.randn(3, 7, 6))
        assert counter.get_total_flops() == rnn_matmul_flops(kind, 7, 3, 6, 5)
    layer = EncoderLayer(16, 4, 32)
    counter = FlopCounterMode(display=False)
    with counter, recording_attention(layer):  # the explicit path: every matmul is visible
        layer(torch.randn(2, 9, 16))
    assert counter.get_total_flops() == encoder_layer_matmul_flops(9, 2, 16, 32)


def test_dependency_matrix_is_causal_for_a_forward_rnn():
    torch.manual_seed(10)
    dep = dependency_matrix(nn.GRU(3, 4, batch_first=True), torch.randn(6, 3))
    assert dep.shape == (6, 6)
    assert (dep.triu(1) == 0).all() and (dep.diagonal() > 0).all()
    bi = dependency_matrix(nn.GRU(3, 4, batch_first=True, bidirectional=True), torch.randn(6, 3))
    assert (bi > 0).all()


def test_memory_task_trains_and_scores():
    model, losses = train_memory_task("lstm", steps=5, max_len=6, forget_bias=1.0)
    acc = memory_accuracy(model, [3, 5], n=20)
    assert len(losses) == 5 and set(acc) == {3, 5} and all(0 <= a <= 1 for a in acc.values())


def test_accuracy_by_position_and_alignment_on_a_perfect_reverser():
    from course_lib.lessons.attention_in_rnns import reverse_alignment_accuracy
    from course_lib.lessons.rnn_bottlenecks import accuracy_by_position

    class Reverser(nn.Module):
        """Reverses perfectly and attends exactly where it copies from."""

        def greedy_decode(self, src, max_len, bos_id, eos_id, return_attention=False):
            B, L = src.shape
            lengths = (src != 0).sum(1)
            ids = torch.zeros(B, L + 1, dtype=torch.long)
            weights = torch.zeros(B, L + 1, L)
            for b in range(B):
                n = int(lengths[b])
                ids[b, :n] = src[b, :n].flip(0)
                ids[b, n] = eos_id
                weights[b, torch.arange(n), torch.arange(n - 1, -1, -1)] = 1.0
            return (ids, weights) if return_attention else ids

    pairs = reverse_pairs(5, 4, 4, seed=3)
    assert accuracy_by_position(Reverser(), pairs, VOCAB) == [1.0] * 4
    assert reverse_alignment_accuracy(Reverser(), pairs, VOCAB) == 1.0
