"""The machine doors: direct uploads, storage events, Cloud Tasks, one converter, the backfill.

Nothing here imports ``imaging.web``: the HTTP ends of these doors (web/uploads.py,
web/deliveries.py) are thin, and ``imaging.services`` builds every object they use.
"""
