"""The paper's table as Markdown: measured rows beside the paper's, the runs left out, and the
README's table of paper rows (``python -m mocosfl.table --paper-markdown``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mocosfl.report.paper_runs import DEFAULT_METHOD, Run
from mocosfl.report.row_config import compose_train
from mocosfl.report.rows import PAPER_SEEDS, Row, paper_text
from mocosfl.utils.resolvers import paper_numbers

# What a row's command adds for data that the user supplies (docs/paper.md, Data).
USER_DATA = {"imagenet12": " data.root=<imagenet-12>"}
SHOWN_DIFFERENCES = 3  # per run in the "not the paper's settings" list, then "+N more"


def format_table(rows: Sequence[Row], seeds: Sequence[int] = PAPER_SEEDS) -> str:
    """A Markdown table, one line per row and variant; with a method column (the runs'
    ``module=`` choice) when a row is not MocoSFL's (an FL-SSL baseline)."""
    methods = any(row.method != DEFAULT_METHOD for row in rows)
    head = ["experiment", *(["method"] if methods else []), "variant", "metric", "seeds"]
    head += ["measured here", "paper (its number)"]
    lines = [_line(head), _line(["---"] * len(head)).replace(" ", "")]
    for row in rows:
        found = ", ".join(map(str, row.values)) or "-"
        if len(row.values) < len(seeds):
            found += f" (of {len(seeds)})"
        method = [row.method] if methods else []
        cells = [row.experiment, *method, row.variant, row.metric or "-", found]
        lines.append(_line([*cells, row.measured(), row.paper_value()]))
    return "\n".join(lines)


def _line(cells: Sequence[str]) -> str:
    """One line of a Markdown table."""
    return f"| {' | '.join(cells)} |"


def format_mismatches(runs: Iterable[Run]) -> str:
    """The runs left out for not having their row's settings, one a line with how they differ;
    empty when there are none."""
    lines = []
    for run in sorted((r for r in runs if r.differences), key=lambda r: str(r.path)):
        shown = run.differences[:SHOWN_DIFFERENCES]
        if len(run.differences) > SHOWN_DIFFERENCES:
            shown.append(f"+{len(run.differences) - SHOWN_DIFFERENCES} more")
        lines.append(f"  {run.path} ({run.experiment}, {run.variant}): {'; '.join(shown)}")
    return "\n".join(["not the paper's settings:", *lines]) if lines else ""


def row_command(name: str, paper: Mapping[str, Any]) -> str:
    """The README's command for the row ``name``: its seeds as published (an FL-SSL baseline,
    whose entry names its ``method``, fixed: ``sfl=legacy`` is the original MocoSFL code's); for a
    Table 4 row, per seed, its stage-1 expert first (with the row's cut layer and share of the
    target data)."""
    if paper["table"] != "table4":
        seeds = ",".join(map(str, PAPER_SEEDS))
        data = USER_DATA.get(paper["dataset"], "")
        preset = "" if paper.get("method") else " sfl=legacy"
        return f"`python -m mocosfl.train -m experiment={name}{preset} seed={seeds}{data}`"
    cfg = compose_train([f"experiment={name}"])
    return (
        f"`python -m mocosfl.train experiment=taressfl_stage1 sfl.cut_layer={cfg.sfl.cut_layer} "
        f"data.target_fraction={cfg.expert_target_fraction} seed=<seed>`, then "
        f"`python -m mocosfl.train experiment={name} seed=<seed> "
        "init_from=<stage-1 run>/checkpoints/final.ckpt`"
    )


def paper_markdown() -> str:
    """The README's table of the paper's rows (between its ``paper-table`` markers): one line a
    row of ``conf/paper/numbers.yaml``, in its order, with the paper's numbers and the command
    that reproduces the row."""
    lines = ["| row | paper's linear top-1 (%) | command |", "|---|---|---|"]
    for name, paper in paper_numbers().items():
        number = paper_text(paper, "top1")
        if paper.get("attack_mse") is not None:
            number += f" (attack MSE {paper_text(paper, 'attack_mse')})"
        lines.append(f"| {paper['label']} | {number} | {row_command(name, paper)} |")
    return "\n".join(lines)
