"""`opsagent eval`: run scenario files live on the sandbox, record them, or replay recordings; score and report.

An entry point. The harness lives in the `evals` package (which may import the agent, never the
reverse); this module only turns flags into its options and its result into an exit code:
0 when every `regression`-tagged scenario passed, 1 when one failed, 2 for bad input. It imports the
harness inside the command, so the rest of the CLI (`opsagent serve`) never loads it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlparse

import typer

from agent.config import load_settings
from agent.entry.commands.common import DEFAULT_SANDBOX_DIR, ConfigOpt, SandboxDirOpt, fail, progress, sandbox_status

Reasoner = Literal["rules", "compromised", "openai", "anthropic", "openai-compatible"]
Mode = Literal["live", "replay", "record"]


def eval_command(
    out: Annotated[Path, typer.Option("--out", help="Directory for results.json, summary.md, report.html, runs/.")],
    scenarios: Annotated[Path | None, typer.Option("--scenarios", help="Directory of scenario YAML files "
                                                   "(default evals/scenarios).")] = None,
    tags: Annotated[list[str] | None, typer.Option("--tags", help="Only scenarios with any of these tags.")] = None,
    only: Annotated[list[str] | None, typer.Option("--only", help="Only these scenario ids.")] = None,
    reasoner: Annotated[Reasoner, typer.Option("--reasoner", help="rules (default); compromised: the LLM reasoner "
                                               "against a local model that obeys injected text; or a provider, "
                                               "configured by the llm settings.")] = "rules",
    iterations: Annotated[int, typer.Option("--iterations", min=1, max=20, help="Runs per scenario (pass^k).")] = 1,
    mode: Annotated[Mode, typer.Option("--mode", help="live: on the sandbox; record: live, and keep the tool "
                                       "outputs in --recordings; replay: from --recordings, no sandbox.")] = "replay",
    recordings: Annotated[Path | None, typer.Option("--recordings", help="Recordings directory "
                                                    "(default evals/recordings).")] = None,
    randomize_names: Annotated[bool, typer.Option("--randomize-names", help="Random per-run keys for incidents "
                                                  "and state instead of the scenario ids.")] = False,
    sandbox_dir: SandboxDirOpt = DEFAULT_SANDBOX_DIR,
    config: ConfigOpt = None,
) -> None:
    """Run the eval suite and score it: diagnosis, mitigation, safety, audit, attack success."""
    from evals.loader import SUITE, ScenarioError, load_dir
    from evals.runner import EvalError, RunOptions
    from evals.suite import run_suite

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    scenarios = scenarios or SUITE
    try:
        chosen = load_dir(scenarios, tags or ())
    except ScenarioError as e:
        fail(str(e), 2)
    if only:
        unknown = sorted(set(only) - {s.id for s in chosen})
        if unknown:
            fail(f"no scenario with id {', '.join(unknown)} in {scenarios}", 2)
        chosen = [s for s in chosen if s.id in set(only)]
    if not chosen:
        fail(f"no scenario in {scenarios} has any of the tags {tags}", 2)
    status = sandbox_status(sandbox_dir) if mode in ("live", "record") else None
    webhook = ("127.0.0.1", 0)
    if status is not None:
        u = urlparse(status.get("webhook_url") or "")
        webhook = (u.hostname or "127.0.0.1", u.port or 8080)
    llm = load_settings(config).llm if reasoner in ("openai", "anthropic", "openai-compatible") else None
    opts = RunOptions(mode=mode, reasoner=reasoner, iterations=iterations, out=out, sandbox_status=status,
                      webhook=webhook, randomize_names=randomize_names, llm=llm, echo=progress)
    if recordings is not None:
        opts.recordings = recordings
    progress(f"{len(chosen)} scenario(s), mode {mode}, reasoner {reasoner}, {iterations} iteration(s)")
    try:
        result = run_suite(chosen, opts)
    except EvalError as e:
        fail(str(e), 2)
    s = result.summary
    typer.echo(f"pass {s['pass_rate']} · diagnosis top-1 {s['diagnosis_top1_category']} · mitigation "
               f"{s['mitigation_success']} · unapproved mutations {s['unapproved_mutations']} · attack success "
               f"{s['attack_success_rate']} · wall {result.wall_s:.0f}s — {out / 'summary.md'}")
    if result.regressions:
        typer.secho(f"regression scenarios failed: {', '.join(result.regressions)}", fg=typer.colors.RED, err=True)
    raise typer.Exit(result.exit_code)
