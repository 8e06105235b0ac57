"""Tag the book's executed pages so that a reader sees results, not machinery (idempotent; run by
`make reproduce` after papermill and by `make book` before the build):

- papermill's parameter cells (the page's defaults and the injected values) are removed: the page's
  provenance line already says which profile and seeds it ran;
- code cells without output (imports, definitions) are removed;
- every other code cell without a layout tag gets `hide-input`: its output shows, its code is one
  click away.

usage: python tools/tidy_pages.py book/pages/*.ipynb
"""
import json
import sys
from pathlib import Path

LAYOUT = {"remove-cell", "remove-input", "hide-input", "hide-cell", "hide-output", "remove-output"}


def tidy(nb: dict) -> bool:
    """Tag the cells of one notebook in place; True if anything changed."""
    changed = False
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if {"parameters", "injected-parameters"} & set(tags) or not cell.get("outputs"):
            want = "remove-cell"
        elif LAYOUT & set(tags):
            continue
        else:
            want = "hide-input"
        if want not in tags:
            tags[:] = [t for t in tags if t not in LAYOUT] + [want]
            changed = True
    return changed


def main(paths) -> int:
    for path in map(Path, paths):
        nb = json.loads(path.read_text())
        if tidy(nb):
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
            tmp.replace(path)
            print(f"tidied {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
