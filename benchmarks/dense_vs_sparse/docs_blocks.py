"""Tables in the docs that the script writes: blocks between markers, regenerated from stored raw results.

A markdown file marks a generated block as::

    <!-- table:NAME results=docs/raw/main10.json.gz kind=tables report_update=20 -->
    ...generated text, never edited by hand...
    <!-- /table:NAME -->

``results`` is one or more comma-separated paths (relative to the repository root) to
raw results (:func:`benchmarks.dense_vs_sparse.results.save_raw`, or a results.json);
``kind`` picks the renderer in :data:`RENDERERS` (``tables``, ``headline``, or one table:
``conditions``, ``diagnostics``, ``comparisons``, ``levels``, with ``task=TEXT`` to pick
tasks; for ``--sweep kl`` results ``kl_tables``, or one of its tables: ``kl_conditions``,
``kl_comparisons``, ``kl_frontier``; for a tuning grid ``tune_grid``; two results files with one setting
changed, ``contrast``); other ``key=value`` pairs are its options
(``report_update``, ``final_window``, ``speed_window``, ``names`` for the headline). Values hold no spaces. Both markers start
a line (so an indented example of a marker is not a block).
``tests/test_benchmarks.py`` (and ``check``) regenerate every block of every
markdown file in the repository and fail on any difference, so a number in a block is
always the script's.

    python -m benchmarks.dense_vs_sparse.docs_blocks check  docs/results.md README.md   # exit 1 if a block is stale
    python -m benchmarks.dense_vs_sparse.docs_blocks update docs/results.md README.md   # rewrite the blocks
    python -m benchmarks.dense_vs_sparse.docs_blocks store results/main10/results.json docs/raw/main10.json.gz
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from benchmarks.dense_vs_sparse import tables, tuning
from benchmarks.dense_vs_sparse.results import load_results, save_raw

ROOT = Path(__file__).resolve().parents[2]
# markers start a line: an indented or quoted example of a marker (as in docs/statistics.md) is not a block
_BLOCK = re.compile(
    r"^<!-- table:(?P<name>[\w.-]+)(?P<attrs>[^>\n]*?)-->\n(?P<body>.*?)^<!-- /table:(?P=name) -->", re.S | re.M
)


@dataclass(frozen=True)
class Block:
    """One generated block of a markdown file."""

    name: str
    attrs: dict[str, str]
    body: str
    start: int  #: offset of the body in the file's text
    end: int


def find_blocks(text: str) -> list[Block]:
    """The generated blocks of a markdown text, in order."""
    out = []
    for m in _BLOCK.finditer(text):
        attrs = dict(kv.split("=", 1) for kv in m["attrs"].split() if "=" in kv)
        out.append(Block(m["name"], attrs, m["body"], m.start("body"), m.end("body")))
    return out


def _load(attrs: dict[str, str], root: Path) -> list[tuple[str, pd.DataFrame]]:
    if "results" not in attrs:
        raise ValueError("a table block needs results=PATH[,PATH...]")
    paths = [root / p for p in attrs["results"].split(",")]
    names = attrs["names"].split(",") if "names" in attrs else [p.name.split(".")[0] for p in paths]
    if len(names) != len(paths):
        raise ValueError(f"names= has {len(names)} entries for {len(paths)} results")
    return [(n, load_results(p)[0]) for n, p in zip(names, paths)]


def _one(exps: list[tuple[str, pd.DataFrame]]) -> pd.DataFrame:
    if len(exps) != 1:
        raise ValueError("this kind of block takes one results file")
    return exps[0][1]


def _int(attrs: dict[str, str], key: str, default: int) -> int:
    return int(attrs.get(key, default))


def _part(part: str) -> Callable[[list[tuple[str, pd.DataFrame]], dict[str, str]], str]:
    """Renderer of one of a task's tables (``task=TEXT`` picks the tasks whose title contains TEXT).

    The comparisons keep the Holm adjustment over the whole results file, whichever task is shown.
    """

    def render_part(exps: list[tuple[str, pd.DataFrame]], a: dict[str, str]) -> str:
        df = _one(exps)
        fw, sw = _int(a, "final_window", tables.FINAL_WINDOW), _int(a, "speed_window", tables.SPEED_WINDOW)
        family = tables.declared_comparisons(df, final_window=fw)
        tasks = [t for t in dict.fromkeys(df["task"]) if a.get("task", "") in t]
        if not tasks:
            raise ValueError(f"no task matches task={a['task']!r}; the tasks are {list(dict.fromkeys(df['task']))}")
        out = []
        for task in tasks:
            sub = df[df.task == task]
            updates = tables.final_updates(sub, fw)
            if part == "conditions":
                text = tables.conditions_table(sub, _int(a, "report_update", 20), updates)
            elif part == "diagnostics":
                text = tables.diagnostics_table(sub, updates)
            elif part == "comparisons":
                text = tables.comparisons_table([c for c in family if c.task == task], len(family))
            else:
                text = tables.levels_table(sub, updates, sw)
            out.append(text if len(tasks) == 1 else f"### {task}\n\n{text}")
        return "\n\n".join(out)

    return render_part


def _kl(parts: tuple[str, ...], notes: bool) -> Callable[[list[tuple[str, pd.DataFrame]], dict[str, str]], str]:
    """Renderer of a ``--sweep kl`` results file's tables (all with their caption, or one without)."""

    def render_kl(exps: list[tuple[str, pd.DataFrame]], a: dict[str, str]) -> str:
        return tables.kl_tables(_one(exps), _int(a, "final_window", tables.FINAL_WINDOW), parts, notes)

    return render_kl


