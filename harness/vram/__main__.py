"""python -m harness.vram: see harness/vram/cli.py."""
from harness.vram.cli import main

raise SystemExit(main())
