"""The `algan` command: train, score, export, toy, table, table2, sweep, studies, data check, pack."""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from . import __version__
from .config import SELECTS

# Only the standard library at import time: torch, numpy, pandas and the algan modules that use them load
# inside the commands, so `algan --help` answers at once (benchmarks/bench_cli.py).
SEED_MAX = 2**32 - 1  # numpy's and torch's seeds are 32-bit here
DEVICE_HELP = "cpu, cuda, cuda:N or mps"


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


def _seed(text: str) -> int:
    """A --seed value: a whole number in [0, SEED_MAX] (argparse names the option in its error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number in [0, {SEED_MAX}]") from None
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"{value}: expected a whole number in [0, {SEED_MAX}]")
    return value


def _device(text: str) -> str:
    """A --device value by its form; whether it is there is checked by _check_device (that needs torch)."""
    kind, _, index = text.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (index and (kind != "cuda" or not index.isdigit())):
        raise argparse.ArgumentTypeError(f"{text!r}: expected {DEVICE_HELP}")
    return text


def _check_device(device: str | None) -> None:
    """--device names a device this machine has (before any data is read or any work starts)."""
    if device is None or device == "cpu":
        return
    import torch

    kind, _, index = device.partition(":")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--device mps: no Apple GPU (MPS) is available here; use --device cpu")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count <= int(index or 0):
            raise ValueError(f"--device {device}: this machine has {count} CUDA GPU(s); use --device cpu"
                             + (" or cuda:0" if count else ""))


def _check_out_file(out: str) -> None:
    """--out names a file to write, not an existing folder."""
    if Path(out).is_dir():
        raise ValueError(f"--out {out} is a folder: expected the file to write, e.g. {Path(out) / 'scores.csv'}")


# ---- commands -----------------------------------------------------------------------------
# How each data set is split (algan/data: splits.py and the loaders; the README says the same).
SPLIT_RULES = {
    "mvtec": "train = train/good; test/ halved per label into val and test",
    "folder": "train = train/good; test/ halved per label into val and test",
    "mtd": "normal images 50/25/25 train/val/test, anomalous 50/50 val/test",
    "coil100": "10 seeded objects normal, their images 60/20/20 train/val/test; the other objects' 50/50 val/test",
    "features": "normal rows 60/20/20 train/val/test, anomalous rows 50/50 val/test",
}
OP_WORDS = {"hflip": "horizontal flip", "vflip": "vertical flip", "rotate": "rotation"}


def _augment_ops(args) -> tuple[str, ...] | None:
    """The folder's augmentation ops by --augment (default flip); None for the other data sets. A bad value,
    or --augment on a data set that trains with the paper's augmentation, is a ValueError (exit code 2)."""
    from .data.folder import AUGMENT_CHOICES, FOLDER_AUGMENT, folder_augmentations

    if args.dataset != "folder":
        if args.augment is not None:
            raise ValueError(f"--augment {args.augment}: only --dataset folder takes one ({AUGMENT_CHOICES}); "
                             f"--dataset {args.dataset} trains with the paper's augmentation of its data")
        return None
    return folder_augmentations(args.augment or FOLDER_AUGMENT, "--augment")


def _augment_words(args, data) -> str:
    """The augmentation in use, in words, and where it comes from."""
    if args.dataset == "features":
        return "none (feature rows)"
    ops = f"random {', '.join(OP_WORDS[op] for op in data.augmentations)}" if data.augmentations else "none"
    if args.dataset == "folder":
        return f"{ops} (--augment {args.augment or 'flip, the default'})"
    from .runs.image import DATASET_LABELS

    what = f"MVTec-AD {data.category}" if args.dataset == "mvtec" else DATASET_LABELS[args.dataset]
    return f"{ops} (the paper's for {what})"


