"""MetaSchedule tuning with a persistent database (--tvm-tune), kept out of CI's time: tuning
even 2 trials takes ~30 s here (worker processes, the cost model), so the reuse path is tested
against a small database saved from such a run (tests/tvm/data/tuning_db, made by running this
file: ``python -m tests.tvm.test_tuning``). The model is one max pool: a function none of our
kernels owns, so it is what tuning is for."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

tvm = pytest.importorskip("tvm")

from convrewrite.cli import main  # noqa: E402
from convrewrite.tvm.build import check_model, import_onnx  # noqa: E402
from convrewrite.tvm.cpu_schedule import TUNED  # noqa: E402
from convrewrite.tvm.machines import cpu_target  # noqa: E402
from convrewrite.tvm.tuning import TuneCPU, TuningLog, database_key, tuning_dir  # noqa: E402

SAVED = Path(__file__).parent / "data" / "tuning_db"
FILES = ("database_workload.json", "database_tuning_record.json")


def pool_model() -> onnx.ModelProto:
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])
    graph = helper.make_graph(
        [node], "pool", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 8, 8, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 8, 4, 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def feeds():
    return {"x": np.random.default_rng(0).uniform(-1, 1, (1, 8, 8, 8)).astype(np.float32)}


def install_saved(root: Path, target) -> Path:
    """The saved records as ``target``'s database under ``root``; returns its folder."""
    db = root / database_key(target)
    db.mkdir(parents=True)
    for name in FILES:
        shutil.copy(SAVED / name, db / name)
    return db


@pytest.fixture
def saved_db(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVREWRITE_TUNING_DIR", str(tmp_path / "tuning"))
    return install_saved(tmp_path / "tuning", cpu_target())


def test_saved_database_is_reused_without_tuning(saved_db):
    before = {name: (saved_db / name).read_bytes() for name in FILES}
    result = check_model(pool_model(), "llvm", feeds(), tune_trials=1)
    assert result.ran and result.passed, result.summary()
    assert result.tuning["tuned"] == [] and len(result.tuning["reused"]) == 1
    assert result.tuning["database"] == str(saved_db)
    assert "0 functions tuned" in result.summary() and "1 reused" in result.summary()
    assert {name: (saved_db / name).read_bytes() for name in FILES} == before   # nothing added


def test_database_record_is_applied(saved_db):
    """The pool function leaves the tuning stage scheduled by the saved record (MetaSchedule
    marks it), so our generic schedule does not replace it."""
    from tvm.relax.backend.cpu_generic import pipeline as base
    target = cpu_target()
    mod = import_onnx(pool_model(), feeds())
    with target:
        mod = tvm.transform.Sequential(base.legalize_passes(target))(mod)
    log = TuningLog(1, "")
    tuned = TuneCPU(target, 1, saved_db.parent, log)(mod)
    funcs = {gv.name_hint: f for gv, f in tuned.functions_items()
             if isinstance(f, tvm.tirx.PrimFunc)}
    assert funcs and all(TUNED in (f.attrs or {}) for f in funcs.values())
    for name, func in funcs.items():            # the record's schedule, not the plain function
        with pytest.raises(ValueError):
            tvm.ir.assert_structural_equal(func.body, mod[name].body)
    assert log.tuned == [] and len(log.reused) == 1


def test_records_of_another_cpu_are_not_applied(tmp_path):
    """MetaSchedule finds records by function alone; ours are filed per target, so a database
    tuned for another CPU (or core count) is not this one's."""
    from tvm.relax.backend.cpu_generic import pipeline as base
    target = cpu_target()
    other = tvm.target.Target({**{k: v for k, v in target.export().items() if k != "mcpu"},
                               "mcpu": "skylake-avx512" if str(target.attrs.get("mcpu"))
                               != "skylake-avx512" else "znver4"})
    assert database_key(other) != database_key(target)
    install_saved(tmp_path, other)
    mod = import_onnx(pool_model(), feeds())
    with target:
        mod = tvm.transform.Sequential(base.legalize_passes(target))(mod)
    log = TuningLog(0, "")
    tuned = TuneCPU(target, 0, tmp_path, log)(mod)
    assert log.reused == [] and log.tuned == []
    assert not any(TUNED in (f.attrs or {}) for _, f in tuned.functions_items()
                   if isinstance(f, tvm.tirx.PrimFunc))


@pytest.mark.tuning
def test_first_build_tunes_and_second_reuses(tmp_path, monkeypatch):
    pytest.importorskip("xgboost")
    monkeypatch.setenv("CONVREWRITE_TUNING_DIR", str(tmp_path))
    first = check_model(pool_model(), "llvm", feeds(), tune_trials=2)
    second = check_model(pool_model(), "llvm", feeds(), tune_trials=2)
    assert first.passed and second.passed
    assert len(first.tuning["tuned"]) == 1 and first.tuning["reused"] == []
    assert second.tuning["tuned"] == [] and second.tuning["reused"] == first.tuning["tuned"]


def test_tuning_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("CONVREWRITE_TUNING_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert tuning_dir() == tmp_path / "cache" / "convrewrite" / "tuning"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert tuning_dir() == tmp_path / "home" / ".cache" / "convrewrite" / "tuning"
    monkeypatch.setenv("CONVREWRITE_TUNING_DIR", str(tmp_path / "mine"))
    assert tuning_dir() == tmp_path / "mine"


def test_cli_tvm_tune_reuses_the_database(saved_db, tmp_path, capsys):
    path = tmp_path / "pool.onnx"
    onnx.save(pool_model(), str(path))
    code = main([str(path), "--target", "generic", "--tvm", "llvm", "--tvm-tune", "8"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "0 functions tuned" in text and "1 reused" in text and "matches onnxruntime" in text


@pytest.mark.parametrize("argv,message", [
    (["--tvm-tune", "8"], "--tvm-tune needs --tvm"),
    (["--tvm", "llvm", "--tvm-tune", "0"], "--tvm-tune TRIALS: a positive number"),
    (["--tvm", "cuda", "--tvm-tune", "8"], "with --tvm llvm"),
])
def test_cli_bad_tune_flags_are_one_line_exit_2(tmp_path, capsys, argv, message):
    if "cuda" in argv and shutil.which("nvcc") is None:
        pytest.skip("--tvm cuda is refused earlier without nvcc")
    code = main(["--demo", "--target", "generic", "-o", str(tmp_path / "d.onnx"), *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


if __name__ == "__main__":      # regenerate the saved database (tunes 2 trials, ~30 s)
    import os
    import tempfile
    with tempfile.TemporaryDirectory() as work:
        os.environ["CONVREWRITE_TUNING_DIR"] = work
        result = check_model(pool_model(), "llvm", feeds(), tune_trials=2)
        print(result.summary())
        SAVED.mkdir(parents=True, exist_ok=True)
        made = Path(result.tuning["database"])
        for name in FILES:
            shutil.copy(made / name, SAVED / name)
