"""Drawing primitives for the schematic diagrams: boxes for operations, arrows for tensors.

Coordinates are inches of the normal-mode figure. Lecture mode (COURSE_LECTURE=1, or after
`use_course_style(lecture=True)`) draws the same layout 1.4x larger with fonts 1.6x larger
(the plots' 16 pt fonts), so text grows relative to the boxes but still fits them. Highlighted boxes are orange with a thick black edge and bold text,
so the taught part stands out in colour, for colour-blind readers and in greyscale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib as mpl
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Rectangle
from matplotlib.text import Text

from ..plots import _LECTURE_RC, OKABE_ITO, lecture_mode_from_env

BLUE, ORANGE, GREEN, VERMILLION, PURPLE, SKY, YELLOW, BLACK = OKABE_ITO
HIGHLIGHT = "highlight"  # gid of highlighted artists: what `highlighted(fig)` reports
FONT_PT = {"title": 11.0, "box": 9.5, "label": 8.5, "small": 7.5}  # normal mode
LECTURE_FONT, LECTURE_FIG = 1.6, 1.4  # lecture mode: font and figure scale
MONO = "DejaVu Sans Mono"  # shapes like (B, L, D) read best in a fixed-width font


def _tint(colour: str, white: float) -> tuple[float, float, float]:
    """`colour` mixed with `white` parts of white (0: the colour, 1: white)."""
    r, g, b = mpl.colors.to_rgb(colour)
    return (r + (1 - r) * white, g + (1 - g) * white, b + (1 - b) * white)


# Box kinds: fill and edge colour. Light fills keep black text readable in greyscale.
KINDS: dict[str, tuple[Any, str]] = {
    "learned": (_tint(BLUE, 0.8), BLUE),  # has weights: Linear, embedding, feed-forward
    "op": ("#F2F2F2", "#555555"),  # no weights: softmax, matmul, add, mask
    "io": ("white", "#555555"),  # tokens, tensors in and out
    "rnn": (_tint(GREEN, 0.78), GREEN),  # recurrent cells
    "norm": (_tint(YELLOW, 0.6), "#8C7E00"),  # LayerNorm
    "muted": ("#FAFAFA", "#BBBBBB"),  # context around the taught part
}
HIGHLIGHT_FILL, HIGHLIGHT_EDGE = _tint(ORANGE, 0.35), BLACK
ARROW, PATH = "#666666", VERMILLION  # ordinary data flow; a highlighted path


def resolve_lecture(lecture: bool | None) -> bool:
    """lecture, or when None: COURSE_LECTURE is set or use_course_style(lecture=True) ran."""
    if lecture is not None:
        if not isinstance(lecture, bool):
            raise TypeError(f"lecture must be True, False or None, got {lecture!r}")
        return lecture
    return lecture_mode_from_env() or mpl.rcParams["font.size"] >= _LECTURE_RC["font.size"]


def check_choice(arg: str, value: Any, choices: Sequence[Any]) -> Any:
    """value if it is one of choices, else a ValueError that lists them."""
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{arg}={value!r} is not a valid choice; use one of: {listed}")
    return value


def check_int(arg: str, value: Any, lo: int, hi: int, what: str = "") -> int:
    """An int in [lo, hi] (the range the diagram can draw legibly), else TypeError/ValueError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{arg} must be an int, got {type(value).__name__} {value!r}")
    if not lo <= value <= hi:
        why = f" ({what})" if what else ""
        raise ValueError(f"{arg} must be between {lo} and {hi}{why}, got {value}")
    return value


