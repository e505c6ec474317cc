"""The hint texts of `course_lib.checks`, in one place so they are easy to review and improve.

Each hint names one likely mistake and how to fix it; `{dim}` is filled in where present.
"""

from __future__ import annotations

SOFTMAX_AXIS = (
    "softmax over the wrong axis (dim={dim}): each query's weights must sum to 1 over the "
    "keys, so the softmax runs over the last axis, L_k"
)
MASK_HINTS = {
    "reversed": "mask polarity reversed: you hid the positions where mask is True, but True "
    "means 'may attend'; hide the positions where it is False",
    "after": "mask applied after the softmax: the hidden weights were zeroed but the rest no "
    "longer sum to 1; fill hidden scores with -inf *before* the softmax instead",
    "ignore": "the mask was ignored: hidden positions still receive weight; fill their scores "
    "with -inf before the softmax",
}
HINTS = {
    # attention, heads, positional encoding and masks (checks.py)
    "sdpa_error": "the scores must have shape (..., L_q, L_k): each query meets each key. Transpose only the last two axes of k (the positions and the features); a transpose of the first two axes swaps the batch axes instead and breaks 4-D inputs. The mask (True = may attend) must broadcast to (..., L_q, L_k)",
    "sdpa_single": "you returned one tensor; return both (out, weights): the attention weights "
    "are needed to draw attention maps",
    "no_scale": "scores are not scaled: divide the query-key dot products by √d_k, the square root of d_k, before the softmax",
    "scale_d": "scores divided by d_k instead of √d_k, its square root",
    "scale_mul": "scores multiplied by √d_k: divide by √d_k (sqrt of d_k) instead",
    "fill_zero": "hidden scores were filled with 0 instead of -inf, so exp(0) = 1 still gives them weight; a hidden score must become minus infinity",
    "sdpa_steps": "The idea: each query is compared with every key by a dot product, the comparisons are scaled by the square root of d_k, masked keys get no weight, the weights sum to 1 over the keys, and the output averages the values with them.",
    "contiguous": "after a transpose a tensor is not contiguous in memory, so a view of it can fail: use a reshape, which copies when it must",
    "split_no_transpose": "reshaped straight to (B, H, L, d_k) without a transpose, which mixes "
    "positions and heads: memory holds x position by position, so each head got whole tokens "
    "chopped into pieces. Cut each position's features into heads first, then move the head "
    "axis in front of the sequence axis",
    "split_wrong_axis": "heads taken from the wrong axis: each head is a contiguous block of d_k "
    "features (head 0 = features 0 .. d_k-1), not every H-th feature",
    "split_blhd": "you returned (B, L, H, d_k): the features are split but the head axis must "
    "come before the sequence axis",
    "merge_no_transpose": "reshaped without transposing back: the sequence axis must come "
    "forward again, (B, L, H, d_k), before the heads' features are laid side by side",
    "merge_order": "features in the wrong order: each position must hold head 0's d_k features, "
    "then head 1's, ...; you interleaved the heads feature by feature",
    "merge_no_reshape": "you transposed to (B, L, H, d_k) but did not reshape: merge the last two "
    "axes into H*d_k",
    "pe_swapped": "sin and cos swapped: even dimensions 2i get sin, odd dimensions 2i+1 get cos",
    "pe_halves": "sin and cos concatenated in halves [sin ... | cos ...]; the paper interleaves them: the even columns hold sin, the odd columns cos",
    "pe_exp_i": "wrong exponent: with i the pair index the angle is pos / 10000^(2i/d_model); "
    "you used i/d_model",
    "pe_exp_j": "wrong exponent: you used each dimension's own index j in 10000^(j/d_model), so "
    "sin and cos of a pair get different frequencies; dimensions 2i and 2i+1 share "
    "pos / 10000^(2i/d_model)",
    "pe_multiply": "the angle is pos / 10000^(2i/d_model): you multiplied by the power of the "
    "base instead of dividing by it",
    "pe_batch": "the table has an extra leading axis of size 1; return the 2-D "
    "(max_len, d_model) table",
    "pe_formula": "PE[pos, 2i] = sin(pos / 10000^(2i/d_model)), PE[pos, 2i+1] = cos(...).",
    "causal_reversed": "mask polarity reversed: True must mean 'may attend' (the lower triangle "
    "and the diagonal); you marked the hidden future positions True",
    "causal_future": "off by one: each query can also see the next (future) token; the mask must keep the lower triangle including the diagonal, nothing above it",
    "causal_self": "off by one: a token cannot see itself; the diagonal must be True (the lower triangle including the diagonal)",
    "causal_transposed": "the mask is transposed: rows are queries and columns keys, and query i "
    "may attend keys 0..i (the lower triangle), not i..L-1",
    "causal_both": "mask polarity reversed and off by one: True must mean 'may attend', i.e. "
    "key j <= query i",
    "causal_none": "nothing is masked: query i must not see keys j > i",
    "pad_reversed": "mask polarity reversed: True must mark real tokens (may attend) and False "
    "the PAD positions; use tokens != pad_id",
    "mha_error": "follow the shapes: w_q(x), w_k(x), w_v(x) are (B, L, D) -> split into "
    "(B, H, L, d_k) -> attention -> merge back to (B, L, D) -> w_o",
    "mha_tuple": "Exercise 4.3 asks for the output alone, not (out, weights)",
    "mha_no_proj": "output projection missing: apply w_o to the merged heads",
    "mha_single": "heads not split: this is single-head attention over all D features; split q, "
    "k and v into num_heads heads of d_k = D / num_heads",
    "mha_transpose": "reshape without a transpose: going (B, L, D) <-> (B, H, L, d_k) goes through (B, L, H, d_k) and swaps the head and sequence axes each way; a bare reshape mixes positions and heads",
    "mha_no_scale": "scores are not scaled: divide by √d_k (sqrt of the per-head dimension d_k)",
    "mha_scale_d_model": "scaled by √d_model: each head divides by √d_k, d_k = D / num_heads",
    # LayerNorm, RNN-era attention, online softmax and KV cache (_checks_more.py)
    "ln_batchnorm": "normalised over the batch/sequence axis (BatchNorm-like): LayerNorm "
    "normalises each token's own feature vector, one mean and one variance per token, taken "
    "over its D features",
    "ln_unbiased": "unbiased variance: the library's variance and standard deviation divide by D - 1 by default; LayerNorm uses the biased variance (divide by D)",
    "ln_eps_outside": "eps outside the square root: LayerNorm adds eps to the variance first, "
    "then takes the square root",
    "ln_std": "standard deviation plus eps: the library's standard deviation is unbiased by default and eps belongs inside the square root; LayerNorm divides by the square root of (biased variance + eps)",
    "ln_no_eps": "eps is missing: it is added to the variance before the square root, so a "
    "constant vector does not divide by zero",
    "ln_fixed_eps": "eps is hard-coded: use the eps argument you were given",
    "ln_no_affine": "forgot gamma and beta: after normalising, scale each feature by gamma and "
    "shift it by beta",
    "ln_no_beta": "forgot beta: after the scale gamma, shift each feature by beta",
    "ln_no_gamma": "forgot gamma: scale each normalised feature by gamma before the shift beta",
    "ln_swapped": "gamma and beta swapped: gamma scales the normalised features, beta shifts them",
    "rnn_error": "W_ih is stored as (out, in) = (H, I) and x is a batch of rows (B, I): the "
    "product of the batch with a weight needs the weight transposed, and both products are (B, H)",
    "rnn_no_tanh": "missing tanh: the vanilla RNN squashes the whole sum (both products and both "
    "biases) with tanh",
    "rnn_relu": "used relu: the vanilla RNN cell uses tanh",
    "rnn_no_transpose": "weights not transposed: W_ih is stored as (H, I) and W_hh as (H, H), "
    "(out, in); multiplying a batch of row vectors by them needs the transpose of each",
    "rnn_no_hidden": "forgot the hidden-state term (the previous state times W_hh): without it "
    "the cell has no memory",
    "rnn_bias": "a bias is missing: add both b_ih and b_hh",
    "pool_values": "each example's weights must sum to 1 over its L positions",
    "pool_batch": "softmax over the wrong axis (the batch axis): each example's weights must sum to 1 over its L source positions, the second axis of the (B, L) scores",
    "pool_squeeze": "context must be (B, H_enc) and weights (B, L): squeeze the size-1 axis",
    "additive_no_tanh": "missing tanh: Bahdanau's score squashes the sum of the projected "
    "query and key with tanh before v reads one number out",
    "additive_error": "W_q(query) is (B, A) and W_k(keys) (B, L, A): one query per sentence "
    "must meet L keys, so the projected query needs a length axis of size 1 to broadcast; v "
    "then gives (B, L, 1), whose last axis (only that one) goes",
    "dot_scaled": "Luong's dot score is plain keys · query, without a 1/√d scaling",
    "dot_error": "the scores are one dot product per position: keys (B, L, H) against the "
    "query (B, H) of the same sentence, giving (B, L); a batched matrix product needs the query "
    "as a column (B, H, 1), or multiply and sum over H",
    "os_acc": "forgot to rescale the old accumulator: multiply it by exp(m_prev - m_new) before adding this block's exponentiated scores times its values",
    "os_l": "forgot to rescale l: the new l is the old l times exp(m_prev - m_new) plus the sum over the block's keys of exp(scores - m_new)",
    "os_both": "forgot to rescale l and acc: both were built relative to the old max, multiply "
    "each by exp(m_prev - m_new)",
    "os_inverted": "the rescale factor is inverted: the old state was measured against the old "
    "max, and the new max is at least as large, so the factor that converts it is "
    "exp(old max - new max) <= 1, not its reciprocal",
    "os_max": "the running max must be the larger of the previous max and this block's max per query, not this block's max alone",
    "os_unstable": "exp(scores) without subtracting the running max overflows for large scores; "
    "use exp(scores - m_new) and rescale the old state",
    "os_normalised": "keep acc un-normalised: divide by l only once, after the last block",
    "os_shapes": "m and l are (..., L_q, 1) (the key axis kept with size 1), acc (..., L_q, d_v), scores_block (..., L_q, B_k), v_block (..., B_k, d_v)",
}
