"""torch behaviour abc_gym works around, in one place.

Checked against torch 2.3 (the declared floor) and 2.13.

- Fork after a forward pass: torch's CPU ops run on an OpenMP thread pool (libgomp in the
  PyPI wheels). A pool that has run in a process does not survive ``fork()``: the child's
  first parallel op waits forever for threads that were not copied. gymnasium's
  ``AsyncVectorEnv`` builds one env in the parent (to read its spaces) and then forks
  its workers, which is exactly that sequence. :func:`one_thread_in_forked_env_worker`,
  called by every env build before it loads a model, sets torch to one thread (no pool, no
  deadlock) only in a process forked from one that had already built an env; one env per
  worker process needs no more. Nothing is registered process-wide (no ``os.register_at_fork``):
  importing abc_gym, or forking for any other reason, leaves torch's threads alone.
- CUDA after fork: a child forked after its parent initialised CUDA cannot use CUDA
  (``torch.cuda._is_in_bad_fork``, a private function, read by :func:`in_bad_cuda_fork`).
"""

from __future__ import annotations

import os

import torch

__all__ = ["in_bad_cuda_fork", "one_thread_in_forked_env_worker"]

# The process that last built an env. A fork copies this value, which is how a worker knows.
_ENV_BUILT_IN_PID: int | None = None


def one_thread_in_forked_env_worker() -> bool:
    """Before an env loads its models: one torch thread if this process was forked after its parent built an env.

    Returns whether it changed the thread count. The first env built in a process records the
    process; a forked child inherits the record, sees another pid, and runs torch on one thread
    from then on (the parent's OpenMP pool would deadlock its first parallel op: module doc).
    """
    global _ENV_BUILT_IN_PID
    forked = _ENV_BUILT_IN_PID is not None and _ENV_BUILT_IN_PID != os.getpid()
    if forked:
        torch.set_num_threads(1)
    _ENV_BUILT_IN_PID = os.getpid()
    return forked


def in_bad_cuda_fork() -> bool:
    """True in a process forked after its parent initialised CUDA (CUDA unusable here)."""
    probe = getattr(torch.cuda, "_is_in_bad_fork", None)
    return bool(probe()) if probe is not None else False
