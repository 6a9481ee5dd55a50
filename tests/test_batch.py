"""mp-grader batch: a generated class graded two at a time gives each submission the grade it gets alone,
and the CSV, the summary and the pictures say what happened. The class mixes honest, broken and hostile
submissions, so it runs only where the namespace layer can be had (as in test_isolation.py)."""
from __future__ import annotations

import csv
import json
import math
import re
import os
import shutil
import stat
from pathlib import Path

import pytest
import yaml

from conftest import REPO, config_with, grade, make_reference, unavailable
from export_fixture import HOSTILE, kind_of, make_export
from grader import batch
from grader.config import load_config
from grader.sandbox import DEFAULT_USER, enclosing_cpus, ensure_user, user_processes
from grader.threads import usable_cores
from grader.upload import UploadLimits

N = 13  # every kind of export_fixture once, with the honest ones three times


def _config(tmp_path: Path) -> Path:
    return config_with(tmp_path, **{"time_limit = 240": "time_limit = 15", "time_limit = 300": "time_limit = 15"})


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> dict:
    reason = unavailable("namespace")
    if reason:
        pytest.skip(f"the batch's hostile submissions run only in the namespace layer: {reason}")
    if os.geteuid() != 0:
        pytest.skip("--jobs 2 caps each run in a CPU cgroup of its own, which only root may make")
    tmp = tmp_path_factory.mktemp("batch")
    os.chmod(tmp, 0o755)  # pytest's folders are root's alone: closing them must be what protects them
    data = make_reference(tmp / "data", n_q1=50, n_q2=2)
    out = tmp / "out"
    export = make_export(tmp / "export", N, data, out)
    config = _config(tmp)
    argv = [str(export), "--data", str(data), "--out", str(out), "--config", str(config), "--jobs", "2",
            "--device", "cpu"]
    assert batch.main(argv) == 0
    return {"tmp": tmp, "data": data, "out": out, "export": export, "config": config, "argv": argv}


def _rows(out: Path) -> dict[str, dict]:
    with open(out / "scores.csv", newline="") as f:
        return {row["submission"]: row for row in csv.DictReader(f)}


def without_seconds(rows: dict[str, dict]) -> dict:
    """scores.csv's rows less how long each took: what must not depend on where or how a batch ran."""
    return {name: {k: v for k, v in row.items() if k != "seconds"} for name, row in rows.items()}


def _judged_alike(report: dict) -> dict:
    metrics = json.loads(json.dumps(report["extra_data"]["metrics"]))
    for question in metrics.values():
        if question.get("error_kind") == "timeout":
            assert question.pop("error").startswith("Time limit exceeded: ")
    return metrics


def test_each_score_equals_grading_alone(graded: dict) -> None:
    rows = _rows(graded["out"])
    assert len(rows) == N
    for name, row in rows.items():
        alone = graded["tmp"] / "alone" / name
        _, report = grade(graded["export"] / name, graded["data"], alone / "results.json", "--config", str(graded["config"]))
        batch_report = json.loads((graded["out"] / "submissions" / name / "results.json").read_text())
        assert [t["score"] for t in batch_report["tests"]] == [t["score"] for t in report["tests"]], name
        # A timeout's words say how it was judged: on CPU time beside the batch's other run, on the wall clock alone.
        assert _judged_alike(batch_report) == _judged_alike(report), name
        assert float(row["total"]) == sum(t["score"] for t in report["tests"]), name
        q1 = report["extra_data"]["metrics"]["q1"]
        assert row["q1_accuracy"] == ("" if "error" in q1 else f"{q1['accuracy']:.4f}"), name
        assert row["q1_error"] == q1.get("error_kind", ""), name


