"""The opsagent application, laid out by what it does (docs/architecture.md draws it):

entry → app → rightsize → triage | change → guard → audit → storage → incidents → models | config | policy

Each package imports only packages below it, and `|` siblings not each other; one import-linter `layers`
contract (pyproject.toml) checks it, and fails on a module it does not place. Below the entry points
nothing imports the eval harness or the sandbox.
"""
