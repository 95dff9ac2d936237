"""One module per broker adapter, each defining ``HARNESS`` (see ../harness.py)."""