def test_csv_names_submitters_and_error_kinds(graded: dict) -> None:
    rows = _rows(graded["out"])
    metadata = yaml.safe_load((graded["export"] / "submission_metadata.yml").read_text())
    for i, (name, row) in enumerate(sorted(rows.items())):
        person = metadata[name][":submitters"][0]
        kind = kind_of(i)
        if kind == "forges_error":  # a formula made inert for spreadsheets
            assert row["submitters"] == f"'{person[':name']} <{person[':email']}>"
        else:
            assert row["submitters"] == f"{person[':name']} <{person[':email']}>"
        expected = {"syntax": "import", "exception": "exception", "shape": "shape", "nan": "nan",
                    "timeout": "timeout", "no_predict": "upload", "forges_error": "exception"}.get(kind, "")
        assert row["q1_error"] == expected, (name, kind, row)
        assert row["error"] == expected, (name, kind, row)
        if kind == "honest":
            assert row["q1_accuracy"] and row["q2_mIoU"] and float(row["q2_score"]) >= 0
        assert row["max_total"] == "50"


def test_hostile_submissions_got_nothing_and_left_nothing(graded: dict) -> None:
    outputs = {}
    for i in range(N):
        if kind_of(i) in HOSTILE:
            report = json.loads((graded["out"] / "submissions" / f"submission_{1000 + i}" / "results.json").read_text())
            outputs[kind_of(i)] = report["tests"][0]["output"]
    assert "READ []" in outputs["reads_labels"], outputs["reads_labels"]
    assert "kill(-1) refused" in outputs["signals_everyone"]
    assert "process(es) your code left running were stopped" in outputs["daemon"]
    assert "grader problem" not in outputs["forges_error"] and "evil.example" in outputs["forges_error"]
    for user in batch.student_users(2):
        assert user_processes(ensure_user(user)[0]) == []
    # Reopened once no student process was left: the folders closed for the batch have their modes back.
    for folder in (graded["data"], graded["export"], graded["out"]):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755, folder


