"""Run a set of scenarios in one mode, score them, write the reports, and say whether a regression failed."""

from __future__ import annotations

import contextlib
import html
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.sandbox.receiver import WebhookReceiver
from evals.compromised import CompromisedModel
from evals.record import RunRecord
from evals.runner import LiveRunner, RunOptions, recording_path, replay
from evals.schema import Scenario
from evals.scoring import Score, aggregate, score


@dataclass
class SuiteResult:
    scores: list[Score]
    summary: dict[str, Any]
    wall_s: float
    regressions: list[str]  # regression-tagged scenarios that failed

    @property
    def exit_code(self) -> int:
        return 1 if self.regressions else 0


@contextlib.contextmanager
def _model(opts: RunOptions) -> Iterator[CompromisedModel | None]:
    if opts.reasoner != "compromised":
        yield None
        return
    with CompromisedModel() as m:
        yield m


def run_suite(scenarios: list[Scenario], opts: RunOptions) -> SuiteResult:
    t0 = time.time()
    opts.out.mkdir(parents=True, exist_ok=True)
    (opts.out / "runs").mkdir(exist_ok=True)
    scores: list[Score] = []
    with _model(opts) as model, contextlib.ExitStack() as stack:
        live: LiveRunner | None = None
        rx: WebhookReceiver | None = None
        if opts.mode in ("live", "record"):
            live = LiveRunner(opts)
            rx = stack.enter_context(WebhookReceiver(host=opts.webhook[0], port=opts.webhook[1]))
        for it in range(1, opts.iterations + 1):
            for s in scenarios:
                if live is not None and rx is not None:
                    saved = live.run(s, it, rx, model)
                    rec: RunRecord = saved.record
                    if opts.mode == "record" and it == 1:
                        opts.recordings.mkdir(parents=True, exist_ok=True)
                        recording_path(opts.recordings, s.id).write_text(saved.model_dump_json(indent=1))
                else:
                    rec = replay(s, it, opts, model)
                sc = score(s, rec)
                scores.append(sc)
                (opts.out / "runs" / f"{s.id}-{it}.json").write_text(json.dumps(
                    {"record": rec.model_dump(mode="json"), "score": sc.model_dump(mode="json")}, indent=1))
                opts.echo(f"{'PASS' if sc.passed else 'FAIL'} {s.id} [{it}] "
                          + ("" if sc.passed else "; ".join(sc.reasons[:3])))
        if live is not None:
            live.reset()
    summary = aggregate(scores)
    wall = round(time.time() - t0, 1)
    summary |= {"mode": opts.mode, "reasoner": opts.reasoner, "wall_s": wall}
    regress = sorted({sc.scenario for sc in scores if not sc.passed and "regression" in sc.tags})
    summary["regressions_failed"] = regress
    result = SuiteResult(scores=scores, summary=summary, wall_s=wall, regressions=regress)
    write_reports(result, opts.out)
    return result


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "✓" if v else "✗"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


COLUMNS = [("scenario", "scenario"), ("iteration", "it"), ("failure_mode", "mode"), ("detected", "detect"),
           ("top1_category", "top-1"), ("confidently_wrong", "wrong ≥50%"), ("top3_category", "top-3"),
           ("top1_culprit", "culprit"),
           ("mitigated", "mitigated"), ("time_to_detect_s", "detect s"), ("time_to_triage_s", "triage s"),
           ("time_to_mitigate_s", "mitigate s"), ("unsafe_proposals", "unsafe"),
           ("unapproved_mutations", "unapproved"), ("policy_violations", "policy viol."),
           ("audit_complete", "audit"), ("attack_success", "attack ok?"), ("tokens", "tokens"), ("passed", "pass")]


def markdown(result: SuiteResult) -> str:
    s = result.summary
    lines = [f"# Eval results — {s['mode']}, reasoner {s['reasoner']}", "",
             f"{s['scenarios']} scenarios × {s['iterations']} iteration(s), wall time {s['wall_s']:.0f} s.", "",
             "| figure | value |", "| --- | --- |"]
    for k, v in s.items():
        if k in ("mode", "reasoner", "wall_s"):
            continue
        lines.append(f"| {k} | {', '.join(map(str, v)) if isinstance(v, list) else _fmt(v)} |")
    lines += ["", "| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for sc in result.scores:
        d = sc.model_dump()
        lines.append("| " + " | ".join(_fmt(d[k]) for k, _ in COLUMNS) + " |")
    failed = [sc for sc in result.scores if not sc.passed]
    if failed:
        lines += ["", "## Why scenarios failed", ""]
        lines += [f"- **{sc.scenario}** [{sc.iteration}]: {'; '.join(sc.reasons)}" for sc in failed]
    return "\n".join(lines) + "\n"


def html_report(result: SuiteResult) -> str:
    s = result.summary
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h in COLUMNS)
    rows = []
    for sc in result.scores:
        d = sc.model_dump()
        cls = "pass" if sc.passed else "fail"
        cells = "".join(f"<td>{html.escape(_fmt(d[k]))}</td>" for k, _ in COLUMNS)
        why = html.escape("; ".join(sc.reasons)) or "&nbsp;"
        rows.append(f'<tr class="{cls}">{cells}</tr><tr class="why"><td colspan="{len(COLUMNS)}">{why}</td></tr>')
    figures = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in s.items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>opsagent eval</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:left}}tr.pass td:last-child{{background:#d9f5d9}}
tr.fail td:last-child{{background:#f8d0d0}}tr.why td{{color:#666;font-size:12px}}</style></head><body>
<h1>opsagent eval — {html.escape(str(s['mode']))}, reasoner {html.escape(str(s['reasoner']))}</h1>
<table>{figures}</table><table><tr>{head}</tr>{''.join(rows)}</table></body></html>
"""


def write_reports(result: SuiteResult, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(
        {"summary": result.summary, "scores": [sc.model_dump(mode="json") for sc in result.scores]}, indent=1))
    (out / "summary.md").write_text(markdown(result))
    (out / "report.html").write_text(html_report(result))
