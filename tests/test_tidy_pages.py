"""tools/tidy_pages.py: the book's pages show results, not papermill's parameter cells or imports."""
import copy
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("tidy_pages", ROOT / "tools" / "tidy_pages.py")
tidy_pages = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tidy_pages)


def code(tags=(), outputs=1):
    return {"cell_type": "code", "metadata": {"tags": list(tags)}, "source": "x", "outputs": [{}] * outputs}


def test_tidy_removes_parameters_and_silent_cells_and_folds_the_rest():
    nb = {"cells": [code(["parameters"], 0), code(["injected-parameters"], 0), code(outputs=0), code(),
                    code(["remove-input"]), {"cell_type": "markdown", "metadata": {}, "source": "# t"}]}
    assert tidy_pages.tidy(nb)
    tags = [c["metadata"].get("tags") for c in nb["cells"]]
    assert tags[:5] == [["parameters", "remove-cell"], ["injected-parameters", "remove-cell"], ["remove-cell"],
                        ["hide-input"], ["remove-input"]]
    again = copy.deepcopy(nb)
    assert not tidy_pages.tidy(again) and again == nb  # idempotent


@pytest.mark.parametrize("page", sorted((ROOT / "book" / "pages").glob("*.ipynb")), ids=lambda p: p.name)
def test_the_stored_pages_are_tidy(page):
    assert not tidy_pages.tidy(json.loads(page.read_text())), f"run: python tools/tidy_pages.py {page}"
