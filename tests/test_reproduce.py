"""`make reproduce SCALE=smoke` end to end: every experiment's stages, the reports from MLflow, reuse."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from browser import images_loaded
from lrtransfer.experiment_plan import job_config_hashes, stages_and_grid
from lrtransfer.report.__main__ import SUITE
from lrtransfer.report.html import STATUSES

pytestmark = pytest.mark.slow


def reproduce(tmp_path, uri: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    cmd = [sys.executable, "-m", "lrtransfer.reproduce", "--scale", "smoke",
           "--outputs", str(tmp_path / "outputs"), "--reports", str(tmp_path / "reports"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reproduce")
    uri = f"sqlite:///{tmp}/mlflow.db"
    result = reproduce(tmp, uri)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return tmp, uri, result.stdout


def test_every_experiment_has_a_report_with_claims_and_figures(smoke):
    tmp, _, stdout = smoke
    index = (tmp / "reports" / "index.html").read_text()
    for experiment in SUITE:
        folder = tmp / "reports" / experiment
        claims = json.loads((folder / "claims.json").read_text())
        assert claims["experiment"] == experiment and claims["scale"] == "smoke" and claims["runs"] > 0
        assert claims["claims"], experiment
        assert all(c["status"] in STATUSES for c in claims["claims"])
        pngs = list(folder.glob("*.png"))
        assert pngs and all(p.stat().st_size > 1000 for p in pngs), experiment
        assert f'href="{experiment}/index.html"' in index
        assert claims["setup"] and all(s["train.steps"] for s in claims["setup"].values()), experiment
    assert "claims at scale=smoke:" in stdout and "summary: PASS" in stdout
    sc_width = json.loads((tmp / "reports" / "sc_width" / "claims.json").read_text())["setup"]
    assert set(sc_width) == {"mup", "ntp", "sp", "mup_at_best", "mup_at_2x_best", "ntp_at_best"}
    assert sc_width["mup"]["param.name"] == "mup" and sc_width["mup"]["model.name"] == "simple_convnet"
    assert sc_width["mup"]["model.width"] == ", ".join(stages_and_grid("sc_width", "smoke")[1]["model.width"].split(","))


def test_reports_are_logged_to_the_sweep_parent_runs(smoke):
    _, uri, _ = smoke
    client = MlflowClient(uri)
    for experiment in ("sc_width", "flerm_width", "cross_mup_fslr"):
        exp = client.get_experiment_by_name(experiment)
        parents = client.search_runs([exp.experiment_id], "tags.sweep = 'true'", order_by=["attributes.start_time DESC"])
        assert parents and all(p.info.status == "FINISHED" for p in parents)
        logged = {a.path for a in client.list_artifacts(parents[0].info.run_id, "report")}
        assert "report/index.html" in logged and "report/claims.json" in logged
        assert any(p.endswith(".png") for p in logged)


def test_the_planned_jobs_are_the_runs_launched(smoke, monkeypatch):
    """The reports select runs by the configuration hashes the plan predicts: they must be the launched ones."""
    _, uri, _ = smoke
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # where the plan finds the best LRs that later stages ran at
    client = MlflowClient(uri)
    for experiment in SUITE:
        exp = client.get_experiment_by_name(experiment)
        launched = {r.data.tags["config_hash"] for r in client.search_runs([exp.experiment_id])
                    if r.data.tags.get("sweep") != "true"}
        assert launched == job_config_hashes(experiment, "smoke"), experiment


def test_sharpness_stages_ran_at_the_best_lrs_of_the_grids(smoke):
    """sc_width measures spectra at µP's best LR and twice it and at NTP's, which its LR grids found first."""
    tmp, uri, stdout = smoke
    claims = {c["claim"].split(":")[0]: c["metric"]
              for c in json.loads((tmp / "reports" / "sc_width" / "claims.json").read_text())["claims"]}
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("sc_width")
    lrs = {}
    for r in client.search_runs([exp.experiment_id]):
        if r.data.tags.get("sweep") != "true":
            lrs.setdefault(r.data.tags["stage"], set()).add(float(r.data.tags["lr"]))
    # each best LR per width, smallest width first; of the smoke grid's two widths, the first wins a tie
    best_mup, best_ntp = (re.findall(r"width \d+: ([\d.e-]+)", claims[k]) for k in ("A1", "A2"))
    assert lrs["mup_at_best"] == {float(best_mup[0])} and lrs["mup_at_2x_best"] == {2 * float(best_mup[0])}
    assert lrs["ntp_at_best"] == {float(best_ntp[0])}
    assert f"optim.lr = the best LR of stage mup × 2 = {2 * float(best_mup[0])!r}" in stdout


def test_the_opt_in_resmlp_variant_of_sc_width_has_its_own_report(smoke):
    """`EXPERIMENTS=sc_width_resmlp` runs sc_width's stages with a ResMLP and indexes it beside the suite."""
    tmp, uri, _ = smoke
    result = reproduce(tmp, uri, "--experiments", "sc_width_resmlp")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads((tmp / "reports" / "sc_width_resmlp" / "claims.json").read_text())
    assert report["experiment"] == "sc_width_resmlp" and "ResMLP" in report["title"]
    assert {s["model.name"] for s in report["setup"].values()} == {"resmlp"}
    assert [c["claim"] for c in report["claims"]] == [
        c["claim"] for c in json.loads((tmp / "reports" / "sc_width" / "claims.json").read_text())["claims"]]
    index = (tmp / "reports" / "index.html").read_text()
    assert 'href="sc_width_resmlp/index.html"' in index and 'href="sc_width/index.html"' in index


