"""report.html: a self-contained page on a run, and its plots."""
