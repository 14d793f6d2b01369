"""One PrivNet training step, as each party runs its part of it (and as one joint graph, the
reference the split steps must reproduce)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from ..training import clip_and_step
from .inputs import ExampleBatch
from .networks import AttributeAdversary, PrivNetSource, PrivNetTarget, _as_long


def _zero_grad(optimizer: torch.optim.Optimizer) -> None:
    """`optimizer.zero_grad(set_to_none=True)` without its per-call bookkeeping (hooks and
    profiler records PrivNet's optimisers never use): run eight times per training step."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.grad = None


def _clip_and_step(params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer, clip: float | None) -> None:
    """`models.training.clip_and_step` for one party's parameters, all float32 on the CPU: the
    same operations as `torch.nn.utils.clip_grad_norm_` takes for them (foreach norms, their
    norm, coefficient min(clip / (norm + 1e-6), 1) applied by one foreach multiply), so the same
    bits, without its per-call grouping of tensors by device and dtype."""
    if not clip:
        optimizer.step()
        return
    grads = [p.grad for p in params if p.grad is not None]
    if any(g.device.type != "cpu" or g.dtype != torch.float32 or g.is_sparse for g in grads):
        clip_and_step(params, optimizer, clip)
        return
    if grads:
        with torch.no_grad():
            total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)
            torch._foreach_mul_(grads, torch.clamp(float(clip) / (total + 1e-6), max=1.0))
    optimizer.step()


def _bce(logits: torch.Tensor, label: np.ndarray) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.as_tensor(label, dtype=torch.float32))


def _labels_tensor(labels: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: _as_long(v) for k, v in labels.items()}


def attacker_updates(lam: float, steps: int) -> int:
    """Simulated-attacker updates per recommender step: `steps`, or none at lambda = 0, where
    the attacker's loss is not in the source's objective and its weights reach nothing the
    parties compute or send (training it would only cost time: ~40% of a step)."""
    return steps if lam else 0


def adversary_step(
    source: PrivNetSource,
    adversary: AttributeAdversary,
    optimizer: torch.optim.Optimizer,
    q_hist: np.ndarray,
    q_cand: np.ndarray,
    labels: Mapping[str, np.ndarray],
    clip: float | None = 5.0,
) -> float:
    """Algorithm 1 lines 1-3: update the attacker on public users' x_trans (detached from the source)."""
    with torch.no_grad():
        x = source.transfer(q_hist, q_cand)
    _zero_grad(optimizer)
    loss = adversary.loss(x, _labels_tensor(labels))
    loss.backward()
    _clip_and_step(list(adversary.parameters()), optimizer, clip)
    return loss.item()


@torch.no_grad()
def source_transfer(source: PrivNetSource, q_hist: np.ndarray, q_cand: np.ndarray) -> np.ndarray:
    """x_trans [U, trans_dim] float32 for the users' queries (a release: no graph kept)."""
    return source.transfer(q_hist, q_cand).numpy().astype(np.float32, copy=False)


