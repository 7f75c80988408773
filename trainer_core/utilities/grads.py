"""``grad_norm``: per-parameter and total gradient norms, ready for ``self.log_dict``."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import Module


def grad_norm(module: Module, norm_type: float | int | str, group_separator: str = "/") -> dict[str, Tensor]:
    """``{"grad_2.0_norm/<param>": ..., "grad_2.0_norm_total": ...}`` over the parameters that have a gradient.

    ``norm_type`` is any positive p or ``"inf"``; the total is the norm of all gradients viewed as one vector.
    """
    norm_type = float(norm_type)
    if norm_type <= 0:
        raise ValueError(f"`norm_type` must be a positive number or 'inf' (infinity norm). Got {norm_type}")
    norms = {
        f"grad_{norm_type}_norm{group_separator}{name}": p.grad.data.norm(norm_type)
        for name, p in module.named_parameters()
        if p.grad is not None
    }
    if norms:
        norms[f"grad_{norm_type}_norm_total"] = torch.tensor(list(norms.values())).norm(norm_type)
    return norms


__all__ = ["grad_norm"]
