"""Tests for sphericalcow.report: data model, strict JSON, run folders, markdown and self-contained HTML."""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless backend; must precede pyplot
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from sphericalcow.report import (
    FigureSpec,
    Result,
    Table,
    Verdict,
    dump_json,
    format_value,
    load_json,
    new_run_dir,
    render_html,
    render_markdown,
    to_jsonable,
    write_run,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EVIL = "<script>alert('x')</script>"


def _figure(kind: str) -> FigureSpec:
    fig, ax = plt.subplots(figsize=(3, 2))
    x = np.linspace(0, 1, 20)
    ax.plot(x, x**2 if kind == "a" else np.sin(6 * x))
    ax.set_title(f"figure {kind}")
    return FigureSpec(name=f"fig_{kind}-1", figure=fig, caption=f"Caption {kind} with <b>tag</b>")


def make_result(**overrides) -> Result:
    tables = [
        Table(
            name="widths",
            columns=["width", "measured", "theory", "note"],
            rows=[
                {
                    "width": np.int64(16),
                    "measured": np.float32(0.123456789),
                    "theory": torch.tensor(0.5),
                    "note": EVIL,
                },
                {"width": 32, "measured": float("nan"), "theory": float("inf"), "note": "a|b"},
                {"width": 64, "measured": -float("inf"), "theory": None},  # "note" missing
            ],
            caption="measured vs theory <i>",
        ),
        Table(
            name="tensors",
            columns=["k", "v"],
            rows=[{"k": "t", "v": torch.tensor([1.0, float("nan")])}, {"k": "n", "v": np.float64(1234567.0)}],
        ),
    ]
    verdicts = [
        Verdict("kernel matches theory", True, "max rel err 1.2e-3 < 1e-2"),
        Verdict("finite-width correction", np.bool_(False), "off by 3 sigma"),
        Verdict("measured slope", None, "slope = 0.98"),
    ]
    kwargs = dict(
        study="demo",
        title="Demo study <&>",
        summary="The **kernel** agrees with `theory`.\n\n- first point\n- second [point](https://example.com)",
        config={"width": 16, "depth": (2, 3), "path": Path("/tmp/x"), "note": EVIL, "lr": float("nan")},
        tables=tables,
        figures=[_figure("a"), _figure("b")],
        verdicts=verdicts,
        data={
            "arr": np.array([[1.0, np.nan], [np.inf, -np.inf]]),
            "ints": np.arange(3, dtype=np.int32),
            "tensor": torch.tensor([0.5, float("nan")], requires_grad=True),
            "bf16": torch.tensor([1.5], dtype=torch.bfloat16),
            "scalar": np.float32(2.5),
            "nested": {"t": (1, 2), 3: "int key", "c": 1 + 2j},
        },
        meta={
            "version": "0.1.0",
            "seed": 0,
            "started": "2026-01-01T00:00:00Z",
            "finished": "2026-01-01T00:00:05Z",
            "timings": {"total_s": 5.123456},
        },
    )
    kwargs.update(overrides)
    return Result(**kwargs)


# ---------------------------------------------------------------------------------------------------------
# jsonio


def test_to_jsonable_converts_and_nulls_nonfinite():
    @dataclasses.dataclass
    class D:
        a: np.ndarray
        b: tuple

    @dataclasses.dataclass
    class WithToDict:
        x: int

        def to_dict(self):
            return {"custom": self.x}

    out = to_jsonable(
        {
            "np": np.array([1.0, np.nan, np.inf]),
            "np32": np.float32(np.nan),
            "t": torch.tensor([[1, 2]]),
            "t0": torch.tensor(float("-inf")),
            "dc": D(np.array([1, 2]), (3, float("nan"))),
            "td": WithToDict(7),
            "p": Path("a/b"),
            1: "one",
            "set": {3, 1, 2},
            "dt": datetime(2026, 1, 2, tzinfo=UTC),
        }
    )
    assert out["np"] == [1.0, None, None]
    assert out["np32"] is None
    assert out["t"] == [[1, 2]]
    assert out["t0"] is None
    assert out["dc"] == {"a": [1, 2], "b": [3, None]}
    assert out["td"] == {"custom": 7}
    assert out["p"] == "a/b"
    assert out["1"] == "one"
    assert out["set"] == [1, 2, 3]
    assert out["dt"].startswith("2026-01-02T00:00:00")
    json.dumps(out, allow_nan=False)
    assert all(type(x) is float for x in to_jsonable(np.array([1.0, 2.0])))

    lax = to_jsonable([float("nan"), np.float64(np.inf)], strict=False)
    assert math.isnan(lax[0]) and lax[1] == math.inf


def test_to_jsonable_rejects_unknown_and_cycles():
    with pytest.raises(TypeError, match=r"\$\['x'\]\[1\]"):
        to_jsonable({"x": [1, object()]})
    loop: list = []
    loop.append(loop)
    with pytest.raises(ValueError, match="circular"):
        to_jsonable(loop)
    with pytest.raises(ValueError, match="collision"):
        to_jsonable({1: "a", "1": "b"})


def test_dump_and_load_json(tmp_path):
    p = dump_json({"b": np.float64(np.nan), "a": [np.int8(1)]}, tmp_path / "x.json")
    text = p.read_text()
    assert text.index('"a"') < text.index('"b"')  # sorted keys
    assert "NaN" not in text
    assert load_json(p) == {"a": [1], "b": None}
    assert [f.name for f in tmp_path.iterdir()] == ["x.json"]  # no temp files left


# ---------------------------------------------------------------------------------------------------------
# result model


def test_invalid_figure_name_rejected():
    fig = plt.figure()
    try:
        for bad in ["Loss", "a b", "../x", "x.png", "", "a/b", "ü"]:
            with pytest.raises(ValueError, match="figure name"):
                FigureSpec(name=bad, figure=fig)
        FigureSpec(name="ok_name-2", figure=fig)
    finally:
        plt.close(fig)


def test_write_run_revalidates_figure_names(tmp_path):
    result = make_result()
    result.figures[0].name = "Bad Name"  # mutated after construction
    with pytest.raises(ValueError, match="figure name"):
        write_run(result, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    dup = make_result()
    dup.figures[1].name = dup.figures[0].name
    with pytest.raises(ValueError, match="duplicate"):
        write_run(dup, tmp_path / "run")


def test_table_and_verdict_validation():
    with pytest.raises(ValueError, match="not columns"):
        Table("t", ["a"], [{"a": 1, "b": 2}])
    with pytest.raises(ValueError, match="duplicate"):
        Table("t", ["a", "a"], [])
    with pytest.raises(TypeError):
        Verdict("c", "yes", "")  # type: ignore[arg-type]
    assert Verdict("c", np.bool_(True), "").passed is True
    t = Table("t", ["a", "b"], [{"b": np.float32(np.nan)}, {"a": torch.tensor(2)}])
    assert t.to_records() == [{"a": None, "b": None}, {"a": 2, "b": None}]
    assert list(t.to_records()[0]) == ["a", "b"]


def test_format_value():
    assert format_value(0.123456789) == "0.1235"
    assert format_value(np.float32(1234567.0)) == "1.235e+06"
    assert format_value(None) == "—"
    assert format_value(float("nan")) == "—"
    assert format_value(float("inf")) == "inf"
    assert format_value(-np.inf) == "-inf"
    assert format_value(np.int64(12345678)) == "12345678"
    assert format_value(torch.tensor(0.5)) == "0.5"


# ---------------------------------------------------------------------------------------------------------
# run folders


def test_new_run_dir_naming_and_collisions(tmp_path):
    now = datetime(2026, 11, 23, 10, 15, 2, tzinfo=UTC)
    base = tmp_path / "runs" / "nested"
    d1 = new_run_dir(base, "demo", now=now)
    assert d1 == base / "20261123T101502Z-demo" and d1.is_dir()
    d2 = new_run_dir(base, "demo", now=now)
    d3 = new_run_dir(base, "demo", now=now)
    assert (d2.name, d3.name) == ("20261123T101502Z-demo-2", "20261123T101502Z-demo-3")
    # an aware non-UTC time is converted to UTC
    cet = datetime(2026, 11, 23, 11, 15, 2, tzinfo=timezone(timedelta(hours=1)))
    assert new_run_dir(base, "other", now=cet).name == "20261123T101502Z-other"
    assert re.fullmatch(r"\d{8}T\d{6}Z-demo", new_run_dir(tmp_path, "demo").name)
    for bad in ["", "../up", "a/b", "a b"]:
        with pytest.raises(ValueError):
            new_run_dir(base, bad, now=now)


def test_write_run_full(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    unrelated = out / "notes.txt"
    unrelated.write_text("keep me")
    old_mtime = unrelated.stat().st_mtime_ns
    open_before = set(plt.get_fignums())
    result = make_result()
    figs = [f.figure for f in result.figures]
    assert all(f.number in plt.get_fignums() for f in figs)

    files = write_run(result, out)

    # every file exists, nothing else appeared, unrelated file untouched, figures closed
    expected = {"config.json", "results.json", "report.md", "report.html", "fig_a-1.png", "fig_b-1.png"}
    assert set(files) == expected
    assert all(p.is_file() and p.parent == out for p in files.values())
    assert {p.name for p in out.iterdir()} == expected | {"notes.txt"}
    assert unrelated.read_text() == "keep me" and unrelated.stat().st_mtime_ns == old_mtime
    assert not any(f.number in plt.get_fignums() for f in figs)
    assert set(plt.get_fignums()) <= open_before

    # strict JSON round trip
    for name in ("config.json", "results.json"):
        text = files[name].read_text(encoding="utf-8")
        assert "NaN" not in text and "Infinity" not in text
        loaded = json.loads(text)
        assert json.loads(json.dumps(loaded, allow_nan=False)) == loaded
    cfg = load_json(files["config.json"])
    assert cfg["config"]["depth"] == [2, 3] and cfg["config"]["lr"] is None
    assert cfg["meta"]["seed"] == 0 and cfg["study"] == "demo"
    res = load_json(files["results.json"])
    assert res["study"] == "demo" and res["title"] == "Demo study <&>"
    assert [v["passed"] for v in res["verdicts"]] == [True, False, None]
    assert res["passed"] is False
    assert res["tables"][0]["records"][1] == {"width": 32, "measured": None, "theory": None, "note": "a|b"}
    assert res["tables"][0]["records"][0]["theory"] == 0.5
    assert res["data"]["arr"] == [[1.0, None], [None, None]]
    assert res["data"]["tensor"] == [0.5, None]
    assert res["data"]["bf16"] == [1.5]
    assert res["data"]["nested"] == {"t": [1, 2], "3": "int key", "c": {"real": 1.0, "imag": 2.0}}
    assert [f["file"] for f in res["figures"]] == ["fig_a-1.png", "fig_b-1.png"]

    # PNGs: valid, and exactly what is embedded in the HTML
    page = files["report.html"].read_text(encoding="utf-8")
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(embedded) == 2
    decoded = [base64.b64decode(b, validate=True) for b in embedded]
    assert all(d.startswith(PNG_MAGIC) for d in decoded)
    assert decoded == [files["fig_a-1.png"].read_bytes(), files["fig_b-1.png"].read_bytes()]

    # HTML: self-contained and escaped
    for bad in ("http://", "https://", 'src="//', "href=", "<script", "<link", "@import", "url("):
        assert bad not in page.lower(), bad
    assert "&lt;script&gt;alert(" in page
    assert "Demo study &lt;&amp;&gt;" in page
    assert page.count("<img ") == 2
    assert "PASS" in page and "FAIL" in page and "INFO" in page
    assert "<strong>kernel</strong>" in page and "<code>theory</code>" in page
    assert "<li>second point</li>" in page  # markdown link in the summary kept as text only
    assert 'class="badge pass"' in page and 'class="badge fail"' in page and 'class="badge info"' in page

    # markdown
    md = files["report.md"].read_text(encoding="utf-8")
    assert md.startswith("# Demo study <&>\n")
    assert "](fig_a-1.png)" in md and "](fig_b-1.png)" in md
    assert "✅" in md and "❌" in md and "ℹ️" in md
    assert "| width | measured | theory | note |" in md
    assert "| 16 | 0.1235 | 0.5 | &lt;script>alert('x')&lt;/script> |" in md
    assert "| 32 | — | inf | a\\|b |" in md
    assert "| 64 | -inf | — | — |" in md
    assert "```json" in md and '"width": 16' in md
    assert "total_s" in md and "0.1.0" in md
    assert "Caption a with &lt;b>tag&lt;/b>" in md  # plain-text fields cannot inject HTML
    assert "max rel err 1.2e-3 < 1e-2" in md  # ... while a lone '<' stays readable


def test_failure_writes_nothing(tmp_path):
    out = tmp_path / "run"
    result = make_result(data={"bad": object()})
    figs = [f.figure for f in result.figures]
    with pytest.raises(TypeError):
        write_run(result, out)
    assert not out.exists()
    assert not any(f.number in plt.get_fignums() for f in figs)


def test_atomic_write_keeps_old_file_on_crash(tmp_path, monkeypatch):
    target = tmp_path / "x.json"
    dump_json({"v": 1}, target)

    def boom(src, dst):
        raise OSError("disk died")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk died"):
        dump_json({"v": 2}, target)
    monkeypatch.undo()
    assert load_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_render_functions_directly():
    result = make_result(figures=[], tables=[], verdicts=[])
    md = render_markdown(result, {})
    assert "no pass/fail checks" in md
    page = render_html(result, {})
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<img" not in page
    # a figure with no bytes renders a note, not a broken image
    fig = plt.figure()
    try:
        r2 = make_result(figures=[FigureSpec("lonely", fig, "c")])
        assert "not available" in render_html(r2, {})
        assert "![c](lonely.png)" in render_markdown(r2, {})
    finally:
        plt.close(fig)


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="/usr/bin/chromium not installed")
def test_html_renders_in_headless_chromium(tmp_path):
    files = write_run(make_result(), tmp_path / "run")
    shot = tmp_path / "shot.png"
    cmd = [
        "/usr/bin/chromium",
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1000,1600",
        f"--screenshot={shot}",
        files["report.html"].as_uri(),
    ]
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    except (subprocess.TimeoutExpired, subprocess.CalledProcessError) as e:  # pragma: no cover
        pytest.skip(f"chromium could not render: {e}")
    assert shot.read_bytes().startswith(PNG_MAGIC)
    assert shot.stat().st_size > 10_000
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