def test_flerm_runs_found_their_base_record(smoke):
    _, uri, _ = smoke
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("flerm_width")
    flerm = client.search_runs([exp.experiment_id], "tags.stage LIKE 'flerm%'")
    assert flerm and all(r.info.status == "FINISHED" and "base run" in r.data.tags["fslr_base"] for r in flerm)
    periodic = [r for r in flerm if r.data.tags["stage"] == "flerm_periodic"]
    assert len(periodic) == len(flerm) / 2
    for run in periodic:  # smoke: 6 steps, FLeRM re-matched every 3 (first-step FLeRM sets its LRs once)
        history = client.get_metric_history(run.info.run_id, "lr_mult/input.weight")
        assert [m.step for m in history] == [0, 3]
        # at the base width the one-seed record is this very run's, so FLeRM keeps every LR (up to rounding);
        # wider, each re-match moves them
        first, later = (m.value for m in history)
        if run.data.params["model.width"] == run.data.params["model.base_width"]:
            assert first == 1.0 and later == pytest.approx(1.0, abs=1e-6)
        else:
            assert abs(later / first - 1) > 1e-3


def test_a_rerun_reuses_finished_runs(smoke):
    tmp, uri, _ = smoke
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("sc_ntk")

    def jobs() -> int:
        return sum(r.data.tags.get("sweep") != "true" for r in client.search_runs([exp.experiment_id]))

    before = jobs()
    result = reproduce(tmp, uri, "--experiments", "sc_ntk")
    assert result.returncode == 0, result.stderr[-2000:]
    reused = [int(n) for n in re.findall(r"all (\d+) jobs REUSED", result.stdout)]
    assert sum(reused) == before > 0 and "$ python -m lrtransfer.train" not in result.stdout  # no stage launched
    assert jobs() == before


def test_the_spectra_cost_is_read_from_the_suites_runs(smoke):
    """scripts/bench_spectra_in_suite.py: a row per stage and width of every experiment that measures spectra."""
    _, uri, _ = smoke
    script = os.path.join(os.path.dirname(__file__), "..", "scripts", "bench_spectra_in_suite.py")
    result = subprocess.run([sys.executable, script, "--scale", "smoke"], capture_output=True, text=True,
                            env={**os.environ, "MLFLOW_TRACKING_URI": uri}, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split(" | ") for line in result.stdout.splitlines()[2:]]
    assert {r[0].lstrip("| ") for r in rows} >= {"sc_width", "sc_ntk", "sc_depth", "sc_adam", "cross_flerm_sharpness"}
    widths = stages_and_grid("sc_width", "smoke")[1]["model.width"].split(",")
    assert sorted(r[2] for r in rows if r[0] == "| sc_width" and r[1] == "mup_at_best") == sorted(f"width {w}" for w in widths)
    for r in rows:
        share, hvps = float(r[4].rstrip("%")), float(r[6].rstrip(" |"))
        assert share > 0 and hvps >= 1, r


