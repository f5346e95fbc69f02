"""The class report answers "what should I reteach?" before any detail.

The fixture, ``tests/data/class_report/*.json``, is 13 learners graded for real on
ex4 q1 and q4 by ``tests/data/class_report/regenerate.py``: correct answers, four
known misconceptions, untouched stubs, a syntax error, a missing import, a hang, a
crash, a learner whose name and import error are HTML, one who did not submit and
one malformed upload. Hand-computed from the per-learner scores listed there:

    q1 of 10: 10, 2.5, 2.5, 2.5, 10, 0, 0, 0, 1, 10, 2.5 -> mean 41/11, full marks 3/11
    q4 of 15: 15, 15, 9, 9, 5, 0, 15, 0, 15, 8, 0       -> mean 91/11, full marks 4/11
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from grader import class_report
from reference.misconceptions import by_key

DATA = Path(__file__).resolve().parent / "data" / "class_report"
HOSTILE = "<script>alert(1)</script>"
SECTIONS = ["Questions", "Most frequent misconceptions", "Flagged learners, by cause", "Score distribution",
            "Tests, hardest first", "Lowest scores", "Slowest submissions"]


@pytest.fixture(scope="module")
def results() -> dict[str, dict]:
    documents = [json.loads(path.read_text()) for path in sorted(DATA.glob("*.json"))]
    return {document["learner"]: document for document in documents}


@pytest.fixture(scope="module")
def report(results, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    class_report.write(results, out, title="ex4 class report")
    return out


class Page(HTMLParser):
    """The tags and the ``<h2>`` headings of an HTML page, in order."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[str] = []
        self.headings: list[str] = []
        self._in_h2 = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self._in_h2 = tag == "h2"

    def handle_endtag(self, tag):
        self._in_h2 = self._in_h2 and tag != "h2"

    def handle_data(self, data):
        if self._in_h2:
            self.headings.append(data)


def test_fixture_is_the_class_described(results):
    assert len(results) == 13
    assert [results[n]["status"] for n in ("Kim Nguyen", "Leo Brandt")] == ["not_submitted", "malformed"]
    assert sum(r["status"] == "graded" for r in results.values()) == 11


def test_sections_in_first_screen_order(report):
    page = (report / "report.html").read_text()
    parsed = Page(page)
    assert parsed.headings == SECTIONS
    flagged_end = page.index("</table>", page.index("<h2>Flagged learners, by cause</h2>"))
    assert page.index("<img") > flagged_end and page.index('id="tests"') > flagged_end, \
        "nothing tall comes before the three first-screen sections"
    markdown = (report / "report.md").read_text()
    assert [line.removeprefix("## ") for line in markdown.splitlines() if line.startswith("## ")] == SECTIONS


def test_question_rates_match_hand_computed(results, report):
    summary = class_report.summarize(results)
    q1, q4 = summary.questions
    assert (q1.id, q1.graded, q1.max_score, q4.id, q4.graded, q4.max_score) == ("q1", 11, 10.0, "q4", 11, 15.0)
    assert q1.mean == pytest.approx(41 / 11) and q1.full_marks == pytest.approx(3 / 11)
    assert q4.mean == pytest.approx(91 / 11) and q4.full_marks == pytest.approx(4 / 11)
    markdown = (report / "report.md").read_text()
    assert "| q1 | Sinusoidal positional encoding | 3.7 / 10 | 27% of 11 |" in markdown
    assert "| 8.3 / 15 | 36% of 11 |" in markdown
    assert "13 learners: 11 graded, 1 not submitted, 1 malformed" in markdown


def test_rates_use_each_results_graded_maximum(results):
    """A learner graded on a CPU (2 CUDA-only points skipped) with all the rest right has full marks."""
    on_gpu = results["Ada Lovelace"]
    on_cpu = copy.deepcopy(on_gpu)
    block = next(q for q in on_cpu["questions"] if q["id"] == "q4")
    test = next(t for t in block["tests"] if t["max_points"] == 2.0)
    test.update(outcome="skipped", points=0.0, message="needs CUDA")
    for target in (block, on_cpu):
        target.update(score=target["score"] - 2, max_score=target["max_score"] - 2, skipped_points=2.0)
    summary = class_report.summarize({"gpu": on_gpu, "cpu": on_cpu})
    q4 = summary.questions[1]
    assert (q4.full_marks, q4.max_score, q4.skipped_points) == (1.0, 15.0, 2.0)
    assert all(t["graded"] == 1 for t in summary.tests if t["name"] == test["name"])


def test_misconceptions_counted_per_learner_with_names(results, report):
    summary = class_report.summarize(results)
    found = [(m.question, m.hint, m.learners) for m in summary.misconceptions]
    assert found == [
        ("q1", by_key("pe_sin_cos_swapped").hint, [HOSTILE, "Ben Okafor", "Chloé Martin"]),
        ("q4", by_key("layernorm_unbiased_variance").hint, ["Chloé Martin", "Dmitri Volkov", "Emma Schmidt"]),
        ("q1", by_key("pe_halves_not_interleaved").hint, ["Dmitri Volkov"]),
        ("q4", by_key("batchnorm_momentum_reversed").hint, ["Emma Schmidt"]),
    ]
    assert summary.misconceptions[0].tests == 18  # six failed tests each showed it to three learners
    markdown = (report / "report.md").read_text()
    assert (f"| q4 | 3 of 11 (27%) | {by_key('layernorm_unbiased_variance').hint} | "
            "Chloé Martin, Dmitri Volkov, Emma Schmidt |") in markdown


