"""The built book as a reader sees it: every page of `_build/html` opened in headless Chromium at
1280 px. Fails on a table wider than its column, an image that does not load, a Python traceback or
warning in a page's outputs, and an internal link to a page or anchor that does not exist.

Run after `make book` (`make test` does both). Needs Debian's `chromium` (`.ci/run` installs it) and
the `playwright` package, which drives that executable (no browser download)."""
import os
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

HTML = Path(__file__).resolve().parents[2] / "_build" / "html"
WIDTH = 1280
CHROMIUM = os.environ.get("ALGAN_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")

if CHROMIUM is None:
    pytest.skip("no chromium executable on PATH (apt-get install -y chromium): the book's browser test "
                "cannot run", allow_module_level=True)
if not (HTML / "index.html").exists():
    pytest.fail(f"{HTML / 'index.html'} missing: build the book first (make book)", pytrace=False)

PAGES = sorted(p for p in HTML.rglob("*.html") if not {"_static", "_sources", "_images"} & set(p.parts)
               and p.name not in ("search.html", "genindex.html")
               and 'http-equiv="Refresh"' not in p.read_text()[:200])  # the root's redirect to the landing page

# Per table: its width against the visible width of the box it sits in (a cell's output area or the
# theme's scrolling table container, both as wide as the content column): wider means cut off or scrolled.
TABLES = """() => [...document.querySelectorAll('article.bd-article table')].map(t => ({
    width: t.getBoundingClientRect().width, column: t.parentElement.clientWidth,
    head: (t.querySelector('tr') || t).innerText.slice(0, 80)}))"""
IMAGES = """() => [...document.querySelectorAll('article img')].filter(i => !(i.complete && i.naturalWidth > 0))
                 .map(i => i.getAttribute('src'))"""
OUTPUTS = """() => [...document.querySelectorAll('.cell_output')].map(o => o.innerText)"""
LINKS = """() => [...document.querySelectorAll('article a[href]')].map(a => a.getAttribute('href'))"""
IDS = """() => [...document.querySelectorAll('[id]')].map(e => e.id)"""


@pytest.fixture(scope="module")
def browser():
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def pages(browser):
    """Each page's tables, broken images, output texts, links and element ids, read once."""
    page = browser.new_page(viewport={"width": WIDTH, "height": 900})
    seen = {}
    for path in PAGES:
        page.goto(path.as_uri(), wait_until="load")
        seen[path] = {name: page.evaluate(js) for name, js in
                      (("tables", TABLES), ("images", IMAGES), ("outputs", OUTPUTS), ("links", LINKS), ("ids", IDS))}
    page.close()
    return seen


def _name(path: Path) -> str:
    return str(path.relative_to(HTML))


def test_the_book_has_its_pages():
    assert len(PAGES) >= 15, [_name(p) for p in PAGES]


def test_tables_fit_their_column(pages):
    wide = [f"{_name(p)}: table '{t['head']}' is {t['width']:.0f} px in a {t['column']} px column"
            for p, seen in pages.items() for t in seen["tables"] if t["width"] > t["column"] + 1]
    assert not wide, "\n".join(wide)


def test_images_load(pages):
    broken = [f"{_name(p)}: {src}" for p, seen in pages.items() for src in seen["images"]]
    assert not broken, "\n".join(broken)


def test_outputs_hold_no_traceback_or_warning(pages):
    bad = [f"{_name(p)}: {text[:200]!r}" for p, seen in pages.items() for text in seen["outputs"]
           if "Traceback (most recent call last)" in text or "Warning:" in text or "Error:" in text]
    assert not bad, "\n".join(bad)


def test_internal_links_resolve(pages):
    ids = {p: set(seen["ids"]) for p, seen in pages.items()}
    broken = []
    for path, seen in pages.items():
        for href in seen["links"]:
            url = urlparse(href)
            if url.scheme or href.startswith("mailto:"):
                continue
            target = (path.parent / unquote(url.path)).resolve() if url.path else path
            if not target.exists():
                broken.append(f"{_name(path)}: {href} (no such file)")
            elif url.fragment and target in ids and url.fragment not in ids[target]:
                broken.append(f"{_name(path)}: {href} (no such anchor)")
    assert not broken, "\n".join(broken)
