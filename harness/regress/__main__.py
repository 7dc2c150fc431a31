"""python -m harness.regress: see harness.regress.cli."""
from harness.regress.cli import main

raise SystemExit(main())
