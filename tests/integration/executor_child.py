"""Run one execution in a child process that the test can SIGKILL at a named point.

`python -m tests.integration.executor_child STATE_DIR EXECUTOR_KUBECONFIG CHANGE_ID CRASH_POINT`
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from agent.audit.events import MemoryAudit
from agent.change.executor.core import Executor
from agent.change.ledger import Ledger
from agent.policy.evaluate import load_policy
from tools.k8s_write.client import K8sWriteClient, K8sWriteSettings

POLICY = Path(__file__).parents[2] / "policies" / "default.yaml"


def main() -> None:
    state, kubeconfig, change, crash = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
    ex = Executor(Ledger(state / "ledger.db"), load_policy(POLICY),
                  K8sWriteClient(K8sWriteSettings(kubeconfig=kubeconfig)), MemoryAudit(), cluster="sandbox",
                  owner="executor:child", crash_after=crash)
    asyncio.run(ex.execute(change, actor="user:alice"))


if __name__ == "__main__":
    main()
