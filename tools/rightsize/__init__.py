"""Right-sizing and cost data: the price catalog and the aggregated history of serving workloads.

Reads only. The recommendation engine and the cost model that use this data live in `agent.rightsize`.
"""