#: kind -> renderer(experiments, attrs): the text between the markers. ``tables``: everything
#: ``tables.md`` holds; ``headline``: the README headline over one or more results files;
#: ``conditions`` / ``diagnostics`` / ``comparisons`` / ``levels``: one table per task;
#: ``kl_tables``: everything ``tables.md`` holds for ``--sweep kl`` results (e.g.
#: ``docs/raw/kl_8_15.json.gz``), ``kl_conditions`` / ``kl_comparisons`` / ``kl_frontier``: one of its tables;
#: ``tune_grid``: a tuning grid (``tuning store``; several files: one grid) with each mode's selected point; ``contrast``: two results
#: files with one setting changed, per condition (:func:`tables.setting_contrast`, descriptive).
RENDERERS: dict[str, Callable[[list[tuple[str, pd.DataFrame]], dict[str, str]], str]] = {
    "tables": lambda exps, a: tables.all_tables(
        _one(exps), _int(a, "report_update", 20), 1, _int(a, "speed_window", tables.SPEED_WINDOW),
        _int(a, "final_window", tables.FINAL_WINDOW)),
    "headline": lambda exps, a: tables.headline(
        exps, _int(a, "final_window", tables.FINAL_WINDOW), _int(a, "speed_window", tables.SPEED_WINDOW)),
    **{part: _part(part) for part in ("conditions", "diagnostics", "comparisons", "levels")},
    "kl_tables": _kl(tables.KL_PARTS, notes=True),
    **{f"kl_{part}": _kl((part,), notes=False) for part in tables.KL_PARTS},
    # a grid widened later is stored apart (results=FIRST,WIDENED) and selected over as one grid
    "tune_grid": lambda exps, a: tuning.grid_table(
        pd.concat([df for _, df in exps], ignore_index=True), _int(a, "final_window", tables.FINAL_WINDOW))[0],
    "contrast": lambda exps, a: _contrast(exps, a),
}


def _contrast(exps: list[tuple[str, pd.DataFrame]], a: dict[str, str]) -> str:
    """``kind=contrast results=BASE,TREAT names=LABEL,LABEL``: :func:`tables.setting_contrast` (``_`` in a label
    prints as a space)."""
    if len(exps) != 2:
        raise ValueError("a contrast block takes two results files: results=BASE,TREAT (names=BASE_LABEL,TREAT_LABEL)")
    (base_name, base), (treat_name, treat) = exps
    return tables.setting_contrast(base, treat, base_name.replace("_", " "), treat_name.replace("_", " "),
                                   final_window=_int(a, "final_window", tables.FINAL_WINDOW))


def render(attrs: dict[str, str], root: Path = ROOT) -> str:
    """The text a block with these attributes holds (ends with a newline)."""
    kind = attrs.get("kind", "tables")
    if kind not in RENDERERS:
        raise ValueError(f"unknown block kind {kind!r}: one of {sorted(RENDERERS)}")
    text = RENDERERS[kind](_load(attrs, root), attrs)
    return text if text.endswith("\n") else text + "\n"


def regenerate(text: str, root: Path = ROOT) -> tuple[str, list[str]]:
    """``text`` with every block regenerated, and the names of the blocks that changed."""
    changed, parts, pos = [], [], 0
    for b in find_blocks(text):
        new = render(b.attrs, root)
        if new != b.body:
            changed.append(b.name)
        parts += [text[pos:b.start], new]
        pos = b.end
    return "".join(parts) + text[pos:], changed


def check(paths: Sequence[Path], root: Path = ROOT) -> list[str]:
    """``"FILE: NAME"`` for every stale block in ``paths``."""
    return [f"{p}: {name}" for p in paths for name in regenerate(Path(p).read_text(), root)[1]]


def update(paths: Sequence[Path], root: Path = ROOT) -> list[str]:
    """Rewrite the stale blocks in ``paths``; returns what changed."""
    changed = []
    for p in map(Path, paths):
        text, names = regenerate(p.read_text(), root)
        if names:
            p.write_text(text)
            changed += [f"{p}: {n}" for n in names]
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``check`` / ``update`` FILES, or ``store`` RESULTS DEST."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.dense_vs_sparse.docs_blocks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for cmd in ("check", "update"):
        sp = sub.add_parser(cmd)
        sp.add_argument("files", nargs="+", type=Path)
        sp.add_argument("--root", type=Path, default=ROOT, help="paths in results= are relative to this")
    st = sub.add_parser("store", help="store a results.json compactly (gzip'd column-wise JSON) for the repository")
    st.add_argument("results", type=Path)
    st.add_argument("dest", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "store":
        df, meta = load_results(args.results)
        path = save_raw(df, meta, args.dest)
        print(f"{path}: {len(df)} rows, {path.stat().st_size / 1024:.0f} kB")
        return 0
    if args.cmd == "check":
        stale = check(args.files, args.root)
        for s in stale:
            print(f"stale: {s} (run: python -m benchmarks.dense_vs_sparse.docs_blocks update ...)", file=sys.stderr)
        return 1 if stale else 0
    for s in update(args.files, args.root):
        print(f"updated: {s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
