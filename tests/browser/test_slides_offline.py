"""Each deck `make slides` built opens from disk in Chromium with the network blocked:
reveal.js starts, every slide and subslide of the notebook is there, the math renders, and
nothing on any slide is cut off at the slide's left or right edge."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
from _browser import ROOT, screenshot

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
DECKS = ROOT / "build" / "slides"
INLINE_MATH = re.compile(r"\$[^$\n]+\$")


def _build_slides():
    spec = importlib.util.spec_from_file_location("build_slides", ROOT / "tools/build_slides.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REVEAL_JS = _build_slides().REVEAL_PREFIX + "/dist/reveal.js"  # the require.js module id
REVEAL = f"require({json.dumps(REVEAL_JS)})"

# Visit every slide; report each element that sticks out of its slide sideways, or that clips
# its own content (a code line hidden behind a scroll bar is cut off on a projector too).
CLIPPED = f"""() => {{
  const R = {REVEAL};
  const found = [];
  for (const slide of R.getSlides()) {{
    const at = R.getIndices(slide);
    R.slide(at.h, at.v);
    const edge = slide.getBoundingClientRect();
    for (const el of slide.querySelectorAll("*")) {{
      if (el.closest("aside.notes")) continue;
      const style = getComputedStyle(el), box = el.getBoundingClientRect();
      if (style.display === "none" || style.visibility === "hidden" || box.width === 0) continue;
      const sticksOut = box.right > edge.right + 2 || box.left < edge.left - 2;
      // MathJax's own inner boxes clip by design; a formula wider than the slide sticks out.
      const clips = !el.closest(".MathJax_CHTML") && ["auto", "hidden", "scroll"].includes(style.overflowX)
        && el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 2;
      if (sticksOut || clips) {{
        found.push(`slide ${{at.h}}.${{at.v}}: <${{el.tagName.toLowerCase()}}> `
          + (sticksOut ? "sticks out of the slide" : `clips ${{el.scrollWidth - el.clientWidth}} px`)
          + `: ${{(el.innerText || "").split("\\n")[0].slice(0, 60)}}`);
        break;  // one line per slide is enough to find it
      }}
    }}
  }}
  return found;
}}"""


def expected(path: Path) -> tuple[int, bool]:
    """(number of slides + subslides, whether a shown markdown cell has $...$ math)."""
    cells = json.loads(path.read_text())["cells"]
    slides, math = 0, False
    for cell in cells:
        kind = cell.get("metadata", {}).get("slideshow", {}).get("slide_type", "-")
        slides += kind in ("slide", "subslide")
        text = "".join(cell["source"])
        math |= (
            cell["cell_type"] == "markdown" and kind != "skip" and bool(INLINE_MATH.search(text))
        )
    return slides, math


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_deck_works_offline_with_every_slide_and_rendered_math(notebook, offline_page):
    deck = DECKS / f"{notebook.stem}.slides.html"
    if not deck.exists() or deck.stat().st_mtime < notebook.stat().st_mtime:
        pytest.fail(f"{deck.relative_to(ROOT)} is missing or stale: run `make slides` first")
    n_slides, has_math = expected(notebook)
    page = offline_page
    page.goto(deck.as_uri(), wait_until="load")
    page.locator(".reveal.ready").wait_for(state="attached", timeout=30_000)
    page.wait_for_function(f"() => {REVEAL}.isReady()", timeout=30_000)
    assert page.evaluate(f"() => {REVEAL}.getTotalSlides()") == n_slides
    if has_math:
        page.wait_for_function(
            "() => window.MathJax && MathJax.isReady && MathJax.Hub.queue.pending === 0"
            " && document.querySelector('.MathJax_CHTML') !== null",
            timeout=30_000,
        )
        bad = page.locator(".MathJax_CHTML .mjx-merror").count()
        assert bad == 0, f"{bad} formula(s) failed to typeset (red in the deck)"
    clipped = page.evaluate(CLIPPED)
    assert clipped == [], f"{len(clipped)} slide(s) cut something off:\n" + "\n".join(clipped)
    page.evaluate(f"() => {REVEAL}.slide(0)")
    screenshot(page, f"slides-{notebook.stem}")
    guard = page.guard
    assert guard.blocked == [], f"the deck reached for the network: {guard.blocked}"
    assert guard.failed == [], f"assets failed to load: {guard.failed}"
    assert guard.errors == [], f"JavaScript errors: {guard.errors}"
