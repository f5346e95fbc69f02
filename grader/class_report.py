"""The class report of a batch: ``RESULTS/report.html`` and ``RESULTS/report.md``.

What an instructor looks at after grading: the score distribution (a histogram,
matplotlib Agg, embedded in the HTML as a base64 PNG and saved beside it),
pass rates per question and per test, the most frequent misconception hints
(lines starting ``Hint:`` in test messages) with counts, the slowest submissions,
and the submissions that failed to grade or scored lowest.
"""

from __future__ import annotations

import base64
import html
import io
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from grader.report import write_atomic


def summarize(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The numbers of the report, as plain data."""
    scores = {learner: r["score"] for learner, r in results.items()}
    max_score = max((r["max_score"] for r in results.values()), default=0.0)
    questions: dict[str, dict[str, Any]] = {}
    tests: dict[tuple[str, str], list[int]] = {}
    hints: Counter = Counter()
    hint_learners: dict[str, set] = {}
    for learner, result in results.items():
        for question in result["questions"]:
            block = questions.setdefault(question["id"], {"title": question["title"], "scores": [], "max": 0.0})
            block["scores"].append(question["score"])
            block["max"] = max(block["max"], question["max_score"])
            for test in question["tests"]:
                if test["outcome"] == "skipped":
                    continue
                tests.setdefault((question["id"], test["name"]), []).append(test["outcome"] == "passed")
                for line in test["message"].splitlines():
                    if line.strip().startswith("Hint:"):
                        hint = line.strip().removeprefix("Hint:").strip()
                        hints[(question["id"], hint)] += 1
                        hint_learners.setdefault(hint, set()).add(learner)
    per_question = [
        {"id": qid, "title": q["title"], "max_score": q["max"],
         "mean": statistics.fmean(q["scores"]) if q["scores"] else 0.0,
         "full_marks": sum(s >= q["max"] > 0 for s in q["scores"]) / max(1, len(q["scores"]))}
        for qid, q in sorted(questions.items(), key=lambda item: (len(item[0]), item[0]))
    ]
    per_test = [{"question": qid, "name": name, "pass_rate": sum(v) / len(v), "graded": len(v)}
                for (qid, name), v in sorted(tests.items(), key=lambda item: (sum(item[1]) / len(item[1]), item[0]))]
    failed = sorted(((learner, r.get("status", "failed"), r["error"]) for learner, r in results.items()
                     if r.get("error")), key=lambda item: item[0])
    slowest = sorted(((learner, r.get("duration_s", 0.0), r["score"]) for learner, r in results.items()),
                     key=lambda item: -item[1])[:10]
    lowest = sorted(((learner, r["score"]) for learner, r in results.items() if not r.get("error")),
                    key=lambda item: (item[1], item[0]))[:10]
    values = list(scores.values())
    return {
        "learners": len(results), "max_score": max_score,
        "mean": statistics.fmean(values) if values else 0.0,
        "median": statistics.median(values) if values else 0.0,
        "stdev": statistics.pstdev(values) if values else 0.0,
        "scores": scores, "questions": per_question, "tests": per_test,
        "hints": [{"question": qid, "hint": hint, "count": count, "learners": len(hint_learners[hint])}
                  for (qid, hint), count in hints.most_common(15)],
        "failed": failed, "slowest": slowest, "lowest": lowest,
    }


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
    axes.set_title(f"Score distribution ({len(scores)} learners)")
    axes.yaxis.get_major_locator().set_params(integer=True)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _bar(rate: float) -> str:
    colour = "#55A868" if rate >= 0.8 else "#DD8452" if rate >= 0.4 else "#C44E52"
    return (f'<div class="bar"><div style="width:{rate * 100:.0f}%;background:{colour}"></div></div>'
            f" {rate * 100:.0f}%")


def render_html(summary: dict[str, Any], png: bytes, title: str) -> str:
    e = html.escape
    image = base64.b64encode(png).decode()
    rows = []
    rows.append(f"<h1>{e(title)}</h1>")
    rows.append(f"<p>{summary['learners']} learners · mean {summary['mean']:.1f} · median {summary['median']:.1f}"
                f" · standard deviation {summary['stdev']:.1f} · of {summary['max_score']:g} points</p>")
    rows.append(f'<img alt="score distribution" src="data:image/png;base64,{image}">')
    rows.append("<h2>Questions</h2><table><tr><th>question</th><th>title</th><th>mean</th><th>full marks</th></tr>")
    for q in summary["questions"]:
        rows.append(f"<tr><td>{e(q['id'])}</td><td>{e(q['title'])}</td><td>{q['mean']:.1f}/{q['max_score']:g}</td>"
                    f"<td>{_bar(q['full_marks'])}</td></tr>")
    rows.append("</table><h2>Tests, hardest first</h2>"
                "<table><tr><th>question</th><th>test</th><th>passed by</th></tr>")
    for t in summary["tests"]:
        rows.append(f"<tr><td>{e(t['question'])}</td><td><code>{e(t['name'])}</code></td>"
                    f"<td>{_bar(t['pass_rate'])} of {t['graded']}</td></tr>")
    rows.append("</table><h2>Most frequent misconceptions</h2>")
    if summary["hints"]:
        rows.append("<table><tr><th>question</th><th>hint shown</th><th>times</th><th>learners</th></tr>")
        for h in summary["hints"]:
            rows.append(f"<tr><td>{e(h['question'])}</td><td>{e(h['hint'])}</td><td>{h['count']}</td>"
                        f"<td>{h['learners']}</td></tr>")
        rows.append("</table>")
    else:
        rows.append("<p>No misconception hint was shown.</p>")
    rows.append("<h2>Submissions that could not be graded</h2>")
    if summary["failed"]:
        rows.append("<table><tr><th>learner</th><th>status</th><th>reason</th></tr>")
        for learner, status, reason in summary["failed"]:
            rows.append(f"<tr><td>{e(learner)}</td><td>{e(status)}</td><td>{e(reason.splitlines()[0])}</td></tr>")
        rows.append("</table>")
    else:
        rows.append("<p>None.</p>")
    rows.append("<h2>Lowest scores</h2><table><tr><th>learner</th><th>score</th></tr>")
    rows += [f"<tr><td>{e(learner)}</td><td>{score:g}</td></tr>" for learner, score in summary["lowest"]]
    rows.append("</table><h2>Slowest submissions</h2><table><tr><th>learner</th><th>grading time</th>"
                "<th>score</th></tr>")
    rows += [f"<tr><td>{e(learner)}</td><td>{seconds:.1f} s</td><td>{score:g}</td></tr>"
             for learner, seconds, score in summary["slowest"]]
    rows.append("</table>")
    style = ("body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border-bottom:1px solid #ddd;"
             "padding:.25em .7em;text-align:left;vertical-align:top}th{background:#f3f3f3}"
             ".bar{display:inline-block;width:8em;height:.8em;background:#eee;vertical-align:middle}"
             ".bar div{height:100%}code{font-size:.9em}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(rows) + "\n</body></html>\n")


def render_markdown(summary: dict[str, Any], title: str) -> str:
    lines = [f"# {title}", "",
             f"{summary['learners']} learners · mean {summary['mean']:.1f} · median {summary['median']:.1f} · "
             f"standard deviation {summary['stdev']:.1f} · of {summary['max_score']:g} points", "",
             "![score distribution](report_histogram.png)", "", "## Questions", "",
             "| question | title | mean | full marks |", "|---|---|---|---|"]
    lines += [f"| {q['id']} | {q['title']} | {q['mean']:.1f}/{q['max_score']:g} | {q['full_marks'] * 100:.0f}% |"
              for q in summary["questions"]]
    lines += ["", "## Tests, hardest first", "", "| question | test | passed by |", "|---|---|---|"]
    lines += [f"| {t['question']} | `{t['name']}` | {t['pass_rate'] * 100:.0f}% of {t['graded']} |"
              for t in summary["tests"]]
    lines += ["", "## Most frequent misconceptions", ""]
    if summary["hints"]:
        lines += ["| question | hint shown | times | learners |", "|---|---|---|---|"]
        lines += [f"| {h['question']} | {h['hint']} | {h['count']} | {h['learners']} |" for h in summary["hints"]]
    else:
        lines.append("No misconception hint was shown.")
    lines += ["", "## Submissions that could not be graded", ""]
    if summary["failed"]:
        lines += ["| learner | status | reason |", "|---|---|---|"]
        lines += [f"| {learner} | {status} | {reason.splitlines()[0].replace('|', '/')} |"
                  for learner, status, reason in summary["failed"]]
    else:
        lines.append("None.")
    lines += ["", "## Lowest scores", "", "| learner | score |", "|---|---|"]
    lines += [f"| {learner} | {score:g} |" for learner, score in summary["lowest"]]
    lines += ["", "## Slowest submissions", "", "| learner | grading time | score |", "|---|---|---|"]
    lines += [f"| {learner} | {seconds:.1f} s | {score:g} |" for learner, seconds, score in summary["slowest"]]
    return "\n".join(lines) + "\n"


def write(results: dict[str, dict[str, Any]], out: Path, *, title: str = "Class report") -> dict[str, Any]:
    """Write ``report.html``, ``report.md`` and ``report_histogram.png`` into ``out``; the summary."""
    summary = summarize(results)
    png = histogram_png(list(summary["scores"].values()), summary["max_score"])
    out = Path(out)
    temporary = out / ".report_histogram.png.tmp"
    temporary.write_bytes(png)
    temporary.replace(out / "report_histogram.png")
    write_atomic(out / "report.html", render_html(summary, png, title))
    write_atomic(out / "report.md", render_markdown(summary, title))
    return summary
