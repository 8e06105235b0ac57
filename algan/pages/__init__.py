"""The pages floor: one module per family of the book's pages, each returning tidy DataFrames and figures
from the run cache (the runs floor, `algan.runs`, through the sweep runner, `algan.sweep`); no training loops.

- `algan.pages.common`: what every page shares (parameter check, style, provenance line, saved CSVs, `run_study`);
- `algan.pages.images`: Tables 1, 3, 4, Figures 1, 3, 5 and the readings table;
- `algan.pages.features`: Table 2 and the feature-scaling study;
- `algan.pages.studies`: stability (Fig. 7), the ablation (Table 7), Tables 8-11, robustness and the readings study;
- `algan.pages.speed`: Tables 5 and 6 and Figure 6;
- `algan.pages.tabular`: ALGAN-feature against PyOD's detectors on tabular sets;
- `algan.pages.selection`: the checkpoint rules without labels.

Every status a page states (`algan.claims.STATUSES`) and every verdict sentence (its comparisons against the
paper, in words) comes from `algan.claims`.
"""
