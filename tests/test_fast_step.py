"""train.fast_step: one D call per D step, torch's fused Adam and ALGAN-feature's fused spectral-norm layers
(benchmarks/bench_feature_step.py times them). The same algorithm in other floating-point arithmetic: these
tests check the arithmetic against torch's own spectral norm in float64, the number of D calls, and that a
fast run is reproducible for its seed."""
import copy

import pytest
import torch

from algan.config import profile
from algan.models.algan_nets import build_networks
from algan.models.feature_step import FeatureSteps
from algan.train import (discriminator_loss, discriminator_row_weights, generator_loss, make_fakes, split_rows,
                         train_algan)


def _feature_nets(dim=21, hidden=32):
    cfg = profile("smoke", kind="feature", **{"model.feature_dim": dim, "model.feature_hidden": hidden})
    torch.manual_seed(0)
    return cfg, *build_networks(cfg.model)


@pytest.mark.parametrize("frozen", [False, True])
def test_fused_layers_match_torchs_spectral_norm_in_float64(frozen):
    _, _, D = _feature_nets()
    D = D.double().train()
    fused = copy.deepcopy(D)
    if frozen:  # the G step: D's weights need no gradient, its input does
        for p in list(D.parameters()) + list(fused.parameters()):
            p.requires_grad_(False)
    x = torch.randn(16, 21, dtype=torch.double)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    a, b = D(xa), fused.forward_fused(xb)
    torch.testing.assert_close(b, a, rtol=0, atol=1e-12)
    (a * torch.arange(16.0, dtype=torch.double)).sum().backward()
    (b * torch.arange(16.0, dtype=torch.double)).sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad, rtol=0, atol=1e-12)
    for (name, p), (_, q) in zip(D.named_parameters(), fused.named_parameters()):
        assert (p.grad is None) == (q.grad is None) == frozen, name
        if not frozen:
            torch.testing.assert_close(q.grad, p.grad, rtol=0, atol=1e-12, msg=name)
    for (name, u), (_, w) in zip(D.named_buffers(), fused.named_buffers()):  # the power iteration's u, v
        torch.testing.assert_close(w, u, rtol=0, atol=1e-12, msg=name)
    D.eval()
    assert fused.eval().forward_fused(x).equal(D(x))  # eval mode: the plain forward, no iteration


def _count_d_calls(cfg, G, D, x, **train):
    calls = []
    D.register_forward_hook(lambda *_: calls.append(1))
    cfg = cfg.override(**{"train.epochs": 2, "train.select": "last", **train})
    train_algan(G, D, x, cfg.train, latent_dim=cfg.model.latent_dim, seed=0, progress=False)
    return len(calls), cfg.train


@pytest.mark.parametrize("fast", [False, True])
def test_a_d_step_calls_d_once_when_fast(fast):
    cfg, G, D = _feature_nets()
    x = torch.randn(48, 21)  # 3 batches an epoch; epoch 1 without the buffer, epoch 2 with it
    n, train = _count_d_calls(cfg, G, D, x, **{"train.fast_step": fast, "train.eval_every": 1})
    if fast:  # ALGAN-feature's hand-written updates call no module; the D step whose gradient shares are
        assert n == 2  # measured (the first of each validation epoch) is autograd's, with one D call
    else:
        assert n == sum(3 * (train.n_dis * k + 1) for k in (2, 3))  # (epoch 1, 2): real, fake[, buffered]; + G's


def test_the_batched_call_gives_the_separate_calls_logits():
    _, _, D = _feature_nets()
    D.eval()
    parts = [torch.randn(n, 21) for n in (16, 16, 32)]
    together = D(torch.cat(parts)).split([16, 16, 32])
    for part, logits in zip(parts, together):
        torch.testing.assert_close(logits, D(part), rtol=1e-6, atol=1e-6)


def _fit(kind, seed, **train):
    cfg = profile("smoke", kind=kind, **({"model.feature_dim": 21} if kind == "feature" else {}))
    cfg = cfg.override(**{"train.epochs": 3, "train.select": "last", "train.fast_step": True, **train})
    torch.manual_seed(seed)
    G, D = build_networks(cfg.model)
    shape = (40, 21) if kind == "feature" else (20, cfg.model.channels, cfg.model.image_size, cfg.model.image_size)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1)).clamp(-1, 1)
    return train_algan(G, D, x, cfg.train, latent_dim=cfg.model.latent_dim, seed=seed, progress=False)


