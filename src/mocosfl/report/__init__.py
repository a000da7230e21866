"""Reports of finished runs: the library behind ``python -m mocosfl.table`` and ``mocosfl.compare``.

The paper's table: :mod:`~mocosfl.report.row_config` (a run's paper row, and whether the run has
that row's settings), :mod:`~mocosfl.report.paper_runs` (the finished runs of paper rows under a
folder), :mod:`~mocosfl.report.rows` (a row's mean and standard deviation over its seeds) and
:mod:`~mocosfl.report.markdown` (the rows as Markdown, and the README's table of paper rows). Any
runs side by side: :mod:`~mocosfl.report.jobs` (the runs under some folders, with their
overrides), :mod:`~mocosfl.report.comparison` (their text table) and
:mod:`~mocosfl.report.comparison_plot` (its bar chart).
"""