def check_dim(arg: str, value: Any) -> str:
    """A shape entry for labels: a positive int (printed as is) or a symbol such as 'L'."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return str(value)
    raise TypeError(f"{arg} must be a positive int or a symbol such as 'L', got {value!r}")


def shape(*dims: str) -> str:
    """'(B, L, D)' from dims."""
    return "(" + ", ".join(dims) + ")"


@dataclass(frozen=True)
class Box:
    """A drawn box: centre and size, with its edge midpoints for arrows."""

    x: float
    y: float
    w: float
    h: float

    @property
    def left(self) -> tuple[float, float]:
        return (self.x - self.w / 2, self.y)

    @property
    def right(self) -> tuple[float, float]:
        return (self.x + self.w / 2, self.y)

    @property
    def top(self) -> tuple[float, float]:
        return (self.x, self.y + self.h / 2)

    @property
    def bottom(self) -> tuple[float, float]:
        return (self.x, self.y - self.h / 2)


class Canvas:
    """A figure with one borderless axes in inch coordinates, and drawing helpers."""

    def __init__(self, width: float, height: float, lecture: bool | None = None):
        self.lecture = resolve_lecture(lecture)
        self.font = LECTURE_FONT if self.lecture else 1.0
        fig_scale = LECTURE_FIG if self.lecture else 1.0
        self.fig: Figure = plt.figure(
            figsize=(width * fig_scale, height * fig_scale), layout="none"
        )
        self.ax = self.fig.add_axes((0, 0, 1, 1))
        self.ax.set_xlim(0, width)
        self.ax.set_ylim(0, height)
        self.ax.axis("off")
        self.width, self.height = width, height

    def pt(self, size: str | float) -> float:
        """A font size in points for this mode."""
        return (FONT_PT[size] if isinstance(size, str) else size) * self.font

    def lw(self, width: float) -> float:
        """A line width in points for this mode."""
        return width * (1.5 if self.lecture else 1.0)

    def text(
        self,
        x: float,
        y: float,
        s: str,
        size: str | float = "label",
        mono: bool = False,
        highlight: bool = False,
        bg: bool = False,
        **kw: Any,
    ) -> Text:
        """Text at (x, y), centred unless ha/va say otherwise; bg puts it on a white patch."""
        kw.setdefault("ha", "center")
        kw.setdefault("va", "center")
        if mono:
            kw.setdefault("family", MONO)
        if highlight:
            kw.setdefault("weight", "bold")
        if bg:
            kw["bbox"] = dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.9)
        t = self.ax.text(x, y, s, fontsize=self.pt(size), zorder=5, **kw)
        if highlight:
            t.set_gid(HIGHLIGHT)
        return t

    def title(self, s: str) -> Text:
        """The diagram's title, at the top left."""
        return self.text(0.08, self.height - 0.08, s, "title", ha="left", va="top", weight="bold")

    def box(
        self,
        x: float,
        y: float,
        w: float,
        h: float,
        label: str,
        kind: str = "op",
        highlight: bool = False,
        size: str | float = "box",
        mono: bool = False,
    ) -> Box:
        """A rounded box centred on (x, y) with a label; highlight marks the taught part."""
        fill, edge = (HIGHLIGHT_FILL, HIGHLIGHT_EDGE) if highlight else KINDS[kind]
        patch = FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle="round,pad=0,rounding_size=0.06",
            fc=fill,
            ec=edge,
            lw=self.lw(2.6 if highlight else 1.0),
            zorder=3,
        )
        if highlight:
            patch.set_gid(HIGHLIGHT)
        self.ax.add_patch(patch)
        colour = "#888888" if kind == "muted" and not highlight else "black"
        self.text(x, y, label, size, mono=mono, highlight=highlight, color=colour)
        return Box(x, y, w, h)

    def frame(
        self,
        x0: float,
        y0: float,
        x1: float,
        y1: float,
        label: str = "",
        highlight: bool = False,
        where: str = "top left",
    ) -> None:
        """A dashed rectangle grouping boxes (a layer repeated N times), label at a corner."""
        edge = HIGHLIGHT_EDGE if highlight else "#888888"
        patch = Rectangle(
            (x0, y0),
            x1 - x0,
            y1 - y0,
            fill=highlight,
            fc=_tint(ORANGE, 0.85) if highlight else "none",
            ec=edge,
            lw=self.lw(2.2 if highlight else 1.0),
            ls="--",
            zorder=1,
        )
        if highlight:
            patch.set_gid(HIGHLIGHT)
        self.ax.add_patch(patch)
        if label:
            vert, horiz = where.split()
            tx = x0 + 0.06 if horiz == "left" else x1 - 0.06
            ty = y1 - 0.05 if vert == "top" else y0 + 0.05
            self.text(
                tx,
                ty,
                label,
                "label",
                ha=horiz,
                va=vert,
                highlight=highlight,
                style="italic",
                color="black" if highlight else "#444444",
            )

    def arrow(
        self,
        start: tuple[float, float],
        end: tuple[float, float],
        label: str | None = None,
        highlight: bool = False,
        at: float = 0.5,
        offset: tuple[float, float] = (0.0, 0.0),
        rad: float = 0.0,
        colour: str | None = None,
        dashed: bool = False,
        head: bool = True,
        label_kw: dict | None = None,
    ) -> None:
        """A data-flow arrow from start to end, labelled (in monospace) with the tensor's shape."""
        colour = colour or (PATH if highlight else ARROW)
        patch = FancyArrowPatch(
            start,
            end,
            arrowstyle="-|>" if head else "-",
            mutation_scale=self.pt(9) * (1.3 if highlight else 1.0),
            connectionstyle=f"arc3,rad={rad}",
            color=colour,
            lw=self.lw(2.8 if highlight else 1.1),
            ls="--" if dashed else "-",
            shrinkA=1,
            shrinkB=1,
            zorder=2,
        )
        if highlight:
            patch.set_gid(HIGHLIGHT)
        self.ax.add_patch(patch)
        if label:
            x = start[0] + (end[0] - start[0]) * at + offset[0]
            y = start[1] + (end[1] - start[1]) * at + offset[1]
            self.text(x, y, label, "small", mono=True, bg=True, **(label_kw or {}))

    def path(
        self,
        points: Sequence[tuple[float, float]],
        label: str | None = None,
        highlight: bool = False,
        dashed: bool = False,
        at: int = 0,
        offset: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        """An arrow along a polyline (a residual or a loop); the label sits on segment `at`."""
        colour = PATH if highlight else ARROW
        xs, ys = zip(*points[:-1], strict=False)
        (line,) = self.ax.plot(
            xs, ys, color=colour, lw=self.lw(2.8 if highlight else 1.1), ls="--" if dashed else "-"
        )
        line.set_zorder(2)
        self.arrow(points[-2], points[-1], highlight=highlight, dashed=dashed)
        if label:
            (x0, y0), (x1, y1) = points[at], points[at + 1]
            mid = ((x0 + x1) / 2 + offset[0], (y0 + y1) / 2 + offset[1])
            self.text(*mid, label, "small", mono=True, bg=True)

    def circle(self, x: float, y: float, label: str = "+", highlight: bool = False) -> Box:
        """A small circle for an elementwise operation (the residual's sum)."""
        r = 0.14
        patch = Circle(
            (x, y),
            r,
            fc=HIGHLIGHT_FILL if highlight else "white",
            ec=HIGHLIGHT_EDGE if highlight else "#555555",
            lw=self.lw(2.4 if highlight else 1.0),
            zorder=3,
        )
        self.ax.add_patch(patch)
        self.text(x, y, label, "box", highlight=highlight, weight="bold")
        return Box(x, y, 2 * r, 2 * r)

    def done(self) -> Figure:
        """The finished figure."""
        return self.fig


def texts(fig: Figure) -> list[str]:
    """Every non-empty text drawn in a figure (labels, titles, shape annotations)."""
    return [t.get_text() for t in fig.findobj(Text) if t.get_text().strip()]


def highlighted(fig: Figure) -> list[str]:
    """The texts of the highlighted (taught) parts of a diagram."""
    return [
        t.get_text() for t in fig.findobj(Text) if t.get_gid() == HIGHLIGHT and t.get_text().strip()
    ]
