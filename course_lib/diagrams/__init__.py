"""Schematic diagrams of the course's architectures, drawn with matplotlib in the course style.

Boxes are operations (blue: has weights, grey: no weights, green: recurrent, yellow: LayerNorm),
arrows are tensors labelled with their shapes, and the part a notebook teaches is orange with a
thick black edge. Every function returns a Figure; end the cell with `plt.show()`. Lecture
mode (COURSE_LECTURE=1 or `use_course_style(lecture=True)`) draws larger with larger fonts.

    from course_lib.diagrams import you_are_here
    you_are_here("self-attention")
    plt.show()
"""

from ._draw import highlighted, texts
from .attention import cross_attention_diagram, mask_diagram, multi_head_diagram, qkv_diagram
from .course_map import PARTS, course_map, you_are_here
from .efficiency import kv_cache_diagram, tiled_attention_diagram
from .positional import positional_diagram, rope_diagram
from .rnn import rnn_attention_step, rnn_vs_attention
from .transformer import block_diagram, encoder_decoder_diagram, gpt_diagram

__all__ = [
    "PARTS",
    "block_diagram",
    "course_map",
    "cross_attention_diagram",
    "encoder_decoder_diagram",
    "gpt_diagram",
    "highlighted",
    "kv_cache_diagram",
    "mask_diagram",
    "multi_head_diagram",
    "positional_diagram",
    "qkv_diagram",
    "rnn_attention_step",
    "rnn_vs_attention",
    "rope_diagram",
    "texts",
    "tiled_attention_diagram",
    "you_are_here",
]
