"""Regenerate the class-report fixture: 13 learners graded for real on ex4 q1 and q4.

Run from the kit root (takes a few minutes): ``python tests/data/class_report/regenerate.py
[LEARNER ...]`` (only those learners when named). It writes ``<learner>.json`` result
documents beside this file; ``tests/test_class_report.py`` reads them. The learners: correct answers, known misconceptions (sin/cos swapped,
halves not interleaved, unbiased LayerNorm variance, reversed BatchNorm momentum),
untouched stubs, a syntax error, a missing import, a hang, a crash, a learner whose
name and import error are HTML, one who did not submit and one malformed upload.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import EXERCISES, SOLUTIONS, grade  # noqa: E402

from grader import exercises, grading  # noqa: E402
from grader.batch import malformed_result  # noqa: E402

Q1, Q4 = "q1_positional_encoding.py", "q4_normalization.py"
SIN_COS = (("table[:, 0::2] = torch.sin(", "table[:, 0::2] = torch.cos("),
           ("table[:, 1::2] = torch.cos(", "table[:, 1::2] = torch.sin("))
HALVES = (("table[:, 0::2] = torch.sin(", "table[:, : d_model // 2] = torch.sin("),
          ("table[:, 1::2] = torch.cos(", "table[:, d_model // 2 :] = torch.cos("))
LN_UNBIASED = (("var = x.var(dim=dims, keepdim=True, unbiased=False)",
                "var = x.var(dim=dims, keepdim=True, unbiased=True)"),)
BN_MOMENTUM = (("self.momentum)", "1 - self.momentum)"),)
SYNTAX_ERROR = (("def sinusoidal_table(max_len: int, d_model: int, base: float = 10000.0) -> Tensor:",
                 "def sinusoidal_table(max_len: int, d_model: int, base: float = 10000.0) -> Tensor"),)
MISSING_IMPORT = (("import torch\n", "import torch\nimport einops_helpers\n"),)
HANG = (("    position = torch.arange(max_len", "    while True:\n        pass\n    position = torch.arange(max_len"),)
CRASH = (("        n = len(self.normalized_shape)\n", "        import os\n        os._exit(1)\n"),)
HOSTILE = (("import torch\n", 'import torch\n\nraise ImportError("<img src=x onerror=alert(1)>")\n'),)

# learner -> {file: (source folder, edits)}; files not named are the model answers
LEARNERS = {
    "Ada Lovelace": {},
    "Ben Okafor": {Q1: (SOLUTIONS, SIN_COS)},
    "Chloé Martin": {Q1: (SOLUTIONS, SIN_COS), Q4: (SOLUTIONS, LN_UNBIASED)},
    "Dmitri Volkov": {Q1: (SOLUTIONS, HALVES), Q4: (SOLUTIONS, LN_UNBIASED)},
    "Emma Schmidt": {Q4: (SOLUTIONS, LN_UNBIASED + BN_MOMENTUM)},
    "Farid Haddad": {Q1: (EXERCISES, ()), Q4: (EXERCISES, ())},
    "Gus Lindqvist": {Q1: (SOLUTIONS, SYNTAX_ERROR)},
    "Hana Sato": {Q1: (SOLUTIONS, MISSING_IMPORT), Q4: (EXERCISES, ())},
    "Ivo Petrov": {Q1: (SOLUTIONS, HANG)},
    "Jo Crash": {Q4: (SOLUTIONS, CRASH)},
    "<script>alert(1)</script>": {Q1: (SOLUTIONS, SIN_COS), Q4: (SOLUTIONS, HOSTILE)},
}
TIME_LIMITS = {"Ivo Petrov": 2.0}  # seconds per call: the hang costs 2 s a test, not 10; the others keep 10


def file_name(learner: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", learner).strip("_") + ".json"


def main(names: list[str]) -> None:
    for learner in names:
        if learner not in LEARNERS:
            raise SystemExit(f"unknown learner {learner!r}; one of {', '.join(LEARNERS)}")
    with tempfile.TemporaryDirectory() as tmp:
        for learner in names or LEARNERS:
            files = LEARNERS[learner]
            folder = Path(tmp) / file_name(learner).removesuffix(".json")
            folder.mkdir()
            for name in (Q1, Q4):
                source, edits = files.get(name, (SOLUTIONS, ()))
                text = (source / name).read_text()
                for old, new in edits:
                    assert old in text, (learner, old)
                    text = text.replace(old, new)
                (folder / name).write_text(text)
            limits = {"time_limit": TIME_LIMITS[learner]} if learner in TIME_LIMITS else {}
            result = grade(folder, "q1", "q4", **limits)
            result.update(submission=f"submissions/{folder.name}", learner=learner)
            (HERE / file_name(learner)).write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    if names:
        return
    exercise = exercises.load("ex4")
    titles = [(q.id, q.title) for q in exercise.select(("q1", "q4"))]
    points, cpu_points = grading.collect_points(exercise), grading.collect_points(exercise, "cpu")
    for learner, status, reason in [("Kim Nguyen", "not_submitted", "no submission (listed in the roster)"),
                                    ("Leo Brandt", "malformed", "leo_brandt.zip is not a readable zip archive")]:
        result = malformed_result("ex4", titles, points, reason, status=status, graded_points=cpu_points)
        result["learner"] = learner
        (HERE / file_name(learner)).write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
