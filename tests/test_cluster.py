"""``grade batch --scheduler``: the same results layout, graded on a Dask cluster (a LocalCluster here)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from grader import batch

distributed = pytest.importorskip("distributed")
ROOT = Path(__file__).resolve().parent.parent


def test_batch_on_a_local_dask_cluster(tmp_path):
    subs = tmp_path / "subs"
    subs.mkdir()
    shutil.copytree(ROOT / "solutions" / "ex4", subs / "alice", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "exercises" / "ex4", subs / "bob", ignore=shutil.ignore_patterns("__pycache__"))
    (subs / "carol").mkdir()
    out = tmp_path / "results"
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=logging.ERROR) as cluster:
        summary = batch.run_batch("ex4", subs, out, questions=("q1",), scheduler=cluster.scheduler_address,
                                  progress=False)
    assert sorted(summary.graded) == ["alice", "bob", "carol"] and summary.failed == ["carol"]
    results = {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/result.json")}
    assert results["alice"]["score"] == results["alice"]["max_score"] > 0
    assert results["bob"]["score"] == 0 and results["carol"]["status"] == "malformed"
    assert (out / "grades.csv").exists() and (out / "report.html").exists()
    assert batch.plan("ex4", subs, out, questions=("q1",))[0] == []  # resumable like the local pool
