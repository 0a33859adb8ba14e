"""The shared MLflow server: start/stop helper, one-line errors, and a 16-job load test."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import mlflow_client
from lrtransfer import mlflow_server
from lrtransfer.errors import TrackingUnavailableError
from lrtransfer.tracking import check_tracking_uri

JOBS, POINTS = 16, 5000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    url = mlflow_server.start(root, port=free_port())
    yield url
    assert mlflow_server.stop(root)
    with pytest.raises(TrackingUnavailableError):
        check_tracking_uri(url, timeout=2)


def test_sixteen_concurrent_jobs_lose_no_point(server, tmp_path):
    worker = Path(__file__).with_name("mlflow_load_worker.py")
    mlflow_client(server).create_experiment("load")  # as the sweep does before its jobs start
    procs = [subprocess.Popen([sys.executable, str(worker), server, "load", str(i), str(POINTS)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(JOBS)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * JOBS, outputs
    assert not any("database is locked" in out for out in outputs)
    client = mlflow_client(server)
    runs = client.search_runs([client.get_experiment_by_name("load").experiment_id], max_results=100)
    assert len(runs) == JOBS and all(r.info.status == "FINISHED" for r in runs)
    for r in runs:
        history = client.get_metric_history(r.info.run_id, "train/loss")
        assert sorted(m.step for m in history) == list(range(POINTS))
        index = int(r.data.tags["load_index"])
        assert all(m.value == pytest.approx(index + m.step / POINTS) for m in history)


def test_unreachable_server_is_one_line():
    with pytest.raises(TrackingUnavailableError) as info:
        check_tracking_uri(f"http://127.0.0.1:{free_port()}", timeout=2)
    assert "\n" not in str(info.value) and "MLflow server is not reachable" in str(info.value)


def test_start_refuses_a_port_something_else_answers_on(tmp_path, capsys):
    with socket.socket() as other:  # someone else's service on the port
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        assert mlflow_server.main(["start", "--root", str(tmp_path), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: --port={port}: something already listens at http://127.0.0.1:{port}; stop it or choose another port"
    assert not (tmp_path / "server.pid").exists()
