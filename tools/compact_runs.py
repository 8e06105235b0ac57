"""Convert a run cache's older run folders in place to the form a new run writes (issue 19):

- scores.csv -> scores.npz (`algan.results.write_scores`), kept only where `read_scores` gives back
  exactly the frame pandas reads from the CSV (values, columns and dtypes);
- a splits.json that embeds its file lists (`files`, or the `ids` of older feature and tabular runs) ->
  one that references `<runs>/_splits/<split_hash>.json` (`results.write_splits`); a store file that is
  already there must hold exactly the same lists, else the tool stops naming both files;
- samples.png of runs no figure shows (`algan.runs.image.shows_samples`) removed.

Folders without `done` are left alone, and a second pass changes nothing. It prints what it converted and,
per kind of run, the folders' mean and largest size.

usage: python tools/compact_runs.py [RUNS_DIR]   (default: the run cache, results/runs or $ALGAN_RUNS)
"""
import json
import sys
from pathlib import Path

from algan import results
from algan.runs.image import shows_samples


def folder_bytes(folder: Path) -> int:
    """The bytes of a run folder, weights aside (git-ignored, and not touched here)."""
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file() and f.suffix != ".pt")


def compact_splits(folder: Path) -> bool:
    """splits.json's embedded file lists moved to the split store; True if the folder changed."""
    path = folder / "splits.json"
    info = json.loads(path.read_text()) if path.is_file() else {}
    key = next((k for k in ("files", "ids") if isinstance(info.get(k), dict)), None)
    if key is None:
        return False
    lists = info.pop(key)
    store = folder.parent / results.SPLITS / f"{info['split_hash']}.json"
    if not store.is_file():
        results.write_json(store, lists)
    if json.loads(store.read_text()) != lists:
        sys.exit(f"{store}: holds other file lists than {path} embeds for the same split hash; expected the "
                 "same lists: find which run is wrong before converting")
    results.write_splits(folder, info, lists)  # the store is there: splits.json only, referencing it
    return True


def compact_scores(folder: Path) -> bool:
    """scores.csv as scores.npz, once the new form reads back the same frame; True if the folder changed."""
    csv = folder / results.OLD_SCORES
    if not csv.is_file():
        return False
    old = results.read_scores(folder)
    results.write_scores(folder, old)
    new = results.read_scores(folder)
    if not (new.equals(old) and new.dtypes.equals(old.dtypes)):
        (folder / results.SCORES).unlink()
        sys.exit(f"{csv}: {results.SCORES} would not read back the same frame; left as it was")
    csv.unlink()
    return True


def drop_samples(folder: Path) -> bool:
    """samples.png removed where no figure shows it; True if the folder changed."""
    samples = folder / "samples.png"
    if not samples.is_file() or shows_samples(json.loads((folder / "config.json").read_text())["args"]):
        return False
    samples.unlink()
    return True


def sizes_by_task(runs_dir: Path) -> list[str]:
    """A line per kind of run (an image run per data set): how many, mean and largest folder bytes."""
    sizes: dict[str, list[int]] = {}
    for folder in (p for p in runs_dir.iterdir() if p.is_dir() and results.is_done(p)):
        args = json.loads((folder / "config.json").read_text())["args"]
        kind = f"{args['task']} {args['dataset']}" if args["task"] == "image_run" else args["task"]
        sizes.setdefault(kind, []).append(folder_bytes(folder))
    return [f"  {kind}: {len(v)} runs, mean {sum(v) / len(v) / 1000:.1f} KB, largest {max(v) / 1000:.1f} KB"
            for kind, v in sorted(sizes.items())]


def main(runs_dir: Path) -> None:
    if not runs_dir.is_dir():
        sys.exit(f"{runs_dir}: not a folder; expected a run cache (e.g. results/runs)")
    stores = {p.name for p in (runs_dir / results.SPLITS).glob("*.json")}
    converted, before, after = 0, 0, 0
    for folder in sorted(p for p in runs_dir.iterdir() if p.is_dir() and results.is_done(p)):
        size = folder_bytes(folder)
        changed = [step(folder) for step in (compact_splits, compact_scores, drop_samples)]
        if any(changed):
            converted, before, after = converted + 1, before + size, after + folder_bytes(folder)
    added = sum(p.stat().st_size for p in (runs_dir / results.SPLITS).glob("*.json") if p.name not in stores)
    print(f"{runs_dir}: {converted} run folders converted, {before:,} bytes -> {after:,} bytes "
          f"(+ {added:,} bytes of new split store files); per run folder now, weights aside:")
    print("\n".join(sizes_by_task(runs_dir)))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else results.default_runs_dir())
