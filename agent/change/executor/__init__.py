"""The executor: change requests → policy → approvals → exactly-once execution (`core`)."""
