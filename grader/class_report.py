"""The class report of a batch: ``RESULTS/report.html`` and ``RESULTS/report.md``.

It answers "what should I reteach?" on its first screen, in this order:

1. per question, the mean score and the share of learners with full marks, each
   result measured against its own ``max_score`` (the points graded on its device:
   tests skipped there, e.g. CUDA-only ones on a CPU, count toward neither);
2. the most common misconceptions: the ``Hint:`` texts of the feedback, with how
   many learners were shown each, and who;
3. the learners flagged by cause: untouched stub ("not implemented yet"), import or
   syntax error, timeout or crash, not submitted, malformed submission.

The details follow: the score histogram (matplotlib Agg, embedded as a base64 PNG
and saved beside it), every test's pass rate (hardest first), the lowest scores and
the slowest submissions. The Markdown version has the same sections in the same
order. The HTML is self-contained and has no script; every learner-provided string
(names, messages) is escaped in both.

Input: ``{learner: result document}`` (README's result document, with ``status``
``graded``, ``not_submitted`` or ``malformed`` and ``error`` for the last two).
"""

from __future__ import annotations

import base64
import html
import io
import re
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grader.report import write_atomic

CAUSES = {  # why a learner is flagged, in the report's order -> the heading shown
    "stub": "Untouched stub (“not implemented yet”)",
    "import": "Import or syntax error",
    "crash": "Timeout or crash",
    "not_submitted": "Not submitted",
    "malformed": "Malformed submission",
}
FIRST_SCREEN_HINTS = 5  # misconception rows shown before the rest fold away (HTML)
NAMES_SHOWN = 5  # learners listed in a cell before the rest fold away (HTML)
STATUS_CAUSES = {"not_submitted": "not_submitted", "malformed": "malformed", "failed": "crash"}  # others: malformed
STATUS_WORDS = {"not_submitted": "not submitted", "malformed": "malformed",
                "failed": "not graded (the judge died or hung)"}
DETAILS_SHOWN = 3  # a cause with this few flagged learners shows their details unfolded (HTML)

_IMPORT_FAILED = re.compile(r"^import \S+ raised (.+)")  # plugin/judge: "import q1 raised SyntaxError: ..."
_IMPORT_ERROR = re.compile(r" raised ((?:SyntaxError|IndentationError|TabError|ImportError|ModuleNotFoundError)\b.*)")
_DIED = re.compile(r"your code (did not return within .+|used more than .+|crashed .+|ended the worker process.*)")
_HINT = re.compile(r"\bHint:\s*(.+)")


@dataclass
class QuestionStats:
    id: str
    title: str
    graded: int  # learners whose submission was graded
    mean: float
    max_score: float  # the largest graded maximum (all learners' when they were graded on one kind of device)
    skipped_points: float  # points of this question not graded on the device (largest over learners)
    full_marks: float | None  # share of graded learners at their own max_score; None when nothing was gradable


@dataclass
class Misconception:
    question: str
    hint: str
    learners: list[str]
    tests: int  # failed tests that showed the hint, over all learners


@dataclass
class Flag:
    learner: str
    questions: list[str]  # where the cause showed (none for a learner not submitted or malformed)
    details: list[str]  # "q1, q2: SyntaxError: ...", "q4 5/11 tests: ended the worker ...", or the reason


@dataclass
class Summary:
    learners: int
    statuses: Counter
    scores: dict[str, float]  # graded learners only
    max_score: float
    full_max_score: float
    questions: list[QuestionStats]
    misconceptions: list[Misconception]
    flagged: dict[str, list[Flag]]  # cause (a key of CAUSES) -> learners
    tests: list[dict[str, Any]]  # {question, name, pass_rate, graded}, hardest first
    lowest: list[tuple[str, float]]
    slowest: list[tuple[str, float, float]]

    @property
    def graded(self) -> int:
        return len(self.scores)


def status_of(result: dict[str, Any]) -> str:
    """``graded``, ``not_submitted``, ``malformed`` or ``failed`` (the batch's judge died or hung on it).

    Results written before ``status`` existed: ``malformed`` when they have an ``error``.
    """
    return result.get("status") or ("malformed" if result.get("error") else "graded")


