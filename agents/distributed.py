"""Data-parallel training with ``torch.distributed``: K learners, one global batch, one update.

``torchrun --nproc-per-node K -m agents ...`` starts K processes (ranks). Each rank

- builds the same model (same seed; rank 0's weights are broadcast to be sure) and its own
  slice of the batched env: ``episodes_per_update / K`` rows, seeded like rows
  ``rank * rows .. (rank + 1) * rows - 1`` of the single-process env (its torch / numpy RNGs
  are offset the same way), so the K ranks together sample one global batch;
- splits every minibatch the same way: a TokenPPO minibatch of ``minibatch_episodes``
  completions is ``minibatch_episodes / K`` per rank, an SB3 minibatch of ``batch_size``
  transitions is cut into as many per-rank chunks as the single process would have
  minibatches (:meth:`DataParallel.sharded_minibatches`), so every rank takes the same
  number of optimizer steps;
- whitens advantages with the global minibatch's mean and std (:meth:`DataParallel.whiten`);
- all-reduces every trainable parameter's gradient at the end of each backward (hooks on
  ``register_post_accumulate_grad_hook`` queue one bucketed all-reduce on the autograd
  engine), weighted by this rank's share of the minibatch's transitions, so the summed
  gradient is the gradient of the global minibatch's mean loss, BEFORE the algorithm clips
  it; clipping and the optimizer step then see the same gradient on every rank, and the
  weights stay identical;
- reduces the rollout statistics (:func:`agents.metrics.rollout_stats`): the adaptive KL
  controller's KL, the logged scores, KL, entropy and lengths are means over all ranks'
  episodes; the ``train/*`` losses are transition-weighted means over ranks; timesteps are
  summed.

Rank 0 alone writes (``config.json``, ``metrics.jsonl``, TensorBoard, ``progress.csv``, the
model). Backend: NCCL when the run's device is CUDA (each rank on ``cuda:LOCAL_RANK``), gloo
on CPU. Without torchrun's variables (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``) nothing here
runs: :data:`LOCAL` is a one-process no-op, and training is exactly the single-process code.
Under torchrun even ``--nproc-per-node 1`` goes through the process group (same code path).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from agents import compat

__all__ = ["LOCAL", "DataParallel", "check_data_parallel", "data_parallel", "launched_by_torchrun", "rank_device"]

TORCHRUN_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK")  # set by torchrun in every rank
TIMEOUT_ENV = "ABC_DIST_TIMEOUT_S"  # collective timeout in seconds (default 1800, torch's)
_GROUP_COUNT = itertools.count()  # groups this process has joined (each rank joins as many, in the same order)
BUCKET_ELEMENTS = 1 << 24  # gradients are all-reduced in flat buckets of about this many elements (64 MB fp32)


def launched_by_torchrun() -> bool:
    """Whether this process is a rank started by torchrun (its ``WORLD_SIZE`` and ``RANK`` are set)."""
    return all(name in os.environ for name in TORCHRUN_VARS[:2])


@dataclass
class DataParallel:
    """One rank's view of the data-parallel group; the default instance (:data:`LOCAL`) is one process, no group.

    Every method is exact identity / local arithmetic when :attr:`active` is false, so the
    algorithms call them unconditionally.
    """

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    active: bool = False
    """True when a process group is in use (any world size, 1 included)."""
    comm_device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    """Where the scalars of the reductions live: CPU for gloo, ``cuda:LOCAL_RANK`` for NCCL."""
    grad_weight: float = 1.0
    """This rank's share of the current minibatch's transitions (the gradient hook's weight; ``1 / K`` until set)."""
    _hooks: list[Any] = field(default_factory=list, repr=False)
    _params: list[torch.nn.Parameter] = field(default_factory=list, repr=False)  # the reduced parameters, in order
    _queued: bool = False  # the end-of-backward reduction is queued for the running backward

    @property
    def is_main(self) -> bool:
        """Rank 0: the one rank that writes files and prints."""
        return self.rank == 0

    # ------------------------------------------------------------ reductions
    def sum(self, values: Sequence[float]) -> np.ndarray:
        """Element-wise sum over ranks of ``values`` (float64), one all-reduce."""
        out = np.asarray(values, dtype=np.float64)
        if not self.active:
            return out
        t = torch.as_tensor(out, device=self.comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.cpu().numpy()

    def max(self, value: float) -> float:
        return self._reduce_one(value, dist.ReduceOp.MAX) if self.active else float(value)

    def min(self, value: float) -> float:
        return self._reduce_one(value, dist.ReduceOp.MIN) if self.active else float(value)

    def mean(self, value: float) -> float:
        """Mean over ranks of one scalar."""
        return float(self.sum([value])[0]) / self.world_size if self.active else float(value)

    def _reduce_one(self, value: float, op: Any) -> float:
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.comm_device)
        dist.all_reduce(t, op=op)
        return float(t.item())

    def mean_of_ranks(self, logged: dict[str, Any], weight: float = 1.0, prefix: str = "train/") -> dict[str, Any]:
        """``logged`` with each float under ``prefix`` replaced by its ``weight``-weighted mean over ranks.

        With ``weight`` the rank's transitions, a loss that is each rank's mean over its own
        transitions becomes the mean over all of them (exact when each rank's minibatches hold
        its share of the rollout, as with one minibatch per update). Same keys on every rank.
        """
        if not self.active:
            return logged
        keys = sorted(k for k, v in logged.items() if k.startswith(prefix) and isinstance(v, (float, np.floating)))
        sums = self.sum([float(weight), *(float(weight) * float(logged[k]) for k in keys)])
        means = sums[1:] / sums[0] if sums[0] else sums[1:] * 0.0
        return {**logged, **{k: float(m) for k, m in zip(keys, means)}}

    # ------------------------------------------------------------ minibatches
    def minibatch_setup(self, advantages: torch.Tensor, normalize: bool) -> tuple[torch.Tensor, bool]:
        """Prepare one minibatch's advantages: returns ``(advantages, normalize_in_loss)``.

        One process: unchanged (the loss whitens them itself). In a group: set this rank's
        gradient weight to its share of the global minibatch and whiten with the global mean
        and std, so the loss must not whiten again.
        """
        if not self.active:
            return advantages, normalize
        n_total = self.set_batch_share(len(advantages))
        if normalize and n_total > 1:
            advantages = self.whiten(advantages)
        return advantages, False

    def set_batch_share(self, n_local: int) -> int:
        """Weight this rank's gradient by ``n_local / N`` (N: the minibatch's transitions over all ranks); returns N.

        With each rank's loss a mean over its own ``n_local`` transitions, the weighted sum of the
        ranks' gradients is the gradient of the mean over all N: the single-process gradient.
        """
        n_total = int(round(self.sum([n_local])[0]))
        self.grad_weight = n_local / n_total if n_total else 0.0
        return n_total

    def whiten(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / (std + 1e-8)`` with the mean and the (Bessel-corrected) std of ``x`` over all ranks."""
        x64 = x.detach().double()
        n, total = self.sum([len(x), float(x64.sum())])
        mean = total / n
        (sq,) = self.sum([float(((x64 - mean) ** 2).sum())])
        std = float(np.sqrt(sq / max(n - 1, 1)))
        return ((x64 - mean) / (std + 1e-8)).to(x.dtype)

    def episode_chunks(self, order: torch.Tensor, per_minibatch: int) -> list[torch.Tensor]:
        """The minibatches of a shuffled episode ``order`` for ``per_minibatch`` episodes per GLOBAL minibatch.

        One process: consecutive chunks of ``per_minibatch``. In a group: as many chunks as the
        single process would have (``ceil(global episodes / per_minibatch)``, capped so none is
        empty on any rank), each rank's episodes split evenly, so every rank steps as often.
        """
        if not self.active:
            return [order[s : s + per_minibatch] for s in range(0, len(order), per_minibatch)]
        n_total = int(round(self.sum([len(order)])[0]))
        n_chunks = max(1, min(-(-n_total // per_minibatch), int(self.min(len(order)))))
        return list(torch.tensor_split(order, n_chunks))

    @contextlib.contextmanager
    def sharded_minibatches(self, algo: Any) -> Iterator[None]:
        """During an SB3 ``train()``: the rollout buffer yields this rank's share of each global minibatch.

        The buffer's ``get(batch_size)`` draws from :meth:`_sharded_get` (its ``minibatch_source`` hook, for the duration only)
        and the algorithm's own per-minibatch whitening is switched off (done globally there).
        One process: nothing changes.
        """
        if not self.active:
            yield
            return
        buffer, normalize = algo.rollout_buffer, bool(getattr(algo, "normalize_advantage", False))
        buffer.minibatch_source = lambda batch_size: self._sharded_get(buffer, batch_size, normalize)
        algo.normalize_advantage = False
        try:
            yield
        finally:
            buffer.minibatch_source = None
            algo.normalize_advantage = normalize

    def _sharded_get(self, buffer: Any, batch_size: int | None, normalize: bool) -> Iterator[Any]:
        """This rank's part of each of the single process's minibatches (counts agreed over ranks)."""
        buffer.prepare_flat()
        local = buffer.valid_flat[np.random.permutation(len(buffer.valid_flat))]
        n_total = int(round(self.sum([len(local)])[0]))
        size = batch_size or n_total
        n_chunks = -(-n_total // size)
        if n_chunks > 1 and n_total - (n_chunks - 1) * size == 1:
            n_chunks -= 1  # as CreditBufferMixin.get: never a 1-transition minibatch
        n_chunks = max(1, min(n_chunks, int(self.min(len(local)))))
        for chunk in np.array_split(local, n_chunks):
            sample = compat.buffer_samples(buffer, chunk)
            advantages, _ = self.minibatch_setup(sample.advantages, normalize)
            yield sample._replace(advantages=advantages)

    # ------------------------------------------------------------ weights and gradients
    def attach(self, policy: torch.nn.Module) -> None:
        """Broadcast rank 0's weights into ``policy`` and all-reduce its trainable gradients at the end of every backward.

        Each trainable parameter gets a ``register_post_accumulate_grad_hook``; the first one to
        fire in a backward queues :meth:`_reduce_grads` on the autograd engine, which runs it when
        the backward is complete (as DDP does), so ``loss.backward()`` returns the reduced
        gradients and the algorithm's ``clip_grad_norm_`` and optimizer step see them.
        """
        if not self.active:
            return
        with torch.no_grad():
            for tensor in policy.state_dict().values():
                dist.broadcast(tensor, src=0)
        self._params = [p for p in dict.fromkeys(policy.parameters()) if p.requires_grad]
        for p in self._params:
            self._hooks.append(p.register_post_accumulate_grad_hook(self._grad_ready))

    def _grad_ready(self, param: torch.Tensor) -> None:
        if not self._queued:
            self._queued = True
            compat.queue_after_backward(self._reduce_grads)

    @torch.no_grad()
    def _reduce_grads(self) -> None:
        """``grad <- sum over ranks of (n_rank / N) * grad_rank`` for every trainable parameter, in flat buckets.

        A parameter without a gradient on this rank counts as zeros, so every rank reduces the
        same buffers in the same order.
        """
        self._queued = False
        bucket: list[torch.Tensor] = []
        size = 0
        for i, p in enumerate(self._params):
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            bucket.append(p)
            size += p.numel()
            if size >= BUCKET_ELEMENTS or i == len(self._params) - 1:
                flat = torch.cat([q.grad.reshape(-1) for q in bucket]).mul_(self.grad_weight)
                dist.all_reduce(flat, op=dist.ReduceOp.SUM)
                for q, g in zip(bucket, flat.split([q.numel() for q in bucket])):
                    q.grad.copy_(g.view_as(q))
                bucket, size = [], 0

    def detach(self) -> None:
        """Remove the gradient hooks."""
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()
        self._params = []

    # ------------------------------------------------------------ env rows
    def rows_and_seed(self, episodes_per_update: int, seed: int) -> tuple[int, int]:
        """``(rows, first_seed)``: this rank's env rows and the seed of its first row (``seed + rank * rows``)."""
        rows = episodes_per_update // self.world_size
        return rows, seed + self.rank * rows


LOCAL = DataParallel()
"""One process, no group: what every model uses unless :func:`data_parallel` hands it a group."""


def check_data_parallel(cfg: Any, world_size: int) -> None:
    """Refuse a config that cannot be split over ``world_size`` ranks, naming the fix (``ValueError``)."""
    if world_size <= 1:
        return
    from agents.registry import REGISTRY

    if not REGISTRY[cfg.algo].torchrun:
        supported = ", ".join(name for name, spec in REGISTRY.items() if spec.torchrun)
        raise ValueError(
            f"--algo {cfg.algo}: not supported with torchrun (its update is not written for ranks, e.g. TRPO's "
            f"conjugate-gradient step and line search); use one of {supported}"
        )
    if cfg.episodes_per_update % world_size:
        raise ValueError(
            f"--episodes-per-update {cfg.episodes_per_update} is not divisible by the world size {world_size}: "
            "each rank steps the same number of env rows; use a multiple of the number of processes"
        )
    if cfg.algo == "token_ppo" and cfg.minibatch_episodes % world_size:
        raise ValueError(
            f"--minibatch-episodes {cfg.minibatch_episodes} is not divisible by the world size {world_size}: "
            "each rank takes the same share of every minibatch; use a multiple of the number of processes"
        )


def rank_device(device: str, local_rank: int, local_world_size: int = 1) -> tuple[str, str]:
    """``(device, backend)`` of a rank: ``cuda:LOCAL_RANK`` with NCCL when ``device`` means CUDA, else CPU with gloo.

    ``auto`` is CUDA when available. An explicit ``cuda:N`` is kept for a single local rank and
    refused for several (they would share one GPU, which NCCL does not allow).
    """
    if device == "auto":
        from abc_gym.device import resolve_device  # abc_gym's one "auto" rule

        device = str(resolve_device("auto"))
    dev = torch.device(device)
    if dev.type != "cuda":
        return "cpu", "gloo"
    if dev.index is not None:
        if local_world_size > 1:
            raise ValueError(
                f"--device {device}: under torchrun every local rank takes its own GPU (cuda:LOCAL_RANK); "
                "pass --device cuda or --device auto"
            )
        return str(dev), "nccl"
    if local_rank >= torch.cuda.device_count():
        raise ValueError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s) on this node")
    return f"cuda:{local_rank}", "nccl"


@contextlib.contextmanager
def data_parallel(cfg: Any) -> Iterator[tuple[DataParallel, Any]]:
    """The rank's :class:`DataParallel` and its config, for the duration of a run.

    Without torchrun: ``(LOCAL, cfg)``. Under torchrun: checks the config for the world size,
    sets the rank's device (``cfg.device`` becomes ``cuda:LOCAL_RANK`` or ``cpu``), joins the
    process group (``env://``: torchrun's ``MASTER_ADDR`` / ``MASTER_PORT``; keys under a prefix
    new for each group, so one process may run several ``train()`` calls), and destroys it on
    exit, on error included. A group that already exists (started by the caller) is used and left as is.
    """
    if not launched_by_torchrun():
        yield LOCAL, cfg
        return
    world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    check_data_parallel(cfg, world)
    device, backend = rank_device(cfg.device, local_rank, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    cfg = dataclasses.replace(cfg, device=device)
    owned = not dist.is_initialized()
    if owned:
        if backend == "nccl":
            torch.cuda.set_device(torch.device(device))
        timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "1800")))
        store, _, _ = next(dist.rendezvous("env://", rank, world, timeout=timeout))
        # A fresh key prefix per group: a second train() in the same processes must not read the first one's keys.
        store = dist.PrefixStore(f"agents.training/{next(_GROUP_COUNT)}", store)
        dist.init_process_group(backend=backend, store=store, world_size=world, rank=rank, timeout=timeout)
    dp = DataParallel(
        world_size=world, rank=rank, local_rank=local_rank, active=True, comm_device=torch.device(device), grad_weight=1.0 / world
    )
    try:
        yield dp, cfg
        if owned:
            dist.barrier()  # every rank done with the group before any tears it down (else gloo may abort at exit)
    finally:
        dp.detach()
        if owned and dist.is_initialized():
            dist.destroy_process_group()
