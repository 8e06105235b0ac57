"""The book's notebooks: stored clean, parameterised for papermill, listed in the book; and the
page helpers of algan.experiments. Executing the notebooks is nbval's job (make test)."""
import ast
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from algan import experiments as E

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
PARAMETERS = {"profile": "smoke", "seeds": None, "data_root": None}
STUDY = {"executor": "local", "workers": None}  # the studies pages run their grids through the sweep runner
EXTRA_PARAMETERS = {"table2_features": {"sources": None},  # a page's own parameters, beside the common ones
                    "table5_speed": {"batch": None, "reps": None, "device": None},
                    "fig7_stability": STUDY, "table7_ablation": STUDY, "tables8_11_hyperparameters": STUDY,
                    "robustness": STUDY, "readings": STUDY}


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_there_is_a_page_per_table_and_figure():
    assert {p.stem for p in NOTEBOOKS} == {"fig1_samples", "fig3_toy", "fig5_histograms", "readings",
                                           "table1_mvtec", "table2_features", "table3_mtd", "table4_coil100",
                                           "table5_speed", "fig7_stability", "table7_ablation",
                                           "tables8_11_hyperparameters", "robustness", "verdicts"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs_with_the_python3_kernel(path):
    nb = load(path)
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, "a page without code"
    for cell in code:
        assert cell["outputs"] == [] and cell["execution_count"] is None, f"{path.name}: stored with outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_and_the_check_that_follows_it(path):
    cells = [c for c in load(path)["cells"] if c["cell_type"] == "code"]
    tagged = [i for i, c in enumerate(cells) if "parameters" in c["metadata"].get("tags", [])]
    assert tagged == [0], f"{path.name}: the first code cell must be the only one tagged 'parameters'"
    tree = ast.parse("".join(cells[0]["source"]))
    assigned = {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body}
    expected = {**PARAMETERS, **EXTRA_PARAMETERS.get(path.stem, {})}
    assert assigned == expected
    setup = "".join(cells[1]["source"])
    checked = ast.literal_eval(setup.split("E.check_page_parameters(globals(), ", 1)[1].split(")", 1)[0])
    assert checked == set(expected), f"{path.name}: the check must name exactly the page's parameters"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_page_has_a_title_and_is_in_the_table_of_contents(path):
    first = load(path)["cells"][0]
    assert first["cell_type"] == "markdown" and "".join(first["source"]).startswith("# ")
    assert f"file: book/pages/{path.stem}\n" in (REPO / "_toc.yml").read_text()


def test_check_page_parameters_names_an_unknown_parameter():
    namespace = {**PARAMETERS, "sigmaa": 3, "np": np, "_": 1, "In": [], "get_ipython": print}
    with pytest.raises(ValueError, match=r"\['sigmaa'\]"):
        E.check_page_parameters(namespace, set(PARAMETERS))
    del namespace["sigmaa"]
    E.check_page_parameters(namespace, set(PARAMETERS))  # modules, _names and IPython's names pass


def test_check_page_parameters_names_an_unknown_profile():
    with pytest.raises(ValueError, match="unknown profile 'gpu'"):
        E.check_page_parameters({**PARAMETERS, "profile": "gpu"}, set(PARAMETERS))


def summary_rows() -> pd.DataFrame:
    tidy = pd.DataFrame({"dataset": "mvtec", "category": "bottle", "method": ["algan"] * 3 + ["knn"] * 3,
                         "seed": [0, 1, 2] * 2, "metric": "test_auroc",
                         "value": [0.90, 0.92, 0.94, 0.80, 0.80, 0.80]})
    return E.summarize(tidy)


def test_auroc_table_puts_methods_in_columns_beside_the_paper():
    table = E.auroc_table(summary_rows())
    row = table.loc[("mvtec", "bottle")]
    assert row["seeds"] == 3
    assert row["ALGAN-image"] == "0.920 ± 0.020"
    assert row[E.METHOD_LABELS["knn"]] == "0.800 ± 0.000"
    assert row["paper (ALGAN-image)"] == "0.948 ± 0.024"
    assert row["ALGAN-image − paper"] == "-0.028"
    assert f"{E.METHOD_LABELS['knn']} − paper" not in table  # the paper has no kNN number


def test_split_missing_keeps_results_and_names_each_missing_data_set_once():
    missing = [E.missing_row("mtd", None, m, "smoke", E.DataError("x: no mtd/")) for m in ("algan", "knn")]
    tidy = pd.DataFrame(missing + [{"dataset": "mtd", "metric": "test_auroc", "value": 0.9}])
    rows, notes = E.split_missing(tidy, "mtd")
    assert notes == ["x: no mtd/"]
    assert rows["value"].tolist() == [0.9]


def test_split_missing_of_an_empty_table_gives_empty_rows_that_summarize_accepts():
    rows, notes = E.split_missing(pd.DataFrame(), "mvtec")
    assert notes == ["mvtec: no data found under the data root, so there is nothing to show"]
    assert rows.empty and E.summarize(rows).empty and E.run_histories(rows).empty


def test_near_perfect_splits_methods_at_the_level():
    text = E.near_perfect(summary_rows(), level=0.91)
    hits, misses = text.split("; below it: ")
    assert "ALGAN-image (0.920)" in hits and "kNN" not in hits
    assert "raw-pixel kNN (reference) (0.800)" in misses


def test_rank_among_gans_names_the_methods_above():
    summary = pd.DataFrame({"dataset": "mtd", "category": "mtd", "method": ["algan", "ganomaly", "alocc"],
                            "mean": [0.55, 0.60, 0.49]})
    assert E.rank_among_gans(summary) == "mtd: ALGAN-image ranks 2 of 3 GAN methods (above it: GANomaly)."
    assert E.rank_among_gans(summary[summary["method"] != "ganomaly"]).endswith("ranks 1 of 2 GAN methods (best).")
