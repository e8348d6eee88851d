"""torch behaviour abc_gym works around, in one place.

Checked against torch 2.3 (the declared floor) and 2.13.

- Fork after a forward pass: torch's CPU ops run on an OpenMP thread pool (libgomp in the
  PyPI wheels). A pool that has run in a process does not survive ``fork()``: the child's
  first parallel op waits forever for threads that were not copied. gymnasium's
  ``AsyncVectorEnv`` builds one env in the parent (to read its spaces) and then forks
  its workers, which is exactly that sequence. :func:`one_thread_in_forked_children`
  makes every forked child run torch on one thread (no pool, no deadlock); one env per
  worker process needs no more.
- CUDA after fork: a child forked after its parent initialised CUDA cannot use CUDA
  (``torch.cuda._is_in_bad_fork``, a private function, read by :func:`in_bad_cuda_fork`).
"""

from __future__ import annotations

import os

import torch

__all__ = ["in_bad_cuda_fork", "one_thread_in_forked_children"]

_REGISTERED = False


def _one_thread() -> None:
    torch.set_num_threads(1)


def one_thread_in_forked_children() -> None:
    """Register (once per process) a fork hook that sets torch to one thread in the child."""
    global _REGISTERED
    if not _REGISTERED and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_one_thread)
        _REGISTERED = True


def in_bad_cuda_fork() -> bool:
    """True in a process forked after its parent initialised CUDA (CUDA unusable here)."""
    probe = getattr(torch.cuda, "_is_in_bad_fork", None)
    return bool(probe()) if probe is not None else False
