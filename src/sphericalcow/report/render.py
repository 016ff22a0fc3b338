"""Turn a :class:`~sphericalcow.report.result.Result` into a run folder: JSON, PNGs, markdown and HTML.

Layout of a run folder written by :func:`write_run`::

    config.json    {"study", "config", "meta"}                       (strict JSON, keys sorted)
    results.json   {"study", "title", "summary", "passed", "verdict_counts", "verdicts",
                    "tables", "figures", "data", "meta"}              (strict JSON, insertion order)
    report.md      GitHub markdown, figures referenced as <name>.png
    report.html    one self-contained file: inline CSS, figures as base64 data URIs, no URLs, no JS
    <name>.png     one per figure

Everything is rendered in memory first and only then written, each file atomically, so a failure (say an
object in ``data`` that cannot be made JSON) writes nothing, and a crash never leaves a half-written file.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from sphericalcow import __version__
from sphericalcow.report.jsonio import atomic_write_bytes, atomic_write_text, dumps_json, to_jsonable
from sphericalcow.report.result import Result, Table, check_figure_name

__all__ = [
    "FIGURE_DPI",
    "format_value",
    "markdown_to_html",
    "new_run_dir",
    "render_html",
    "render_markdown",
    "result_to_dict",
    "write_run",
]

#: Resolution of the PNG files (and of the images embedded in the HTML report).
FIGURE_DPI = 120

_STUDY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_MARK = {"pass": "✅", "fail": "❌", "info": "ℹ️"}
_LABEL = {"pass": "PASS", "fail": "FAIL", "info": "INFO"}
_DASH = "—"


# ----------------------------------------------------------------------------------------------------------
# run folder


def new_run_dir(base: Path | str, study: str, *, now: datetime | None = None) -> Path:
    """Create and return a new run folder ``base/<UTC timestamp>-<study>``, e.g. ``20261123T101502Z-kernels``.

    If that folder (or any file of that name) exists, ``-2``, ``-3``, ... is appended until a new name is
    found; creation uses ``mkdir`` without ``exist_ok``, so two concurrent callers never share a folder.
    ``base`` is created if needed. ``now`` defaults to the current time; a naive ``now`` is taken as UTC,
    an aware one is converted to UTC. ``study`` must match ``[A-Za-z0-9][A-Za-z0-9_.-]*`` (no path parts).
    """
    if not isinstance(study, str) or not _STUDY_RE.fullmatch(study):
        raise ValueError(
            f"study name {study!r} is not allowed in a folder name; expected letters, digits, '_', '.' or '-'"
        )
    if now is None:
        now = datetime.now(UTC)
    now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    stem = f"{now:%Y%m%dT%H%M%SZ}-{study}"
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    for i in itertools.count(1):
        candidate = base / (stem if i == 1 else f"{stem}-{i}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise AssertionError("unreachable")  # pragma: no cover


def _check_figures(result: Result) -> None:
    seen: set[str] = set()
    for spec in result.figures:
        check_figure_name(spec.name)  # the dataclass is mutable: check again at write time
        if spec.name in seen:
            raise ValueError(f"duplicate figure name {spec.name!r} in result {result.study!r}")
        seen.add(spec.name)


def result_to_dict(result: Result, figure_files: dict[str, str] | None = None) -> dict[str, Any]:
    """The content of ``results.json`` (JSON-able, strict: nan/inf are ``None``)."""
    figure_files = figure_files or {}
    return to_jsonable(
        {
            "study": result.study,
            "title": result.title,
            "summary": result.summary,
            "passed": result.passed,
            "verdict_counts": result.verdict_counts(),
            "verdicts": [v.to_dict() for v in result.verdicts],
            "tables": [t.to_dict() for t in result.tables],
            "figures": [
                {"name": f.name, "caption": f.caption, "file": figure_files.get(f.name, f"{f.name}.png")}
                for f in result.figures
            ],
            "data": result.data,
            "meta": result.meta,
        }
    )


def write_run(result: Result, out_dir: Path | str) -> dict[str, Path]:
    """Write the run folder for ``result`` into ``out_dir`` (created if missing).

    Writes ``config.json``, ``results.json``, ``report.md``, ``report.html`` and ``<name>.png`` per figure
    (``FIGURE_DPI`` dpi), each atomically; any other file in ``out_dir`` is left alone. All matplotlib figures
    of the result are closed (``plt.close``) afterwards, also on error. Returns ``{file name: path}``, e.g.
    ``{"config.json": ..., "results.json": ..., "report.md": ..., "report.html": ..., "loss.png": ...}``.

    Raises:
        ValueError: invalid or duplicate figure name (nothing is written).
        TypeError: ``config``/``data``/``meta``/table cells hold something :func:`to_jsonable` cannot
            convert (nothing is written).
    """
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    try:
        _check_figures(result)
        pngs: dict[str, bytes] = {}
        for spec in result.figures:
            buf = io.BytesIO()
            spec.figure.savefig(buf, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
            pngs[spec.name] = buf.getvalue()
    finally:
        for spec in result.figures:
            plt.close(spec.figure)

    figure_files = {name: f"{name}.png" for name in pngs}
    texts = {
        "config.json": dumps_json({"study": result.study, "config": result.config, "meta": result.meta}),
        "results.json": dumps_json(result_to_dict(result, figure_files), sort_keys=False),
        "report.md": render_markdown(result, figure_files),
        "report.html": render_html(result, pngs),
    }

    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, data in pngs.items():
        written[figure_files[name]] = atomic_write_bytes(out / figure_files[name], data)
    for fname, text in texts.items():  # reports last: their presence means the folder is complete
        written[fname] = atomic_write_text(out / fname, text)
    return written


# ----------------------------------------------------------------------------------------------------------
# value formatting


def _scalar(v: Any) -> Any:
    """numpy scalars, 0-d arrays and 0-d/1-element tensors -> Python scalars; anything else unchanged."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray) and v.ndim == 0:
        return v.item()
    if type(v).__module__ == "torch" and getattr(v, "ndim", None) == 0:
        return v.item()
    return v


