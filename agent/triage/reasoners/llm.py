"""The LLM reasoner: a chat model weighs the gathered evidence, may read more, and ranks hypotheses.

It sits where the rules reasoner sits (the triage graph's diagnose node) and must never make a triage
worse than the rules would: the model sees the rules engine's scores, its answer is validated, and when
the answer is unusable or the model fails (timeout, HTTP error, no answer within `max_steps`) the
rules ranking is returned with a sentence saying so. Triage never fails because of the model.

What this module must not do — and cannot, whatever the model says: act. A model fully compromised by
injected text ("scale chat-primary to zero", "delete namespace llm-prod") can only
- ask for tools, and every call goes through the triage `ToolRunner`, which holds read tools only, has a
  READ risk ceiling, validates parameters and audits the call as refused or allowed;
- submit a diagnosis, which is data: ranked hypotheses (closed categories, culprits limited to objects
  the context and evidence name) and a narrative. There is no field for an action. Proposals stay with
  the propose node, built from runbook remediations and evidence, then policy and human approval.
Secrets are redacted before anything reaches the provider; untrusted text reaches it fenced as data.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

import anthropic
import openai
from pydantic import BaseModel, Field, ValidationError

from agent.config import LlmConfig
from agent.guard.redact import redact
from agent.guard.runner import ToolOutcome, ToolRunner
from agent.models import Category, Evidence, Hypothesis, ObjectRef
from agent.telemetry import tracer
from agent.triage.features import feature_map
from agent.triage.reasoners import prompts
from agent.triage.reasoners.chat import (
    Conversation,
    ModelError,
    ToolCall,
    Turn,
    base_url,
    check_config,
    open_conversation,
)
from agent.triage.reasoners.rules import narrate, rank, score
from agent.triage.runbooks import Runbook
from agent.triage.state import TriageState

log = logging.getLogger(__name__)

MAX_HYPOTHESES = 6  # a ranking longer than this is a list, not a diagnosis
MAX_CALLS_PER_STEP = 5  # tool calls run per model turn; more are answered "not run"
NARRATIVE_CHARS = 3000
SENTENCE_CHARS = 400
KEEP_RUNS = 64  # run records kept for the report and evals, newest last
_CITATION = re.compile(r"\[([A-Za-z0-9_.:-]+)\]")
# Result fields that name objects a culprit may be (see `_known_names`).
_NAME_KEYS = {"name", "namespace", "node", "node_name", "deployment", "pod", "hpa", "model_name", "model",
              "Hostname", "hostname", "replicaset", "workload"}
_NAMESPACED = {"Deployment", "Pod", "HorizontalPodAutoscaler", "HTTPRoute"}


# --- the answer the model must give ----------------------------------------------------------------------

class CulpritAnswer(BaseModel):
    kind: Literal["Deployment", "Node", "Pod", "HorizontalPodAutoscaler", "Namespace", "Model", "HTTPRoute"]
    name: str = Field(min_length=1, max_length=253, description="Exactly as the context or evidence names it.")
    namespace: str | None = Field(default=None, max_length=63,
                                  description="For Deployments, Pods, HorizontalPodAutoscalers and HTTPRoutes.")


class HypothesisAnswer(BaseModel):
    candidate_id: str | None = Field(default=None, description="The runbook candidate's id when this hypothesis is "
                                     "one of the candidates listed in the brief.")
    category: Category
    title: str = Field(min_length=1, max_length=300, description="One line a human reads.")
    confidence: float = Field(ge=0, le=1, description="Calibrated probability that this is the cause.")
    culprit: CulpritAnswer | None = None
    supporting: list[str] = Field(default_factory=list, max_length=8,
                                  description="Sentences, each citing an evidence id in [brackets].")
    against: list[str] = Field(default_factory=list, max_length=8,
                               description="Evidence that speaks against it, citing ids in [brackets].")


class DiagnosisAnswer(BaseModel):
    """Ranked hypotheses, most likely first, and the narrative for the on-call engineer."""

    hypotheses: list[HypothesisAnswer] = Field(min_length=1, max_length=MAX_HYPOTHESES)
    narrative: str = Field(min_length=1, max_length=NARRATIVE_CHARS,
                           description="What broke, the evidence, the likely cause, what is still unknown.")


SUBMIT_SPEC = {
    "name": prompts.SUBMIT_TOOL,
    "description": "Submit the final diagnosis: ranked hypotheses (most likely first) and a narrative. Call it "
                   "exactly once, when you are done reading. It changes nothing.",
    "parameters": prompts.inline_refs(DiagnosisAnswer.model_json_schema()),
}


class InvalidAnswer(ValueError):
    """The submitted diagnosis cannot be used; the message says why (and is shown to the model)."""


class NoAnswer(RuntimeError):
    """The model used its steps without submitting a usable diagnosis."""


# Failures of the model or its answer. Anything else also means the fallback, but is logged with its traceback.
_EXPECTED = (openai.APIError, anthropic.APIError, json.JSONDecodeError, ModelError, NoAnswer, InvalidAnswer)


# --- what one run did -------------------------------------------------------------------------------------

@dataclass
class LlmRun:
    """What the reasoner did for one incident: the figures the report shows."""

    provider: str
    model: str
    steps: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    tool_calls: list[tuple[str, str]] = field(default_factory=list)  # (tool, allowed | refused | error)
    dropped: list[str] = field(default_factory=list)  # hypotheses the validation removed, with why
    fallback: str | None = None  # why the rules ranking was used, if it was

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def footer(self) -> str:
        calls = len(self.tool_calls)
        refused = sum(1 for _, d in self.tool_calls if d == "refused")
        text = (f"[LLM reasoner: {self.provider} {self.model}, {self.steps} step{'s' * (self.steps != 1)}, "
                f"{calls} tool call{'s' * (calls != 1)}{f' ({refused} refused)' if refused else ''}, "
                f"{self.tokens:,} tokens ({self.input_tokens:,} in, {self.output_tokens:,} out)")
        if self.dropped:
            text += f"; dropped {len(self.dropped)} hypothesis(es): {'; '.join(self.dropped[:3])}"
        return text + "]"

    def as_dict(self) -> dict[str, Any]:
        return {"provider": self.provider, "model": self.model, "steps": self.steps,
                "input_tokens": self.input_tokens, "output_tokens": self.output_tokens, "tokens": self.tokens,
                "tool_calls": [{"tool": t, "decision": d} for t, d in self.tool_calls],
                "dropped": list(self.dropped), "fallback": self.fallback}


# --- the reasoner -----------------------------------------------------------------------------------------

class LlmReasoner:
    """Ranks hypotheses with a chat model over read tools; falls back to the rules ranking on any failure.

    Args:
        config: the `llm` settings group (provider, model, base URL, key, step budget, per-request timeout).
        max_retries: SDK retries per request on connection errors, 429 and 5xx. Two is the SDKs' own
            default: a passing blip costs seconds, not the diagnosis. Tests set 0.
    """

    name = "llm"

    def __init__(self, config: LlmConfig, *, max_retries: int = 2) -> None:
        check_config(config)
        self.config = config
        self.max_retries = max_retries
        self.actor = f"agent:llm:{config.model}"
        self.runs: OrderedDict[str, LlmRun] = OrderedDict()  # by incident id, the last KEEP_RUNS

    async def diagnose(self, state: TriageState, books: list[Runbook], runner: ToolRunner) -> tuple[
            list[Hypothesis], str]:
        feats = feature_map(state)
        baseline = rank([h for b in books for spec in b.hypotheses if (h := score(spec, feats)) is not None])
        incident = state.get("incident")
        run = LlmRun(provider=self.config.provider, model=self.config.model)
        self._remember(incident.id if incident else "", run)
        try:
            hyps, narrative = await self._converse(state, books, runner, baseline, run)
        except Exception as e:  # never fail the triage: any model failure means the rules ranking
            run.fallback = self._describe(e)
            log.warning("LLM reasoner fell back to the rules ranking: %s", run.fallback,
                        exc_info=not isinstance(e, _EXPECTED))
            return baseline, (f"The LLM reasoner could not diagnose this incident ({run.fallback}); "
                              f"this is the rules engine's ranking. {narrate(baseline)}\n\n{run.footer()}")
        return hyps, f"{narrative}\n\n{run.footer()}"

    def _remember(self, incident_id: str, run: LlmRun) -> None:
        self.runs[incident_id] = run
        self.runs.move_to_end(incident_id)
        while len(self.runs) > KEEP_RUNS:
            self.runs.popitem(last=False)

    async def _converse(self, state: TriageState, books: list[Runbook], runner: ToolRunner,
                        baseline: list[Hypothesis], run: LlmRun) -> tuple[list[Hypothesis], str]:
        incident = state.get("incident")
        evidence = state.get("evidence", [])
        context = state.get("context", {})
        fence = prompts.Fence()
        texts = prompts.untrusted_texts(incident, state.get("untrusted", []), evidence, runner.tools)
        user = prompts.brief(incident, context, evidence, books, baseline, texts, fence)
        system = prompts.system_prompt(self.config.max_steps, fence)
        read_tools = [t.json_schema() for t in runner.specs()]
        tools = [*({**t, "parameters": prompts.inline_refs(t["parameters"])} for t in read_tools), SUBMIT_SPEC]
        known = _known_names(context, evidence)
        last_problem = ""
        async with open_conversation(self.config, system, user, tools, max_retries=self.max_retries) as chat:
            for step in range(self.config.max_steps):
                final = step == self.config.max_steps - 1
                turn = await self._turn(chat, step, final)
                run.steps += 1
                run.input_tokens += turn.input_tokens
                run.output_tokens += turn.output_tokens
                submits = [c for c in turn.calls if c.name == prompts.SUBMIT_TOOL]
                if not turn.calls:
                    if not turn.text.strip():
                        raise NoAnswer("the model replied with neither a tool call nor text")
                    try:  # a model that answers in text instead of the tool: accept the JSON if it is there
                        return self._accept(_json_in_text(turn.text), known, evidence, baseline, run)
                    except InvalidAnswer as e:
                        last_problem = str(e)
                        chat.add_user(f"Call {prompts.SUBMIT_TOOL} with your diagnosis ({e}).")
                        continue
                if submits:
                    try:
                        return self._accept(submits[0].arguments, known, evidence, baseline, run)
                    except InvalidAnswer as e:
                        last_problem = str(e)
                        retry = f"rejected: {e}. Call {prompts.SUBMIT_TOOL} again with a valid diagnosis."
                        chat.add_tool_results([(c, retry if c is submits[0] else "not run", True) for c in turn.calls])
                        continue
                if final:
                    break  # read tools asked for on the last round are not run: there is no round to read them
                chat.add_tool_results(await self._read(turn.calls, runner, incident.id if incident else None, fence,
                                                       known, run))
        raise NoAnswer(f"no valid diagnosis within {self.config.max_steps} steps"
                       + (f"; the last answer was invalid: {last_problem}" if last_problem else ""))

    async def _turn(self, chat: Conversation, step: int, final: bool) -> Turn:
        """One model call, in its trace span (`llm call`: model, tokens in/out, latency, tool calls asked)."""
        attrs: dict[str, str | int] = {"gen_ai.system": self.config.provider, "gen_ai.request.model": self.config.model,
                 "llm.step": step}
        t0 = time.monotonic()
        with tracer().start_as_current_span("llm call", attributes=attrs) as span:
            turn = await chat.turn(force_tool=prompts.SUBMIT_TOOL if final else None)
            span.set_attributes({"gen_ai.usage.input_tokens": turn.input_tokens,
                                 "gen_ai.usage.output_tokens": turn.output_tokens,
                                 "llm.latency_ms": round((time.monotonic() - t0) * 1000, 1),
                                 "llm.tool_calls": ",".join(c.name for c in turn.calls)[:500]})
            return turn

    async def _read(self, calls: list[ToolCall], runner: ToolRunner, incident_id: str | None, fence: prompts.Fence,
                    known: set[str], run: LlmRun) -> list[tuple[ToolCall, str, bool]]:
        """Run one round's tool calls, in order, and say what each returned; learn the objects they name."""
        results: list[tuple[ToolCall, str, bool]] = []
        for i, call in enumerate(calls):
            if i >= MAX_CALLS_PER_STEP:
                results.append((call, f"not run: at most {MAX_CALLS_PER_STEP} tool calls per round", True))
                continue
            outcome = await self._call(call, runner, incident_id, run)
            if outcome.ok and outcome.result is not None:
                known |= _names_in(outcome.result.model_dump(mode="json"))  # objects the cluster returned
            results.append((call, prompts.tool_result_text(outcome, fence), not outcome.ok))
        return results

    async def _call(self, call: ToolCall, runner: ToolRunner, incident_id: str | None, run: LlmRun) -> ToolOutcome:
        """Run one tool call through the guarded runner (it validates, refuses above READ and audits)."""
        args: Any = call.arguments
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError:
                args = None
        if not isinstance(args, dict):
            # Still through the runner, so the attempt is audited; the input model rejects the unknown field.
            args = {"_unparsed_arguments": prompts.clip(str(call.arguments), 200)}
        outcome = await runner.call(call.name, args, actor=self.actor, incident_id=incident_id)
        run.tool_calls.append((call.name, "allowed" if outcome.ok else "refused" if outcome.refused else "error"))
        return outcome

    def _accept(self, arguments: str | dict[str, Any], known: set[str], evidence: list[Evidence],
                baseline: list[Hypothesis], run: LlmRun) -> tuple[list[Hypothesis], str]:
        """Validate a submitted diagnosis and turn it into hypotheses; InvalidAnswer when none is usable."""
        data: Any = arguments
        if isinstance(arguments, str):
            try:
                data = json.loads(arguments)
            except json.JSONDecodeError as e:
                raise InvalidAnswer(f"the diagnosis is not valid JSON ({e.msg} at char {e.pos})") from e
        if not isinstance(data, dict):
            raise InvalidAnswer("the diagnosis is not a JSON object")
        narrative = data.get("narrative")
        items = data.get("hypotheses")
        if not isinstance(narrative, str) or not narrative.strip():
            raise InvalidAnswer("'narrative' must be a non-empty string")
        if not isinstance(items, list) or not items:
            raise InvalidAnswer("'hypotheses' must be a non-empty list")
        candidates = {h.id: h for h in baseline}
        evidence_ids = {e.id for e in evidence}
        dropped: list[str] = []
        out: list[Hypothesis] = []
        for i, item in enumerate(items[:MAX_HYPOTHESES]):
            try:
                ans = HypothesisAnswer.model_validate(item)
            except ValidationError as e:
                err = e.errors()[0]
                dropped.append(f"#{i + 1}: {'.'.join(str(p) for p in err['loc'])}: {err['msg']}")
                continue
            culprit = _culprit(ans.culprit, known)
            if ans.culprit is not None and culprit is None:
                dropped.append(f"#{i + 1}: culprit {ans.culprit.kind}/{ans.culprit.name} is not named in the "
                               "context or evidence")
                continue
            hyp = _hypothesis(ans, culprit, candidates, evidence_ids, {h.id for h in out})
            if hyp is not None:
                out.append(hyp)
        run.dropped = [redact(prompts.clip(d, 200)) for d in dropped]
        if not out:
            raise InvalidAnswer("no usable hypothesis: " + "; ".join(run.dropped[:3]))
        out.sort(key=lambda h: -h.confidence)  # stable: the model's order breaks ties
        return out, redact(prompts.clip(narrative.strip(), NARRATIVE_CHARS))

    def _describe(self, e: Exception) -> str:
        """Say why the model could not be used, in words an on-call engineer can act on."""
        where = base_url(self.config)
        if isinstance(e, openai.APITimeoutError | anthropic.APITimeoutError):
            text = f"{self.config.model} at {where} did not answer within {self.config.timeout_s:g}s"
        elif isinstance(e, openai.APIConnectionError | anthropic.APIConnectionError):
            text = f"cannot reach {where}"
        elif isinstance(e, openai.APIStatusError | anthropic.APIStatusError):
            said = re.sub(r"^Error code: \d+ - ", "", str(e.message))
            text = f"{where} answered HTTP {e.status_code}: {prompts.clip(said, 200)}"
        elif isinstance(e, json.JSONDecodeError):
            text = f"{where} sent a response that is not JSON ({e.msg})"
        elif isinstance(e, NoAnswer | InvalidAnswer):
            text = str(e)
        else:
            text = f"{type(e).__name__}: {prompts.clip(str(e), 200)}"
        return redact(text)


