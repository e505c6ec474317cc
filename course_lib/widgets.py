"""Building blocks for the course's ipywidgets explorers: move one knob, see the effect.

`explorer(controls, render)` wires any controls to a render function that draws into an
Output area. Render functions must be cheap (no training on a slider move): precompute in the
notebook, then only slice and plot here. Everything constructs without a running kernel, and a
static export (GitHub, nbconvert HTML without widget state) shows the first rendering as a PNG.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Image, display
from IPython.utils.capture import capture_output

from .attention import masked_softmax
from .live import in_notebook
from .plots import figure_to_png, plot_attention, to_numpy, token_label

_STYLE = {"description_width": "initial"}  # show whole control names, never "d_...""
MAX_MASK_EDITOR_TOKENS = 12  # an L x L grid of buttons beyond this is unusable


def slider(
    name: str,
    min: float,
    max: float,
    step: float | None = None,
    value: float | None = None,
    continuous: bool = False,
) -> widgets.Widget:
    """An IntSlider when every number is an int, else a FloatSlider; updates on release."""
    value = min if value is None else value
    numbers = (min, max, value) + (() if step is None else (step,))
    kind = widgets.IntSlider if all(isinstance(v, int) for v in numbers) else widgets.FloatSlider
    kwargs = {} if step is None else {"step": step}
    return kind(
        value=value,
        min=min,
        max=max,
        description=name,
        continuous_update=continuous,
        style=_STYLE,
        **kwargs,
    )


def log_slider(
    name: str, min_exp: float, max_exp: float, value: float, base: float = 10.0, step: float = 0.1
) -> widgets.FloatLogSlider:
    """A slider over base**min_exp .. base**max_exp (temperatures, learning rates)."""
    return widgets.FloatLogSlider(
        value=value,
        base=base,
        min=min_exp,
        max=max_exp,
        step=step,
        description=name,
        continuous_update=False,
        style=_STYLE,
    )


def dropdown(name: str, options: Sequence[Any] | Mapping[str, Any], value: Any = None) -> Any:
    """A Dropdown over `options` (a list, or a mapping label -> value)."""
    opts = list(options.items()) if isinstance(options, Mapping) else list(options)
    first = opts[0][1] if isinstance(options, Mapping) else opts[0]
    return widgets.Dropdown(
        options=opts, value=first if value is None else value, description=name, style=_STYLE
    )


class Explorer(widgets.VBox):
    """Controls above an Output area; `render(**values)` redraws it whenever a control changes."""

    def __init__(
        self,
        controls: Mapping[str, widgets.Widget],
        render: Callable[..., None],
        title: str = "",
        controls_box: widgets.Widget | None = None,
    ):
        self.controls = dict(controls)
        self.render = render
        self.title = title
        self.output = widgets.Output()
        self.renders = 0  # how many times render ran (tests and curious learners)
        self._static_png: bytes | None = None
        header = [widgets.HTML(f"<b>{title}</b>")] if title else []
        box = controls_box or widgets.VBox(list(self.controls.values()))
        super().__init__(children=[*header, box, self.output])
        for control in self.controls.values():
            control.observe(self._on_change, names="value")
        self._first_render()

    @property
    def values(self) -> dict[str, Any]:
        """The current value of every control, by name."""
        return {name: c.value for name, c in self.controls.items()}

    def render_now(self) -> None:
        """Clear the Output area and call `render(**values)` into it."""
        with self.output:
            if in_notebook():  # without a kernel, clear_output prints terminal escape codes
                self.output.clear_output(wait=True)
            self._render()

    def _on_change(self, change: dict) -> None:
        """Re-render on a control change."""
        self.render_now()

    def _render(self) -> None:
        """Call render, then show and close any figure it left open (whatever the backend)."""
        before = set(plt.get_fignums())
        self.render(**self.values)
        self.renders += 1
        for num in sorted(set(plt.get_fignums()) - before):
            fig = plt.figure(num)
            if in_notebook():
                display(Image(data=figure_to_png(fig)))
            plt.close(fig)

    def _first_render(self) -> None:
        """Render once into the Output, keeping the first picture for static exports."""
        if not in_notebook():
            with self.output:  # no kernel: prints (if any) go to stdout, figures are closed
                self._render()
            return
        with capture_output() as captured:
            self._render()
        for out in captured.outputs:
            self._static_png = self._static_png or out.data.get("image/png")
        with self.output:
            captured.show()

    def _summary(self) -> str:
        """The control settings in one line, for the plain-text view."""
        return ", ".join(f"{k}={_short(v)}" for k, v in self.values.items())

    def _repr_mimebundle_(self, **kwargs: Any) -> dict:
        """The widget view, plus a PNG and a text summary for frontends without widgets."""
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None:
            return bundle
        bundle["text/plain"] = f"{self.title or 'Explorer'} ({self._summary()})"
        if self._static_png is not None:
            png = self._static_png
            bundle["image/png"] = png if isinstance(png, str) else _b64(png)
        return bundle


def _short(value: Any) -> str:
    """A compact repr for the text summary of an explorer."""
    return f"{value:.3g}" if isinstance(value, float) else repr(value)[:30]


def _b64(data: bytes) -> str:
    """PNG bytes as the base64 text a Jupyter mime bundle carries."""
    import base64

    return base64.b64encode(data).decode("ascii")


def explorer(
    controls: Mapping[str, widgets.Widget],
    render: Callable[..., None],
    title: str = "",
) -> Explorer:
    """Lay out `controls`, render once, and re-render into the Output area on every change."""
    return Explorer(controls, render, title)


def attention_row_explorer(
    tokens: Sequence[str],
    weights: Any,
    values: Any = None,
    title: str = "Where does each token look?",
) -> Explorer:
    """Pick a query token (and a head, for (H, L, L) weights); see its attention row as bars.

    With `values` (L, d), a second panel shows the output for that token: the weighted
    average of the value vectors.
    """
    w = to_numpy(weights)
    if w.ndim == 2:
        w = w[None]
    L = len(tokens)
    if w.ndim != 3 or w.shape[-2:] != (L, L):
        raise ValueError(
            f"weights should be (L, L) or (H, L, L) with L={L} tokens, got shape "
            f"{tuple(to_numpy(weights).shape)}"
        )
    v = None if values is None else to_numpy(values)
    if v is not None and (v.ndim != 2 or v.shape[0] != L):
        raise ValueError(f"values should be (L, d) with L={L}, got shape {tuple(v.shape)}")
    controls: dict[str, widgets.Widget] = {
        "query": dropdown("query token", {f"{i}: {t}": i for i, t in enumerate(tokens)})
    }
    if w.shape[0] > 1:
        controls["head"] = slider("head", 0, w.shape[0] - 1, 1, 0)

    def render(query: int, head: int = 0) -> None:
        row = w[head, query]  # (L,)
        ncols = 1 if v is None else 2
        fig, axes = plt.subplots(1, ncols, figsize=(5.0 * ncols, 3.2), squeeze=False)
        ax = axes[0, 0]
        ax.bar(np.arange(L), row, color="C0")
        ax.bar(int(row.argmax()), row.max(), color="C1", label="largest weight")
        ax.set_xticks(np.arange(L), [token_label(t) for t in tokens], rotation=45 if L > 8 else 0)
        ax.set_ylim(0.0, 1.0)
        ax.set_xlabel("key token")
        ax.set_ylabel("attention weight")
        ax.set_title(
            f"Query '{token_label(tokens[query])}'" + (f", head {head}" if w.shape[0] > 1 else "")
        )
        ax.legend(loc="upper right")
        if v is not None:
            out = row @ v  # (d,): the weighted average of the value vectors
            axes[0, 1].bar(np.arange(out.shape[0]), out, color="C2")
            axes[0, 1].set_xlabel("feature")
            axes[0, 1].set_ylabel("value")
            axes[0, 1].set_title("Output = weights @ values")
        plt.show()

    return Explorer(controls, render, title)


class MaskEditor(Explorer):
    """A grid of toggle buttons (pressed = may attend) and the renormalised attention weights."""

    def __init__(
        self, tokens: Sequence[str], scores: Any, mask: Any = None, title: str = "Mask editor"
    ):
        self.tokens = [str(t) if str(t).strip() else "␣" for t in tokens]
        L = len(self.tokens)
        if L > MAX_MASK_EDITOR_TOKENS:
            raise ValueError(
                f"mask_editor handles at most {MAX_MASK_EDITOR_TOKENS} tokens, got {L}"
            )
        self.scores = torch.as_tensor(to_numpy(scores), dtype=torch.float32)
        if self.scores.shape != (L, L):
            raise ValueError(
                f"scores should be (L, L) = ({L}, {L}) for {L} tokens, got "
                f"{tuple(self.scores.shape)}"
            )
        start = torch.ones(L, L, dtype=torch.bool) if mask is None else torch.as_tensor(mask)
        self.buttons = [
            [
                self._button(bool(start[i, j]), f"{self.tokens[i]} → {self.tokens[j]}")
                for j in range(L)
            ]
            for i in range(L)
        ]
        controls = {
            f"cell_{i}_{j}": b for i, row in enumerate(self.buttons) for j, b in enumerate(row)
        }
        presets = [widgets.Button(description=name) for name in ("all", "causal", "none")]
        for button in presets:
            button.on_click(self._on_preset)
        self._holding = False
        super().__init__(controls, self._draw, title, self._grid(widgets.HBox(presets)))

    @property
    def mask(self) -> torch.Tensor:
        """The current (L, L) boolean mask, True = may attend."""
        return torch.tensor([[b.value for b in row] for row in self.buttons], dtype=torch.bool)

    def weights(self) -> torch.Tensor:
        """The (L, L) attention weights under the current mask."""
        return masked_softmax(self.scores, self.mask)  # (L_q, L_k)

    def set_mask(self, mask: Any) -> None:
        """Set every cell from an (L, L) boolean mask, then redraw once."""
        m = torch.as_tensor(mask, dtype=torch.bool)
        with self.hold_render():
            for i, row in enumerate(self.buttons):
                for j, b in enumerate(row):
                    b.value = bool(m[i, j])
        self.render_now()

    def _summary(self) -> str:
        """How many cells may attend, for the plain-text view."""
        return f"{int(self.mask.sum())} of {self.mask.numel()} cells may attend"

    def hold_render(self) -> _Hold:
        """Context manager: no redraws while several cells change."""
        return _Hold(self)

    def _on_change(self, change: dict) -> None:
        """Relabel the toggled button and redraw, unless a batch update is in progress."""
        button = change["owner"]
        button.icon = "check" if change["new"] else ""
        button.button_style = "info" if change["new"] else ""
        if not self._holding:
            self.render_now()

    def _on_preset(self, button: widgets.Button) -> None:
        """Apply the preset mask the learner clicked: all, causal or none."""
        ones = torch.ones(len(self.tokens), len(self.tokens), dtype=torch.bool)
        presets = {"all": ones, "causal": ones.tril(), "none": ~ones}
        self.set_mask(presets[button.description])

    def _draw(self, **cells: bool) -> None:
        """Heatmap of the renormalised weights (masked cells are 0, empty rows all 0)."""
        L = len(self.tokens)
        _, ax = plt.subplots(figsize=(4.5, 3.8))
        plot_attention(
            self.weights(), self.tokens, self.tokens, "Weights after masking", ax, annotate=L <= 8
        )
        plt.show()

    @staticmethod
    def _button(value: bool, tooltip: str) -> widgets.ToggleButton:
        """One mask cell: pressed (with a check mark) = may attend."""
        return widgets.ToggleButton(
            value=value,
            tooltip=tooltip,
            icon="check" if value else "",
            button_style="info" if value else "",
            layout=widgets.Layout(width="32px", height="28px", padding="0"),
        )

    def _grid(self, presets: widgets.Widget) -> widgets.Widget:
        """Token labels on the top and left of the button grid, presets below."""
        L = len(self.tokens)
        cell = widgets.Layout(width="32px", height="28px", overflow="hidden")
        children = [widgets.Label("q \\ k", layout=widgets.Layout(width="64px"))]
        children += [widgets.Label(t, layout=cell) for t in self.tokens]
        for i, row in enumerate(self.buttons):
            children.append(widgets.Label(self.tokens[i], layout=widgets.Layout(width="64px")))
            children += row
        grid = widgets.GridBox(
            children,
            layout=widgets.Layout(grid_template_columns=f"64px repeat({L}, 34px)"),
        )
        return widgets.VBox(
            [widgets.Label("pressed ✓ = may attend (query row → key column)"), grid, presets]
        )


class _Hold:
    """Suspends a MaskEditor's redraws inside a `with` block."""

    def __init__(self, editor: MaskEditor):
        self.editor = editor

    def __enter__(self) -> None:
        self.editor._holding = True

    def __exit__(self, *exc: object) -> None:
        self.editor._holding = False


def mask_editor(
    tokens: Sequence[str], scores: Any, mask: Any = None, title: str = "Mask editor"
) -> MaskEditor:
    """Toggle which keys each query may attend to and watch the weights renormalise."""
    return MaskEditor(tokens, scores, mask, title)
