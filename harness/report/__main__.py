"""python -m harness.report: see harness.report.build."""
from harness.report.build import main

raise SystemExit(main())
