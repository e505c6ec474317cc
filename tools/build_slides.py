"""Build one reveal.js deck per notebook that works offline: `make slides` -> build/slides/.

nbconvert's slides load reveal.js, require.js, jQuery and MathJax from CDNs. Here they come from
the npm registry at build time (slides/package.json + package-lock.json, `npm ci` into the
git-ignored slides/node_modules; without Node.js, the same tarballs are fetched and checked
against the lock file's hashes), and the files a deck needs are copied to build/slides/_static/.
Every URL in a deck is relative, so the folder works opened from disk, served
(`python -m http.server -d build/slides`), or copied to a USB stick for the lecture hall.

Decks are built from the outputs stored in the notebooks (fast, no kernel). `--execute` re-runs
each notebook first with COURSE_LECTURE=1, so figures come out in the large lecture style
(slow: as long as running the notebooks).

Usage: python tools/build_slides.py [notebooks/03_self_attention.ipynb ...] [--out build/slides]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SLIDES_DIR = ROOT / "slides"  # package.json, package-lock.json, templates/
NODE_MODULES = SLIDES_DIR / "node_modules"
TEMPLATE = "course_reveal"  # slides/templates/course_reveal: reveal without the Mermaid CDN import
STATIC = "_static"  # folder next to the decks holding the front-end assets

# What each deck links to, relative to the deck's folder.
REVEAL_PREFIX = f"{STATIC}/reveal.js"
REQUIRE_JS = f"{STATIC}/require.js"
JQUERY = f"{STATIC}/jquery.min.js"
MATHJAX = f"{STATIC}/mathjax/MathJax.js?config=TeX-AMS_CHTML-full,Safe"

# (source under node_modules, destination under _static): only what a deck loads.
# MathJax 2 is 73 MB installed; its CommonHTML output needs about 6 MB of it.
ASSETS = [
    ("reveal.js/dist", "reveal.js/dist"),
    ("reveal.js/plugin/notes", "reveal.js/plugin/notes"),
    ("reveal.js/LICENSE", "reveal.js/LICENSE"),
    ("requirejs/require.js", "require.js"),
    ("jquery/dist/jquery.min.js", "jquery.min.js"),
    ("mathjax/MathJax.js", "mathjax/MathJax.js"),
    ("mathjax/LICENSE", "mathjax/LICENSE"),
    ("mathjax/config/TeX-AMS_CHTML-full.js", "mathjax/config/TeX-AMS_CHTML-full.js"),
    ("mathjax/config/Safe.js", "mathjax/config/Safe.js"),
    ("mathjax/extensions", "mathjax/extensions"),
    ("mathjax/jax/element", "mathjax/jax/element"),
    ("mathjax/jax/input/TeX", "mathjax/jax/input/TeX"),
    ("mathjax/jax/output/CommonHTML", "mathjax/jax/output/CommonHTML"),
    ("mathjax/jax/output/PreviewHTML", "mathjax/jax/output/PreviewHTML"),
    ("mathjax/fonts/HTML-CSS/TeX/woff", "mathjax/fonts/HTML-CSS/TeX/woff"),
    ("mathjax/fonts/HTML-CSS/TeX/otf", "mathjax/fonts/HTML-CSS/TeX/otf"),
]
IGNORE = shutil.ignore_patterns("*.map", "reveal.esm.js")


def install_assets() -> None:
    """Install slides/package-lock.json into slides/node_modules when it is missing or stale.

    With npm: `npm ci`. Without Node.js (a lecturer's laptop): the same tarballs straight from
    the npm registry, each checked against the lock file's sha512 integrity.
    """
    lock = SLIDES_DIR / "package-lock.json"
    marker = NODE_MODULES / ".course-installed"
    if marker.exists() and marker.stat().st_mtime >= lock.stat().st_mtime:
        return
    npm = shutil.which("npm")
    print("installing reveal.js, require.js, jQuery and MathJax from npm (once) ...", flush=True)
    if npm is not None:
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=SLIDES_DIR, check=True
        )
    else:
        fetch_from_registry(json.loads(lock.read_text()))
    marker.touch()


def fetch_from_registry(lock: dict) -> None:
    """Download, verify and unpack every package of a lock file (what `npm ci` does here)."""
    registry = os.environ.get("npm_config_registry", "https://registry.npmjs.org").rstrip("/")
    shutil.rmtree(NODE_MODULES, ignore_errors=True)
    for key, meta in lock["packages"].items():
        if not key.startswith("node_modules/"):
            continue
        name = key.removeprefix("node_modules/")
        basename = name.rsplit("/", 1)[-1]
        url = meta.get("resolved") or f"{registry}/{name}/-/{basename}-{meta['version']}.tgz"
        with urllib.request.urlopen(url, timeout=300) as response:
            data = response.read()
        algorithm, digest = meta["integrity"].split("-", 1)
        if base64.b64encode(hashlib.new(algorithm, data).digest()).decode() != digest:
            sys.exit(f"{url} does not match the integrity in slides/package-lock.json")
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            members = []
            for member in tar.getmembers():  # npm tarballs hold everything under package/
                member.name = member.name.split("/", 1)[1] if "/" in member.name else ""
                if member.name:
                    members.append(member)
            tar.extractall(NODE_MODULES / name, members=members, filter="data")
        print(f"  {name}@{meta['version']} ({len(data) / 1e6:.1f} MB, integrity ok)", flush=True)


def copy_assets(out: Path) -> None:
    """Copy the files the decks load into out/_static (skips files already up to date)."""

    def copy_if_newer(src: str, dst: str) -> str:
        s, d = Path(src), Path(dst)
        if (
            not d.exists()
            or d.stat().st_size != s.stat().st_size
            or d.stat().st_mtime < s.stat().st_mtime
        ):
            shutil.copy2(s, d)
        return dst

    for src_rel, dst_rel in ASSETS:
        src, dst = NODE_MODULES / src_rel, out / STATIC / dst_rel
        if not src.exists():
            sys.exit(f"{src} is missing: delete slides/node_modules and run make slides again")
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(
                src, dst, ignore=IGNORE, copy_function=copy_if_newer, dirs_exist_ok=True
            )
        else:
            copy_if_newer(str(src), str(dst))


def exporter():
    """nbconvert's SlidesExporter pointed at the local assets and the course template."""
    from nbconvert import SlidesExporter
    from traitlets.config import Config

    c = Config()
    c.SlidesExporter.extra_template_basedirs = [str(SLIDES_DIR / "templates")]
    c.SlidesExporter.template_name = TEMPLATE
    c.SlidesExporter.reveal_url_prefix = REVEAL_PREFIX
    c.SlidesExporter.reveal_theme = "white"  # nbconvert's default ("simple") loads Google Fonts
    c.SlidesExporter.reveal_scroll = True  # a long code cell scrolls instead of being cut off
    c.SlidesExporter.reveal_number = "c/t"  # slide numbers, for "go back to slide 12"
    # A 16:10 canvas (reveal scales it to the screen): a 100-character code line fits.
    c.SlidesExporter.reveal_width = "1280"
    c.SlidesExporter.reveal_height = "800"
    c.HTMLExporter.require_js_url = REQUIRE_JS
    c.HTMLExporter.jquery_url = JQUERY
    c.HTMLExporter.mathjax_url = MATHJAX
    return SlidesExporter(config=c)


def execute(nb, path: Path, timeout: int) -> None:
    """Re-run a notebook in place (in memory) in lecture figure style."""
    from nbclient import NotebookClient

    os.environ["COURSE_LECTURE"] = "1"  # the kernel inherits it: use_course_style() goes large
    os.environ.pop("MPLBACKEND", None)  # `make` exports agg; the kernel needs its inline backend
    os.environ.setdefault("COURSE_LIVEPLOT", "0")
    NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()


def write_index(out: Path, decks: list[tuple[str, str]]) -> None:
    """build/slides/index.html: one link per deck."""
    items = "\n".join(
        f'  <li><a href="{html.escape(f)}">{html.escape(title)}</a></li>' for f, title in decks
    )
    (out / "index.html").write_text(
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<title>Attention, Step by Step: slides</title></head>\n<body>\n"
        "<h1>Attention, Step by Step: slides</h1>\n"
        "<p>Arrow keys move; <kbd>f</kbd> goes full screen; <kbd>Esc</kbd> shows every slide.</p>\n"
        f"<ul>\n{items}\n</ul>\n</body></html>\n",
        encoding="utf-8",
    )


def deck_title(nb, fallback: str) -> str:
    """The first heading of the notebook, e.g. '03 · Self-attention'."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip().replace("*", "")
    return fallback


def main(argv: list[str] | None = None) -> int:
    """Build the decks; print one line per deck and the total time."""
    import nbformat

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "slides")
    ap.add_argument("--execute", action="store_true", help="re-run with COURSE_LECTURE=1 first")
    ap.add_argument("--timeout", type=int, default=1200, help="seconds per cell with --execute")
    ap.add_argument("--force", action="store_true", help="rebuild decks that look up to date")
    args = ap.parse_args(argv)

    start = time.perf_counter()
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    install_assets()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    copy_assets(out)
    exp = exporter()
    decks = []
    newest_tool = max(
        p.stat().st_mtime for p in [Path(__file__), *SLIDES_DIR.glob("templates/*/*")]
    )
    built = 0
    for path in paths:
        t0 = time.perf_counter()
        target = out / f"{path.stem}.slides.html"
        nb = nbformat.read(path, as_version=4)
        fresh = target.exists() and target.stat().st_mtime > max(path.stat().st_mtime, newest_tool)
        if fresh and not (args.force or args.execute):
            decks.append((target.name, deck_title(nb, path.stem)))
            continue
        if args.execute:
            execute(nb, path, args.timeout)
        nb.metadata.setdefault("title", deck_title(nb, path.stem))  # the browser tab's title
        # Stored widget state makes nbconvert load the widget manager from a CDN; a static
        # deck cannot run widgets anyway (their stored figure or text output is shown).
        nb.metadata.pop("widgets", None)
        body, _ = exp.from_notebook_node(nb, resources={"metadata": {"name": path.stem}})
        target.write_text(body, encoding="utf-8")
        built += 1
        decks.append((target.name, deck_title(nb, path.stem)))
        print(f"  {target.name}  ({time.perf_counter() - t0:.1f} s)", flush=True)
    if args.notebooks:  # a partial build keeps the other decks in the index
        decks += existing_decks(out, decks)
    else:  # a full build drops decks whose notebook was renamed or removed
        for stale in existing_decks(out, decks):
            (out / stale[0]).unlink()
    write_index(out, sorted(set(decks)))
    print(
        f"{built} deck(s) built, {len(paths) - built} up to date, in "
        f"{time.perf_counter() - start:.1f} s; open {out / 'index.html'}"
    )
    return 0


def existing_decks(out: Path, built: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Decks in `out` other than `built`: (file name, title)."""
    names = {f for f, _ in built}
    return [
        (p.name, p.name.removesuffix(".slides.html"))
        for p in sorted(out.glob("*.slides.html"))
        if p.name not in names
    ]


if __name__ == "__main__":
    sys.exit(main())
