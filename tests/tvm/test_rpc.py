"""Remote measurement over TVM RPC, on loopback: the test starts a tracker and a server, runs a
rewritten model's LLVM build on the server through the tracker, compares it with onnxruntime and
times it there; then stops both."""

from __future__ import annotations

import time

import pytest

tvm = pytest.importorskip("tvm")
pytest.importorskip("tornado")          # TVM's tracker runs on tornado
pytest.importorskip("cloudpickle")      # and is started through TVM's popen worker

import convrewrite as cr  # noqa: E402
from convrewrite.cli import main  # noqa: E402
from convrewrite.models import demo_wide  # noqa: E402
from convrewrite.tvm.build import check_model  # noqa: E402
from convrewrite.tvm.remote import RemoteSpec  # noqa: E402
from convrewrite.verify import make_inputs  # noqa: E402

KEY = "convrewrite-test"


@pytest.fixture(scope="module")
def loopback():
    from tvm import rpc
    from tvm.rpc.tracker import Tracker
    tracker = Tracker(host="127.0.0.1", port=9190, port_end=9290, silent=True)
    server = rpc.Server(host="127.0.0.1", port=9300, port_end=9400, key=KEY, silent=True,
                        tracker_addr=("127.0.0.1", tracker.port))
    try:
        client = rpc.connect_tracker("127.0.0.1", tracker.port)
        for _ in range(100):                        # the server registers asynchronously
            if client.summary()["queue_info"].get(KEY, {}).get("free"):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the RPC server never registered with the tracker")
        yield tracker
    finally:
        server.terminate()
        tracker.terminate()


def test_remote_run_matches_onnxruntime_and_is_timed(loopback):
    model, _ = cr.rewrite(demo_wide(), "k210", verify=False)
    feeds = make_inputs(model, seed=0)
    result = check_model(model, "llvm", feeds, remote=RemoteSpec("127.0.0.1", loopback.port, KEY))
    assert result.ran and result.passed, result.summary()
    assert result.remote["remote"] == f"127.0.0.1:{loopback.port}"
    assert result.remote["runs"] == 15 and 0 < result.remote["min_ms"] <= result.remote["median_ms"]
    assert "ran on 127.0.0.1" in result.summary()


def test_cli_rpc(loopback, tmp_path, capsys):
    code = main(["--demo", "--target", "generic", "-o", str(tmp_path / "d.onnx"), "--tvm", "llvm",
                 "--rpc-tracker", f"127.0.0.1:{loopback.port}", "--rpc-key", KEY])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "matches onnxruntime" in out and "ran on 127.0.0.1" in out


@pytest.mark.parametrize("argv,message", [
    (["--rpc-tracker", "nohostport", "--rpc-key", KEY], "expected HOST:PORT"),
    (["--rpc-tracker", "127.0.0.1:9190"], "needs --rpc-key"),
    (["--rpc-tracker", "127.0.0.1:{port}", "--rpc-key", "no-such-key"], "no server with key"),
    (["--rpc-tracker", "127.0.0.1:1", "--rpc-key", KEY], "cannot reach the RPC tracker"),
])
def test_cli_bad_rpc_flags(loopback, tmp_path, capsys, argv, message):
    argv = [a.replace("{port}", str(loopback.port)) for a in argv]
    code = main(["--demo", "--target", "generic", "-o", str(tmp_path / "d.onnx"), "--tvm", "llvm",
                 *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d.onnx").exists()


@pytest.mark.tuning
def test_tuning_measures_candidates_on_the_remote_server(loopback, tmp_path, monkeypatch):
    """--tvm-tune with --rpc-tracker: MetaSchedule's RPC runner times every candidate on the
    server; the records land in this machine's database with real (finite) run times."""
    pytest.importorskip("xgboost")
    from tvm.s_tir import meta_schedule as ms
    from tests.tvm.test_tuning import feeds, pool_model
    monkeypatch.setenv("CONVREWRITE_TUNING_DIR", str(tmp_path / "tuning"))
    remote = RemoteSpec("127.0.0.1", loopback.port, KEY)
    result = check_model(pool_model(), "llvm", feeds(), remote=remote, tune_trials=2)
    assert result.ran and result.passed, result.summary()
    assert len(result.tuning["tuned"]) == 1 and result.tuning["measured_on"] == remote.address
    assert f"measured on {remote.address}" in result.summary()
    records = ms.database.JSONDatabase(work_dir=result.tuning["database"]).get_all_tuning_records()
    times = [float(t) for r in records for t in (r.run_secs or [])]
    assert times and all(0 < t < 1.0 for t in times)
