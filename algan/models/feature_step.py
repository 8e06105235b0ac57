"""ALGAN-feature's D and G updates written out by hand (`train.fast_step`): forward, gradients and Adam.

Autograd records and replays some 300 small operations per training step, and at ALGAN-feature's sizes (3-layer
MLPs, batch 16) that bookkeeping costs more than the arithmetic. `FeatureSteps` does the same updates as the
training loop's autograd step with `train.fast_step`:
- the D step: one power iteration per spectral norm (as `spectral_linear`), D on all rows of the step at once,
  the loss as a weighted sum over rows (`train.discriminator_row_weights` states the weights, which are Eq. (6)'s
  group means), its gradients (the formulas of `_SpectralLinear`) and Adam;
- the G step: G in training mode (batch statistics, running statistics updated as torch's batch norm does),
  D in training mode (its power iteration runs as in any training-mode call), the gradient through D to G's
  output only, then through G, and Adam;
- x' for D (Alg. 1 line 9) with `train.fake_bn_stats` "running" or "batch", without nn.Module calls.
Adam is the optimiser's own fused kernel (`torch.optim.Adam(fused=True)`) on gradients set here, so its state and a
checkpoint are as before. The training loop groups each D step's rows ([real, fake normal, fake anomalous, buffered
normal, buffered anomalous]; `Buffer.sample(grouped=True)`), so that the loss's weights depend on the group counts
only. tests/test_fast_step.py checks each update against autograd's in float64.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .algan_nets import FeatureDiscriminator, FeatureGenerator

_aten = torch.ops.aten


class FeatureSteps:
    """The D and G updates of one data batch for a `FeatureGenerator` G and a `FeatureDiscriminator` D in
    training mode, each Adam-optimised by its own optimiser (`opt_g`, `opt_d`)."""

    def __init__(self, G: FeatureGenerator, D: FeatureDiscriminator, opt_g: torch.optim.Optimizer,
                 opt_d: torch.optim.Optimizer):
        # The tensors the updates read and write in place (loading a state dict copies into them): per D layer
        # (weight, bias, u, v, eps), per G linear (weight, bias or None), per G batch norm (gamma, beta, running
        # mean and variance, batch count, momentum, eps)
        self.d_layers = [(m.parametrizations.weight.original, m.bias, m.parametrizations.weight[0]._u,
                          m.parametrizations.weight[0]._v, m.parametrizations.weight[0].eps)
                         for m in D.net if isinstance(m, nn.Linear)]
        self.slope = next(m for m in D.net if isinstance(m, nn.LeakyReLU)).negative_slope
        self.g_linear = [(m.weight, m.bias) for m in G.net if isinstance(m, nn.Linear)]
        self.g_norms = [(m.weight, m.bias, m.running_mean, m.running_var, m.num_batches_tracked, m.momentum, m.eps)
                        for m in G.net if isinstance(m, nn.BatchNorm1d)]
        self.opt_g, self.opt_d = opt_g, opt_d
        self._params = {opt: [p for group in opt.param_groups for p in group["params"]] for opt in (opt_g, opt_d)}
        self._counts: dict[torch.optim.Optimizer, torch.Tensor] = {}

    @staticmethod
    def applies(G: nn.Module, D: nn.Module) -> bool:
        return type(G) is FeatureGenerator and type(D) is FeatureDiscriminator

    # ---- D: forward in training mode, and its backward ----------------------------------------------------
    def _d_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list]:
        """D's logits (R,) on x (R, dim), each spectral norm's u, v advanced by one power iteration (as
        `spectral_linear`: sigma = ||W^T u|| with the new u); the saved values for `_d_backward`."""
        saved, last = [], len(self.d_layers) - 1
        for i, (weight, bias, u, v, eps) in enumerate(self.d_layers):
            new_u = torch.mv(weight, v)
            torch.div(new_u, torch.linalg.vector_norm(new_u).clamp_min_(eps), out=u)
            wtu = torch.mv(weight.t(), u)
            sigma = torch.linalg.vector_norm(wtu)
            torch.div(wtu, sigma.clamp_min(eps), out=v)
            raw = torch.mm(x, weight.t())
            y = torch.addcdiv(bias, raw, sigma)
            saved.append((x, weight, raw, u, v, sigma, y))  # u, v: unchanged until the next call
            x = torch._C._nn.leaky_relu(y, self.slope) if i < last else y
        return x[:, 0], saved

    def _d_backward(self, grad: torch.Tensor, saved: list, weights: bool) -> tuple[torch.Tensor, list]:
        """The gradient of D's input for grad (R,) on its logits, and (with `weights`) of each layer's weight
        and bias, in the order of D's parameters: `_SpectralLinear`'s formulas, with the rank-1 term's
        coefficient sum(grad * raw) / sigma^2 as a dot product."""
        grad, grads = grad[:, None], []
        for i in reversed(range(len(saved))):
            x, weight, raw, u, v, sigma, y = saved[i]
            if i < len(saved) - 1:  # through the LeakyReLU after this layer
                grad = _aten.leaky_relu_backward(grad, y, self.slope, False)
            scaled = grad / sigma
            if weights:
                grad_w = torch.mm(scaled.t(), x)
                grad_w.addr_(u * (torch.dot(scaled.view(-1), raw.view(-1)) / sigma), v, alpha=-1)
                grads += [grad_w, grad.sum(0)]  # D's parameters: (bias, weight) per layer, reversed below
            grad = torch.mm(scaled, weight) if i or not weights else None
        return grad, grads[::-1]

    def d_step(self, x: torch.Tensor, row_weights: torch.Tensor, row_signs: torch.Tensor):
        """One D update on the rows x (R, dim) with the loss sum(w softplus(s logit)): (logits (R,), loss)."""
        with torch.no_grad():
            logits, saved = self._d_forward(x)
            signed = row_signs * logits
            loss = torch.dot(row_weights, F.softplus(signed))
            grad = _aten.softplus_backward(row_weights, signed, 1.0, 20.0).mul_(row_signs)
            self._adam(self.opt_d, self._d_backward(grad, saved, weights=True)[1])
        return logits, loss

    # ---- G --------------------------------------------------------------------------------------------
    def _g_forward(self, z: torch.Tensor, training: bool) -> tuple[torch.Tensor, list]:
        """G(z) with its batch norms in training mode (batch statistics; the running ones updated as torch's
        batch norm does) or not (the running statistics); the saved values for `g_step`'s backward."""
        h, saved, last = z, [], len(self.g_linear) - 1
        for i, (weight, bias) in enumerate(self.g_linear):
            pre = torch.mm(h, weight.t()) if bias is None else torch.addmm(bias, h, weight.t())
            saved.append((h, pre))
            if i == last:
                return pre, saved
            gamma, beta, mean, var, tracked, momentum, eps = self.g_norms[i]
            out, *stats = torch.native_batch_norm(pre, gamma, beta, mean, var, training, momentum, eps)
            if training:
                tracked.add_(1)
                saved[-1] += tuple(stats)  # the batch's mean and 1 / std
            h = torch.relu(out)

    def fakes(self, z: torch.Tensor, bn_stats: str) -> torch.Tensor:
        """x' = G(z_d) for D (Alg. 1 line 9) as `train.make_fakes` makes it, for `train.fake_bn_stats` "running"
        (G's batch norms in eval mode) or "batch" (one training-mode call)."""
        with torch.no_grad():
            return self._g_forward(z, training=bn_stats == "batch")[0]

    def g_step(self, z: torch.Tensor, generator_loss: str) -> torch.Tensor:
        """One G update on the latents z (B, latent) by Eq. (5) in the form `generator_loss`: the loss."""
        with torch.no_grad():
            h, saved = self._g_forward(z, training=True)
            logits, d_saved = self._d_forward(h)
            n = len(logits)
            if generator_loss == "saturating":  # -mean softplus(logit)
                loss = -F.softplus(logits).mean()
                grad = _aten.softplus_backward(logits.new_full((n,), -1.0 / n), logits, 1.0, 20.0)
            else:  # mean softplus(-logit)
                loss = F.softplus(-logits).mean()
                grad = _aten.softplus_backward(logits.new_full((n,), 1.0 / n), -logits, 1.0, 20.0).neg_()
            grad, _ = self._d_backward(grad, d_saved, weights=False)
            grads = []
            for i in reversed(range(len(self.g_linear))):
                (weight, bias), (h_in, pre, *stats) = self.g_linear[i], saved[i]
                if stats:  # through this layer's batch norm and ReLU, whose output is the next layer's input
                    gamma, _, mean, var, *_, eps = self.g_norms[i]
                    grad = _aten.threshold_backward(grad, saved[i + 1][0], 0)
                    grad, grad_gamma, grad_beta = _aten.native_batch_norm_backward(
                        grad, pre, gamma, mean, var, *stats, True, eps, [True] * 3)
                    grads += [grad_beta, grad_gamma]
                if bias is not None:
                    grads.append(grad.sum(0))
                grads.append(torch.mm(grad.t(), h_in))
                if i:
                    grad = torch.mm(grad, weight)
            self._adam(self.opt_g, grads[::-1])  # G's parameters: weight[, bias] per linear, then its norm's
        return loss

    def _adam(self, opt: torch.optim.Optimizer, grads: list[torch.Tensor]) -> None:
        """`opt.step()` on these gradients of its parameters, for a fused Adam with one parameter group: the
        kernel that step calls (`torch._fused_adam_`), on the optimiser's own state, without its per-call
        bookkeeping. The first step, which creates the state, is the optimiser's own; then the parameters' step
        counts become views of one tensor (`_linked_steps`), counted up by one operation."""
        params, group = self._params[opt], opt.param_groups[0]
        states = [opt.state.get(p) for p in params]
        if not all(states):
            for p, g in zip(params, grads):
                p.grad = g
            opt.step()
            return
        steps = self._linked_steps(opt, states)
        self._counts[opt].add_(1)
        torch._fused_adam_(params, grads, [state["exp_avg"] for state in states],
                           [state["exp_avg_sq"] for state in states], [], steps, amsgrad=False, lr=group["lr"],
                           beta1=group["betas"][0], beta2=group["betas"][1], weight_decay=group["weight_decay"],
                           eps=group["eps"], maximize=False, grad_scale=None, found_inf=None)

    def _linked_steps(self, opt: torch.optim.Optimizer, states: list[dict]) -> list[torch.Tensor]:
        """The step counts of these parameter states, as views of one tensor `_counts[opt]` (made again after
        the optimiser's state was created or loaded, which gives each parameter its own)."""
        steps = [state["step"] for state in states]
        counts = self._counts.get(opt)
        if counts is None or any(step._base is not counts for step in steps):
            counts = self._counts[opt] = torch.stack(steps)
            for i, state in enumerate(states):
                state["step"] = counts[i]
            steps = [state["step"] for state in states]
        return steps
