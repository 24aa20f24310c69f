"""CLI command groups. Entry points: nothing imports them but `agent.entry.cli`."""