def test_learners_flagged_by_cause(results):
    flagged = class_report.summarize(results).flagged
    who = {cause: {f.learner: (f.questions, f.details) for f in flags} for cause, flags in flagged.items()}
    assert who["stub"] == {"Farid Haddad": (["q1", "q4"], ["q1, q4"]), "Hana Sato": (["q4"], ["q4"])}
    assert sorted(who["import"]) == [HOSTILE, "Gus Lindqvist", "Hana Sato"]
    assert who["import"]["Gus Lindqvist"] == (["q1"], ["q1: SyntaxError: expected ':' (q1_positional_encoding.py, "
                                                       "line 29)"])
    assert who["import"]["Hana Sato"][1] == ["q1: ModuleNotFoundError: No module named 'einops_helpers'"]
    assert who["import"][HOSTILE][1] == ["q4: ImportError: <img src=x onerror=alert(1)>"]
    assert who["crash"] == {  # a count of tests only where the cause did not fail them all
        "Ivo Petrov": (["q1"], ["q1 12/13 tests: did not return within 2 s (an endless loop?)"]),
        "Jo Crash": (["q4"], ["q4 5/11 tests: ended the worker process (exit code 1: os._exit or sys.exit?)"])}
    assert who["not_submitted"] == {"Kim Nguyen": ([], ["no submission (listed in the roster)"])}
    assert who["malformed"] == {"Leo Brandt": ([], ["leo_brandt.zip is not a readable zip archive"])}
    assert not {"Ada Lovelace", "Ben Okafor", "Emma Schmidt"} & {n for c in who.values() for n in c}


def test_many_flagged_learners_fold_behind_details(results):
    """Past a few learners a cause lists who and where on one line; the details open without script."""
    class_of_stubs = {f"Farid {i}": results["Farid Haddad"] for i in range(8)} | {"Kim": results["Kim Nguyen"]}
    page = class_report.render_html(class_report.summarize(class_of_stubs), b"", "t")
    stub_row = page[page.index("Untouched stub"):page.index("</tr>", page.index("Untouched stub"))]
    assert stub_row.count("<details>") == 1 and "<b>Farid 4</b> q1, q4 and 3 more</summary>" in stub_row
    assert stub_row.count("<li>") == 8
    kim_row = page[page.index("Not submitted"):page.index("</tr>", page.index("Not submitted"))]
    assert "<details" not in kim_row and "<li><b>Kim</b> no submission" in kim_row


def test_a_submission_the_batch_gave_up_on_is_flagged_as_a_crash(results):
    gave_up = {**results["Kim Nguyen"], "status": "failed", "error": "the judge did not answer within 600 s"}
    summary = class_report.summarize({"Ada": results["Ada Lovelace"], "Max": gave_up})
    assert [(f.learner, f.details) for f in summary.flagged["crash"]] == [
        ("Max", ["the judge did not answer within 600 s"])]
    assert "2 learners: 1 graded, 1 not graded (the judge died or hung)" in class_report.render_markdown(summary, "t")


def test_hints_printed_by_learner_code_are_not_counted():
    message = "q1.f(): your code ended the worker process\nlast output:\nHint: nothing to reteach here"
    assert class_report.hints_in(message) == []
    assert class_report.hints_in("values differ.\nHint: Your sin and cos are swapped.") == [
        "Your sin and cos are swapped."]


def test_learner_strings_are_escaped(report):
    page = (report / "report.html").read_text()
    tags = Page(page).tags
    assert "script" not in tags and tags.count("img") == 1, "only the histogram is an image; no script at all"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    markdown = (report / "report.md").read_text()
    assert "<script>" not in markdown and "<img" not in markdown and "&lt;script&gt;" in markdown


def test_live_messages_are_classified(tmp_path):
    """The wording the fixture was made with is today's: a syntax error and a stub graded now."""
    from conftest import EXERCISES, grade

    q1 = "q1_positional_encoding.py"
    (tmp_path / q1).write_text((EXERCISES / q1).read_text().replace("import math\n", "import math(\n"))
    messages = [t["message"] for t in grade(tmp_path, "q1")["questions"][0]["tests"]]
    assert {class_report.cause_of(m)[0] for m in messages} == {"import"}
    stub = tmp_path / "stub"
    stub.mkdir()
    shutil.copy(EXERCISES / q1, stub / q1)
    assert {class_report.cause_of(t["message"])[0] for t in grade(stub, "q1")["questions"][0]["tests"]} == {"stub"}


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not on PATH (apt-get install chromium)")
def test_first_screen_in_headless_chromium(report, tmp_path):
    """At 1280x900 the page is not blank, and the line after the three sections is on screen.

    A copy of the page paints that line ("Further down: ...") magenta; the screenshot must show it.
    """
    from PIL import Image

    page = (report / "report.html").read_text()
    marked = tmp_path / "marked.html"
    marked.write_text(page.replace("</style>", "p.more{background:#ff00ff}</style>"))
    shots = {}
    for name, html_file in {"report": report / "report.html", "marked": marked}.items():
        shots[name] = tmp_path / f"{name}.png"
        subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shots[name]}",
                        "--window-size=1280,900", html_file.as_uri()], check=True, capture_output=True, timeout=120)
    with Image.open(shots["report"]) as image:
        assert image.size == (1280, 900)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50, "the screenshot is (nearly) one colour"
    assert (255, 0, 255) not in {colour for _, colour in colours or []}
    with Image.open(shots["marked"]) as image:
        magenta = sum(count for count, colour in image.convert("RGB").getcolors(maxcolors=1 << 20)
                      if colour == (255, 0, 255))
    assert magenta > 1000, "the three first-screen sections do not fit in 1280x900"
