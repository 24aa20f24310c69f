"""Resume one change's flow in a child process that the test can SIGKILL at a named point.

`python -m tests.integration.flow_child STATUS_JSON CONFIG STATE_DIR CHANGE_ID APPROVER CRASH_POINT`
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from agent.app import build_app
from agent.change.executor.core import Executor
from agent.change.flow import ChangeFlow
from agent.entry.commands.common import settings_for
from tools.k8s_write.client import K8sWriteClient, K8sWriteSettings


def main() -> None:
    status = json.loads(Path(sys.argv[1]).read_text())
    config, state, change, approver, crash = Path(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
    app = build_app(settings_for(config, status, state_dir=state))
    write = K8sWriteClient(K8sWriteSettings(kubeconfig=Path(status["kubeconfigs"]["executor"])))
    ex = Executor(app.ledger, app.policy, write, app.audit, cluster=app.settings.kubernetes.cluster,
                  owner="executor:child", crash_after=crash)
    flow = ChangeFlow(ex, app.checkpointer, verify=app.flow().verify)
    asyncio.run(flow.decide(change, approver, "approve", via="cli"))


if __name__ == "__main__":
    main()