def cause_of(message: str) -> tuple[str, str] | None:
    """``(cause, detail)`` of a failed test's message when it is one a learner is flagged for, else None."""
    first = message.splitlines()[0] if message else ""
    if first.startswith("not implemented yet"):
        return "stub", ""
    if match := _IMPORT_FAILED.match(first) or _IMPORT_ERROR.search(first):
        return "import", match.group(1)
    if match := _DIED.search(first):
        return "crash", match.group(1)
    return None


def hints_in(message: str) -> list[str]:
    """The ``Hint:`` texts of a test message (not in what learner code printed before a crash)."""
    text = message.split("\nlast output:\n")[0]
    return [match.group(1).strip() for line in text.splitlines() if (match := _HINT.search(line))]


def _question_order(qid: str) -> tuple[int, str]:
    return len(qid), qid


def _flags_of(learner: str, result: dict[str, Any]) -> dict[str, Flag]:
    """The causes ``learner``'s graded result is flagged for, each with its questions and details.

    Questions with the same detail are named together; a count of tests is given only
    when the cause did not fail all of a question's graded tests.
    """
    found: dict[str, dict[str, list[str]]] = defaultdict(dict)  # cause -> detail -> where
    questions: dict[str, list[str]] = defaultdict(list)
    for question in result["questions"]:
        counted = [t for t in question["tests"] if t["outcome"] != "skipped"]
        by_cause: dict[str, list[str]] = defaultdict(list)
        for test in counted:
            if test["outcome"] != "passed" and (cause := cause_of(test["message"])):
                by_cause[cause[0]].append(cause[1])
        for cause, details in by_cause.items():
            questions[cause].append(question["id"])
            where = question["id"] + (f" {len(details)}/{len(counted)} tests" if len(details) < len(counted) else "")
            found[cause].setdefault(_shorten(details[0]), []).append(where)
    return {cause: Flag(learner, questions[cause],
                        [", ".join(where) + (f": {detail}" if detail else "") for detail, where in details.items()])
            for cause, details in found.items()}


def _shorten(text: str, limit: int = 140) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summarize(results: dict[str, dict[str, Any]]) -> Summary:
    """The numbers of the report from ``{learner: result document}``."""
    statuses = Counter(status_of(r) for r in results.values())
    graded = {learner: r for learner, r in results.items() if status_of(r) == "graded"}
    flagged: dict[str, list[Flag]] = {cause: [] for cause in CAUSES}
    blocks: dict[str, list[dict[str, Any]]] = defaultdict(list)
    titles: dict[str, str] = {}
    hint_learners: dict[tuple[str, str], set[str]] = defaultdict(set)
    hint_tests: Counter = Counter()
    tests: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for learner, result in sorted(results.items(), key=lambda item: item[0].casefold()):
        status = status_of(result)
        if status != "graded":
            reason = _shorten((result.get("error") or status).splitlines()[0])
            flagged[STATUS_CAUSES.get(status, "malformed")].append(Flag(learner, [], [reason]))
            continue
        for cause, flag in _flags_of(learner, result).items():
            flagged[cause].append(flag)
        for question in result["questions"]:
            blocks[question["id"]].append(question)
            titles[question["id"]] = question["title"]
            for test in question["tests"]:
                if test["outcome"] == "skipped":
                    continue
                tests[(question["id"], test["name"])].append(test["outcome"] == "passed")
                for hint in dict.fromkeys(hints_in(test["message"])):
                    hint_learners[(question["id"], hint)].add(learner)
                    hint_tests[(question["id"], hint)] += 1
    questions = []
    for qid in sorted(blocks, key=_question_order):
        scored = blocks[qid]
        gradable = [b for b in scored if b["max_score"] > 0]
        questions.append(QuestionStats(
            id=qid, title=titles[qid], graded=len(scored),
            mean=statistics.fmean(b["score"] for b in scored),
            max_score=max(b["max_score"] for b in scored),
            skipped_points=max(b.get("skipped_points", 0.0) for b in scored),
            full_marks=sum(b["score"] >= b["max_score"] for b in gradable) / len(gradable) if gradable else None))
    misconceptions = sorted(
        (Misconception(qid, hint, sorted(names, key=str.casefold), hint_tests[(qid, hint)])
         for (qid, hint), names in hint_learners.items()),
        key=lambda m: (-len(m.learners), _question_order(m.question), m.hint))
    scores = {learner: r["score"] for learner, r in graded.items()}
    return Summary(
        learners=len(results), statuses=statuses, scores=scores,
        max_score=max((r["max_score"] for r in graded.values()), default=0.0),
        full_max_score=max((r.get("full_max_score", r["max_score"]) for r in results.values()), default=0.0),
        questions=questions, misconceptions=misconceptions, flagged=flagged,
        tests=[{"question": qid, "name": name, "pass_rate": sum(v) / len(v), "graded": len(v)}
               for (qid, name), v in sorted(tests.items(), key=lambda item: (sum(item[1]) / len(item[1]),
                                                                             _question_order(item[0][0]), item[0][1]))],
        lowest=sorted(scores.items(), key=lambda item: (item[1], item[0].casefold()))[:10],
        slowest=sorted(((learner, r.get("duration_s", 0.0), r["score"]) for learner, r in graded.items()),
                       key=lambda item: (-item[1], item[0].casefold()))[:10],
    )


