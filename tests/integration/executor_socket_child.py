"""Run the executor process (as `opsagent executor serve` does) with a chaos point: it SIGKILLs itself there.

`python -m tests.integration.executor_socket_child STATUS_JSON CONFIG STATE_DIR CRASH_POINT`
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from agent.app import build_app
from agent.change.executor.service import serve_forever
from agent.entry.commands.common import settings_for


def main() -> None:
    status = json.loads(Path(sys.argv[1]).read_text())
    settings = settings_for(Path(sys.argv[2]), status, state_dir=sys.argv[3])
    assert settings.executor.socket is not None
    ex = build_app(settings).executor()
    ex.crash_after = sys.argv[4]
    serve_forever(ex, settings.executor.socket, max_request_bytes=settings.executor.max_request_bytes, group=False)


if __name__ == "__main__":
    main()