def _start_banner(args, data, cfg) -> str:
    """What `train` is about to do, in two lines: the split sizes and their rule; the checkpoint selection,
    the threshold and the augmentation."""
    sizes = data.describe()["sizes"]
    part = lambda n: f"{sizes[n]['normal']} normal + {sizes[n]['anomalous']} anomalous"  # noqa: E731
    train = f"{sizes['train']['normal']} normal" if not sizes["train"]["anomalous"] else part("train")
    t = cfg.train
    every = (f"checked every {t.eval_every} epoch{'s' if t.eval_every != 1 else ''} and at the last, "
             "the earliest of ties")
    rule = {"val_labels": f"the checkpoint of best validation AUROC ({every})",
            "last": "the last epoch's checkpoint (--select last: no labels used)",
            "ema": "an exponential average of D's weights over the epochs (--select ema: no labels used)",
            "proxy": f"the checkpoint of best AUROC of the validation normals against synthetic anomalies "
                     f"({every}; --select proxy: no anomaly labels used)"}[t.select]
    return (f"split (seed {args.seed}; {SPLIT_RULES[args.dataset]}): train {train} | val {part('val')} | "
            f"test {part('test')}\n"
            f"selection: {rule}; threshold at {t.threshold_fpr:.0%} false positives on the validation normals; "
            f"augmentation: {_augment_words(args, data)}")


def cmd_train(args) -> int:
    import numpy as np

    from . import results
    from .config import profile
    from .data import load_dataset, load_features
    from .data.splits import require_evaluable
    from .detector import ALGAN, run_disk_bytes
    from .score import auroc

    out = Path(args.out)
    if args.dataset in ("features", "folder") and not args.path:
        what = "an .npz file with arrays X and y" if args.dataset == "features" else "a folder in MVTec layout"
        raise ValueError(f"--dataset {args.dataset} needs --path: {what}")
    _augment_ops(args)  # a bad --augment stops here
    _check_device(args.device)
    overrides = _overrides(args.set)
    if args.select is not None:
        overrides["train.select"] = args.select
    kind = "feature" if args.dataset == "features" else "image"
    cfg = profile(args.profile, kind=kind, reading=args.reading, **overrides)
    results.check_output_dir(out, run_disk_bytes(cfg), "--out")  # before the data is read and the model trained
    if args.dataset == "features":
        data = load_features(args.path, seed=args.seed)
        fit = dict(X_val=data.val.x, y_val=data.val.y)
        x_train, x_test = data.train.x, data.test.x
        source = str(Path(args.path).resolve())
    else:
        root = args.path if args.dataset == "folder" else args.data_root
        data = load_dataset(args.dataset, root, category=args.category, image_size=cfg.model.image_size,
                            seed=args.seed, augment=args.augment if args.dataset == "folder" else None)
        cfg = cfg.override(**{"model.extra_channels": data.extra_channels})
        fit = dict(X_val=data.val.x, y_val=data.val.y.numpy(), augment=data.augment)
        x_train, x_test = data.train.x, data.test.x
        source = str(Path(data.root).resolve())
    require_evaluable(data, args.path or f"{args.dataset}" + (f"/{args.category}" if args.category else ""))
    print(_start_banner(args, data, cfg), flush=True)  # --quiet silences the progress bar only
    det = ALGAN(cfg, seed=args.seed, device=args.device, progress=not args.quiet).fit(x_train, **fit)
    y_test = np.asarray(data.test.y)
    metrics = {"best_epoch": det.best_epoch_, "val_auroc": det.best_val_auroc_, "threshold": det.threshold_,
               "test_auroc": auroc(y_test, det.decision_function(x_test)), "select": cfg.train.select,
               "test_auroc_last": auroc(y_test, det.decision_function(x_test, checkpoint="last"))}
    with results.atomic_folder(out) as folder:  # all files, then `done`, or none (a failure keeps nothing)
        det.save(folder / "model.pt")
        results.write_csv(folder / "history.csv", det.history_)
        # `source`: the data root (images; the files are relative to it) or the .npz (rows), so that
        # `algan score` can tell which of the files it scores were in the validation split
        results.write_json(folder / "splits.json", {"split_hash": data.split_hash(), "source": source,
                                                    "files": data.file_lists()})
        results.write_json(folder / "metrics.json", {**metrics, **results.provenance(det.device)})
    print(f"best epoch {det.best_epoch_}: val AUROC {det.best_val_auroc_:.4f}, "
          f"test AUROC {metrics['test_auroc']:.4f}; saved {out / 'model.pt'}")
    return 0


def _is_mask(path: Path) -> bool:
    """A mask in MVTec layout, ground_truth/<defect>/<image>_mask.png: not an image to score (a user's
    face_mask_01.png elsewhere is)."""
    from .data.mvtec import MASK_SUFFIX

    return path.stem.endswith(MASK_SUFFIX) and path.parent.parent.name == "ground_truth"