def histogram_png(scores: list[float], max_score: float) -> bytes:
    """A histogram of the total scores (PNG bytes, matplotlib's Agg backend)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 3.2), dpi=100)
    axes = figure.add_subplot()
    top = max_score or max(scores, default=1.0) or 1.0
    bins = [top * i / 20 for i in range(21)]
    axes.hist(scores, bins=bins, color="#4C72B0", edgecolor="white")
    if scores:
        mean = statistics.fmean(scores)
        axes.axvline(mean, color="#C44E52", linestyle="--", label=f"mean {mean:.1f}")
        axes.legend(loc="upper center")
    axes.set_xlim(0, top)
    axes.set_xlabel(f"total score (of {top:g})")
    axes.set_ylabel("learners")
    axes.set_title(f"Score distribution ({len(scores)} graded learners)")
    axes.yaxis.get_major_locator().set_params(integer=True)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


# ------------------------------------------------------------------ shared wording


def _overview(s: Summary) -> str:
    order = [*STATUS_WORDS, *sorted(set(s.statuses) - set(STATUS_WORDS) - {"graded"})]
    others = ", ".join(f"{s.statuses[status]} {STATUS_WORDS.get(status, status)}" for status in order
                       if s.statuses[status])
    values = list(s.scores.values())
    line = f"{s.learners} learners: {s.graded} graded" + (f", {others}" if others else "")
    if values:
        line += (f" · mean {statistics.fmean(values):.1f} · median {statistics.median(values):.1f}"
                 f" · standard deviation {statistics.pstdev(values):.1f} · of {s.max_score:g} points")
    if s.full_max_score > s.max_score:
        line += f" ({s.full_max_score - s.max_score:g} more not graded on this device)"
    return line


def _mean(q: QuestionStats) -> str:
    skipped = f" ({q.skipped_points:g} not graded on this device)" if q.skipped_points else ""
    return f"{q.mean:.1f} / {q.max_score:g}{skipped}"


def _rate(part: int, whole: int) -> str:
    return f"{part} of {whole} ({part / whole * 100:.0f}%)" if whole else str(part)


def _percent(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate * 100:.0f}%"


# ------------------------------------------------------------------ HTML

_STYLE = """
body{font:14px/1.3 system-ui,sans-serif;max-width:80em;margin:.6em auto;padding:0 1em;color:#222}
h1{font-size:1.45em;margin:.2em 0}h2{font-size:1.15em;margin:.8em 0 .25em}
p.overview{margin:.2em 0 .6em;color:#444}
table{border-collapse:collapse;margin:.2em 0 .4em;width:100%}
td,th{border-bottom:1px solid #ddd;padding:.18em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3;font-weight:600}td.n{white-space:nowrap;width:1%}
.bar{display:inline-block;width:7em;height:.8em;background:#eee;vertical-align:middle;margin-right:.4em}
.bar span{display:block;height:100%}.who{color:#444;font-size:.92em}.none{color:#888}
details summary{cursor:pointer}details ul{margin:.2em 0;padding-left:1.4em;color:#444}
ul.plain{margin:0;padding:0;list-style:none}p.more{margin:.8em 0;padding-top:.4em;border-top:2px solid #ccc}
code{font-size:.9em}
""".replace("\n", "")


def _bar(rate: float | None) -> str:
    if rate is None:
        return "n/a"
    colour = "#55A868" if rate >= 0.8 else "#DD8452" if rate >= 0.4 else "#C44E52"
    return (f'<span class="bar"><span style="width:{rate * 100:.0f}%;background:{colour}"></span></span>'
            f"{rate * 100:.0f}%")


def _folded(items: list[str], what: str) -> str:
    """``items`` (already HTML) joined; past NAMES_SHOWN the rest opens from a ``<details>`` (no script needed)."""
    shown = " · ".join(items[:NAMES_SHOWN])
    if len(items) <= NAMES_SHOWN:
        return shown
    return (f"<details><summary>{shown} and {len(items) - NAMES_SHOWN} more {what}</summary>"
            + " · ".join(items[NAMES_SHOWN:]) + "</details>")


def _flag_cell(flags: list[Flag]) -> str:
    """Few flagged learners: each with details; more: who (and which questions) at a glance, details folded."""
    e = html.escape
    rows = "".join(f"<li><b>{e(f.learner)}</b> {e('; '.join(f.details))}</li>" for f in flags)
    if len(flags) <= DETAILS_SHOWN:
        return f'<ul class="plain">{rows}</ul>'
    names = [f"<b>{e(f.learner)}</b>" + (f" {e(', '.join(f.questions))}" if f.questions else "")
             for f in flags[:NAMES_SHOWN]]
    more = f" and {len(flags) - NAMES_SHOWN} more" if len(flags) > NAMES_SHOWN else ""
    return f"<details><summary>{' · '.join(names)}{more}</summary><ul>{rows}</ul></details>"


def _misconception_rows(rows: list[Misconception], graded: int) -> list[str]:
    e = html.escape
    return [f'<tr><td class="n">{e(m.question)}</td><td class="n">{_rate(len(m.learners), graded)}</td>'
            f'<td>{e(m.hint)}<div class="who">{_folded([e(n) for n in m.learners], "learners")}</div></td></tr>'
            for m in rows]


def render_html(s: Summary, png: bytes, title: str) -> str:
    """The report as one self-contained HTML page (no script; the histogram inline)."""
    e = html.escape
    out = [f"<h1>{e(title)}</h1>", f'<p class="overview">{e(_overview(s))}</p>',
           '<h2>Questions</h2>',
           '<table><tr><th>question</th><th>title</th><th>mean</th><th>full marks</th></tr>']
    out += [f'<tr><td class="n">{e(q.id)}</td><td>{e(q.title)}</td><td class="n">{e(_mean(q))}</td>'
            f'<td class="n">{_bar(q.full_marks)} of {q.graded}</td></tr>' for q in s.questions]
    out.append('</table><h2>Most frequent misconceptions</h2>')
    if s.misconceptions:
        out.append("<table><tr><th>question</th><th>learners</th><th>hint shown, and to whom</th></tr>")
        out += _misconception_rows(s.misconceptions[:FIRST_SCREEN_HINTS], s.graded)
        out.append("</table>")
        if rest := s.misconceptions[FIRST_SCREEN_HINTS:]:
            out.append(f"<details><summary>{len(rest)} more hints, each shown to fewer learners</summary><table>"
                       + "".join(_misconception_rows(rest, s.graded)) + "</table></details>")
    else:
        out.append('<p class="none">No misconception hint was shown.</p>')
    out.append('<h2>Flagged learners, by cause</h2>'
               "<table><tr><th>cause</th><th>learners</th><th>who, and where</th></tr>")
    for cause, heading in CAUSES.items():
        flags = s.flagged[cause]
        who = _flag_cell(flags) if flags else '<span class="none">none</span>'
        out.append(f'<tr><td class="n">{e(heading)}</td><td class="n">{len(flags)}</td><td>{who}</td></tr>')
    out.append("</table>")
    out.append('<p class="more">Further down: <a href="#distribution">score distribution</a> · '
               f'<a href="#tests">all {len(s.tests)} tests, hardest first</a> · <a href="#lowest">lowest scores</a>'
               ' · <a href="#slowest">slowest submissions</a></p>')
    image = base64.b64encode(png).decode()
    out.append(f'<h2 id="distribution">Score distribution</h2>'
               f'<img alt="score distribution" src="data:image/png;base64,{image}">')
    out.append('<h2 id="tests">Tests, hardest first</h2>'
               "<table><tr><th>question</th><th>test</th><th>passed by</th></tr>")
    out += [f'<tr><td class="n">{e(t["question"])}</td><td><code>{e(t["name"])}</code></td>'
            f'<td class="n">{_bar(t["pass_rate"])} of {t["graded"]}</td></tr>' for t in s.tests]
    out.append('</table><h2 id="lowest">Lowest scores</h2><table><tr><th>learner</th><th>score</th></tr>')
    out += [f"<tr><td>{e(learner)}</td><td>{score:g}</td></tr>" for learner, score in s.lowest]
    out.append('</table><h2 id="slowest">Slowest submissions</h2>'
               "<table><tr><th>learner</th><th>grading time</th><th>score</th></tr>")
    out += [f"<tr><td>{e(learner)}</td><td>{seconds:.1f} s</td><td>{score:g}</td></tr>"
            for learner, seconds, score in s.slowest]
    out.append("</table>")
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title>"
            f"<style>{_STYLE}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n")


# ------------------------------------------------------------------ Markdown


def _md(text: str) -> str:
    """Learner text made inert in a Markdown table cell: no HTML, links, emphasis or cell breaks."""
    return re.sub(r"([\\`*_\[\]|])", r"\\\1", html.escape(" ".join(str(text).split()), quote=False))


def _md_code(text: str) -> str:
    """A code span in a Markdown table cell (backslashes are literal there: no backquote, no pipe)."""
    return "`" + text.replace("`", "'").replace("|", "/") + "`"


def render_markdown(s: Summary, title: str) -> str:
    """The report in Markdown, sections in the HTML's order."""
    lines = [f"# {_md(title)}", "", _md(_overview(s)), "", "## Questions", "",
             "| question | title | mean | full marks |", "|---|---|---|---|"]
    lines += [f"| {_md(q.id)} | {_md(q.title)} | {_md(_mean(q))} | {_percent(q.full_marks)} of {q.graded} |"
              for q in s.questions]
    lines += ["", "## Most frequent misconceptions", ""]
    if s.misconceptions:
        lines += ["| question | learners | hint shown | to whom |", "|---|---|---|---|"]
        lines += [f"| {_md(m.question)} | {_rate(len(m.learners), s.graded)} | {_md(m.hint)} | "
                  f"{', '.join(_md(n) for n in m.learners)} |" for m in s.misconceptions]
    else:
        lines.append("No misconception hint was shown.")
    lines += ["", "## Flagged learners, by cause", "", "| cause | learners | who, and where |", "|---|---|---|"]
    lines += [f"| {_md(heading)} | {len(s.flagged[cause])} | "
              + ("; ".join(f"**{_md(f.learner)}** {_md('; '.join(f.details))}" for f in s.flagged[cause]) or "none")
              + " |" for cause, heading in CAUSES.items()]
    lines += ["", "## Score distribution", "", "![score distribution](report_histogram.png)",
              "", "## Tests, hardest first", "", "| question | test | passed by |", "|---|---|---|"]
    lines += [f"| {_md(t['question'])} | {_md_code(t['name'])} | {t['pass_rate'] * 100:.0f}% of {t['graded']} |"
              for t in s.tests]
    lines += ["", "## Lowest scores", "", "| learner | score |", "|---|---|"]
    lines += [f"| {_md(learner)} | {score:g} |" for learner, score in s.lowest]
    lines += ["", "## Slowest submissions", "", "| learner | grading time | score |", "|---|---|---|"]
    lines += [f"| {_md(learner)} | {seconds:.1f} s | {score:g} |" for learner, seconds, score in s.slowest]
    return "\n".join(lines) + "\n"


def write(results: dict[str, dict[str, Any]], out: Path, *, title: str = "Class report") -> Summary:
    """Write ``report.html``, ``report.md`` and ``report_histogram.png`` into ``out``; the summary."""
    summary = summarize(results)
    png = histogram_png(list(summary.scores.values()), summary.max_score)
    out = Path(out)
    write_atomic(out / "report_histogram.png", png)
    write_atomic(out / "report.html", render_html(summary, png, title))
    write_atomic(out / "report.md", render_markdown(summary, title))
    return summary
