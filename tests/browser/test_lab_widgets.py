"""In a real JupyterLab in Chromium: a course_lib explorer renders, and moving its slider
re-runs the kernel-side render and changes the output. Plus: RISE is installed and presents."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _browser import ROOT, Lab, screenshot
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import TimeoutError as PlaywrightTimeout

FIXTURE = Path(__file__).with_name("widget_fixture.ipynb")
# One real course notebook whose widget is checked too (cells above it run first).
COURSE_NOTEBOOK = ROOT / "notebooks" / "03_self_attention.ipynb"
KERNEL_READY_S = 90
RUN_S = 180  # running a course notebook up to its widget: about 20 s on a quiet machine
WIDGET_S = 30

# The notebook panel the lab shows, when it is `path` and its kernel is connected and idle.
# (The CSS busy indicator is flaky in JupyterLab 4.6; the session context is not.)
KERNEL_STATE_JS = """(path) => {
  const app = window.jupyterapp;
  if (!app) return "app not started";
  const w = app.shell.currentWidget;
  if (!w || !w.context || w.context.path !== path) return "notebook not open";
  const sc = w.sessionContext;
  const k = sc && sc.session && sc.session.kernel;
  if (!sc || !sc.isReady || !k) return "session not ready";
  return k.connectionStatus + "/" + k.status;
}"""
KERNEL_IDLE = 'state === "connected/idle"'


# Progress of a run: how many code cells up to `upto` ran, and the first error output if any.
RUN_STATE_JS = """(upto) => {
  const w = window.jupyterapp.shell.currentWidget;
  const cells = w.content.widgets.slice(0, upto + 1).filter(c => c.model.type === "code");
  for (const c of cells) {
    for (let i = 0; i < c.model.outputs.length; i++) {
      const o = c.model.outputs.get(i).toJSON();
      if (o.output_type === "error") return {error: o.ename + ": " + o.evalue};
    }
  }
  const ran = cells.filter(c => c.model.executionCount !== null).length;
  return {ran, total: cells.length, status: w.sessionContext.session.kernel.status};
}"""
ALL_RAN = 'state.ran === state.total && state.status === "idle"'

# Shut down every session of the server this page came from (REST, with the _xsrf cookie).
SHUTDOWN_SESSIONS_JS = """async () => {
  const xsrf = (document.cookie.match(/(?:^|; )_xsrf=([^;]*)/) || [])[1] || "";
  const sessions = await (await fetch("/api/sessions")).json();
  await Promise.all(sessions.map(s => fetch("/api/sessions/" + s.id,
    {method: "DELETE", headers: {"X-XSRFToken": xsrf}})));
  return sessions.length;
}"""


def wait_js(page, state_js: str, arg, done_js: str, timeout_s: float, what: str, lab: Lab):
    """Wait (bounded) until `done_js` holds for `state = state_js(arg)`; fail at once when a
    cell raised, or after the timeout with the last state and the server log."""
    predicate = f"""(arg) => {{
      const state = ({state_js})(arg);
      return (state && state.error) || ({done_js}) ? state : false;
    }}"""
    try:
        handle = page.wait_for_function(predicate, arg=arg, timeout=timeout_s * 1000, polling=250)
    except PlaywrightTimeout:
        screenshot(page, f"timeout-{what.replace(' ', '-')}")
        last = page.evaluate(state_js, arg)
        pytest.fail(f"{what}: not done after {timeout_s} s (state {last!r})\n{lab.log_tail()}")
    state = handle.json_value()
    if isinstance(state, dict) and state.get("error"):
        pytest.fail(f"{what}: a cell raised {state['error']}")
    return state


def command(page, name: str, args: dict | None = None) -> None:
    """Start a JupyterLab command without awaiting it (page.evaluate has no timeout)."""
    page.evaluate(
        "([name, args]) => { window.jupyterapp.commands.execute(name, args); return true; }",
        [name, args or {}],
    )


def open_notebook(page, lab: Lab, name: str) -> None:
    """Open lab/tree/<name> and wait until its kernel is connected and idle."""
    page.goto(f"{lab.url}/lab/tree/{name}", wait_until="domcontentloaded", timeout=60_000)
    wait_js(page, KERNEL_STATE_JS, name, KERNEL_IDLE, KERNEL_READY_S, "kernel ready", lab)


def run_until(page, lab: Lab, upto: int) -> None:
    """Run every code cell up to index `upto` and wait until they ran and the kernel is idle."""
    command(page, "notebook:clear-all-cell-outputs")  # execution counts back to None
    page.evaluate(
        "(i) => { window.jupyterapp.shell.currentWidget.content.activeCellIndex = i; }", upto
    )
    command(page, "notebook:run-all-above")
    command(page, "notebook:run-cell")
    wait_js(page, RUN_STATE_JS, upto, ALL_RAN, RUN_S, "run cells", lab)


def cell_at(page, index: int):
    """The notebook cell at model index `index` (the lab's windowed list numbers its cells)."""
    return page.locator(f'.jp-Notebook .jp-Cell[data-windowed-list-index="{index}"]')


def widget_cell(page, index: int):
    """The cell at `index`, scrolled into view, once its widget's slider is on the page."""
    cell = cell_at(page, index)
    handle = cell.locator(".widget-slider .noUi-handle").first
    handle.wait_for(state="attached", timeout=WIDGET_S * 1000)
    handle.scroll_into_view_if_needed(timeout=WIDGET_S * 1000)
    return cell


def output_html(cell) -> str:
    """What the explorer's Output area shows now (text and image data)."""
    return cell.locator(".widget-output").first.inner_html(timeout=WIDGET_S * 1000)


def move_first_slider(page, cell, key: str, presses: int) -> None:
    """Focus the first slider's handle and press an arrow key (noUiSlider's keyboard support)."""
    handle = cell.locator(".widget-slider .noUi-handle").first
    handle.focus()
    for _ in range(presses):
        handle.press(key)
        page.wait_for_timeout(100)


def wait_output_change(page, cell, before: str, lab: Lab, expect: str | None = None) -> str:
    """Wait until the Output area differs from `before` (and contains `expect`)."""
    deadline = time.monotonic() + WIDGET_S
    now = before
    while time.monotonic() < deadline:
        now = output_html(cell)
        if now != before and "<img" in now and (expect is None or expect in now):
            return now
        time.sleep(0.2)
    screenshot(page, "timeout-slider")
    pytest.fail(f"the explorer's output did not change after moving the slider\n{lab.log_tail()}")


@pytest.fixture
def lab_page(offline_page, lab):
    """A page on the lab, sessions shut down afterwards (the server is stopped by PID later)."""
    yield offline_page
    try:
        offline_page.evaluate(
            f"() => Promise.race([({SHUTDOWN_SESSIONS_JS})(), new Promise(r => setTimeout(r, 10000))])"
        )
    except PlaywrightError:  # the page is gone: the lab fixture still stops every kernel by PID
        pass


def test_fixture_explorer_follows_its_slider_in_jupyterlab(lab, lab_page):
    page = lab_page
    shutil.copy(FIXTURE, lab.root / FIXTURE.name)
    t0 = time.monotonic()
    open_notebook(page, lab, FIXTURE.name)
    t_kernel = time.monotonic() - t0
    run_until(page, lab, 2)
    prefix = cell_at(page, 1).locator(".jp-OutputArea-output")
    assert f"kernel prefix: {sys.prefix}" in prefix.inner_text(), "the kernel is not this venv"

    cell = widget_cell(page, 2)
    before = output_html(cell)
    assert "n = 5: 1 + 2 + ... + n = 15" in before and "<img" in before
    assert cell_at(page, 0).locator("mjx-container").count() > 0, "math did not render"
    t1 = time.monotonic()
    move_first_slider(page, cell, "ArrowRight", 3)
    after = wait_output_change(page, cell, before, lab, expect="n = 8: 1 + 2 + ... + n = 36")
    t_slider = time.monotonic() - t1
    assert cell.locator(".widget-readout").first.inner_text().strip() == "8"
    assert "n = 5:" not in after
    screenshot(cell, "lab-fixture-explorer")
    print(f"kernel ready {t_kernel:.1f} s, slider -> output {t_slider:.1f} s")
    assert page.guard.blocked == [], f"the lab reached outside the machine: {page.guard.blocked}"
    assert page.guard.errors == [], f"JavaScript errors in the lab: {page.guard.errors}"


def _first_widget_cell(path: Path) -> int | None:
    """Index of the first code cell whose stored output is a widget."""
    nb = json.loads(path.read_text())
    for i, c in enumerate(nb["cells"]):
        outputs = c.get("outputs", []) if c["cell_type"] == "code" else []
        if any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs):
            return i
    return None


