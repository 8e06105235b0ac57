"""train.select: each rule chooses what it says (algan.train._Selection), the last epoch's D is kept beside
the chosen one, and a rule that cannot apply stops before training with one line."""
import numpy as np
import pytest
import torch

from algan import ALGAN
from algan.config import LABEL_FREE_DEFAULT, profile
from algan.train import EMA_DECAY, check_select

EPOCHS = 4


@pytest.fixture(autouse=True)
def _threads(one_torch_thread):
    """One torch thread: runs of the same seed agree to the bit."""


def _data():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(96, 16, generator=gen)
    x_val = torch.randn(40, 16, generator=gen)
    y_val = (np.arange(40) >= 24).astype(int)
    x_val[24:] += 1.0
    return x, x_val, y_val


def _fit(select, epochs=EPOCHS, **fit):
    x, x_val, y_val = _data()
    fit = fit or {"X_val": x_val, "y_val": y_val}
    cfg = profile("smoke", kind="feature", **{"train.epochs": epochs, "train.select": select})
    return ALGAN(cfg, seed=1, device="cpu", progress=False).fit(x, **fit)


def _weights(det, last=False):
    D = det.last_discriminator if last else det.discriminator
    return {k: v.clone() for k, v in D.state_dict().items()}


def test_training_is_the_same_under_every_rule_and_last_is_the_final_epoch():
    x_val = _data()[1]
    fits = {s: _fit(s) for s in ("val_labels", "last", "ema", "proxy")}
    last = fits["last"]
    assert last.best_epoch_ == EPOCHS
    assert np.array_equal(last.decision_function(x_val), last.decision_function(x_val, checkpoint="last"))
    for name, det in fits.items():  # choosing never changes the training: the same last epoch for all
        assert np.array_equal(det.decision_function(x_val, checkpoint="last"), last.decision_function(x_val)), name
        assert det.history_.drop(columns=["seconds", "proxy_auroc"], errors="ignore").equals(
            last.history_.drop(columns="seconds"))
    # last records the last epoch's labelled val AUROC; val_labels the best of them
    assert last.best_val_auroc_ == last.history_["val_auroc"].iloc[-1]
    assert fits["val_labels"].best_val_auroc_ == last.history_["val_auroc"].max()


def test_record_selects_keeps_each_rule_s_checkpoint_without_changing_the_training():
    """One run with train.record_selects holds the D that each rule alone would have chosen."""
    x, x_val, y_val = _data()
    alone = {s: _fit(s) for s in ("val_labels", "last", "ema", "proxy")}
    cfg = profile("smoke", kind="feature", **{"train.epochs": EPOCHS, "train.record_selects": True})
    det = ALGAN(cfg, seed=1, device="cpu", progress=False).fit(x, X_val=x_val, y_val=y_val)
    assert sorted(det.rule_discriminators) == ["ema", "last", "proxy", "val_labels"]
    assert det.history_.drop(columns="seconds").equals(alone["proxy"].history_.drop(columns="seconds"))
    for rule, single in alone.items():
        assert np.array_equal(det.decision_function(x_val, checkpoint=rule), single.decision_function(x_val)), rule
        assert det.rule_epochs_[rule] == single.best_epoch_, rule
    metrics = det.rule_metrics(x_val, y_val, split="val")
    assert metrics["val_auroc_val_labels"] == alone["val_labels"].best_val_auroc_
    assert set(metrics) == {f"{kind}_{rule}" for rule in alone for kind in ("val_auroc", "epoch")}
    with pytest.raises(ValueError, match="record_selects"):
        alone["last"].decision_function(x_val, checkpoint="ema")
    # without labelled validation data the labelled rule is left out, the label-free ones stay
    det = ALGAN(cfg.override(**{"train.select": "last"}), seed=1, device="cpu", progress=False).fit(x, X_val=x_val[:24])
    assert sorted(det.rule_discriminators) == ["ema", "last", "proxy"]


