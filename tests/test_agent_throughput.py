"""benchmarks/agent_throughput.py --profile: every phase it names is found in a real rollout.

A renamed function would otherwise show as a phase that costs nothing; the script raises
instead, and this test runs it on the shipped model (2 envs x 4 tokens, a few seconds).
"""

from __future__ import annotations

import argparse
import re

import pytest

pytest.importorskip("stable_baselines3")

from benchmarks.agent_throughput import profile_tables  # noqa: E402
from tests.conftest import has_cxx_compiler  # noqa: E402


@pytest.mark.parametrize("options", [False, True])
def test_profile_finds_every_phase_and_times_it(options: bool) -> None:
    from benchmarks.agent_throughput import profile_phases

    if options and not has_cxx_compiler():
        pytest.skip("torch.compile on CPU needs a C++ compiler")
    args = argparse.Namespace(device="cpu", policy="shipped", new_tokens=4, profile=2, repeats=1, threads=1,
                              profile_options=options)
    table = profile_tables(args)
    for label, _, _ in profile_phases("inverse_cdf"):  # the default sampler, and the options' one
        row = next(line for line in table.splitlines() if line.startswith(f"| {label} |"))
        seconds = float(row.split("|")[2])
        assert seconds > 0, row
    assert re.search(r"HF generate \+ RM batch [0-9.]+ s", table)
    assert "aten::" in table  # torch.profiler's operator table


def test_options_table_times_every_fast_option() -> None:
    from benchmarks.agent_throughput import OPTIONS, options_table

    if not has_cxx_compiler():
        pytest.skip("torch.compile on CPU needs a C++ compiler")
    args = argparse.Namespace(device="cpu", new_tokens=4, compile_sizes=[2], repeats=1)
    table = options_table(args, None, None, 1)
    row = table.splitlines()[-1].split("|")[1:-1]
    assert row[0].strip() == "2" and "failed" not in table
    rates = [float(cell.replace(",", "")) for cell in row[1:len(OPTIONS) + 2]]  # each option, then generate + RM
    assert len(rates) == len(OPTIONS) + 1 and all(r > 0 for r in rates)
