"""`python -m sim.report RUN_DIR [RUN_DIR ...]`: re-render a run's report.html from its
results.json, or overlay several runs (every variant of every run on one privacy-utility
frontier) into one page.

  python -m sim.report runs/privnet-20261130-120000
  python -m sim.report runs/privnet-* runs/embeddings-* --out frontier.html
  python -m sim.report runs/privnet-20261130-120000 --markdown   # the summary table, as in README.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .outputs.html import render, render_overlay
from .outputs.results_json import validate
from .outputs.tables import summary_rows
from .results import RunResults


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sim.report", description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="run directories (each with a results.json)")
    p.add_argument("--out", help="output file (default: RUN_DIR/report.html for one run, overlay.html for several)")
    p.add_argument("--markdown", action="store_true", help="print each run's summary table as Markdown instead")
    args = p.parse_args(argv)
    loaded = []
    for run_dir in args.runs:
        try:
            run = RunResults.load(Path(run_dir))
            validate(run.results)
        except (FileNotFoundError, ValueError) as exc:
            p.error(f"{run_dir}: {exc}")
        loaded.append(run)
    if args.markdown:
        for run in loaded:
            print(markdown_table(*summary_rows(run.results)))
        return 0
    if len(loaded) == 1:
        out = Path(args.out) if args.out else loaded[0].run_dir / "report.html"
        out.write_text(render(loaded[0].results), encoding="utf-8")
    else:
        out = Path(args.out or "overlay.html")
        labels = [f"{r.results['scenario']['name']} · {r.run_dir.name}" for r in loaded]
        out.write_text(render_overlay(list(zip(labels, (r.results for r in loaded)))), encoding="utf-8")
    print(out)
    return 0


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table (pipes in cells escaped)."""

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *(line(r) for r in rows)])


if __name__ == "__main__":
    sys.exit(main())