def transfer_for_step(source: PrivNetSource, q_hist: np.ndarray, q_cand: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
    """What the source sends in a training step, and the same x_trans with its autograd graph.

    The source keeps the live tensor until the target's gradient arrives and hands it to
    `source_step`: nothing changes the source network in between, so this is the tensor a
    recomputation would give, without the second forward pass.
    """
    x = source.transfer(q_hist, q_cand)
    return x.detach().numpy().astype(np.float32, copy=False), x


def check_interval(interval: int) -> int:
    """The exchange interval K: a positive int (1: one exchange per training step)."""
    if type(interval) is not int or interval < 1:
        raise ValueError(f"exchange_interval must be a positive int, got {interval!r}")
    return interval


def group_transfer(
    source: PrivNetSource, q_hist: np.ndarray, q_cand: np.ndarray, users: list[np.ndarray]
) -> tuple[list[np.ndarray], torch.Tensor]:
    """What the source sends for a group of K training steps (exchange interval K): x_trans of
    each step's users, all from the source network as it is before the group, and the first
    step's live tensor (`transfer_for_step`).

    The source applies the group's K gradients in order (`source_step` each, after its own
    attacker update): the first through this live tensor; every later one through x_trans
    recomputed from the network as the earlier updates left it, so that the target's gradient,
    computed on what was sent, is K - 1 updates stale at most. With K = 1 this is Algorithm 1.
    """
    x, live = transfer_for_step(source, q_hist[users[0]], q_cand[users[0]])
    return [x] + [source_transfer(source, q_hist[u], q_cand[u]) for u in users[1:]], live


def target_step(
    target: PrivNetTarget,
    optimizer: torch.optim.Optimizer,
    batch: ExampleBatch,
    x_trans: np.ndarray | None,
    user_index: np.ndarray | None = None,
    clip: float | None = 5.0,
) -> tuple[float, np.ndarray | None]:
    """Target update on its batch; returns (L_T, dL_T/dx_trans [U_b, d]) for the source.

    `x_trans` has one row per distinct user of the batch; `user_index[b]` is the row of example b.
    With x_trans None the step is target-only and no gradient is returned.
    """
    _zero_grad(optimizer)
    x = None
    if x_trans is not None:
        if user_index is None:
            raise ValueError("user_index is required with x_trans (row of x_trans for each example)")
        x = torch.tensor(np.asarray(x_trans, dtype=np.float32), requires_grad=True)
    logits = target(batch.hist, batch.cand, None if x is None else x[_as_long(user_index)])
    loss = _bce(logits, batch.label)
    loss.backward()
    _clip_and_step(list(target.parameters()), optimizer, clip)
    return loss.item(), None if x is None else x.grad.numpy()


def source_step(
    source: PrivNetSource,
    adversary: AttributeAdversary,
    optimizer: torch.optim.Optimizer,
    batch: ExampleBatch,
    x_trans: torch.Tensor | None,
    q_labels: Mapping[str, np.ndarray] | None,
    x_trans_grad: np.ndarray | None,
    lam: float = 1.0,
    clip: float | None = 5.0,
) -> dict[str, float]:
    """Source update: minimise L_S - lam * L_adv, plus L_T through x_trans via the target's gradient.

    `x_trans` is the live tensor of `transfer_for_step` for the users the target's gradient
    refers to (None: no transfer this step). Backprops x_trans.backward(grad) together with the
    source's own loss. Only the source's parameters receive gradients (the adversary is updated
    in `adversary_step`).
    """
    _zero_grad(optimizer)
    params = list(source.parameters())
    loss_s = _bce(source(batch.hist, batch.cand), batch.label)
    objective = loss_s
    loss_adv = torch.zeros(())
    if x_trans is None and x_trans_grad is not None:
        raise ValueError("a gradient for x_trans needs the x_trans it refers to")
    if lam and q_labels is not None and x_trans is not None:
        loss_adv = adversary.loss(x_trans, _labels_tensor(q_labels))
        objective = objective - lam * loss_adv
    roots, grads = [objective], [torch.ones(())]
    if x_trans_grad is not None:
        g = torch.as_tensor(np.asarray(x_trans_grad, dtype=np.float32))
        if g.shape != x_trans.shape:
            raise ValueError(f"x_trans_grad must have shape {tuple(x_trans.shape)}, got {tuple(g.shape)}")
        roots.append(x_trans)
        grads.append(g)
    torch.autograd.backward(roots, grads, inputs=params)
    _clip_and_step(params, optimizer, clip)
    return {"loss_S": loss_s.item(), "loss_adv_rec": loss_adv.item()}


def recommender_step_joint(
    source: PrivNetSource,
    target: PrivNetTarget,
    adversary: AttributeAdversary,
    opt_source: torch.optim.Optimizer,
    opt_target: torch.optim.Optimizer,
    t_batch: ExampleBatch,
    s_batch: ExampleBatch,
    q_hist: np.ndarray,
    q_cand: np.ndarray,
    user_index: np.ndarray,
    q_labels: Mapping[str, np.ndarray] | None,
    lam: float = 1.0,
    clip: float | None = 5.0,
) -> dict[str, float]:
    """Algorithm 1 line 4 as one autograd graph: minimise L_T + L_S - lam * L_adv.

    The plain single-process reference that the split steps must reproduce. Each network's
    gradient is clipped separately, as the parties do.
    """
    opt_source.zero_grad(set_to_none=True)
    opt_target.zero_grad(set_to_none=True)
    x = source.transfer(q_hist, q_cand)
    loss_t = _bce(target(t_batch.hist, t_batch.cand, x[_as_long(user_index)]), t_batch.label)
    loss_s = _bce(source(s_batch.hist, s_batch.cand), s_batch.label)
    total = loss_t + loss_s
    loss_adv = torch.zeros(())
    if lam and q_labels is not None:
        loss_adv = adversary.loss(x, _labels_tensor(q_labels))
        total = total - lam * loss_adv
    s_params, t_params = list(source.parameters()), list(target.parameters())
    total.backward(inputs=s_params + t_params)
    clip_and_step(t_params, opt_target, clip)
    clip_and_step(s_params, opt_source, clip)
    return {"loss_T": loss_t.item(), "loss_S": loss_s.item(), "loss_adv_rec": loss_adv.item()}