def test_reports_show_every_image_in_chromium(smoke, browser):
    tmp, _, _ = smoke
    profile = tmp / "chrome-profile"
    reports = sorted(p.parent.name for p in (tmp / "reports").glob("*/claims.json"))  # the suite, and opt-in ones
    assert set(SUITE) <= set(reports)
    for experiment in reports:
        page = tmp / "reports" / experiment / "index.html"
        loaded, total = images_loaded(browser, profile, page)
        assert total > 0 and loaded == total, (experiment, loaded, total)
    assert images_loaded(browser, profile, tmp / "reports" / "index.html") == (len(reports), len(reports))


@pytest.mark.parametrize("args", [["--jobs", "0"], ["--launcher", "local", "--jobs", "2"]])
def test_a_bad_number_of_parallel_jobs_is_one_line(tmp_path, args):
    result = reproduce(tmp_path, f"sqlite:///{tmp_path}/mlflow.db", *args)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"error: --jobs={args[-1]}: a positive number of jobs at a time, for --launcher parallel only"]
    assert not (tmp_path / "outputs").exists()


def assert_stopped_cleanly(uri: str) -> list[str]:
    """Assert that the stopped sweep and every run it had opened are closed (KILLED where they did not finish);
    returns the jobs' statuses."""
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    sweeps = [r.info.status for r in runs if r.data.tags.get("sweep") == "true"]
    jobs = [r.info.status for r in runs if r.data.tags.get("sweep") != "true"]
    assert sweeps == ["KILLED"] and set(jobs) <= {"FINISHED", "KILLED"}, (sweeps, jobs)
    return jobs


def test_ctrl_c_stops_the_suite_in_one_line_and_leaves_no_run_open(tmp_path):
    """Ctrl-C reaches every process of the terminal's group: the suite, and the parallel launcher's workers."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cmd = [sys.executable, "-m", "lrtransfer.reproduce", "--scale", "smoke", "--experiments", "sc_width,sc_ntk",
           "--outputs", str(tmp_path / "outputs"), "--reports", str(tmp_path / "reports")]
    # A shell without job control (CI, nohup) starts its background commands with SIGINT ignored, and children
    # inherit that; a terminal's foreground job has the default action, which Python turns into KeyboardInterrupt.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "MLFLOW_TRACKING_URI": uri},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("FINISHED:"):  # the first stage's workers are training
            break
    os.killpg(proc.pid, signal.SIGINT)
    seen += proc.stdout.readlines()
    assert proc.wait(timeout=120) == 130
    out = "".join(seen)
    assert "interrupted: finished runs stay in MLflow" in out and "Traceback" not in out and "building reports" not in out
    assert assert_stopped_cleanly(uri), "the first stage's workers had started: some job has a run"


def test_sigterm_stops_the_whole_suite_and_leaves_no_run_open(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cmd = [sys.executable, "-m", "lrtransfer.reproduce", "--scale", "smoke", "--experiments", "sc_width,sc_ntk",
           "--outputs", str(tmp_path / "outputs"), "--reports", str(tmp_path / "reports")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "MLFLOW_TRACKING_URI": uri})
    seen = []
    for line in proc.stdout:  # the first job of the first stage is training
        seen.append(line)
        if "Launching" in line:
            break
    proc.send_signal(signal.SIGTERM)
    seen += proc.stdout.readlines()
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    out = "".join(seen)
    assert "== [1/" in out and "== [2/" not in out and "building reports" not in out
    assert_stopped_cleanly(uri)
