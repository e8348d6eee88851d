"""Running the plan: in-process, or in worker processes that a signal stops for sure.

``concurrent.futures.ProcessPoolExecutor`` is not used on purpose: on SIGINT its
``shutdown`` waited on workers blocked on a pipe (the benchmark hung), and on SIGTERM the
parent died and left its workers computing. Here the parent owns plain spawn processes,
turns SIGINT/SIGTERM into :class:`Interrupted`, and terminates (then kills) every worker
on the way out; each worker also exits by itself if its parent disappears.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection, wait
from typing import Any

from benchmarks.dense_vs_sparse.plan import RunSpec
from benchmarks.dense_vs_sparse.training import run_one

OnDone = Callable[[RunSpec, list[dict[str, Any]]], None]


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived while the benchmark was running."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Raise :class:`Interrupted` on the first SIGINT/SIGTERM; ignore further ones until the block ends.

    Ignoring the second signal lets the clean-up (stop workers, save results) finish
    when a user presses Ctrl-C twice. Only the main thread can install handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if not got:
            got.append(signum)
            raise Interrupted(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _exit_with_parent(parent_pid: int) -> None:
    """Exit this worker when its parent is gone (even SIGKILL, which no handler sees)."""

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _worker(conn: Connection, settings: dict[str, Any], parent_pid: int) -> None:
    """Worker loop: receive a RunSpec, send back ``("ok", rows)`` or ``("error", traceback)``; None ends it."""
    # A terminal's Ctrl-C reaches the whole process group: the parent alone decides how to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent(parent_pid)
    while True:
        try:
            spec = conn.recv()
        except EOFError:
            return
        if spec is None:
            return
        try:
            conn.send(("ok", run_one(spec, settings)))
        except Exception:
            conn.send(("error", traceback.format_exc()))


def _stop(procs: list[mp.process.BaseProcess], grace_s: float = 5.0) -> None:
    """Terminate every worker, kill those still alive after ``grace_s``, and reap them all."""
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + grace_s
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(1.0)


def run_specs(specs: list[RunSpec], settings: dict[str, Any], jobs: int, on_done: OnDone) -> None:
    """Run every spec (in ``jobs`` processes), calling ``on_done(spec, rows)`` in the parent as each finishes.

    A failed run stops the benchmark (the others are terminated) with the worker's traceback.
    """
    if jobs <= 1 or len(specs) <= 1:  # in-process: simplest to debug, and what the stub tests use
        for spec in specs:
            on_done(spec, run_one(spec, settings))
        return

    ctx = mp.get_context("spawn")  # not fork: torch's thread pools do not survive a fork safely
    queue = list(specs)
    procs: list[mp.process.BaseProcess] = []
    conns: list[Connection] = []
    busy: dict[Connection, tuple[mp.process.BaseProcess, RunSpec]] = {}
    try:
        for _ in range(min(jobs, len(specs))):
            conn, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, settings, os.getpid()), name="dense_vs_sparse-worker")
            proc.start()
            child.close()  # so the parent sees EOF if the worker dies
            procs.append(proc)
            conns.append(conn)
            spec = queue.pop(0)
            conn.send(spec)
            busy[conn] = (proc, spec)
        while busy:
            sentinels = {proc.sentinel: conn for conn, (proc, _) in busy.items()}
            for ready in wait([*busy, *sentinels]):
                conn = ready if isinstance(ready, Connection) else sentinels[ready]
                if conn not in busy:  # handled through its other handle in this round
                    continue
                proc, spec = busy[conn]
                if not conn.poll():  # the process ended without a reply
                    raise RuntimeError(f"{spec.name}: worker {proc.pid} died (exit code {proc.exitcode})")
                try:
                    status, payload = conn.recv()
                except EOFError:
                    raise RuntimeError(f"{spec.name}: worker {proc.pid} died (exit code {proc.exitcode})") from None
                if status == "error":
                    raise RuntimeError(f"{spec.name} failed in worker {proc.pid}:\n{payload}")
                on_done(spec, payload)
                if queue:
                    busy[conn] = (proc, queue.pop(0))
                    conn.send(busy[conn][1])
                else:
                    conn.send(None)
                    del busy[conn]
    finally:
        _stop(procs)
        for conn in conns:
            conn.close()
