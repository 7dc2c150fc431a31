"""Regression gate: run a baseline's sweep with the code in front of us and compare, exit 1 when
something got worse (harness.regress.cli); the comparison itself is harness.regress.compare."""