def _collect_images(inputs: list[str]) -> list[Path]:
    """The files to score: files named as given; in folders, every image below them, sorted, but for hidden
    files and folders (._x.png, .DS_Store: skipped as `train` skips them) and MVTec-layout masks."""
    from .data.common import IMAGE_EXTS, is_image

    files = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if is_image(p) and not _is_mask(p)
                            and not any(part.startswith(".") for part in p.relative_to(item).parts))
        elif item.is_file():
            files.append(item)
        else:
            raise ValueError(f"input {item} does not exist: expected image files, folders of images or an .npz")
    if not files:
        raise ValueError(f"no images found in {inputs}: expected files ending in {sorted(IMAGE_EXTS)}")
    return files


def _run_splits(checkpoint: str) -> tuple[dict[str, list], str | None] | None:
    """The file lists (or row lists) per split of the run beside `checkpoint` (its splits.json, written by
    `algan train` or the run cache) and their source (the data root or the .npz; None in older files), or
    None when there is no splits.json there."""
    from . import results

    folder = Path(checkpoint).parent
    if not (folder / "splits.json").is_file():
        return None
    try:
        return results.split_files(folder), json.loads((folder / "splits.json").read_text()).get("source")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # not a splits.json of ours: the rows are not marked


def _image_splits(files: list[Path], lists: dict[str, list], source: str | None) -> list[str]:
    """Each scored file's split in the run: its path relative to the run's data root (or, where the root is not
    recorded, the longest end of its path that a split lists); "-" when it is in none."""
    where = {rel: name for name, rels in lists.items() for rel in rels}
    out = []
    for path in files:
        parts = path.resolve().parts
        if source is not None:
            try:
                out.append(where.get(path.resolve().relative_to(source).as_posix(), "-"))
            except ValueError:  # not below the run's data root
                out.append("-")
        else:
            out.append(next((where[r] for r in ("/".join(parts[i:]) for i in range(1, len(parts))) if r in where), "-"))
    return out


def cmd_score(args) -> int:
    import numpy as np
    import pandas as pd

    from . import results
    from .data import load_images
    from .data.features import read_rows
    from .detector import ALGAN
    from .score import auroc

    _check_out_file(args.out)
    _check_device(args.device)
    if args.backend == "onnx":
        from .export import OnnxScorer
        det = OnnxScorer(args.checkpoint)  # same config, threshold_ and decision_function as ALGAN
    elif args.checkpoint.endswith(".onnx"):
        raise ValueError(f"checkpoint {args.checkpoint} is an ONNX model: pass --backend onnx")
    else:
        det = ALGAN.load(args.checkpoint, device=args.device)
    if not math.isfinite(det.threshold_):  # NaN: never set; a prediction against it would flag nothing
        raise ValueError(f"{args.checkpoint}: threshold {det.threshold_} is not finite: expected a fitted "
                         "model (`algan train` sets the threshold)")
    m = det.config.model
    run = _run_splits(args.checkpoint)
    split = None
    if m.kind == "feature":
        if len(args.inputs) != 1 or not args.inputs[0].endswith(".npz"):
            raise ValueError(f"inputs {args.inputs}: a feature model scores one .npz file with an array X")
        x, y = read_rows(Path(args.inputs[0]), m.feature_dim)
        frame = pd.DataFrame({"row": np.arange(len(x))})
        labels_from = "the .npz's y"
        if run is not None and run[1] is not None:  # rows are the run's only when it is the run's file
            same = Path(args.inputs[0]).resolve() == Path(run[1])
            where = {int(r): name for name, rows in run[0].items() for r in rows} if same else {}
            split = [where.get(i, "-") for i in range(len(x))]
    else:
        files = _collect_images(args.inputs)
        x = load_images(files, m.image_size, grayscale=(m.channels - 2 * m.extra_channels) == 1, progress=True)
        y = [0 if p.parent.name == "good" else (1 if p.parent.parent.name == "test" else None) for p in files]
        y = None if all(v is None for v in y) else y
        frame = pd.DataFrame({"path": [str(p) for p in files]})
        labels_from = "the folders (good/ normal, test/<defect>/ anomalous)"
        if run is not None:
            split = _image_splits(files, *run)
    scores = det.decision_function(x)
    frame["score"] = scores
    frame["prediction"] = (scores > det.threshold_).astype(int)
    if y is not None:
        frame["label"] = y
    if split is not None:
        frame["split"] = split
    results.write_csv(args.out, frame)
    print(f"scored {len(frame)} samples (threshold {det.threshold_:.4f}, {int(frame['prediction'].sum())} "
          f"flagged anomalous) -> {args.out}")
    if y is not None:
        print(_auroc_line(frame, labels_from, auroc))
    return 0


