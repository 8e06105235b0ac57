"""The book's notebooks: stored clean, parameterised for papermill, listed in the book; and the
page helpers of algan.pages. Executing the notebooks is nbval's job (make test)."""
import ast
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from algan import claims
from algan.data import common
from algan.pages import common as P, images as IM
from algan.runs import image as RI

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
PARAMETERS = {"profile": "smoke", "seeds": None, "data_root": None}
STUDY = {"executor": "local", "workers": None}  # the studies pages run their grids through the sweep runner
EXTRA_PARAMETERS = {"table2_features": {"sources": None},  # a page's own parameters, beside the common ones
                    "table5_speed": {"batch": None, "reps": None, "device": None},
                    "fig7_stability": STUDY, "table7_ablation": STUDY, "tables8_11_hyperparameters": STUDY,
                    "robustness": STUDY, "readings": STUDY, "tabular": STUDY, "selection": STUDY}


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_there_is_a_page_per_table_and_figure():
    assert {p.stem for p in NOTEBOOKS} == {"fig1_samples", "fig3_toy", "fig5_histograms", "readings",
                                           "table1_mvtec", "table2_features", "table3_mtd", "table4_coil100",
                                           "table5_speed", "fig7_stability", "table7_ablation",
                                           "tables8_11_hyperparameters", "robustness", "verdicts", "tabular",
                                           "selection"}


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
    checked = ast.literal_eval(setup.split("P.check_page_parameters(globals(), ", 1)[1].split(")", 1)[0])
    assert checked == set(expected), f"{path.name}: the check must name exactly the page's parameters"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_page_has_a_title_and_is_in_the_table_of_contents(path):
    first = load(path)["cells"][0]
    assert first["cell_type"] == "markdown" and "".join(first["source"]).startswith("# ")
    assert f"file: book/pages/{path.stem}\n" in (REPO / "_toc.yml").read_text()


def test_check_page_parameters_names_an_unknown_parameter():
    namespace = {**PARAMETERS, "sigmaa": 3, "np": np, "_": 1, "In": [], "get_ipython": print}
    with pytest.raises(ValueError, match=r"\['sigmaa'\]"):
        P.check_page_parameters(namespace, set(PARAMETERS))
    del namespace["sigmaa"]
    P.check_page_parameters(namespace, set(PARAMETERS))  # modules, _names and IPython's names pass


def test_check_page_parameters_names_an_unknown_profile():
    with pytest.raises(ValueError, match="unknown profile 'gpu'"):
        P.check_page_parameters({**PARAMETERS, "profile": "gpu"}, set(PARAMETERS))


def summary_rows() -> pd.DataFrame:
    tidy = pd.DataFrame({"dataset": "mvtec", "category": "bottle", "method": ["algan"] * 3 + ["knn"] * 3,
                         "seed": [0, 1, 2] * 2, "metric": "test_auroc",
                         "value": [0.90, 0.92, 0.94, 0.80, 0.80, 0.80]})
    return IM.summarize(tidy)


def test_auroc_table_has_a_row_per_method_beside_the_paper():
    table = IM.auroc_table(summary_rows())
    algan, knn = (table[table["method"] == name].iloc[0] for name in ("ALGAN-image", RI.METHOD_LABELS["knn"]))
    assert algan["data set"] == "bottle" and algan["seeds"] == 3 and algan["reading"] == "literal"
    assert algan["test AUROC"] == "0.920 ± 0.020"
    assert algan["95 % interval"] == "[0.870, 0.970]"  # 0.920 ± t(0.975, 2) * 0.020 / sqrt(3)
    assert algan["paper"] == "0.948 ± 0.024" and algan["ours − paper"] == "-0.028"
    assert knn["test AUROC"] == "0.800 ± 0.000" and knn["reading"] == "-"
    assert knn["paper"] == "" and knn["ours − paper"] == ""  # the paper has no kNN number


def test_split_missing_keeps_results_and_names_each_missing_data_set_once():
    missing = [IM.missing_row("mtd", None, m, "smoke", common.DataError("x: no mtd/")) for m in ("algan", "knn")]
    tidy = pd.DataFrame(missing + [{"dataset": "mtd", "metric": "test_auroc", "value": 0.9}])
    rows, notes = P.split_missing(tidy, "mtd")
    assert notes == ["x: no mtd/"]
    assert rows["value"].tolist() == [0.9]


def test_split_missing_of_an_empty_table_gives_empty_rows_that_summarize_accepts():
    rows, notes = P.split_missing(pd.DataFrame(), "mvtec")
    assert notes == ["mvtec: no data found under the data root, so there is nothing to show"]
    assert rows.empty and IM.summarize(rows).empty and P.run_histories(rows).empty


def test_near_perfect_splits_methods_at_the_level():
    text = claims.near_perfect(summary_rows(), level=0.91)
    hits, misses = text.split("; below it: ")
    assert "ALGAN-image (0.920)" in hits and "kNN" not in hits
    assert "raw-pixel kNN (reference) (0.800)" in misses


def test_rank_among_gans_names_the_methods_above():
    summary = pd.DataFrame({"dataset": "mtd", "category": "mtd", "method": ["algan", "ganomaly", "alocc"],
                            "mean": [0.55, 0.60, 0.49]})
    assert claims.rank_among_gans(summary) == "mtd: ALGAN-image ranks 2 of 3 GAN methods (above it: GANomaly)."
    assert claims.rank_among_gans(summary[summary["method"] != "ganomaly"]).endswith("ranks 1 of 2 GAN methods (best).")


def test_split_sizes_counts_each_split_and_its_auroc_step(tmp_path):
    run = tmp_path / "abc"
    run.mkdir()
    pd.DataFrame({"split": ["test"] * 5 + ["val"] * 3, "label": [0, 0, 1, 1, 1, 0, 1, 1],
                  "score": 0.0}).to_csv(run / "scores.csv", index=False)
    tidy = pd.DataFrame({"dataset": ["mtd"], "category": [None], "run": ["abc"]})
    line = P.split_sizes(tidy, runs_dir=tmp_path)
    assert line.startswith("MTD: test 2 normal / 3 anomalous images (AUROC in steps of 0.17; one normal image "
                           "can move it by up to 0.5)")
    assert "validation 1 normal / 2 anomalous" in line


def test_an_aurocs_interval_stays_inside_0_and_1():
    assert P.interval(0.95, 0.05, 3) == "[0.826, 1.000]"  # 0.95 + 4.30 * 0.05 / sqrt(3) = 1.074, cut at 1
    assert P.interval(0.9, 0.1, 1) == "-"


def test_a_pages_tables_show_a_named_index_as_columns_and_hide_row_numbers():
    frame = pd.DataFrame({"n_dis": [4, 1], "auroc": [0.8, 0.9]}, index=[7, 3])
    html = P._frame_html(frame)
    assert ">7<" not in html and ">3<" not in html and "0.800" in html
    named = P._frame_html(frame.set_index("n_dis"))
    assert "n_dis" in named and ">4<" in named
