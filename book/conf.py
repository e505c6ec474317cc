"""Sphinx configuration of the course website (`make book` -> build/book/, see tools/build_book.py).

Sphinx + MyST-NB render the notebooks with their stored outputs (nothing is executed) in the
Sphinx Book Theme: the notebook list on the left, previous/next at the bottom of each page,
full-text search, and a download button for each notebook. Every asset is local: MathJax 2
comes from the same npm install as the slide decks (slides/package.json), copied into
_static/mathjax/ by tools/build_book.py, so the site works opened from disk, offline.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

project = "Attention, Step by Step"
author = "The course authors"
copyright = "the course authors, MIT licence"

extensions = ["myst_nb"]
root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

# MyST-NB: show the outputs stored in the notebooks; never run a kernel.
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3  # links like [x](#some-heading) inside a notebook resolve
# An explorer's output is a widget view (needs a kernel) with a PNG of its first picture:
# show the picture, and load no ipywidgets JavaScript (it would come from a CDN).
nb_mime_priority_overrides = [("html", "application/vnd.jupyter.widget-view+json", None)]
nb_ipywidgets_js = {}

# MathJax 2 from _static/mathjax/ (the decks' copy), never the default CDN URL.
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS_CHTML-full,Safe"
mathjax2_config = {
    "tex2jax": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]]},
    "CommonHTML": {"linebreaks": {"automatic": True}},
}
myst_update_mathjax = False  # MyST's tweak targets MathJax 3; the delimiters above suffice
# build/book-assets/ (MathJax, filled by tools/build_book.py) and book/_static/ (course.css).
html_static_path = [str(ROOT / "build" / "book-assets"), "_static"]
html_css_files = ["course.css"]

html_theme = "sphinx_book_theme"
html_title = "Attention, Step by Step"
html_copy_source = True
html_sourcelink_suffix = ""  # _sources/03_self_attention.ipynb: the download is the notebook
html_show_sphinx = False
# Result snippets would be fetched from each page, which a browser refuses for file:// pages
# (CORS errors in the console): titles only, the same from disk and online.
html_show_search_summary = False
html_last_updated_fmt = None
html_theme_options = {
    "use_download_button": True,
    "use_fullscreen_button": False,
    "use_repository_button": False,
    "show_toc_level": 1,
    "navigation_with_keys": True,  # left/right arrow keys: previous/next notebook
    "home_page_in_toc": True,
}
# Light by default: the figures have white backgrounds (the reader can still switch).
html_context = {"default_mode": "light"}
