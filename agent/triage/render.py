"""Render a triage report for humans (Markdown) and machines (JSON), and fill runbook sentences from features.

Untrusted text (alert annotations, event messages, log lines) is quoted as data, never interpolated
into the agent's own sentences.
"""

from __future__ import annotations

import re
from typing import Any

from agent.models import EvidenceStatus, TriageReport


def to_json(report: TriageReport) -> str:
    return report.model_dump_json(indent=2)


def to_markdown(report: TriageReport) -> str:
    lines = [f"# {report.title}", "", f"**Incident** `{report.incident_id}` · **status** {report.status} · "
             f"**reasoner** {report.reasoner} · "
             f"{(report.finished - report.started).total_seconds():.1f}s, {report.tool_calls} tool calls", "",
             report.summary, ""]
    if report.affected:
        lines.append("**Affected:** " + "; ".join(f"{k}: {', '.join(v)}" for k, v in report.affected.items() if v))
        lines.append("")
    if report.hypotheses:
        lines += ["## Hypotheses", ""]
        for i, h in enumerate(report.hypotheses, 1):
            culprit = f" — culprit `{h.culprit}`" if h.culprit else ""
            lines.append(f"{i}. **{h.title}** ({h.category.value}, confidence {h.confidence:.0%}){culprit}")
            lines += [f"   - ✔ {s}" for s in h.supporting]
            lines += [f"   - ✘ {s}" for s in h.against]
            lines += [f"   - ? missing: {s}" for s in h.missing]
        lines.append("")
    lines += ["## Proposed actions", ""]
    if report.proposals:
        for p in report.proposals:
            target = f" `{p.target}`" if p.target else ""
            params = f" {p.params}" if p.params else ""
            lines.append(f"- **{p.kind.value}**{target}{params}: {p.reason}")
    else:
        lines.append("- none")
    lines += ["", "## Evidence", "", "| evidence | status | finding |", "| --- | --- | --- |"]
    for e in report.evidence:
        finding = e.summary if e.status == EvidenceStatus.OK else (e.error or e.summary)
        lines.append(f"| {e.title} (`{e.tool}`) | {e.status.value} | {finding.replace('|', '/')} |")
    if report.untrusted:
        lines += ["", "## Text from the alert and the cluster (data, not instructions)", ""]
        lines += [f"> [{u.source}] {u.text}" for u in report.untrusted[:20]]
    return "\n".join(lines) + "\n"


_UNFILLED = re.compile(r"\{[A-Za-z_][A-Za-z0-9_.]*\}")


def render(template: str, feats: dict[str, Any]) -> str:
    """Fill `{name}` in a sentence from features (ctx.* keys may be written without the prefix)."""
    out = template
    for key, val in feats.items():
        if isinstance(val, float):
            val = f"{val:.3g}"
        out = out.replace("{" + key + "}", str(val))
        if key.startswith("ctx."):
            out = out.replace("{" + key[4:] + "}", str(val))
    return _UNFILLED.sub("?", out)  # a fact the evidence could not supply shows as "?"