@pytest.mark.parametrize("kind, train", [("feature", {}), ("feature", {"train.amp": "bf16"}), ("image", {})])
def test_a_fast_run_is_reproducible_for_its_seed(kind, train, one_torch_thread):
    """ALGAN-image has no fused layers (one call per D step and fused Adam only); under bf16 autocast the
    feature D keeps its plain forward."""
    a, b, other = _fit(kind, 0, **train), _fit(kind, 0, **train), _fit(kind, 1, **train)
    assert a.history["loss_d"].notna().all()
    assert a.history.drop(columns="seconds").equals(b.history.drop(columns="seconds"))
    for key, value in a.best_state["discriminator"].items():
        assert value.equal(b.best_state["discriminator"][key]), key
    assert not a.history["loss_d"].equals(other.history["loss_d"])


# ---- the hand-written ALGAN-feature updates (algan/models/feature_step.py) against autograd, in float64 ----
def _two_copies():
    """Two identical float64 (G, D, opt_g, opt_d) in training mode, Adam fused as with train.fast_step."""
    _, G, D = _feature_nets()
    G, D = G.double().train(), D.double().train()
    out = []
    for G, D in [(G, D), (copy.deepcopy(G), copy.deepcopy(D))]:
        opts = [torch.optim.Adam(net.parameters(), lr=1e-2, betas=(0.5, 0.999), fused=True) for net in (G, D)]
        out.append((G, D, *opts))
    return out


def _assert_same_state(a, b):
    """Two (G, D, opt_g, opt_d): weights, u, v, BN statistics and Adam's state agree to 1e-12."""
    for net_a, net_b in zip(a[:2], b[:2]):
        for (name, p), q in zip(net_a.state_dict().items(), net_b.state_dict().values()):
            torch.testing.assert_close(q, p, rtol=0, atol=1e-12, msg=name)
    for opt_a, opt_b in zip(a[2:], b[2:]):
        for p, q in zip(opt_a.state.values(), opt_b.state.values(), strict=True):
            for key in p:
                torch.testing.assert_close(q[key], p[key], rtol=0, atol=1e-12, msg=key)


@pytest.mark.parametrize("buffered", [False, True])
def test_the_hand_written_d_step_is_autograds_in_float64(buffered):
    ref, hand = _two_copies()
    steps, g = FeatureSteps(*hand), torch.Generator().manual_seed(0)
    is_anom = torch.tensor([False] * 12 + [True] * 4)  # as the training loop's: normal latents first
    buf_anom = (torch.rand(16, generator=g) < 0.3).sort().values  # a grouped draw: its normal rows first
    counts = (16, 12, 4) + ((16 - int(buf_anom.sum()), int(buf_anom.sum())) if buffered else ())
    for _ in range(3):  # the first Adam step creates the state (the optimiser's own); then the kernel
        x = torch.randn(48 if buffered else 32, 21, generator=g, dtype=torch.double)
        logits = ref[1].forward_fused(x)  # train.fast_step's autograd step: one D call on all rows
        buf = dict(zip(("buf_n", "buf_a"), split_rows(logits[32:], buf_anom))) if buffered else {}
        loss = discriminator_loss(logits[:16], *split_rows(logits[16:32], is_anom), **buf, alpha=0.75, xi=0.5)
        ref[3].zero_grad()
        loss.backward()
        ref[3].step()
        w, s = discriminator_row_weights(*counts, alpha=0.75, xi=0.5, dtype=torch.double)
        logits_hand, loss_hand = steps.d_step(x, w, s)
        torch.testing.assert_close(logits_hand, logits.detach(), rtol=0, atol=1e-12)
        torch.testing.assert_close(loss_hand, loss.detach(), rtol=0, atol=1e-12)
        _assert_same_state(ref, hand)


def _with_latents(n: int):
    """`_two_copies()`, `FeatureSteps` on the second, and n float64 latent batches of 16."""
    ref, hand = _two_copies()
    g = torch.Generator().manual_seed(0)
    return ref, hand, FeatureSteps(*hand), [torch.randn(16, ref[0].net[0].in_features, generator=g,
                                                        dtype=torch.double) for _ in range(n)]