def _auroc_line(frame, labels_from: str, auroc) -> str:
    """The AUROC of the labelled rows, leaving out the model's validation rows where they are known."""
    labelled = frame[frame["label"].notna()]
    if "split" in frame:
        val = int((labelled["split"] == "val").sum())
        rows = labelled[labelled["split"] != "val"]
        which = f"{len(rows)} labelled rows not in the model's validation split ({val} left out, by its splits.json)"
    else:
        rows = labelled
        which = (f"all {len(rows)} labelled rows (no splits.json beside the checkpoint: the model's validation "
                 "rows are not known and count too)")
    if rows["label"].nunique() < 2:  # an AUROC needs both labels
        held = "no rows" if rows.empty else ("only anomalous" if rows["label"].iloc[0] == 1 else "only normal") + " rows"
        return f"no AUROC: {which} hold {held}; labels from {labels_from}"
    return f"AUROC {auroc(rows['label'].astype(int), rows['score']):.4f} on {which}; labels from {labels_from}"


def cmd_export(args) -> int:
    from .export import export, load_checkpoint

    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(".onnx")
    det = load_checkpoint(args.checkpoint)
    export(det, out, format=args.format)
    print(f"exported {out} ({args.format}, threshold {det.threshold_:.4f})")
    return 0


TOY_FIGURE = "toy.png"


def cmd_toy(args) -> int:
    from . import results

    out = Path(args.out)
    if out.suffix.lower() in (".png", ".pdf", ".svg", ".jpg", ".jpeg") or out.is_file():
        raise ValueError(f"--out {out}: expected a folder (the figure is written inside it as {TOY_FIGURE}), "
                         f"e.g. --out {out.with_suffix('') if out.suffix else out.parent / 'toy'}")
    results.check_output_dir(out, what="--out")  # before the two models train

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
    with results.atomic_path(out / TOY_FIGURE) as tmp:  # the whole figure or none
        fig.savefig(tmp, dpi=120, format="png")
    print(f"figure saved to {out / TOY_FIGURE}")
    return 0


def _check_run_folders(cfg, save_as: str | None) -> None:
    """The run cache (and the results folder a --save-as CSV goes to) can be written, with room for a run."""
    from . import results
    from .detector import run_disk_bytes
    from .results import RESULTS_DIR

    results.check_output_dir(results.default_runs_dir(), run_disk_bytes(cfg), "runs folder ($ALGAN_RUNS)")
    if save_as:
        results.check_output_dir(RESULTS_DIR, what="results folder ($ALGAN_RESULTS) of --save-as")


def cmd_table(args) -> int:
    from .config import profile
    from .pages.images import image_auroc_table, summarize

    overrides = _overrides(args.set)
    _check_run_folders(profile(args.profile, **overrides), args.save_as)  # bad keys and values stop here too
    tidy = image_auroc_table(args.dataset, profile=args.profile, seeds=args.seeds, methods=args.methods,
                             categories=args.categories, data_root=args.data_root, overrides=overrides or None,
                             save_as=args.save_as)
    print(summarize(tidy).to_string(index=False))
    return 0


def cmd_table2(args) -> int:
    from .config import profile
    from .pages.features import table2, table2_display, table2_summary
    from .runs.feature import METHODS

    _check_run_folders(profile(args.profile, kind="feature"), args.save_as)
    tidy = table2(profile=args.profile, seeds=args.seeds, methods=args.methods or METHODS, sources=args.sources,
                  data_root=args.data_root, save_as=args.save_as)
    for name, table in table2_display(table2_summary(tidy)).items():
        if not table.empty:
            print(f"\n{name}:\n{table.to_string()}")
    return 0