def test_ema_is_the_stated_average_of_the_epochs_weights():
    x = _data()[0]
    snaps = []
    for k in range(1, EPOCHS + 1):  # the first k epochs of a run do not depend on its length
        det = ALGAN(profile("smoke", kind="feature", **{"train.epochs": k, "train.select": "last"}), seed=1,
                    device="cpu", progress=False).fit(x)
        snaps.append(_weights(det))
    expected = {k: v.clone() for k, v in snaps[0].items()}
    for snap in snaps[1:]:
        for k in expected:
            expected[k].mul_(EMA_DECAY).add_(snap[k], alpha=1 - EMA_DECAY)
    ema = ALGAN(profile("smoke", kind="feature", **{"train.epochs": EPOCHS, "train.select": "ema"}), seed=1,
                device="cpu", progress=False).fit(x)
    got = _weights(ema)
    for k, v in expected.items():
        if not k.endswith(("_u", "_v")):  # the spectral norms' vectors are refined on the average
            assert torch.equal(got[k], v), k
    assert not torch.equal(got["net.0.parametrizations.weight.original"],
                           snaps[-1]["net.0.parametrizations.weight.original"])  # ema differs from last
    assert ema.best_epoch_ == EPOCHS and np.isnan(ema.best_val_auroc_)
    assert not np.array_equal(ema.decision_function(x), ema.decision_function(x, checkpoint="last"))


def test_proxy_reads_no_labels_nor_anomalies():
    x, x_val, y_val = _data()
    with_labels = _fit("proxy")
    normal_only = _fit("proxy", X_val=x_val[:24])             # the normal rows, no labels at all
    assert with_labels.best_epoch_ == normal_only.best_epoch_
    assert np.array_equal(with_labels.decision_function(x_val), normal_only.decision_function(x_val))
    proxy = normal_only.history_["proxy_auroc"]
    assert proxy.notna().all() and ((proxy >= 0) & (proxy <= 1)).all()
    assert normal_only.history_["val_auroc"].isna().all() and np.isnan(normal_only.best_val_auroc_)
    chosen = normal_only.history_.loc[proxy.idxmax(), "epoch"]  # the first epoch of the best proxy AUROC
    assert normal_only.best_epoch_ == chosen


def test_proxy_for_images_pastes_patches():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(24, 3, 32, 32, generator=gen) * 2 - 1
    det = ALGAN(profile("smoke", **{"train.select": "proxy"}), seed=0, device="cpu", progress=False)
    det.fit(x[:16], X_val=x[16:])
    assert det.history_["proxy_auroc"].notna().all() and 1 <= det.best_epoch_ <= 2


@pytest.mark.parametrize("y_val, found", [(np.zeros(40, int), "no anomalies"), (None, "no labels"),
                                          (np.ones(40, int), "no normal samples")])
def test_val_labels_without_anomalies_is_one_line_naming_the_label_free_rules(y_val, found):
    x, x_val, _ = _data()
    det = ALGAN(profile("smoke", kind="feature"), device="cpu", progress=False)
    with pytest.raises(ValueError) as err:
        det.fit(x, X_val=x_val, y_val=y_val)
    text = str(err.value)
    assert "\n" not in text and "train.select='val_labels'" in text and found in text
    assert all(f"train.select={r!r}" in text for r in ("last", "ema", "proxy"))
    assert det.generator is None  # stopped before any training


def test_fit_without_validation_keeps_the_label_free_default():
    det = _fit("val_labels", X_val=None)  # the README's .fit(X): no labels, so config.LABEL_FREE_DEFAULT
    assert LABEL_FREE_DEFAULT == "ema" and det.best_epoch_ == EPOCHS
    x = _data()[0]
    ema = _fit("ema", X_val=None)
    assert np.array_equal(det.decision_function(x), ema.decision_function(x))
    assert not np.array_equal(det.decision_function(x), det.decision_function(x, checkpoint="last"))


def test_a_proxy_that_cannot_apply_is_one_line():
    cfg = profile("smoke", kind="feature", **{"train.select": "proxy"}).train
    with pytest.raises(ValueError, match=r"^train.select='proxy' needs normal validation data"):
        check_select(cfg, None, None)
    with pytest.raises(ValueError, match=r"^train.select='proxy' pastes CutPaste patches .* 4x4 \(fewer than"):
        check_select(cfg, torch.zeros(3, 3, 4, 4), None)
    with pytest.raises(ValueError, match="train.select='proxy' needs normal validation data"):
        _fit("proxy", X_val=None)
    with pytest.raises(ValueError, match=r"train.select='nope': expected one of \('val_labels', 'last', 'ema', 'proxy'\)"):
        profile("smoke", **{"train.select": "nope"})


