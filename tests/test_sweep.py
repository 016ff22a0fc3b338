"""Sweeps: spec validation, identities, the SQLite store under SIGKILL and concurrent writers, failures recorded as
rows, every executor giving the same rows, ``load_results`` and the ``sweep``/``results`` commands.

Nothing is mocked: sweeps run the real criticality study (tiny configs) or the test-only ``sweep-probe`` study of
``tests/sweep_helpers.py`` (imported by path in each spec, so pool and Dask workers register it too), in real
subprocesses, process pools and Dask clusters.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sphericalcow.errors import SphericalCowError
from sphericalcow.store import ResultsStore
from sphericalcow.sweep import plan_sweep, point_id, sweep, sweep_report
from sphericalcow.sweep.runner import WORKER_DIED

HELPERS = Path(__file__).with_name("sweep_helpers.py").resolve()
PROBE_IMPORTS = [str(HELPERS)]
# one criticality point takes 0.1-0.5 s: a ReLU network of depth 3 and width 8 off criticality (no inf/NaN cells)
CRIT_BASE = {
    "depth": 3,
    "n_seeds": 4,
    "d_in": 8,
    "phase_grid": 5,
    "cases": [{"label": "relu", "activation": "relu", "cw": 1.8, "cb": 0.1}],
}


def crit_spec(**extra):
    return {"study": "criticality", "name": "crit", "seeds": 2, "base": CRIT_BASE, "grid": {"width": [8, 16]}, **extra}


def probe_spec(name="probe", **extra):
    return {"study": "sweep-probe", "name": name, "imports": PROBE_IMPORTS, **extra}


def probe_toml(path: Path, name: str, xs, *, sleep: float = 0.0, seeds: int = 1) -> Path:
    values = ", ".join(repr(float(x)) for x in xs)
    path.write_text(
        f'study = "sweep-probe"\nname = "{name}"\nseeds = {seeds}\nimports = [{json.dumps(str(HELPERS))}]\n'
        f"[base]\nsleep = {sleep}\n[grid]\nx = [{values}]\n"
    )
    return path


def count_rows(store: Path) -> tuple[int, int]:
    """(rows, distinct ids), read with a plain sqlite3 connection."""
    if not store.exists():
        return 0, 0
    con = sqlite3.connect(store, timeout=30)
    try:
        return con.execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM points").fetchone()
    except sqlite3.OperationalError:  # schema not created yet
        return 0, 0
    finally:
        con.close()


def rows_by_id(store: Path) -> dict[str, dict]:
    with ResultsStore(store, create=False) as st:
        return {r["id"]: r for r in st.rows()}


def module_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "sphericalcow.sweep", *args]


@pytest.fixture(scope="module")
def crit_store(tmp_path_factory):
    """The tiny criticality sweep (2 widths x 2 seeds), run once in-process."""
    store = tmp_path_factory.mktemp("crit") / "crit.sqlite"
    out = sweep(crit_spec(), store=store, executor="inprocess", progress=False)
    return store, out


# ------------------------------------------------------------------------------------------------------------
# specs and identities


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"study": "nope"}, "unknown study 'nope'"),
        ({"gird": {"width": [8]}}, "unknown key 'gird'"),
        ({"grid": {"widht": [8]}}, "grid.widht: 'widht' is not a config key of study 'criticality'"),
        ({"base": {**CRIT_BASE, "depht": 3}}, "'depht' is not a config key"),
        ({"grid": {"width": []}}, "grid.width is an empty list"),
        ({"grid": {"width": 8}}, "grid.width: Input should be a valid list"),
        ({"grid": {"width": [8, "wide"]}}, "point width=wide, seed=0: width='wide' is not allowed"),
        ({"grid": {"width": [8], "rho0": [0.5, 1.5]}}, "point width=8, rho0=1.5, seed=0: rho0=1.5 is not allowed"),
        ({"grid": {"width": [8, 8]}}, "grid.width lists the value 8 twice"),
        ({"zip": {"q0": [1.0, 2.0], "rho0": [0.1]}}, "zipped lists must have equal lengths; got q0: 2, rho0: 1"),
        ({"zip": {"q0": []}}, "zip.q0 is an empty list"),
        ({"grid": {"seed": [1, 2]}}, "the study's seed is set from the sweep's seeds"),
        ({"base": {**CRIT_BASE, "width": 8}}, "key 'width' is in both [base] and [grid]"),
        ({"seeds": []}, "seeds is an empty list"),
        ({"seeds": 0}, "seeds=0 is not allowed"),
        ({"seeds": [1, 1]}, "seeds lists 1 twice"),
        ({"seeds": 2.5}, "seeds"),
        ({"imports": ["no_such_module_for_sweeps"]}, "imports: 'no_such_module_for_sweeps' failed"),
        ({"name": "a/b"}, "name='a/b' is not allowed"),
        ({"report": {"x": "depth"}}, "report.x='depth' is not a sweep axis"),
    ],
)
def test_malformed_specs_are_rejected_before_anything_runs(tmp_path, change, message):
    store = tmp_path / "s.sqlite"
    with pytest.raises(SphericalCowError) as e:
        sweep({**crit_spec(), **change}, store=store, progress=False)
    assert message in str(e.value)
    assert "\n" not in str(e.value)
    assert not store.exists()  # nothing ran, nothing was created


def test_spec_files_toml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('study = "criticality"\n[grid\nwidth = [8]\n')
    with pytest.raises(SphericalCowError, match=r"spec '.*bad\.toml': invalid TOML"):
        plan_sweep(bad)
    with pytest.raises(SphericalCowError, match="no such file"):
        plan_sweep(tmp_path / "missing.toml")
    nostudy = tmp_path / "nostudy.toml"
    nostudy.write_text("[grid]\nwidth = [8]\n")
    with pytest.raises(SphericalCowError, match="'study' is required"):
        plan_sweep(nostudy)


def test_point_identity_is_canonical_and_stable():
    assert point_id("s", {"b": [1.5, "x"], "a": 1}, 3) == point_id("s", {"a": 1, "b": [1.5, "x"]}, 3)
    assert point_id("s", {"a": 1}, 3) != point_id("s", {"a": 1}, 4) != point_id("t", {"a": 1}, 4)
    plan = plan_sweep(crit_spec())
    assert len(plan.points) == 4 and len({p.id for p in plan.points}) == 4
    assert [(p.coords["width"], p.seed) for p in plan.points] == [(8, 0), (8, 1), (16, 0), (16, 1)]
    assert all(p.config["seed"] == p.seed for p in plan.points)  # the study's seed comes from the sweep seed
    # the identity is the full validated config: 1 and 1.0 for a float key, or a value equal to the default, or
    # listing keys in another order give the same points
    same = plan_sweep({**crit_spec(), "base": {"q0": 1, **CRIT_BASE, "rho0": 0.5}})
    assert [p.id for p in same.points] == [p.id for p in plan.points]
    other = plan_sweep({**crit_spec(), "base": {**CRIT_BASE, "rho0": 0.4}})
    assert not {p.id for p in other.points} & {p.id for p in plan.points}


def test_point_id_golden_value():
    """The canonical form is part of the store format: changing it would orphan every stored result."""
    text = '{"config":{"a":1,"b":[1.5,"x"]},"seed":3,"study":"s"}'
    assert point_id("s", {"b": [1.5, "x"], "a": 1}, 3) == hashlib.sha256(text.encode()).hexdigest()


def test_grid_zip_and_seeds_expand_in_order():
    plan = plan_sweep(
        probe_spec(grid={"x": [1.0, 2.0]}, zip=[{"mode": ["ok", "nan"], "sleep": [0.0, 0.001]}], seeds=[5, 7])
    )
    got = [(p.coords["x"], p.coords["mode"], p.coords["sleep"], p.seed) for p in plan.points]
    assert got == [(x, m, s, seed) for x in (1.0, 2.0) for m, s in (("ok", 0.0), ("nan", 0.001)) for seed in (5, 7)]
    assert plan.axes == ["x", "mode", "sleep"]


# ------------------------------------------------------------------------------------------------------------
# running, resuming, failures


def test_inprocess_sweep_writes_one_row_per_point_and_resumes(crit_store, tmp_path):
    store, out = crit_store
    assert (out.n_points, out.n_run, out.n_written, out.executor) == (4, 4, 4, "inprocess")
    assert out.status_counts == {"ok": 4, "diverged": 0, "failed": 0}
    rows = rows_by_id(store)
    assert len(rows) == 4
    for r in rows.values():
        assert r["status"] == "ok" and r["message"] is None and r["seconds"] > 0
        assert r["version"] and r["sweep"] == "crit" and r["executor"] == "inprocess"
        assert r["metrics"]["passed"] in (0.0, 1.0)
        assert "relu.max |z| extrapolated" in r["metrics"] and "relu.agrees" in r["metrics"]
    again = sweep(crit_spec(), store=store, progress=False)
    assert (again.n_done_before, again.n_pending, again.n_run, again.n_written) == (4, 0, 0, 0)
    assert count_rows(store) == (4, 4)


def test_failed_and_diverged_points_are_rows_and_the_rest_completes(tmp_path):
    store = tmp_path / "f.sqlite"
    spec = probe_spec(zip={"x": [1.0, 2.0, 3.0, 4.0], "mode": ["ok", "fail", "nan", "ok"]}, seeds=2)
    out = sweep(spec, store=store, executor="inprocess", progress=False)
    assert out.status_counts == {"ok": 4, "diverged": 2, "failed": 2}
    by_mode = {}
    for r in rows_by_id(store).values():
        by_mode.setdefault(r["coords"]["mode"], []).append(r)
    for r in by_mode["fail"]:
        assert r["status"] == "failed"
        assert r["message"] == "ValueError: boom at x=2.0 second line of the message"  # one line
        assert "Traceback" in r["traceback"] and "boom at x=2.0" in r["traceback"]
    for r in by_mode["nan"]:
        assert r["status"] == "diverged" and r["message"] == "NaN metrics: loss"
        assert r["metrics"]["loss"] != r["metrics"]["loss"]  # NaN survives the store
    assert all(r["status"] == "ok" and r["metrics"]["a.flag"] == 1.0 for r in by_mode["ok"])
    # resuming skips failed points too; --retry-failed runs them again and replaces their rows
    assert sweep(spec, store=store, progress=False).n_run == 0
    retry = sweep(spec, store=store, executor="inprocess", progress=False, retry_failed=True)
    assert (retry.n_pending, retry.n_run, retry.n_written) == (2, 2, 2)
    assert count_rows(store) == (8, 8)


def test_process_pool_records_raising_diverging_and_crashing_points(tmp_path):
    store = tmp_path / "p.sqlite"
    spec = probe_spec(zip={"x": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "mode": ["ok", "fail", "nan", "crash", "ok", "ok"]})
    out = sweep(spec, store=store, executor="process", jobs=2, progress=False)
    assert out.executor == "process" and out.n_run == 6
    status = {
        r["coords"]["mode"] + str(r["coords"]["x"]): (r["status"], r["message"]) for r in rows_by_id(store).values()
    }
    assert status["crash4.0"] == ("failed", WORKER_DIED)  # the worker died; the sweep went on
    assert status["fail2.0"][0] == "failed" and status["nan3.0"][0] == "diverged"
    assert [status[k][0] for k in ("ok1.0", "ok5.0", "ok6.0")] == ["ok", "ok", "ok"]


def test_executors_give_the_same_rows(crit_store, tmp_path):
    """In-process, the process pool and Dask (a real LocalCluster, threads) give the same ids and metrics."""
    ref_store, _ = crit_store
    ref = rows_by_id(ref_store)
    for name, kw in (("process", {"jobs": 2}), ("dask", {"jobs": 1, "dask_processes": False})):
        store = tmp_path / f"{name}.sqlite"
        out = sweep(crit_spec(), store=store, executor=name, progress=False, **kw)
        assert out.executor == name and out.n_written == 4
        rows = rows_by_id(store)
        assert rows.keys() == ref.keys(), name
        for pid, r in rows.items():
            assert r["status"] == ref[pid]["status"] == "ok"
            assert r["metrics"] == ref[pid]["metrics"], name  # bit-identical
            assert r["config"] == ref[pid]["config"] and r["executor"] == name


@pytest.mark.slow
def test_dask_process_cluster_gives_the_same_rows_and_survives_a_crash(crit_store, tmp_path):
    """A process-based LocalCluster of our own, then a running scheduler given by address (--scheduler)."""
    import dask
    from dask.distributed import LocalCluster

    ref_store, _ = crit_store
    store = tmp_path / "dask.sqlite"
    out = sweep(crit_spec(), store=store, executor="dask", jobs=2, progress=False)
    assert out.n_written == 4
    ref, rows = rows_by_id(ref_store), rows_by_id(store)
    assert rows.keys() == ref.keys()
    assert all(rows[k]["metrics"] == ref[k]["metrics"] for k in rows)

    with (
        dask.config.set({"distributed.worker.daemon": False}),
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
    ):
        crash = sweep(
            probe_spec(zip={"x": [1.0, 2.0, 3.0], "mode": ["ok", "crash", "ok"]}),
            store=tmp_path / "crash.sqlite",
            scheduler=cluster.scheduler_address,
            progress=False,
        )
        assert crash.executor == "dask"
        assert crash.status_counts == {"ok": 2, "diverged": 0, "failed": 1}
        assert crash.failures[0]["message"] == WORKER_DIED
        assert len(cluster.scheduler_info["workers"]) == 2  # no worker died: the point's own process did


# ------------------------------------------------------------------------------------------------------------
# the store under SIGKILL and concurrent writers


def _session_pids(sid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_bytes().rsplit(b")", 1)[-1].split()
            except OSError:
                continue
            if int(stat[3]) == sid and stat[0] != b"Z":
                out.append(int(d.name))
    return out


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_sigkill_mid_sweep_then_resume_loses_and_duplicates_nothing(tmp_path):
    n = 40
    spec = probe_toml(tmp_path / "kill.toml", "kill", range(n), sleep=0.05)
    store = tmp_path / "kill.sqlite"
    log = (tmp_path / "out.txt").open("wb")
    cmd = module_cmd("sweep", str(spec), "--store", str(store), "--executor", "process", "--jobs", "2")
    proc = subprocess.Popen([*cmd, "--no-progress", "--no-report"], stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while count_rows(store)[0] < 5:
            assert proc.poll() is None, (tmp_path / "out.txt").read_text()
            assert time.monotonic() < deadline, "the sweep wrote no rows in time"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)  # kill -9 the sweep mid-run (its pool workers are left orphaned)
        proc.wait(timeout=30)
        # orphaned workers notice and exit by themselves (they never write: only the sweep process does)
        deadline = time.monotonic() + 20
        while _session_pids(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _session_pids(proc.pid) == []
    finally:
        for pid in _session_pids(proc.pid):
            os.kill(pid, signal.SIGKILL)
        log.close()
    k, distinct = count_rows(store)
    assert 5 <= k < n and distinct == k
    with sqlite3.connect(store) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    resumed = sweep(spec, store=store, executor="inprocess", progress=False)
    assert (resumed.n_done_before, resumed.n_run, resumed.n_written, resumed.n_duplicate) == (k, n - k, n - k, 0)
    assert count_rows(store) == (n, n)
    assert {r["coords"]["x"] for r in rows_by_id(store).values()} == {float(x) for x in range(n)}
    again = sweep(spec, store=store, progress=False)
    assert (again.n_pending, again.n_run) == (0, 0)


def test_two_sweeps_on_one_store_at_once_write_each_point_once(tmp_path):
    store = tmp_path / "shared.sqlite"
    a = probe_toml(tmp_path / "a.toml", "a", range(30), sleep=0.03)
    b = probe_toml(tmp_path / "b.toml", "b", range(39, 9, -1), sleep=0.03)  # overlap 10..29, walked the other way
    procs = [
        subprocess.Popen(
            [
                *module_cmd("sweep", str(s), "--store", str(store), "--executor", "inprocess"),
                "--no-progress",
                "--no-report",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for s in (a, b)
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (so, se) in zip(procs, outs, strict=True):
        assert p.returncode == 0, se
        assert "sweep" in so and "store:" in so
    assert count_rows(store) == (40, 40)
    rows = list(rows_by_id(store).values())
    assert sorted(r["coords"]["x"] for r in rows) == [float(x) for x in range(40)]
    assert {r["sweep"] for r in rows if r["coords"]["x"] < 10} == {"a"}
    assert {r["sweep"] for r in rows if r["coords"]["x"] >= 30} == {"b"}


def test_store_concurrent_writers_threads_insert_each_id_once(tmp_path):
    path = tmp_path / "t.sqlite"
    ResultsStore(path).close()
    ids = [f"{i:064x}" for i in range(300)]
    wrote = []

    def writer(seed: int) -> None:
        order = ids[:]
        random.Random(seed).shuffle(order)
        n = 0
        with ResultsStore(path) as st:
            for pid in order:
                row = {"id": pid, "study": "s", "seed": 0, "config": {}, "coords": {}, "status": "ok"}
                n += st.put({**row, "metrics": {"w": float(seed)}, "version": "x"})
        wrote.append(n)

    threads = [threading.Thread(target=writer, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(wrote) == 300 and count_rows(path) == (300, 300)
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_store_refuses_files_that_are_not_stores(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_text("not a database, just text " * 100)
    with pytest.raises(SphericalCowError, match="not a usable results store"):
        ResultsStore(junk)
    with pytest.raises(SphericalCowError, match="no results store"):
        ResultsStore(tmp_path / "none.sqlite", create=False)


# ------------------------------------------------------------------------------------------------------------
# results, report, command line


def test_load_results_flattens_config_and_metrics(crit_store):
    from sphericalcow.results import load_results

    store, _ = crit_store
    df = load_results(store)
    assert len(df) == 4 and df["id"].is_unique
    assert {"width", "depth", "seed", "status", "seconds", "version", "relu.agrees"} <= set(df.columns)
    assert df["relu.max |z| extrapolated"].dtype == "float64"
    assert json.loads(df["cases"].iloc[0])[0]["label"] == "relu"
    assert len(load_results(store, where={"width": 8})) == 2
    assert len(load_results(store, where=["width=16", "seed=1", "status=ok"])) == 1
    assert len(load_results(store, study="nope")) == 0
    with pytest.raises(SphericalCowError, match="where key 'widht' is not a column"):
        load_results(store, where={"widht": 8})


def test_sweep_report_draws_metrics_over_the_grid(crit_store, tmp_path):
    store, _ = crit_store
    paths = sweep_report(crit_spec(), store, out=tmp_path / "rep")
    assert {"report.md", "report.html", "results.json"} <= set(paths)
    figures = [p for p in paths if p.endswith(".png")]
    assert 1 <= len(figures) <= 8
    res = json.loads(paths["results.json"].read_text())
    assert res["passed"] is True  # every point finished ok
    metrics = {t["name"]: t for t in res["tables"]}["metrics"]["records"]
    assert {r["width"] for r in metrics} == {"8", "16"} and all(r["n"] == 2 for r in metrics)
    assert all(r["lo"] <= r["mean"] <= r["hi"] for r in metrics)


def run_cli(args, capsys):
    from sphericalcow import cli
    from sphericalcow.cli_sweep import register

    register(cli.app)
    with pytest.raises(SystemExit) as e:
        cli.main(list(args))
    cap = capsys.readouterr()
    return e.value.code, cap.out, cap.err


def test_cli_results_formats(crit_store, tmp_path, capsys):
    import pandas as pd

    store, _ = crit_store
    code, out, _ = run_cli(["results", str(store), "--format", "csv", "--where", "width=8"], capsys)
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("id,study,sweep,seed,status")
    code, out, _ = run_cli(["results", str(store), "--format", "json", "--study", "criticality"], capsys)
    records = json.loads(out)
    assert code == 0 and len(records) == 4 and records[0]["status"] == "ok" and "relu.agrees" in records[0]
    pq = tmp_path / "r.parquet"
    code, _, err = run_cli(["results", str(store), "--format", "parquet", "--out", str(pq)], capsys)
    assert code == 0 and "wrote 4 rows" in err
    df = pd.read_parquet(pq)
    assert len(df) == 4 and set(df["width"]) == {8, 16}
    code, out, _ = run_cli(["results", str(store), "--columns", "seed,width,status"], capsys)
    assert code == 0 and "4 rows" in out
    code, _, err = run_cli(["results", str(store), "--format", "parquet"], capsys)
    assert code == 2 and err.startswith("error: --format parquet writes a binary file") and err.count("\n") == 1
    code, _, err = run_cli(["results", str(tmp_path / "none.sqlite")], capsys)
    assert code == 2 and "no results store" in err


def test_cli_sweep_dry_run_errors_and_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = probe_toml(tmp_path / "cli.toml", "cli", [1, 2, 3], seeds=2)
    code, out, _ = run_cli(["sweep", str(spec), "--dry-run"], capsys)
    assert code == 0 and "6 points, 6 to run" in out and "dry run" in out
    assert not (tmp_path / "runs").exists()  # nothing written
    bad = tmp_path / "bad.toml"
    bad.write_text('study = "sweep-probe"\nimports = [' + json.dumps(str(HELPERS)) + "]\n[grid]\nx = []\n")
    code, _, err = run_cli(["sweep", str(bad)], capsys)
    assert code == 2 and err == "error: spec '" + str(bad) + "': grid.x is an empty list; give at least one value\n"
    code, _, err = run_cli(["sweep", str(spec), "--executor", "gpu"], capsys)
    assert code == 2 and "executor 'gpu' is not allowed" in err
    code, out, _ = run_cli(["sweep", str(spec), "--no-progress", "--executor", "inprocess"], capsys)
    assert code == 0 and "6 run on inprocess" in out and "ok 6" in out
    assert (tmp_path / "runs" / "cli.sqlite").exists()
    report = next((tmp_path / "runs").glob("*-sweep-cli"))
    assert (report / "report.html").exists()
    code, out, _ = run_cli(["sweep", str(spec), "--no-progress", "--no-report"], capsys)
    assert code == 0 and "6 already in the store, 0 run" in out