def test_a_course_notebook_explorer_follows_its_slider(lab, lab_page):
    index = _first_widget_cell(COURSE_NOTEBOOK) if COURSE_NOTEBOOK.exists() else None
    if index is None:
        pytest.skip(f"{COURSE_NOTEBOOK.name} has no stored widget output to check")
    page = lab_page
    shutil.copy(COURSE_NOTEBOOK, lab.root / COURSE_NOTEBOOK.name)
    open_notebook(page, lab, COURSE_NOTEBOOK.name)
    t0 = time.monotonic()
    run_until(page, lab, index)
    t_run = time.monotonic() - t0
    cell = widget_cell(page, index)
    before = output_html(cell)
    assert "<img" in before, "the explorer showed no picture"
    move_first_slider(page, cell, "ArrowLeft", 1)
    moved = wait_output_change(page, cell, before, lab)
    # A lecturer presents explorers in the lab itself (RISE cannot show widgets, see below):
    # View > Presentation Mode enlarges everything, and the explorer stays live.
    command(page, "application:toggle-presentation-mode")
    page.locator(".jp-mod-presentationMode").first.wait_for(state="attached")
    widget_cell(page, index)
    move_first_slider(page, cell, "ArrowLeft", 1)
    wait_output_change(page, cell, moved, lab)
    screenshot(cell.locator(".jp-OutputArea").first, "lab-course-explorer")
    print(f"{COURSE_NOTEBOOK.name}: {index} cells up to the explorer ran in {t_run:.1f} s")
    assert page.guard.blocked == [], f"the lab reached outside the machine: {page.guard.blocked}"
    assert page.guard.errors == [], f"JavaScript errors in the lab: {page.guard.errors}"


