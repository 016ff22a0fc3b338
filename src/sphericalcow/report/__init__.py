"""Study results and their run folders: the :class:`Result` data model, JSON I/O and report rendering."""

from sphericalcow.report.jsonio import (
    atomic_write_bytes,
    atomic_write_text,
    dump_json,
    dumps_json,
    load_json,
    to_jsonable,
)
from sphericalcow.report.render import (
    FIGURE_DPI,
    format_value,
    markdown_to_html,
    new_run_dir,
    render_html,
    render_markdown,
    result_to_dict,
    write_run,
)
from sphericalcow.report.result import FigureSpec, Result, Table, Verdict, check_figure_name

__all__ = [
    "FIGURE_DPI",
    "FigureSpec",
    "Result",
    "Table",
    "Verdict",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_figure_name",
    "dump_json",
    "dumps_json",
    "format_value",
    "load_json",
    "markdown_to_html",
    "new_run_dir",
    "render_html",
    "render_markdown",
    "result_to_dict",
    "to_jsonable",
    "write_run",
]