# --- validation helpers -----------------------------------------------------------------------------------

def _names_in(value: Any, key: str | None = None) -> set[str]:
    """Strings under object-naming keys (`name`, `node`, `deployment`, ...) anywhere in a JSON-like value."""
    if isinstance(value, dict):
        return set().union(*(_names_in(v, str(k)) for k, v in value.items())) if value else set()
    if isinstance(value, list):
        return set().union(*(_names_in(v, key) for v in value)) if value else set()
    if isinstance(value, str) and key in _NAME_KEYS:
        return {value}
    return set()


def _known_names(context: dict[str, str], evidence: list[Evidence]) -> set[str]:
    """Every object name the context and the evidence mention: the only names a culprit may have."""
    known = {v for v in context.values() if v}
    for e in evidence:
        for v in e.params.values():
            if isinstance(v, str):
                known.add(v)
        for v in e.features.values():
            if isinstance(v, str):  # features may join several names: "node-a, node-b"
                known |= {part.strip() for part in v.split(",") if part.strip()}
        known |= _names_in(e.data)
    return known


def _culprit(ans: CulpritAnswer | None, known: set[str]) -> ObjectRef | None:
    if ans is None or ans.name not in known:
        return None
    ns = ans.namespace if ans.kind in _NAMESPACED else None
    if ns is not None and ns not in known:
        return None
    return ObjectRef(kind=ans.kind, name=ans.name, namespace=ns)