@pytest.mark.skipif(
    importlib.util.find_spec("jupyterlab_rise") is None,
    reason="RISE is not installed (pip install -e '.[lecture]')",
)
def test_rise_is_installed_and_presents_a_notebook(lab, lab_page):
    """RISE's command is in the lab, and its presenter shows slides and math offline.

    Not checked: JavaScript errors. RISE's stand-alone presenter fails to load ipywidgets'
    JupyterLab extension with ipywidgets 8 (jupyterlab-contrib/rise#119: "Shared module
    @jupyterlab/console doesn't exist"), so explorers show their static first picture there.
    """
    listed = subprocess.run(
        [sys.executable, "-m", "jupyter", "labextension", "list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    rise = [
        line for line in (listed.stdout + listed.stderr).splitlines() if "jupyterlab-rise" in line
    ]
    assert rise and "enabled" in rise[0] and "OK" in rise[0], f"labextension list: {rise}"
    page = lab_page
    shutil.copy(FIXTURE, lab.root / "rise_fixture.ipynb")
    page.goto(f"{lab.url}/lab", wait_until="domcontentloaded", timeout=60_000)
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.commands", timeout=60_000)
    page.wait_for_function(
        "() => window.jupyterapp.commands.hasCommand('RISE:preview')", timeout=30_000
    )
    page.goto(f"{lab.url}/rise/rise_fixture.ipynb", wait_until="domcontentloaded", timeout=60_000)
    page.locator(".reveal.ready").wait_for(timeout=60_000)
    assert page.locator(".reveal .slides section").count() >= 1
    page.locator(".reveal mjx-container").first.wait_for(timeout=30_000)  # math, offline
    screenshot(page, "rise-fixture")
    assert page.guard.blocked == [], f"RISE reached outside the machine: {page.guard.blocked}"
