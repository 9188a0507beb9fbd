"""Finance: per-tenant usage and estimated cost, by tool and day, for one month.

report.py   summarize / estimate_cost / render (table, CSV, JSON): pure functions over usage rows
The report is served by `GET /admin/usage` (tollway.admin) and `tollway usage report` (tollway.cli).
"""
