"""Bad input ends in one clear line and loses nothing.

Params problems stop `nasstudy run` before Snakemake starts (exit 2, `params error: ...`). Problems
found while jobs run (a corrupt checkpoint, a truncated results file, a full disk) fail that job, and
`nasstudy run` repeats the job's one-line error at the end; every file of the other jobs is kept. A
second run in the same folder is refused without disturbing the first; a dead run's lock is removed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers.e2e import BIN, make_project

from nasstudy import cli


def run_cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    try:
        code = cli.main(list(args))
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


PARAMS_CASES = {
    "malformed_yaml": ("search: [budget: 3\n", "params error:"),
    "not_a_mapping": ("- 1\n- 2\n", "params error:"),
    "unknown_key": ("search:\n  budgett: 10\n", "unknown key 'search.budgett'"),
    "wrong_type": ("search:\n  budget: many\n", "search.budget"),
    "out_of_range": ("seed: -1\n", "seed"),
    "method_not_allowed": ("search:\n  methods: [random, magic]\n", "'magic' is not allowed"),
    "odd_budget_relativenas": ("search:\n  budget: 7\n", "must be even"),
    "no_replicates": ("replicates: 0\n", "replicates = 0 is out of range: must be >= 1"),
    "fractional_replicates": ("replicates: 2.5\n", "replicates = 2.5 has the wrong type: expected integer"),
    "negative_ranking_sample": ("ranking:\n  sample: -1\n", "ranking.sample = -1 is out of range: must be >= 0"),
    "unknown_ranking_key": ("ranking:\n  samples: 3\n", "unknown key 'ranking.samples'"),
    "missing_data_folder": ("data:\n  source: npz\n  root: /nonexistent/cifar\n", "/nonexistent/cifar"),
    "study_escapes_results": ("study: ../../etc\n", "study"),
    "transfer_method_not_searched": (
        "transfer:\n  methods: [ganas]\nsearch:\n  methods: [random]\n",
        "transfer.methods",
    ),
}


@pytest.mark.parametrize("case", sorted(PARAMS_CASES))
def test_bad_params_stop_with_one_line_before_any_job(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    text, expected = PARAMS_CASES[case]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text(text)
    code, err = run_cli(capsys, "run", "--params", "bad.yaml")
    assert code == 2
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("params error:") and expected in lines[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"], "something was written"


def test_missing_params_file_and_unknown_profile(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(capsys, "run", "--params", "nope.yaml")
    assert code == 2 and err.strip() == "params error: params file nope.yaml does not exist"
    code, err = run_cli(capsys, "run", "--profile", "no-such-profile", "-n")
    assert code == 2 and err.strip().startswith("nasstudy: no workflow profile 'no-such-profile'"), err


def md5s(root: Path) -> dict[str, str]:
    res = root / "results" / "default"
    return {str(p.relative_to(res)): hashlib.md5(p.read_bytes()).hexdigest() for p in res.rglob("*") if p.is_file()}


def nasstudy(cwd: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([BIN / "nasstudy", *args], cwd=cwd, capture_output=True, text=True, **kw)


def failed_lines(err: str) -> list[str]:
    return [x for x in err.splitlines() if x.startswith("nasstudy: failed: ")]


@pytest.mark.slow
@pytest.mark.parametrize(
    "rel, damage, expected",
    [
        ("supernet/initial/supernet.pt", "truncate", "is not a readable model file"),
        ("search/nse/rea/rep0/best.json", "truncate", "is not valid JSON"),
        ("data/cls_val.npz", "garbage", "is not a readable classification npz"),
    ],
)
def test_damaged_results_file_fails_its_readers_with_one_line_and_keeps_the_rest(
    study: Path, tmp_path: Path, rel: str, damage: str, expected: str
) -> None:
    project = tmp_path / "p"
    shutil.copytree(study, project, symlinks=True)
    (project / "mlflow.db").unlink()  # no recorded md5 to recompute it from (tests/test_integrity.py): readers see it
    target = project / "results" / "default" / rel
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not a zip file at all")
    before = md5s(project)
    out = nasstudy(project, "run", "--cores", "2")
    assert out.returncode != 0
    lines = failed_lines(out.stderr)
    assert lines and all(expected in x and str(Path("results/default") / rel) in x for x in lines), out.stderr[-3000:]
    after = md5s(project)
    lost = [k for k in before if k not in after]
    # What goes is only what Snakemake was rerunning downstream of the damaged file.
    downstream = {
        "supernet/initial/supernet.pt": ("search/initial/", "ranking/initial/"),  # the ranking sample reads it too
        "search/nse/rea/rep0/best.json": ("retrain/nse/rea/rep0/",),
    }
    allowed = downstream.get(rel, ("",))
    assert [k for k in lost if not k.startswith(allowed) and not k.startswith("report/")] == [], lost


@pytest.mark.slow
def test_second_run_is_refused_first_run_unharmed_then_stale_lock_removed(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    first = subprocess.Popen(
        [BIN / "nasstudy", "run", "--cores", "1"], cwd=project, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 120
        while not (project / ".snakemake" / "locks").is_dir() or not any((project / ".snakemake" / "locks").iterdir()):
            assert time.time() < deadline and first.poll() is None, "the first run never locked the folder"
            time.sleep(0.2)
        second = nasstudy(project, "run", "--cores", "1", timeout=60)
        assert second.returncode == 3
        assert f"another run is working in {project}" in second.stderr and "Nothing was changed" in second.stderr
        assert first.poll() is None, "the first run was disturbed"
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # a crash: the lock stays behind
        first.wait()
    assert any((project / ".snakemake" / "locks").iterdir())
    dry = nasstudy(project, "run", "--until", "prepare_data", "--cores", "1", timeout=300)
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "left by a run that died" in dry.stderr


@pytest.mark.slow
def test_full_disk_fails_one_job_with_one_line_and_keeps_finished_files(tmp_path: Path) -> None:
    # The first jobs run on a roomy tmpfs, which is then shrunk to what they wrote plus 8 KB: the next
    # job (an evolution generation or a warmup, each saving a supernet) runs out of space. (A 600 KB
    # tmpfs from the start was smaller than prepare_data's 0.7 MB: the test then passed only when
    # Snakemake happened to start init_space, the other job with no inputs, before prepare_data.)
    project = make_project(tmp_path)
    results = project / "results"
    results.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(results)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        first = nasstudy(project, "run", "--cores", "1", "--until", "prepare_data", "init_space", timeout=600)
        assert first.returncode == 0, first.stderr[-3000:]
        finished = md5s(project)
        assert "data/cls_train.npz" in finished and "space/gen0/space_state.json" in finished, sorted(finished)
        size = shutil.disk_usage(results).used // 1024 + 8
        subprocess.run(["mount", "-o", f"remount,size={size}k", str(results)], check=True)
        out = nasstudy(project, "run", "--cores", "1", timeout=600)
        assert out.returncode != 0
        lines = failed_lines(out.stderr)
        assert len(lines) == 1 and "no space left on device" in lines[0].lower(), out.stderr[-3000:]
        leftovers = [p for p in results.rglob("*.tmp")]
        assert leftovers == [], "half-written temp files left behind"
        after = md5s(project)
        assert {k: after.get(k) for k in finished} == finished, "a finished job's file was lost or changed"
    finally:
        subprocess.run(["umount", "-l", str(results)], check=False)
