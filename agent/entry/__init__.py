"""Entry points: the CLI (`opsagent`), its commands, the HTTP server, the Slack bot and the demo.

They build settings, configure logging and call down. Nothing imports an entry point. The sandbox
(`deploy.sandbox`) and the eval harness (`evals`) are imported only inside the commands that use them.
"""
