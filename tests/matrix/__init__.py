"""The conformance matrix: every model family under every strategy, one short run per cell (tests/test_conformance.py)."""