def test_save_and_load_keep_both_checkpoints(tmp_path):
    det = _fit("ema")
    x_val = _data()[1]
    det.save(tmp_path / "m.pt")
    back = ALGAN.load(tmp_path / "m.pt")
    for checkpoint in ("chosen", "last"):
        assert np.array_equal(back.decision_function(x_val, checkpoint=checkpoint),
                              det.decision_function(x_val, checkpoint=checkpoint))
    assert back.config.train.select == "ema"
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    del state["last_discriminator"]  # a checkpoint saved before the last epoch was kept
    torch.save(state, tmp_path / "old.pt")
    old = ALGAN.load(tmp_path / "old.pt")
    assert np.array_equal(old.decision_function(x_val), det.decision_function(x_val))
    with pytest.raises(ValueError, match="no last-epoch weights"):
        old.decision_function(x_val, checkpoint="last")
    with pytest.raises(ValueError, match=r"checkpoint='best': expected one of \['chosen', 'last'\]"):
        det.decision_function(x_val, checkpoint="best")


def test_cli_train_select(tmp_path, capsys):
    import json

    from algan.cli import main

    gen = np.random.default_rng(0)
    y = np.r_[np.zeros(120, int), np.ones(30, int)]
    np.savez(tmp_path / "f.npz", X=gen.normal(size=(150, 8)) + y[:, None], y=y)
    out = tmp_path / "run"
    assert main(["train", "--dataset", "features", "--path", str(tmp_path / "f.npz"), "--profile", "smoke",
                 "--select", "last", "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["select"] == "last" and metrics["test_auroc_last"] == metrics["test_auroc"]
    with pytest.raises(SystemExit) as code:
        main(["train", "--dataset", "features", "--path", str(tmp_path / "f.npz"), "--select", "best",
              "--out", str(tmp_path / "o")])
    assert code.value.code == 2
    assert "invalid choice: 'best'" in capsys.readouterr().err


def test_the_book_s_cached_runs_keep_their_hashes_and_stay_current():
    """train.select is a setting added later (config.ADDED_SETTINGS): the committed ALGAN runs, made before it,
    keep their folders (the hash of their arguments) and still match the resolved settings of today's code."""
    import json
    from pathlib import Path

    from algan import results
    from algan.runs.image import image_run_args
    from algan.runs.feature import feature_run_args

    checked = 0
    for path in sorted((Path(__file__).resolve().parents[1] / "results" / "runs").glob("*/config.json")):
        config = json.loads(path.read_text())
        a = config.get("args", {})
        if a.get("method") != "algan" or not config.get("resolved") or "select" in config["resolved"]["train"]:
            continue
        if a["task"] == "image_run":
            args = image_run_args("algan", a["dataset"], a["category"], a["profile"], a["seed"], a["overrides"])
            resolved = profile(a["profile"], **a["overrides"]).to_dict()
        else:
            args = feature_run_args("algan", a["source"], a["category"], a["profile"], a["seed"],
                                    None if a["source"] == "adbench" else a["backbone"], a["overrides"])
            resolved = profile(a["profile"], kind="feature", **a["overrides"]).to_dict()
        assert results.config_hash(args) == path.parent.name == config["hash"], path
        assert resolved["train"]["select"] == "val_labels"
        assert results._same_settings(config["resolved"], resolved), path
        checked += 1
    assert checked >= 10


def test_the_gan_baselines_refuse_a_label_free_rule():
    from algan.models.ganomaly import GANomaly

    x = torch.rand(8, 3, 32, 32) * 2 - 1
    with pytest.raises(ValueError, match=r"^train.select='last': the GAN baselines keep the best validation AUROC"):
        GANomaly(profile("smoke", **{"train.select": "last"}), progress=False).fit(x)
