"""What each command does, as library functions the CLI calls: `train` (the run in phases), `prepare`, `fix`, the
demos and their data, and the HTML pages of reports. Library layers never import recipes (a test holds it).
"""