def cmd_sweep(args) -> int:
    from .sweep import load_grid, sweep, sweep_status

    grid = load_grid(args.grid)
    if args.status:
        status = sweep_status(grid, data_root=args.data_root, runs_dir=args.runs_dir)
        print(status)
        failed = status.table[status.table["state"] == "failed"]
        for run, label, error in zip(failed["run"], failed["label"], failed["error"]):
            print(f"failed {run} {label}: {error}")
        return 0
    options = {}
    for pair in args.option:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--option {pair!r}: expected name=value, e.g. slurm_partition=gpu")
        options[key] = _parse_value(value)
    result = sweep(grid, executor=args.executor, workers=args.workers, data_root=args.data_root,
                   runs_dir=args.runs_dir, retry_failed=args.retry_failed, allow_dirty=args.allow_dirty, **options)
    print(result)
    for failure in result.failures:
        print(f"failed {failure['hash']} {failure['label']}: {failure['error']}")
    return 1 if result.failures else 0


def cmd_studies(args) -> int:
    from .pages.studies import study_grids
    from .sweep import sweep, sweep_status

    grids = study_grids(args.profile, args.seeds, args.data_root)
    names = args.only or list(grids)
    unknown = sorted(set(names) - set(grids))
    if unknown:
        raise ValueError(f"unknown study {unknown}: expected some of {list(grids)}")
    empty = [name for name in names if not grids[name]]
    if empty and not args.status and not args.only:  # all studies: run those whose data is there
        print(f"skipped, their data is not under the data root: {', '.join(empty)}")
        names = [name for name in names if grids[name]]
    elif empty and not args.status:  # named ones
        from .runs.tabular import folder_of

        needs = {"tabular": f"ADBench's classical sets in {folder_of(args.data_root)}"}
        raise ValueError(f"study {', '.join(empty)}: nothing to run, its data is not under the data root ("
                         + "; ".join(needs.get(n, f"{n}: the data sets it runs on") for n in empty)
                         + "); check --data-root or $ALGAN_DATA")
    if args.status:
        for name in names:
            print(f"{name}: {sweep_status(grids[name], data_root=args.data_root)}")
        return 0
    # one sweep over the studies named, in their order: no core waits for the end of a study
    result = sweep([g for name in names for g in grids[name]], workers=args.workers, data_root=args.data_root,
                   allow_dirty=args.allow_dirty)
    failed = result.failed
    print(f"{' + '.join(names)}: {result}")
    for failure in result.failures:
        print(f"failed {failure['hash']} {failure['label']}: {failure['error']}")
    return 1 if failed else 0


def cmd_data_check(args) -> int:
    from .data.check import check_root, format_report

    frame, ok = check_root(args.root, progress=True)
    print(format_report(frame))
    return 0 if ok else 1


def cmd_pack(args) -> int:
    from .pack import make_pack, size_report

    manifest = make_pack(args.pack, args.out, args.data_root, quality=args.quality)
    line, ok = size_report(manifest)
    print(f"{args.out}: {line}")
    if not ok:
        print(f"algan pack: over the limit: lower --quality (now {args.quality})", file=sys.stderr)
    return 0 if ok else 1