def _is_number(v: Any) -> bool:
    v = _scalar(v)
    return isinstance(v, int | float) and not isinstance(v, bool)


def format_value(v: Any, *, digits: int = 4, max_len: int = 80) -> str:
    """Human-readable cell text: floats to ``digits`` significant digits, ``None``/nan as "—", ±inf as
    "inf"/"-inf", ints in full, arrays/lists as compact JSON cut to ``max_len`` characters."""
    v = _scalar(v)
    if v is None:
        return _DASH
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return _DASH
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.{digits}g}"
    if isinstance(v, str):
        s = v
    else:
        try:
            s = json.dumps(to_jsonable(v), allow_nan=False, ensure_ascii=False, separators=(", ", ": "))
        except (TypeError, ValueError):
            s = repr(v)
    return s if len(s) <= max_len else s[: max_len - 1] + "…"


def _full_precision(v: Any) -> str | None:
    v = _scalar(v)
    if isinstance(v, float) and math.isfinite(v):
        return repr(v)
    return None


def _flatten(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(d, dict) and d:
        out: list[tuple[str, Any]] = []
        for k, v in d.items():
            out.extend(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return [(prefix, d)]


def _meta_rows(result: Result) -> list[tuple[str, str]]:
    return [(k, format_value(v, digits=6, max_len=200)) for k, v in _flatten(result.meta)]


def _version(result: Result) -> str:
    """The package version that produced ``result``: ``meta["version"]`` (or ``sphericalcow_version`` /
    ``package_version``) if given, else the running package's version."""
    for key in ("version", "sphericalcow_version", "package_version"):
        if result.meta.get(key):
            return str(result.meta[key])
    return __version__


def _overall_line(result: Result) -> tuple[str, str]:
    """(status, sentence) for the whole result."""
    c = result.verdict_counts()
    decided = c["pass"] + c["fail"]
    if decided == 0:
        return "info", f"no pass/fail checks ({c['info']} informational)"
    if c["fail"] == 0:
        return "pass", f"all {decided} checks passed" + (f", {c['info']} informational" if c["info"] else "")
    return "fail", f"{c['fail']} of {decided} checks failed" + (f", {c['info']} informational" if c["info"] else "")


def _numeric_columns(table: Table) -> set[str]:
    out = set()
    for c in table.columns:
        vals = [r.get(c) for r in table.rows]
        present = [v for v in vals if _scalar(v) is not None]
        if present and all(_is_number(v) for v in present):
            out.add(c)
    return out


# ----------------------------------------------------------------------------------------------------------
# markdown


_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")


def _md_text(s: str) -> str:
    """Plain text for markdown: a ``<`` that could open an HTML tag becomes ``&lt;`` (``a < b`` is kept)."""
    return _TAG_START.sub("&lt;", s)


def _md_cell(s: str) -> str:
    """Text for a markdown table cell: escaped pipes and tags, line breaks as ``<br>``."""
    s = _md_text(s.replace("\\", "\\\\").replace("|", "\\|"))
    return s.replace("\r\n", "\n").replace("\n", "<br>")


def _md_inline_text(s: str) -> str:
    """Single-line plain text for headings, list items, captions and alt text."""
    return _md_text(" ".join(s.split()))


def _md_table(table: Table) -> list[str]:
    if not table.columns:
        return ["*(empty table)*"]
    numeric = _numeric_columns(table)
    lines = [
        "| " + " | ".join(_md_cell(c) for c in table.columns) + " |",
        "|" + "|".join("---:" if c in numeric else "---" for c in table.columns) + "|",
    ]
    for row in table.rows:
        lines.append("| " + " | ".join(_md_cell(format_value(row.get(c))) for c in table.columns) + " |")
    if not table.rows:
        lines.append("| " + " | ".join(_DASH for _ in table.columns) + " |")
    return lines


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def render_markdown(result: Result, figure_files: dict[str, str]) -> str:
    """GitHub-flavoured markdown report.

    ``figure_files`` maps figure name -> file name relative to the report (default ``<name>.png``).
    Sections: title, run line, summary (verbatim markdown), verdicts (✅ / ❌ / ℹ️), tables, figures,
    configuration (fenced JSON) and run metadata.
    """
    status, sentence = _overall_line(result)
    out: list[str] = [f"# {_md_inline_text(result.title)}", ""]
    run_bits = [f"Study `{result.study}`", f"sphericalcow {_version(result)}"]
    finished = result.meta.get("finished")
    if finished:
        run_bits.append(f"finished {finished}")
    out += [" · ".join(run_bits), "", f"**Overall: {_MARK[status]} {sentence}**", ""]
    if result.summary.strip():
        out += [result.summary.strip(), ""]

    if result.verdicts:
        out += ["## Verdicts", ""]
        for v in result.verdicts:
            line = f"- {_MARK[v.status]} **{_LABEL[v.status]}** {_md_inline_text(v.claim)}"
            if v.detail.strip():
                line += f" — {_md_inline_text(v.detail)}"
            out.append(line)
        out.append("")

    if result.tables:
        out += ["## Tables", ""]
        for i, t in enumerate(result.tables, 1):
            out += [f"### Table {i}: {_md_inline_text(t.name)}", ""]
            if t.caption.strip():
                out += [f"*{_md_inline_text(t.caption)}*", ""]
            out += [*_md_table(t), ""]

    if result.figures:
        out += ["## Figures", ""]
        for i, f in enumerate(result.figures, 1):
            fname = figure_files.get(f.name, f"{f.name}.png")
            alt = _md_inline_text(f.caption or f.name).replace("[", "\\[").replace("]", "\\]")
            out += [f"![{alt}]({fname})", ""]
            cap = f"Figure {i} ({f.name})" + (f": {_md_inline_text(f.caption)}" if f.caption.strip() else "")
            out += [f"*{cap}*", ""]

    cfg = dumps_json(result.config).rstrip("\n")
    fence = _fence(cfg)
    out += ["## Configuration", "", f"{fence}json", cfg, fence, ""]

    meta = _meta_rows(result)
    if meta:
        out += ["## Run metadata", ""]
        out += [f"- **{_md_cell(k)}**: {_md_cell(v)}" for k, v in meta]
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


# ----------------------------------------------------------------------------------------------------------
# HTML

_CSS = """
:root { --fg: #1f2328; --muted: #59636e; --border: #d1d9e0; --bg: #ffffff; --bg2: #f6f8fa;
        --pass: #1a7f37; --pass-bg: #dafbe1; --fail: #cf222e; --fail-bg: #ffebe9;
        --info: #0969da; --info-bg: #ddf4ff; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
       font: 16px/1.55 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, "Helvetica Neue", Arial,
             sans-serif; }
main { max-width: 60rem; margin: 0 auto; padding: 2rem 1.25rem 4rem; }
h1 { font-size: 1.9rem; line-height: 1.25; margin: 0 0 .4rem; }
h2 { font-size: 1.35rem; margin: 2.2rem 0 .8rem; padding-bottom: .3rem;
     border-bottom: 1px solid var(--border); }
h3 { font-size: 1.08rem; margin: 1.5rem 0 .5rem; }
p { margin: .6rem 0; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace;
            font-size: .88em; }
code { background: var(--bg2); padding: .1em .3em; border-radius: 4px; }
pre { background: var(--bg2); border: 1px solid var(--border); border-radius: 6px; padding: .9rem 1rem;
      overflow-x: auto; line-height: 1.4; }
pre code { background: none; padding: 0; }
.runline { color: var(--muted); font-size: .92rem; margin-bottom: 1rem; }
.overall { display: inline-block; margin: .3rem 0 1rem; padding: .35rem .8rem; border-radius: 6px;
           font-weight: 600; }
.badge { display: inline-block; min-width: 3.4rem; text-align: center; padding: .08rem .45rem;
         border-radius: 999px; font-size: .76rem; font-weight: 700; letter-spacing: .04em; }
.pass { color: var(--pass); background: var(--pass-bg); }
.fail { color: var(--fail); background: var(--fail-bg); }
.info { color: var(--info); background: var(--info-bg); }
ul.verdicts { list-style: none; padding: 0; margin: 0; }
ul.verdicts li { display: flex; gap: .7rem; align-items: baseline; padding: .55rem .2rem;
                 border-bottom: 1px solid var(--border); }
ul.verdicts li:last-child { border-bottom: none; }
.claim { font-weight: 600; }
.detail { color: var(--muted); font-size: .93rem; }
.tablewrap { overflow-x: auto; margin: .5rem 0 1rem; }
table { border-collapse: collapse; font-size: .9rem; min-width: 50%; }
caption { caption-side: top; text-align: left; color: var(--muted); font-style: italic; padding: 0 0 .4rem; }
th, td { border: 1px solid var(--border); padding: .3rem .65rem; vertical-align: top; }
th { background: var(--bg2); text-align: left; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) td { background: #fbfcfd; }
td.empty { color: var(--muted); text-align: center; }
figure { margin: 1.2rem 0 1.8rem; text-align: center; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--border); border-radius: 4px; }
figcaption { color: var(--muted); font-size: .92rem; margin-top: .45rem; }
.missing { color: var(--fail); }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; font-size: .9rem; }
dl.meta dt { color: var(--muted); font-family: ui-monospace, Menlo, Consolas, monospace; }
dl.meta dd { margin: 0; word-break: break-word; }
footer { margin-top: 3rem; color: var(--muted); font-size: .82rem; }
@media print { main { max-width: none; } figure, table { break-inside: avoid; } }
"""

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _inline_md(text: str) -> str:
    """Escape ``text``; render inline `code`, **bold**, *italic*; links [text](target) become just text."""
    parts = re.split(r"(`[^`\n]+`)", text)
    out = []
    for part in parts:
        if len(part) >= 2 and part.startswith("`") and part.endswith("`"):
            out.append(f"<code>{_e(part[1:-1])}</code>")
            continue
        s = _e(part)
        # links: the report must not reference anything outside itself, so keep only the link text
        s = re.sub(r"\[([^\]\n]+)\]\(([^)\s]+)\)", r"\1", s)
        s = re.sub(r"\*\*(?=\S)(.+?)(?<=\S)\*\*", r"<strong>\1</strong>", s)
        s = re.sub(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])", r"<em>\1</em>", s)
        out.append(s)
    return "".join(out)


def markdown_to_html(text: str) -> str:
    """A small, safe markdown subset for study summaries: paragraphs, ``-``/``*`` bullet lists, ``#`` headings
    (shifted to h3+), fenced code blocks, inline code/bold/italic. All text is HTML-escaped; a link
    ``[text](target)`` is rendered as its text only, so the report never references anything outside itself
    (bare URLs written as plain text stay plain text)."""
    lines = text.replace("\r\n", "\n").split("\n")
    out: list[str] = []
    para: list[str] = []
    items: list[str] = []

    def flush() -> None:
        if para:
            out.append("<p>" + _inline_md(" ".join(para)) + "</p>")
            para.clear()
        if items:
            out.append("<ul>" + "".join(f"<li>{_inline_md(i)}</li>" for i in items) + "</ul>")
            items.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        fence = re.match(r"^(`{3,}|~{3,})", stripped)
        if fence:
            flush()
            marker = fence.group(1)
            body = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(marker):
                body.append(lines[i])
                i += 1
            out.append("<pre><code>" + _e("\n".join(body)) + "</code></pre>")
        elif not stripped:
            flush()
        elif m := re.match(r"^(#{1,6})\s+(.*)$", stripped):
            flush()
            level = min(6, len(m.group(1)) + 2)
            out.append(f"<h{level}>{_inline_md(m.group(2))}</h{level}>")
        elif m := re.match(r"^[-*+]\s+(.*)$", stripped):
            if para:
                flush()
            items.append(m.group(1))
        elif items and line[:1] in (" ", "\t"):
            items[-1] += " " + stripped  # continuation of a list item
        else:
            if items:
                flush()
            para.append(stripped)
        i += 1
    flush()
    return "\n".join(out)


def _html_table(table: Table, index: int) -> str:
    numeric = _numeric_columns(table)
    head = "".join(
        ('<th class="num" scope="col">' if c in numeric else '<th scope="col">') + f"{_e(c)}</th>"
        for c in table.columns
    )
    body_rows = []
    for row in table.rows:
        cells = []
        for c in table.columns:
            v = row.get(c)
            cls = "num" if c in numeric else ""
            full = _full_precision(v)
            attrs = (f' class="{cls}"' if cls else "") + (f' title="{_e(full)}"' if full else "")
            cells.append(f"<td{attrs}>{_e(format_value(v))}</td>")
        body_rows.append("<tr>" + "".join(cells) + "</tr>")
    if not table.rows:
        body_rows.append(f'<tr><td class="empty" colspan="{max(1, len(table.columns))}">no rows</td></tr>')
    caption = f"Table {index}: {table.name}" + (f" — {table.caption}" if table.caption.strip() else "")
    return (
        f'<div class="tablewrap"><table>\n<caption>{_e(caption)}</caption>\n'
        f"<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body_rows) + "\n</tbody></table></div>"
    )


def render_html(result: Result, figure_png_bytes: dict[str, bytes]) -> str:
    """One self-contained HTML page: inline CSS, figures as ``data:image/png;base64`` URIs, no scripts, no
    external URLs (a Content-Security-Policy meta tag forbids loading anything but inline styles and data
    images). All text is HTML-escaped. ``figure_png_bytes`` maps figure name -> PNG bytes; a figure with no
    bytes is shown as a "missing" note."""
    status, sentence = _overall_line(result)
    parts: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(result.title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<main>",
        f"<h1>{_e(result.title)}</h1>",
    ]
    run_bits = [
        f"study <code>{_e(result.study)}</code>",
        f"sphericalcow {_e(_version(result))}",
    ]
    if result.meta.get("finished"):
        run_bits.append(f"finished {_e(result.meta['finished'])}")
    parts.append(f'<div class="runline">{" · ".join(run_bits)}</div>')
    parts.append(f'<div class="overall {status}">{_MARK[status]} {_e(sentence)}</div>')
    if result.summary.strip():
        parts.append(f'<section class="summary">{markdown_to_html(result.summary)}</section>')

    if result.verdicts:
        parts.append('<section><h2>Verdicts</h2><ul class="verdicts">')
        for v in result.verdicts:
            detail = f'<div class="detail">{_e(v.detail)}</div>' if v.detail.strip() else ""
            parts.append(
                f'<li><span class="badge {v.status}">{_LABEL[v.status]}</span>'
                f'<div><div class="claim">{_e(v.claim)}</div>{detail}</div></li>'
            )
        parts.append("</ul></section>")

    if result.tables:
        parts.append("<section><h2>Tables</h2>")
        parts.extend(_html_table(t, i) for i, t in enumerate(result.tables, 1))
        parts.append("</section>")

    if result.figures:
        parts.append("<section><h2>Figures</h2>")
        for i, f in enumerate(result.figures, 1):
            cap = f"Figure {i} ({f.name})" + (f": {f.caption}" if f.caption.strip() else "")
            png = figure_png_bytes.get(f.name)
            if png is None:
                img = f'<p class="missing">[figure {_e(f.name)} not available]</p>'
            else:
                b64 = base64.b64encode(png).decode("ascii")
                img = f'<img src="data:image/png;base64,{b64}" alt="{_e(f.caption or f.name)}">'
            parts.append(f"<figure>{img}<figcaption>{_e(cap)}</figcaption></figure>")
        parts.append("</section>")

    config_json = _e(dumps_json(result.config).rstrip("\n"))
    parts.append(f"<section><h2>Configuration</h2><pre><code>{config_json}</code></pre></section>")
    meta = _meta_rows(result)
    if meta:
        parts.append('<section><h2>Run metadata</h2><dl class="meta">')
        parts.extend(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in meta)
        parts.append("</dl></section>")
    parts += [
        f"<footer>Generated by sphericalcow {_e(__version__)}. This file is self-contained and works offline.</footer>",
        "</main>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"
