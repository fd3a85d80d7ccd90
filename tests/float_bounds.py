"""Tolerances from the arithmetic a comparison checks, so that a test passes on every host CI may land on.

Two float32 results of one sum may add its terms in different orders: MKL on Intel, oneDNN on AMD, a batched
kernel against a one-row one. Each lies within gamma_n * sum|terms| of the exact sum, gamma_n = n*u / (1 - n*u)
for n terms and unit roundoff u = eps / 2 (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed.,
section 3.1), so two orders differ by at most about n * eps * sum|terms| on any host.
"""

from __future__ import annotations

import torch

from cognimamba.config.schema import ModelConfig

EPS32 = torch.finfo(torch.float32).eps


def sum_bound(abs_sum: torch.Tensor, terms: int, eps: float = EPS32) -> torch.Tensor:
    """How far two summation orders of `terms` terms whose magnitudes add up to `abs_sum` can differ."""
    return terms * eps * abs_sum


def matmul_bound(a: torch.Tensor, b: torch.Tensor, eps: float = EPS32) -> torch.Tensor:
    """Elementwise: how far two kernels' a @ b can differ by summation order alone (in float64)."""
    return sum_bound(a.double().abs() @ b.double().abs(), a.shape[-1], eps)


def assert_within(actual: torch.Tensor, expected: torch.Tensor, bound: torch.Tensor) -> None:
    """Every element of `actual` within its `bound` of `expected`."""
    difference = (actual.double() - expected.double()).abs()
    off = difference > bound
    assert not off.any(), (f"{int(off.sum())} of {off.numel()} elements off; worst {float(difference.max()):.3g} "
                           f"against a bound of {float(bound.min()):.3g} to {float(bound.max()):.3g}")


def forward_terms(config: ModelConfig, length: int) -> int:
    """The float32 terms summed one after another on a LanguageModel's deepest path to a logit: per layer two
    RMSNorms, the qkv projection, a score, the softmax and its weighted sum over up to `length` positions, the
    output projection, gate_up and down; then the final norm and the head."""
    per_layer = 2 * config.dim + config.dim + config.dim // config.n_heads + 2 * length + config.dim + config.dim \
        + config.ffn_dim
    return config.n_layers * per_layer + 2 * config.dim


def logits_bound(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Elementwise: how far two float32 implementations of `model`'s logits for `ids` can differ by summation order.

    Each sum on the way rounds within n * eps of its sum|terms| (module docstring), so a hidden coordinate that
    reaches the head carries at most about forward_terms * eps of relative error; the head turns a relative
    error rho in its input into at most rho * sum_j |W_ij h_j|, its own sum of |terms|. A heuristic where
    sums cancel deeply, but one that scales with the model and its inputs instead of with one host's kernels.
    """
    inputs: list[torch.Tensor] = []
    hook = model.lm_head.register_forward_hook(lambda module, args, output: inputs.append(args[0]))
    try:
        with torch.no_grad():
            model(ids)
    finally:
        hook.remove()
    head_terms = inputs[0].double().abs() @ model.lm_head.weight.double().abs().T
    return sum_bound(head_terms, forward_terms(model.config, ids.shape[-1]))