# ---- parser -------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (bad input: exit code 2 and one line naming the field)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="algan", description="ALGAN anomaly detection (Murase & Fukumizu, 2022)")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train ALGAN on a data set and save model.pt, history.csv, metrics.json")
    t.add_argument("--dataset", required=True, choices=["mvtec", "mtd", "coil100", "folder", "features"],
                   help="mvtec, mtd, coil100 (under --data-root), folder (your MVTec-layout folder, --path) "
                        "or features (an .npz with X and y, --path)")
    t.add_argument("--category", help="MVTec-AD category, e.g. bottle (dataset=folder: only a name for the data, "
                                      "default the folder's; it chooses nothing)")
    t.add_argument("--path", help="category folder (dataset=folder) or .npz file (dataset=features)")
    t.add_argument("--augment", metavar="flip|none|mvtec:<category>",
                   help="dataset=folder only: flip (a random horizontal flip; the default), none, or mvtec:<category> "
                        "(the paper's augmentation of that MVTec-AD category, e.g. mvtec:screw = random rotation); "
                        "mvtec, mtd and coil100 always train with the paper's augmentation")
    t.add_argument("--data-root", help="data root holding mvtec/, mtd/, coil-100/ (default: $ALGAN_DATA)")
    t.add_argument("--profile", default="cpu", help="smoke, cpu or paper (default: cpu)")
    t.add_argument("--seed", type=_seed, default=0, help="seed of the split, the initialisation and training (default: 0)")
    t.add_argument("--reading", default="literal",
                   help="reading of the paper's ambiguous text, algan.config.READINGS: literal (default) or active")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.sigma=5")
    t.add_argument("--select", choices=SELECTS, help="how the checkpoint that scores is chosen (train.select): "
                   "val_labels (default: best validation AUROC, the paper's), or without labels last, ema or proxy")
    t.add_argument("--out", required=True, help="output folder: model.pt, history.csv, splits.json, metrics.json "
                                                "and a done marker, written only once the model is trained")
    t.add_argument("--device", type=_device, help=f"{DEVICE_HELP} (default: cuda if available)")
    t.add_argument("--quiet", action="store_true", help="no progress bar (the split, selection and result lines "
                                                         "are printed still)")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("score", help="score images or features with a trained model -> CSV")
    s.add_argument("checkpoint", help="model.pt written by `algan train` (--backend onnx: a .onnx from `algan export`)")
    s.add_argument("inputs", nargs="+", help="image files, folders of images, or one .npz with X")
    s.add_argument("--out", default="scores.csv",
                   help="CSV with path (or row), score, prediction; label where known (an image under good/ is "
                        "normal, under test/<defect> anomalous; y of an .npz); and split where the run's splits.json "
                        "lies beside the checkpoint: val, test or train when the row was in that split of the "
                        "model's run (matched by path below the run's data root, or by row of the run's .npz), "
                        "- when in none. With labels it prints the AUROC, leaving out the val rows")
    s.add_argument("--device", type=_device, help=f"{DEVICE_HELP}, torch backend only (default: cuda if available)")
    s.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                   help="torch (model.pt) or onnx (an exported .onnx, run by onnxruntime on CPU)")
    s.set_defaults(func=cmd_score)

    e = sub.add_parser("export", help="export a trained ALGAN model for deployment (ONNX)")
    e.add_argument("checkpoint", help="model.pt written by `algan train`")
    e.add_argument("--format", default="onnx", help="onnx (the only format; default)")
    e.add_argument("--out", help="output file (default: the checkpoint with suffix .onnx)")
    e.set_defaults(func=cmd_export)

    y = sub.add_parser("toy", help="Figure 3: ALGAN vs a plain GAN on 2-D toy data; prints both AUROCs")
    y.add_argument("--seed", type=_seed, default=0, help="seed of the data and of both models (default: 0)")
    y.add_argument("--epochs", type=int, default=60, help="training epochs of each model (default: 60)")
    y.add_argument("--out", required=True, metavar="FOLDER",
                   help=f"folder to write the figure into, as FOLDER/{TOY_FIGURE} (made if absent)")
    y.add_argument("--quiet", action="store_true", help="no progress bar")
    y.set_defaults(func=cmd_toy)

    b = sub.add_parser("table", help="run (cached) and summarise a Table 1/3/4 experiment")
    b.add_argument("dataset", choices=["mvtec", "mtd", "coil100"], help="mvtec (Table 1), mtd (Table 3) or coil100 (Table 4)")
    b.add_argument("--profile", default="cpu", help="smoke, cpu or paper (default: cpu)")
    b.add_argument("--seeds", type=_seed, nargs="+", help="default: the profile's seeds")
    b.add_argument("--methods", nargs="+", default=["algan", "knn"],
                   help="algan, knn, ganomaly, skip_ganomaly, alocc (default: algan knn)")
    b.add_argument("--categories", nargs="+", help="MVTec-AD categories (default: those under the data root; mvtec only)")
    b.add_argument("--data-root", help="default: $ALGAN_DATA")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every ALGAN run, e.g. train.sigma=5")
    b.add_argument("--save-as", help="write results/<name>_<profile>.csv")
    b.set_defaults(func=cmd_table)

    f = sub.add_parser("table2", help="run (cached) and summarise Table 2: ALGAN-feature and the feature baselines")
    f.add_argument("--profile", default="cpu", help="smoke, cpu or paper (default: cpu)")
    f.add_argument("--seeds", type=_seed, nargs="+", help="default: the profile's seeds")
    f.add_argument("--methods", nargs="+", default=None, help="default: all of algan.runs.feature.METHODS")
    f.add_argument("--sources", nargs="+", default=None, help="adbench, mvtec, mtd, coil100 (default: the profile's)")
    f.add_argument("--data-root", help="default: $ALGAN_DATA")
    f.add_argument("--save-as", help="write results/<name>_<profile>.csv")
    f.set_defaults(func=cmd_table2)

    w = sub.add_parser("sweep", help="run (cached, resumable) every run of a grid file; --status: where each stands",
                       description="Runs every run of the grid that is not done yet; run it again to resume. "
                                   "Failed runs are retried by default (--no-retry-failed leaves them).")
    w.add_argument("grid", help="grid file (.json, or .yaml with PyYAML): method, dataset, category, seed, "
                                "profile and config keys such as train.sigma; values or lists of values")
    w.add_argument("--status", action="store_true", help="print done / running / failed / todo and the failures; run nothing")
    w.add_argument("--executor", default="local", choices=["local", "serial", "submitit"],
                   help="local: a process pool (default); serial: in this process; submitit: SLURM job arrays")
    w.add_argument("--workers", type=int, help="local: processes (default: the usable cores); "
                                               "submitit: array tasks at once")
    w.add_argument("--retry-failed", action=argparse.BooleanOptionalAction, default=True,
                   help="retry runs that failed before (default: yes)")
    w.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="submitit option, e.g. slurm_partition=gpu, timeout_min=240, cluster=local")
    w.add_argument("--data-root", help="default: $ALGAN_DATA")
    w.add_argument("--runs-dir", help="run cache (default: $ALGAN_RUNS or results/runs)")
    w.add_argument("--allow-dirty", action="store_true",
                   help="let runs into the book's cache (results/runs) come from uncommitted code (default: refused)")
    w.set_defaults(func=cmd_sweep)

    u = sub.add_parser("studies", help="run the grids of the readings page and the studies pages (Tables 7-11) "
                                       "through the sweep runner")
    u.add_argument("--profile", default="cpu", help="smoke, cpu or paper (default: cpu)")
    u.add_argument("--seeds", type=_seed, nargs="+", help="default: the profile's seeds")
    u.add_argument("--only", nargs="+", help="some of: readings alpha_xi n_z n_dis n_dis_non_saturating ablation sigma tables tabular selection "
                                             "(default: all, in this order)")
    u.add_argument("--workers", type=int, help="processes (default: the usable cores)")
    u.add_argument("--status", action="store_true", help="print done / running / failed / todo per study; run nothing")
    u.add_argument("--data-root", help="default: $ALGAN_DATA")
    u.add_argument("--allow-dirty", action="store_true",
                   help="let runs into the book's cache (results/runs) come from uncommitted code (default: refused)")
    u.set_defaults(func=cmd_studies)

    d = sub.add_parser("data", help="data utilities")
    dsub = d.add_subparsers(dest="data_command", required=True)
    c = dsub.add_parser("check", help="check a data root or one MVTec-layout folder: counts, decodable files, layout")
    c.add_argument("root", help="data root holding mvtec/, mtd/, coil-100/ or adbench/, or one category folder "
                                "in MVTec layout (train/good, test/good, test/<defect>, optional ground_truth/)")
    c.set_defaults(func=cmd_data_check)

    k = sub.add_parser("pack", help="copy from the data root only the files a prepared run reads, resized: "
                                    "a compact data root (benchmarks/paper_gpu.sh)")
    k.add_argument("out", help="folder to write the pack to (then ALGAN_DATA=OUT)")
    k.add_argument("--for", dest="pack", required=True, help="the runs it is for: paper-gpu")
    k.add_argument("--data-root", help="default: $ALGAN_DATA")
    k.add_argument("--quality", type=int, default=90, help="JPEG quality of images that are JPEGs (MTD; default: 90)")
    k.set_defaults(func=cmd_pack)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:  # DataError is a ValueError: one line, exit code 2
        print(f"algan: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except OSError as err:  # the machine, not the input (a disk filled up meanwhile): one line, exit code 1
        print(f"algan: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
