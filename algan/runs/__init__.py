"""The runs floor: one run's arguments -> one folder of the run cache (`algan.results.cached_run`).

- `algan.runs.image`: the image methods of Tables 1, 3, 4 (ALGAN-image, GANomaly, Skip-GANomaly, ALOCC, the
  raw-pixel kNN);
- `algan.runs.feature`: Table 2's feature methods (ALGAN-feature, the feature baselines, CutPaste);
- `algan.runs.tabular`: ALGAN-feature and PyOD's detectors on tabular sets (beyond the paper);
- `algan.runs.robustness`: Sec. V-G's scoring of unseen anomalies by a trained model;
- `algan.runs.common`: the profiles' seeds and the default device.

The timing harness of Tables 5 and 6 (`algan.timing`) is a run of this floor too. Nothing here imports the
sweep runner (`algan.sweep`), the claims (`algan.claims`) or the pages (`algan.pages`): `tests/test_layers.py`.
"""
