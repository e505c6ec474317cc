"""The course website `make book` built opens from disk in Chromium with the network blocked:
every notebook is there in order with previous/next links, every figure loads, the math is
typeset by the local MathJax, search works, and each page links to its notebook."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from _browser import ROOT, screenshot

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
BOOK = ROOT / "build" / "book"
# <script src=...>, <link href=...> (stylesheets, fonts, icons) and CSS url(...) / @import.
EXTERNAL_TAG = re.compile(
    r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=[\"']?(?:https?:)?//", re.I
)
EXTERNAL_CSS = re.compile(r"(?:url\(\s*[\"']?|@import\s+[\"'])(?:https?:)?//", re.I)
MATHJAX_DONE = (
    "() => window.MathJax && MathJax.isReady && MathJax.Hub.queue.pending === 0"
    " && document.querySelector('.MathJax_CHTML') !== null"
)


@pytest.fixture(scope="module", autouse=True)
def built_book():
    index = BOOK / "index.html"
    newest = max(p.stat().st_mtime for p in NOTEBOOKS)
    if not index.exists() or any(
        not (BOOK / f"{p.stem}.html").exists() or (BOOK / f"{p.stem}.html").stat().st_mtime < newest
        for p in NOTEBOOKS
    ):
        pytest.fail("build/book is missing or older than the notebooks: run `make book` first")


def page_url(name: str, anchor: str = "") -> str:
    return (BOOK / name).as_uri() + (f"#{anchor}" if anchor else "")


def settle(page) -> None:
    """Wait until MathJax (on pages with math) has finished: leaving a page earlier aborts its
    font loads, which would read as failed assets."""
    page.wait_for_function(
        "() => !window.MathJax || (MathJax.isReady && MathJax.Hub.queue.pending === 0)",
        timeout=30_000,
    )


def visit(page, url: str) -> None:
    page.goto(url, wait_until="load")
    settle(page)


def assert_offline_and_clean(page) -> None:
    guard = page.guard
    assert guard.blocked == [], f"the site reached for the network: {guard.blocked}"
    assert guard.failed == [], f"assets failed to load: {guard.failed}"
    assert guard.errors == [], f"JavaScript errors: {guard.errors}"


def test_no_page_or_stylesheet_loads_anything_from_another_host():
    offenders = []
    for path in [*BOOK.glob("*.html"), *(BOOK / "_static").rglob("*.css")]:
        text = path.read_text(encoding="utf-8", errors="replace")
        pattern = EXTERNAL_CSS if path.suffix == ".css" else EXTERNAL_TAG
        offenders += [f"{path.relative_to(BOOK)}: {m.group(0)}" for m in pattern.finditer(text)]
    assert offenders == [], "external assets:\n" + "\n".join(offenders[:20])


def test_sidebar_lists_every_notebook_in_course_order(offline_page):
    page = offline_page
    visit(page, page_url("index.html"))
    links = page.locator("nav.bd-docs-nav a.reference.internal")
    hrefs = [h for h in links.evaluate_all("els => els.map(e => e.getAttribute('href'))")]
    assert [h.removesuffix(".html") for h in hrefs if h != "#"] == [p.stem for p in NOTEBOOKS]
    screenshot(page, "book-index")
    assert_offline_and_clean(page)


def test_next_link_of_each_page_leads_to_the_next_notebook(offline_page):
    page = offline_page
    for here, there in zip(NOTEBOOKS, NOTEBOOKS[1:], strict=False):
        visit(page, page_url(f"{here.stem}.html"))
        page.locator("a.right-next").click()
        page.wait_for_load_state("load")
        settle(page)
        assert page.url.endswith(f"/{there.stem}.html"), f"next from {here.stem} led to {page.url}"
        prev = page.locator("a.left-prev").get_attribute("href")
        assert prev == f"{here.stem}.html", f"previous from {there.stem} is {prev}"
    assert_offline_and_clean(page)


def _png_outputs(path: Path) -> int:
    cells = json.loads(path.read_text())["cells"]
    return sum("image/png" in o.get("data", {}) for c in cells for o in c.get("outputs", []))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_figure_of_the_notebook_loads(notebook, offline_page):
    page = offline_page
    visit(page, page_url(f"{notebook.stem}.html"))
    sizes = page.locator("article img").evaluate_all(
        "imgs => imgs.map(i => [i.getAttribute('src'), i.complete && i.naturalWidth])"
    )
    shown = [src for src, width in sizes if width]
    broken = [src for src, width in sizes if not width]
    assert broken == [], f"figures that did not load: {broken}"
    assert len(shown) >= _png_outputs(notebook), f"{len(shown)} figures shown"
    if notebook.stem == "09_full_transformer":  # docs/images/book-09-figure.png in the README
        visit(page, page_url(f"{notebook.stem}.html", "inside-the-trained-model-attention-maps"))
        screenshot(page, "book-09-figure")
    assert_offline_and_clean(page)


def test_math_is_typeset_by_the_local_mathjax(offline_page):
    page = offline_page
    visit(page, page_url("03_self_attention.html", "why-divide-by-sqrt-d-k"))
    page.wait_for_function(MATHJAX_DONE, timeout=30_000)
    assert page.locator(".MathJax_CHTML").count() > 10
    assert page.locator(".mjx-merror").count() == 0, "a formula failed to typeset"
    screenshot(page, "book-03-math")  # docs/images/book-03-math.png in the README
    assert_offline_and_clean(page)


def test_search_finds_pages_offline(offline_page):
    page = offline_page
    page.goto(page_url("search.html") + "?q=softmax", wait_until="load")
    results = page.locator("#search-results ul.search li")
    results.first.wait_for(timeout=30_000)
    titles = results.locator("a").first.inner_text()
    assert results.count() >= 3, f"only {results.count()} result(s) for 'softmax'"
    assert titles, "a search result without a title"
    assert_offline_and_clean(page)


def test_each_page_links_to_its_notebook_for_download(offline_page):
    page = offline_page
    for notebook in NOTEBOOKS:
        visit(page, page_url(f"{notebook.stem}.html"))
        href = page.locator("a.btn-download-source-button").get_attribute("href")
        assert href == f"_sources/{notebook.name}"
        assert (BOOK / href).read_bytes() == notebook.read_bytes(), f"{href} is not the notebook"
    assert_offline_and_clean(page)
