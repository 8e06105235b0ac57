"""The `algan` command: train, score, toy, table, table2, data check."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--set {pair!r}: expected section.name=value, e.g. train.sigma=5")
        out[key] = _parse_value(value)
    return out


# ---- commands -----------------------------------------------------------------------------
def cmd_train(args) -> int:
    from . import results
    from .config import profile
    from .data import load_dataset, load_features
    from .detector import ALGAN
    from .score import auroc

    out = Path(args.out)
    overrides = _overrides(args.set)
    if args.dataset == "features":
        data = load_features(args.path, seed=args.seed)
        cfg = profile(args.profile, kind="feature", **overrides)
        fit = dict(X_val=data.val.x, y_val=data.val.y)
        x_train, x_test = data.train.x, data.test.x
    else:
        cfg = profile(args.profile, **overrides)
        root = args.path if args.dataset == "folder" else args.data_root
        data = load_dataset(args.dataset, root, category=args.category, image_size=cfg.model.image_size,
                            seed=args.seed)
        cfg = cfg.override(**{"model.extra_channels": data.extra_channels})
        fit = dict(X_val=data.val.x, y_val=data.val.y.numpy(), augment=data.augment)
        x_train, x_test = data.train.x, data.test.x
    det = ALGAN(cfg, seed=args.seed, device=args.device, progress=not args.quiet).fit(x_train, **fit)
    y_test = np.asarray(data.test.y)
    metrics = {"best_epoch": det.best_epoch_, "val_auroc": det.best_val_auroc_, "threshold": det.threshold_,
               "test_auroc": auroc(y_test, det.decision_function(x_test))}
    det.save(out / "model.pt")
    results.write_csv(out / "history.csv", det.history_)
    results.write_json(out / "splits.json", {"split_hash": data.split_hash(), "files": data.file_lists()})
    results.write_json(out / "metrics.json", {**metrics, **results.provenance(det.device)})
    print(f"best epoch {det.best_epoch_}: val AUROC {det.best_val_auroc_:.4f}, "
          f"test AUROC {metrics['test_auroc']:.4f}; saved {out / 'model.pt'}")
    return 0


def _collect_images(inputs: list[str]) -> list[Path]:
    files = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and "_mask" not in p.stem)
        elif item.is_file():
            files.append(item)
        else:
            raise ValueError(f"input {item} does not exist: expected image files, folders of images or an .npz")
    if not files:
        raise ValueError(f"no images found in {inputs}: expected files ending in {sorted(IMAGE_SUFFIXES)}")
    return files


def cmd_score(args) -> int:
    import pandas as pd

    from . import results
    from .data import load_images
    from .detector import ALGAN

    det = ALGAN.load(args.checkpoint, device=args.device)
    m = det.config.model
    if m.kind == "feature":
        if len(args.inputs) != 1 or not args.inputs[0].endswith(".npz"):
            raise ValueError(f"inputs {args.inputs}: a feature model scores one .npz file with an array X")
        with np.load(args.inputs[0]) as npz:
            if "X" not in npz:
                raise ValueError(f"{args.inputs[0]}: expected an array 'X' of shape (N, {m.feature_dim})")
            x, y = npz["X"], npz["y"] if "y" in npz else None
        frame = pd.DataFrame({"row": np.arange(len(x))})
    else:
        files = _collect_images(args.inputs)
        x = load_images(files, m.image_size, grayscale=(m.channels - 2 * m.extra_channels) == 1)
        y = [0 if p.parent.name == "good" else (1 if p.parent.parent.name == "test" else None) for p in files]
        frame = pd.DataFrame({"path": [str(p) for p in files]})
    scores = det.decision_function(x)
    frame["score"] = scores
    frame["prediction"] = (scores > det.threshold_).astype(int)
    if y is not None:
        frame["label"] = y
    results.write_csv(args.out, frame)
    print(f"scored {len(frame)} samples (threshold {det.threshold_:.4f}, {int(frame['prediction'].sum())} "
          f"flagged anomalous) -> {args.out}")
    return 0


def cmd_toy(args) -> int:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import toy

    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, kind in zip(axes, ("algan", "plain_gan")):
        res = toy.run_toy(kind, seed=args.seed, epochs=args.epochs, progress=not args.quiet)
        name = "ALGAN" if kind == "algan" else "plain GAN"
        print(f"{name:9s} test AUROC (held-out normal vs ring r=4): {res.test_auroc:.4f}")
        toy.plot_toy(res, ax=ax, title=f"{name}: AUROC {res.test_auroc:.3f}")
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"figure saved to {args.out}")
    return 0


def cmd_table(args) -> int:
    from .experiments import image_auroc_table, summarize

    overrides = _overrides(args.set)
    tidy = image_auroc_table(args.dataset, profile=args.profile, seeds=args.seeds, methods=args.methods,
                             categories=args.categories, data_root=args.data_root, overrides=overrides or None,
                             save_as=args.save_as)
    print(summarize(tidy).to_string(index=False))
    return 0


def cmd_table2(args) -> int:
    from .feature_runs import METHODS, table2, table2_display, table2_summary

    tidy = table2(profile=args.profile, seeds=args.seeds, methods=args.methods or METHODS, sources=args.sources,
                  data_root=args.data_root, save_as=args.save_as)
    for name, table in table2_display(table2_summary(tidy)).items():
        if not table.empty:
            print(f"\n{name}:\n{table.to_string()}")
    return 0


def cmd_data_check(args) -> int:
    from .data.check import check_root, format_report

    frame, ok = check_root(args.root)
    print(format_report(frame))
    return 0 if ok else 1


# ---- parser -------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="algan", description="ALGAN anomaly detection (Murase & Fukumizu, 2022)")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train ALGAN on a data set and save model.pt, history.csv, metrics.json")
    t.add_argument("--dataset", required=True, choices=["mvtec", "mtd", "coil100", "folder", "features"])
    t.add_argument("--category", help="MVTec-AD category, e.g. bottle")
    t.add_argument("--path", help="category folder (dataset=folder) or .npz file (dataset=features)")
    t.add_argument("--data-root", help="data root holding mvtec/, mtd/, coil-100/ (default: $ALGAN_DATA)")
    t.add_argument("--profile", default="cpu", help="smoke, cpu or paper (default: cpu)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.sigma=5")
    t.add_argument("--out", required=True, help="output folder")
    t.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("score", help="score images or features with a trained model -> CSV")
    s.add_argument("checkpoint", help="model.pt written by `algan train`")
    s.add_argument("inputs", nargs="+", help="image files, folders of images, or one .npz with X")
    s.add_argument("--out", default="scores.csv", help="CSV with path/row, score, prediction (and label if known)")
    s.add_argument("--device")
    s.set_defaults(func=cmd_score)

    y = sub.add_parser("toy", help="Figure 3: ALGAN vs a plain GAN on 2-D toy data; prints both AUROCs")
    y.add_argument("--seed", type=int, default=0)
    y.add_argument("--epochs", type=int, default=60)
    y.add_argument("--out", default="toy.png", help="figure file (default: toy.png)")
    y.add_argument("--quiet", action="store_true")
    y.set_defaults(func=cmd_toy)

    b = sub.add_parser("table", help="run (cached) and summarise a Table 1/3/4 experiment")
    b.add_argument("dataset", choices=["mvtec", "mtd", "coil100"])
    b.add_argument("--profile", default="cpu")
    b.add_argument("--seeds", type=int, nargs="+")
    b.add_argument("--methods", nargs="+", default=["algan", "knn"],
                   help="algan, knn, ganomaly, skip_ganomaly, alocc (default: algan knn)")
    b.add_argument("--categories", nargs="+")
    b.add_argument("--data-root")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    b.add_argument("--save-as", help="write results/<name>_<profile>.csv")
    b.set_defaults(func=cmd_table)

    f = sub.add_parser("table2", help="run (cached) and summarise Table 2: ALGAN-feature and the feature baselines")
    f.add_argument("--profile", default="cpu")
    f.add_argument("--seeds", type=int, nargs="+")
    f.add_argument("--methods", nargs="+", default=None, help="default: all of algan.feature_runs.METHODS")
    f.add_argument("--sources", nargs="+", default=None, help="adbench, mvtec, mtd, coil100 (default: the profile's)")
    f.add_argument("--data-root")
    f.add_argument("--save-as", help="write results/<name>_<profile>.csv")
    f.set_defaults(func=cmd_table2)

    d = sub.add_parser("data", help="data utilities")
    dsub = d.add_subparsers(dest="data_command", required=True)
    c = dsub.add_parser("check", help="check a data root: counts, decodable files, layout")
    c.add_argument("root")
    c.set_defaults(func=cmd_data_check)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:  # DataError is a ValueError: one line, exit code 2
        print(f"algan: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