def test_summary_and_pictures(graded: dict) -> None:
    summary = (graded["out"] / "summary.md").read_text()
    assert f"{N} submissions (0 reused" in summary
    assert "### upload (1)" in summary and "- ` submission_1008 ` (q1, q2): ` No predict.py" in summary
    assert "### timeout (1)" in summary and "Time limit exceeded" in summary
    assert summary.count("- ` submission_") >= 5  # the slowest list and the errors
    # Student text (the forged error message, the hostile submitter's name) only inside code spans.
    for report in (summary, (graded["out"] / "duplicates.md").read_text()):
        outside = re.sub(r"(`+) .*? \1", "", report)
        assert "evil.example" not in outside and "<img" not in outside
    totals = [float(r["total"]) for r in _rows(graded["out"]).values()]
    assert f"max {max(totals):g}" in summary and f"min {min(totals):g}" in summary
    for name in ("scores.png", "metrics.png"):
        assert (graded["out"] / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_reuses_and_a_change_regrades(graded: dict, capsys) -> None:
    stamps = {p: p.read_text() for p in graded["out"].glob("submissions/*/grading.json")}
    assert len(stamps) == N
    assert batch.main(graded["argv"]) == 0
    assert f"{N} already graded with these settings, 0 to grade" in capsys.readouterr().err
    assert {p: p.read_text() for p in graded["out"].glob("submissions/*/grading.json")} == stamps
    # A submission replaced since (the same name, other files) is regraded, and only it.
    changed_submission = graded["export"] / "submission_1004" / "predict.py"
    changed_submission.write_text(changed_submission.read_text() + "\n# edited after the first batch\n")
    assert batch.main(graded["argv"]) == 0
    assert f"{N - 1} already graded with these settings, 1 to grade" in capsys.readouterr().err
    config = load_config(graded["config"])
    key = batch.grading_key(config, graded["data"], [])
    changed = graded["tmp"] / "changed.toml"
    changed.write_text(graded["config"].read_text().replace("accuracy = 0.90", "accuracy = 0.80"))
    assert batch.grading_key(load_config(changed), graded["data"], []) != key
    assert batch.grading_key(config, graded["data"], ["--device=cuda"]) != key


def test_rescore_equals_a_regrade_under_the_edited_config(graded: dict) -> None:
    """mp-grader rescore recomputes every score from the stored metrics, and gets what a regrade of the class
    under the new config gets, score for score, without running any student code."""
    from grader.rescore import main as rescore

    edited = graded["tmp"] / "edited.toml"
    edited.write_text(graded["config"].read_text().replace("accuracy = 0.90", "accuracy = 0.5")
                      .replace("mIoU = 0.55", "mIoU = 0.2").replace("points = 30", "points = 40"))
    assert rescore([str(graded["out"]), "--config", str(edited), "--to", str(graded["tmp"] / "rescored")]) == 0
    regraded = graded["tmp"] / "regraded"
    swap = {str(graded["out"]): str(regraded), str(graded["config"]): str(edited)}
    argv = [swap.get(a, a) for a in graded["argv"]]
    assert batch.main(argv) == 0

    def scores(rows: dict[str, dict]) -> dict:
        return {name: {k: v for k, v in row.items() if k != "seconds"} for name, row in rows.items()}

    rescored_rows, regraded_rows = _rows(graded["tmp"] / "rescored"), _rows(regraded)
    assert scores(rescored_rows) == scores(regraded_rows)
    assert {r["max_total"] for r in rescored_rows.values()} == {"60"}
    changes = (graded["tmp"] / "rescored" / "rescore.md").read_text()
    before = {name: float(row["total"]) for name, row in _rows(graded["out"]).items()}
    gained = sum(float(rescored_rows[n]["total"]) > t for n, t in before.items())
    assert gained > 0 and f"{N} submissions: {gained} gain points, 0 lose points" in changes
    assert (graded["tmp"] / "rescored" / "rescore.png").read_bytes()[:4] == b"\x89PNG"


def test_plain_folder_of_zips(tmp_path: Path) -> None:
    """Zips are unpacked for grading, and a zip that reaches outside its folder is refused, not graded."""
    reason = unavailable("namespace")
    if reason:
        pytest.skip(reason)
    os.chmod(tmp_path, 0o755)
    data = make_reference(tmp_path / "data", n_q1=10)
    folder = tmp_path / "class"
    folder.mkdir()
    good = tmp_path / "good"
    good.mkdir()
    (good / "predict.py").write_text("def predict_q1(images):\n    return images.flatten(1)[:, :10]\n")
    shutil.make_archive(str(folder / "alice"), "zip", good)
    import zipfile

    with zipfile.ZipFile(folder / "mallory.zip", "w") as z:
        z.writestr("../../escaped.py", "print('out')\n")
    shutil.copytree(good, folder / "bob")
    shutil.copy(folder / "alice.zip", folder / "scores.csv.zip")  # named like a report of the batch
    out = tmp_path / "out"
    rc = batch.main([str(folder), "--data", str(data), "--out", str(out), "--config",
                     str(config_with(tmp_path, "q1")), "--device", "cpu"])
    assert rc == 0
    rows = _rows(out)
    assert sorted(rows) == ["alice", "bob", "mallory", "scores.csv"]
    assert rows["alice"]["q1_accuracy"] == rows["bob"]["q1_accuracy"] == rows["scores.csv"]["q1_accuracy"] != ""
    assert rows["mallory"]["error"] == "batch"
    graded = out / "submissions"
    assert "a link or a path outside the submission" in json.loads((graded / "mallory" / "results.json").read_text())["output"]
    assert not (tmp_path / "escaped.py").exists() and not (out / "escaped.py").exists()
    assert not (graded / ".unpacked" / "alice").exists()


def test_unpack_refuses_what_exceeds_the_upload_caps(tmp_path: Path) -> None:
    import zipfile

    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("weights.bin", b"\0" * 2_000_000)  # compresses to a few KB
        z.writestr("a/b/c/predict.py", "")
    with pytest.raises(ValueError, match="more than 1 MiB unpacked"):
        batch.unpack(archive, tmp_path / "x", UploadLimits(100, 2**20, 32))
    with pytest.raises(ValueError, match="nested deeper than 2"):
        batch.unpack(archive, tmp_path / "y", UploadLimits(100, 2**30, 2))


def test_setups_that_would_let_runs_meet_are_refused(tmp_path: Path, capsys) -> None:
    data = make_reference(tmp_path / "data", n_q1=5)
    (tmp_path / "class").mkdir()
    base = [str(tmp_path / "class"), "--data", str(data), "--config", str(REPO / "grader" / "config.toml")]
    cases = [
        (["--out", str(tmp_path / "o"), "--jobs", "2", "--isolation", "user"], "concurrent runs would see each other's files"),
        (["--out", str(tmp_path / "class" / "o")], "must not lie inside"),
        (["--out", str(tmp_path / "o"), "--jobs", "100"], "--jobs must be from 1 to 99"),
    ]
    for extra, message in cases:
        assert batch.main(base + extra) == 2
        assert message in capsys.readouterr().err
    (tmp_path / "class" / "submission_metadata.yml").write_text("- just\n- a list\n")
    assert batch.main(base + ["--out", str(tmp_path / "o")]) == 2
    assert "expected a mapping of submission folders" in capsys.readouterr().err


def test_student_user_must_be_a_grader_user(tmp_path: Path, capsys) -> None:
    from grader.cli import main

    with pytest.raises(SystemExit):
        main(["--submission", "x", "--data", "y", "--results", str(tmp_path / "r.json"), "--student-user", "root"])
    assert f"expected {DEFAULT_USER} or {DEFAULT_USER}-N" in capsys.readouterr().err


def test_copies_are_flagged(tmp_path: Path) -> None:
    """An exact copy (the same weight file) and a near copy (the weights nudged, so a new file) of one
    submission are flagged; independently drawn models are not."""
    import numpy as np

    from export_fixture import HONEST

    os.chmod(tmp_path, 0o755)
    data = make_reference(tmp_path / "data", n_q1=300)
    rng = np.random.default_rng(1)
    weights = {f"student_{i}": rng.normal(size=(784, 10)).astype(np.float32) for i in range(3)}
    weights["copier"] = weights["student_0"]
    weights["tweaker"] = weights["student_0"] + rng.normal(scale=1e-3, size=(784, 10)).astype(np.float32)
    for name, w in weights.items():
        (tmp_path / "class" / name).mkdir(parents=True)
        (tmp_path / "class" / name / "predict.py").write_text(HONEST.format(q2_class=0))
        np.save(tmp_path / "class" / name / "w1.npy", w)
    out = tmp_path / "out"
    assert batch.main([str(tmp_path / "class"), "--data", str(data), "--out", str(out), "--config",
                       str(config_with(tmp_path, "q1")), "--device", "cpu"]) == 0
    text = (out / "duplicates.md").read_text()
    identical = text.split("## Identical files")[1].split("##")[0]
    assert "` copier ` (` unknown `): ` w1.npy `" in identical and "` student_0 ` (` unknown `): ` w1.npy `" in identical
    assert "tweaker" not in identical and "student_1" not in identical
    flagged = text.split("## Predictions that share their mistakes")[1].split("## All pairs")[0]
    pairs = {tuple(sorted(re.findall(r"` (\S+) ` \(` unknown `\)", line))) for line in flagged.splitlines()
             if line.startswith("- Q1")}
    assert pairs == {("copier", "student_0"), ("student_0", "tweaker"), ("copier", "tweaker")}, flagged
    assert "Q1: 10 pairs" in text
    assert (out / "duplicates.png").read_bytes()[:4] == b"\x89PNG"
    assert "1 file(s) identical across submissions, 3 pair(s)" in (out / "summary.md").read_text()


def test_the_local_dask_cluster_listens_on_no_port() -> None:
    """A scheduler on loopback TCP would run anyone's tasks as root: the local one is in-process only."""
    pytest.importorskip("distributed", reason="the dask extra is not installed")
    from grader.batch.dask_tasks import local_cluster

    cluster = local_cluster(1, gpu=False)
    try:
        assert cluster.scheduler_address.startswith("inproc://"), cluster.scheduler_address
        assert all(w.address.startswith("inproc://") for w in cluster.workers.values())
    finally:
        cluster.close()


def test_a_task_on_a_remote_worker_is_capped_at_its_share_of_that_machine(tmp_path: Path) -> None:
    """On a cluster the batch cannot see, a task takes its cap from the worker running it: a worker with 3
    threads runs 3 tasks at once. A local batch's own count stands."""
    pytest.importorskip("distributed", reason="the dask extra is not installed")
    from distributed import Client, LocalCluster

    from grader.batch.dask_tasks import on_worker
    from grader.batch.runs import Settings

    remote = Settings(tmp_path, tmp_path, (), "key", 60.0, 99)
    with LocalCluster(n_workers=1, threads_per_worker=3, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        assert client.submit(on_worker, remote, pure=False).result().cpu_share == 3
        local = Settings(tmp_path, tmp_path, (), "key", 60.0, 2, cpu_share=2)
        assert client.submit(on_worker, local, pure=False).result().cpu_share == 2


def test_dask_local_cluster_gives_the_same_scores(graded: dict, tmp_path: Path) -> None:
    """The same class on a Dask cluster started by the batch (two workers, one task per submission): every
    score, metric and error kind equal to the threaded batch's."""
    pytest.importorskip("distributed", reason="the dask extra is not installed")
    out = graded["tmp"] / "out_dask"
    argv = [a if a != str(graded["out"]) else str(out) for a in graded["argv"]]
    assert batch.main([*argv, "--dask", "local"]) == 0

    assert without_seconds(_rows(out)) == without_seconds(_rows(graded["out"]))
    for user in batch.student_users(2):
        assert user_processes(ensure_user(user)[0]) == []


def test_a_tls_cluster_that_loses_a_worker_mid_grade_gives_the_same_scores(graded: dict, tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture) -> None:
    """The class on a real cluster (a scheduler and two workers, processes of their own, over TLS, to whom the
    export, the reference data, the config and OUT are not there, as on other machines): one worker is
    killed, with the grader it was running, while it grades a submission. Dask gives that task to the other
    worker; every score, metric and error kind equals the threaded batch's, and status.json names the lost
    worker beside the submission it was grading. Run again on the cluster, the batch goes on from what it
    wrote: nothing to grade."""
    pytest.importorskip("distributed", reason="the dask extra is not installed")
    if shutil.which("openssl") is None:
        pytest.skip("openssl makes the test's certificates, and it is not installed")
    import threading
    import time

    from cluster_fixture import clean_after_killed_graders, kill_mid_grade, leftovers, make_certificates, tls_cluster

    certs = make_certificates(tmp_path / "certs")
    before = leftovers()
    out = graded["tmp"] / "out_cluster"
    argv = [a if a != str(graded["out"]) else str(out) for a in graded["argv"]]
    killed: dict = {}
    honest = {f"submission_{1000 + i}" for i in range(N) if kind_of(i) == "honest"}
    with tls_cluster(tmp_path / "cluster", certs, 2, hide=(graded["tmp"],)) as cluster:
        workers = {w.address: w for w in cluster.workers}

        def kill(address: str) -> bool:
            if address not in workers:
                return False
            workers[address].kill()
            return True

        # Half a second after an honest submission (a grade of several seconds) starts on a worker, kill that
        # worker and the grader it runs.
        killer = threading.Thread(target=lambda: killed.update(kill_mid_grade(out / "status.json", honest, kill)))
        killer.start()
        try:
            rc = batch.main([*argv, "--dask", cluster.address, "--dask-tls", str(certs)])
        finally:
            killer.join()
            clean_after_killed_graders(before)
        final = json.loads((out / "status.json").read_text())
        capsys.readouterr()
        again = batch.main([*argv, "--dask", cluster.address, "--dask-tls", str(certs)])
        assert again == 0 and f"{N} already graded with these settings, 0 to grade" in capsys.readouterr().err
    assert rc == 0 and killed, killed

    assert without_seconds(_rows(out)) == without_seconds(_rows(graded["out"]))
    assert {name: state["lost"] for name, state in final.items() if "lost" in state} == {killed["name"]: killed["worker"]}
    assert {s["state"] for s in final.values()} <= {"graded", "failed"}
    deadline = time.monotonic() + 10  # the killed grader's sandbox dies with it (bubblewrap's --die-with-parent)
    while (left := [p for u in batch.student_users(2) for p in user_processes(ensure_user(u)[0])]) and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == []


HEAVY_Q1 = """
import torch
print("intra-op threads:", torch.get_num_threads())
torch.manual_seed(0)
M = torch.randn(784, 784) / 28
W = torch.randn(784, 10)
def predict_q1(images):
    x = images.flatten(1)
    for _ in range(800):  # a few seconds of CPU time alone
        x = torch.tanh(x @ M)
    return x @ W
"""
CPU_HOG = """
import os
for _ in range(24):  # busy loops, each in a session of its own (which escapes the scheduler's autogroups)
    if os.fork() == 0:
        os.setsid()
        while True:
            pass
import time
def predict_q1(images):
    time.sleep(600)
"""


def test_a_cpu_hog_beside_an_honest_run_leaves_its_score_as_it_is_alone(tmp_path: Path) -> None:
    """With --jobs 2 each question has a CPU scheduling group of its own, capped at half the machine, so a
    neighbour that forks busy loops cannot push an honest run past its limit (judged on its own CPU time),
    and the honest run's threads fit its cap. The hog ends on its CPU time too."""
    reason = unavailable("namespace")
    if reason:
        pytest.skip(reason)
    from grader.sandbox.cgroup import cgroup_parent

    if isinstance(where := cgroup_parent("cpu"), str):
        pytest.skip(f"no CPU scheduling groups here: {where}")
    os.chmod(tmp_path, 0o755)
    data = make_reference(tmp_path / "data", n_q1=200)
    folder = tmp_path / "class"
    for name, code in (("honest", HEAVY_Q1), ("hog", CPU_HOG)):
        (folder / name).mkdir(parents=True)
        (folder / name / "predict.py").write_text(code)
    config = config_with(tmp_path, "q1", **{"time_limit = 240": "time_limit = 25"})
    out = tmp_path / "out"
    assert batch.main([str(folder), "--data", str(data), "--out", str(out), "--config", str(config), "--jobs", "2",
                       "--device", "cpu"]) == 0
    rows = _rows(out)
    assert rows["hog"]["q1_error"] == "timeout"
    hog = json.loads((out / "submissions" / "hog" / "results.json").read_text())
    assert "CPU seconds, past its limit of" in hog["extra_data"]["metrics"]["q1"]["error"]
    _, alone = grade(folder / "honest", data, tmp_path / "alone.json", "--config", str(config))
    assert "error" not in alone["extra_data"]["metrics"]["q1"], alone["extra_data"]["metrics"]
    assert rows["honest"]["q1_error"] == "" and float(rows["honest"]["total"]) == alone["tests"][0]["score"]
    assert rows["honest"]["q1_accuracy"] == f"{alone['extra_data']['metrics']['q1']['accuracy']:.4f}"
    log = (out / "submissions" / "honest" / "results.json").read_text()
    assert "a CPU scheduling group (cgroup) per question" in log
    share = (enclosing_cpus() or usable_cores()) / 2
    assert f"capped at {share:.2f} CPU" in log and f"intra-op threads: {math.ceil(share)}" in log