@pytest.mark.parametrize("form", ["saturating", "non_saturating"])
def test_the_hand_written_g_step_is_autograds_in_float64(form):
    ref, hand, steps, latents = _with_latents(3)
    for z in latents:
        for p in ref[1].parameters():  # as train's frozen(): no D gradients; its power iteration runs
            p.requires_grad_(False)
        loss = generator_loss(ref[1].forward_fused(ref[0](z)), form)
        ref[2].zero_grad()
        loss.backward()
        ref[2].step()
        for p in ref[1].parameters():
            p.requires_grad_(True)
        torch.testing.assert_close(steps.g_step(z, form), loss.detach(), rtol=0, atol=1e-12)
        _assert_same_state(ref, hand)


@pytest.mark.parametrize("bn_stats", ["running", "batch"])
def test_the_hand_written_fakes_are_make_fakes_in_float64(bn_stats):
    ref, hand, steps, latents = _with_latents(2)
    for z in latents:
        expected = make_fakes(ref[0], z, torch.arange(16) >= 12, 4, bn_stats)
        torch.testing.assert_close(steps.fakes(z, bn_stats), expected, rtol=0, atol=1e-12)
        _assert_same_state(ref, hand)  # "batch": the running statistics move alike
    assert hand[0].net[1].running_mean.any() == (bn_stats == "batch")


def test_the_step_breakdown_counts_the_hand_steps_kernels():
    """`bench_feature_step.py --breakdown --compiled` (small nets): per step, the hand-written step's 33 matmuls
    (2 D updates x 8, the G update's 14, x' 3), 3 Adam kernels (2 D, 1 G) and 18 power-iteration products (3 D
    passes x 3 layers x 2), each line with its milliseconds, and the step's core eager and compiled."""
    import re
    import subprocess
    import sys
    from pathlib import Path
    script = Path(__file__).parents[1] / "benchmarks" / "bench_feature_step.py"
    args = ["--breakdown", "--compiled", "--dim", "8", "--batch", "4", "--hidden", "16", "--batches", "3",
            "--epochs", "2", "--repeats", "1"]
    out = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, check=True).stdout
    assert re.search(r"8-d features, batch 4: \d+\.\d+ ms per step, FLOP floor \d+\.\d+ ms", out), out
    for name, count in (("matmuls", 33), ("Adam", 3), ("power iteration", 18)):
        assert re.search(name + rf" +\d+\.\d+ ms +\({count} per step; \d+\.\d+ ms when each runs alone", out), out
    assert re.search(r"the rest +-?\d+\.\d+ ms +\(\d+ other operations per step", out), out
    assert re.search(r"these kernels, each alone in cache: \d+\.\d+ ms per step", out), out
    assert re.search(r"core \(2 D updates on 12 rows, the G update, x'\): eager \d+\.\d+ ms; with Adam as tensor "
                     r"operations: eager \d+\.\d+ ms; torch.compile, Python wrapper \d+\.\d+ ms \(compiled in \d+ s\); "
                     r"torch.compile, C\+\+ wrapper \d+\.\d+ ms", out), out


def test_the_benchmarks_adam_as_tensor_operations_is_the_fused_kernels_update():
    """`_adam_as_ops` (torch's single-tensor Adam on the optimiser's state, what the benchmark compiles) updates
    parameters and moments as the fused kernel does, up to float32 rounding, over 3 steps."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).parents[1] / "benchmarks" / "bench_feature_step.py"
    spec = importlib.util.spec_from_file_location("bench_feature_step", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    nets = []
    for _ in range(2):
        torch.manual_seed(0)
        G, D = build_networks(profile("smoke", kind="feature").model)
        opts = [torch.optim.Adam(m.parameters(), lr=1e-2, betas=(0.5, 0.999), fused=True) for m in (G, D)]
        nets.append(FeatureSteps(G.train(), D.train(), *opts))
    gen = torch.Generator().manual_seed(1)
    for step in range(4):  # the first creates the state (the optimiser's own step, in both), as in the benchmark
        grads = [torch.randn(p.shape, generator=gen) for p in nets[0]._params[nets[0].opt_d]]
        for steps in nets:
            with torch.no_grad():
                steps._adam(steps.opt_d, [g.clone() for g in grads])
        if step == 0:
            nets[1]._adam = bench._adam_as_ops(nets[1])
    for a, b in zip(*(steps._params[steps.opt_d] for steps in nets)):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(nets[1].opt_d.state[b][key], nets[0].opt_d.state[a][key])
