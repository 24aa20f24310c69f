"""The Slack bot of `opsagent serve`: incident threads, questions, Approve / Reject buttons, `/ops`."""