def _hypothesis(ans: HypothesisAnswer, culprit: ObjectRef | None, candidates: dict[str, Hypothesis],
                evidence_ids: set[str], taken: set[str]) -> Hypothesis | None:
    """Map an answer onto a runbook candidate when it is one (so runbook remediations still apply)."""
    same = [h for h in candidates.values() if h.category == ans.category]
    if ans.candidate_id in candidates and candidates[ans.candidate_id].category == ans.category:
        base: Hypothesis | None = candidates[ans.candidate_id]
    else:
        base = same[0] if len(same) == 1 else None
    hid = base.id if base is not None else f"llm:{ans.category.value}"
    if hid in taken:
        return None  # the same hypothesis twice: keep the first (higher-ranked) reading
    supporting = [redact(prompts.clip(s, SENTENCE_CHARS)) for s in ans.supporting]
    against = [redact(prompts.clip(s, SENTENCE_CHARS)) for s in ans.against]
    cited = [m for s in (*supporting, *against) for m in _CITATION.findall(s) if m in evidence_ids]
    return Hypothesis(id=hid, category=ans.category, title=redact(prompts.clip(ans.title, 300)),
                      confidence=round(ans.confidence, 3), culprit=culprit, supporting=supporting, against=against,
                      missing=list(base.missing) if base is not None else [],
                      evidence_ids=list(dict.fromkeys(cited)))


def _json_in_text(text: str) -> str:
    """The JSON object in a text reply (models sometimes wrap it in a code fence)."""
    start, end = text.find("{"), text.rfind("}")
    return text[start:end + 1] if 0 <= start < end else text

