"""Policy: the rules that say whether a change may run, needs approval, or is denied.

Pure functions over plain data. This package imports nothing else from the agent and nothing from
tools, so it can be reasoned about (and tested table-style) on its own.
"""
