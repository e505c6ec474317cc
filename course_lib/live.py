"""A training curve that redraws itself in place while a notebook trains a model.

Built on `course_lib.plots` (which never imports this module); notebooks import `LivePlot` from here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import matplotlib as mpl
from matplotlib.figure import Figure

from .plots import figure_to_png, plot_training_curves, series


def in_notebook() -> bool:
    """True inside a Jupyter kernel (a notebook, JupyterLab, or nbval/nbconvert running one)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with the course
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class LivePlot:
    """A `callback(step, history)` that redraws the training curves in place every `every` steps.

    Inside a notebook it updates one output (a `display_id`), so the stored notebook keeps a
    single final picture. Elsewhere (scripts, pytest) it draws nothing until `finish()`.
    COURSE_LIVEPLOT=0 turns live updates off in notebooks too (nbval reports every in-place
    update as an "unhandled iopub msg"); `finish()` still shows the final picture.
    """

    def __init__(
        self,
        every: int = 50,
        keys: Sequence[str] = ("loss",),
        acc_keys: Sequence[str] = ("accuracy", "eval_acc"),
        logy: bool = False,
        title: str = "Training progress",
        live: bool | None = None,
    ):
        if every < 1:
            raise ValueError(f"every must be a positive number of steps, got {every}")
        if live is None:
            live = in_notebook() and os.environ.get("COURSE_LIVEPLOT", "1") != "0"
        self.every, self.keys, self.acc_keys = every, tuple(keys), tuple(acc_keys)
        self.logy, self.title, self.live = logy, title, live
        self.history: Any = None
        self.draws = 0  # how many times the figure was rendered
        self._last_step: int | None = None
        self._handle: Any = None

    def __call__(self, step: int, history: Any) -> None:
        """Remember the history; redraw if live and `every` steps passed since the last draw."""
        self.history = history
        if self.live and (self._last_step is None or step - self._last_step >= self.every):
            self._last_step = step
            self._show()

    def figure(self) -> Figure:
        """The curves of the latest history as a new Figure (not registered with pyplot)."""
        if self.history is None:
            raise ValueError("LivePlot has no history yet: pass it to a training loop first")
        fig = Figure(
            figsize=mpl.rcParams["figure.figsize"], layout="constrained"
        )  # outside pyplot: no duplicate inline picture
        ax = fig.add_subplot()
        plot_training_curves(
            self.history, self.keys, self.acc_keys, self.logy, self._title(), ax=ax
        )
        self.draws += 1
        return fig

    def finish(self, history: Any = None) -> Figure:
        """Draw, show (in a notebook, replacing the live picture) and return the final curves.

        In a notebook, assign the result (`fig = live.finish()`) so it is not shown twice.
        """
        if history is not None:
            self.history = history
        fig = self.figure()
        if self.live or in_notebook():
            self._show(fig)
        return fig

    def _title(self) -> str:
        """The title with the latest step and values, e.g. 'Training progress · step 500 ...'."""
        parts = [self.title]
        steps = series(self.history, "step")
        if steps:
            parts.append(f"step {int(steps[-1])}")
        for key in (*self.keys, *self.acc_keys):
            ys = series(self.history, key)
            if ys:
                parts.append(f"{key} {ys[-1]:.3f}")
        return " · ".join(parts)

    def _show(self, fig: Figure | None = None) -> None:
        """Display the figure as a PNG, replacing the previous one in the same output."""
        from IPython.display import Image, display

        image = Image(data=figure_to_png(fig if fig is not None else self.figure()))
        if self._handle is None:
            self._handle = display(image, display_id=True)
        else:
            self._handle.update(image)
