"""What the harness's commands show on the console. By default: warnings, errors and each tool's
own lines (a sweep's or a study's line per run, a bench's table); library progress bars (weight
loading, shard writing) stay off. Everything logged at INFO still reaches each run's log file
(harness.pipeline.runner.run_log), which is why the root logger stays at INFO. `verbose` brings it all back
to the console: `python -m harness verbose=true`, `python -m harness.study -v`, `--verbose` elsewhere.
"""
from __future__ import annotations

import logging
import sys


class LibraryWarningsOnce(logging.Filter):
    """On the console, a library's warning once per message: bitsandbytes warns on every 8-bit matmul
    (a QLoRA-8 run printed 27,000 identical lines). The harness's own lines always pass, and the
    run's log file, which has no such filter, keeps every repeat."""

    def __init__(self):
        super().__init__()
        self.seen: set[tuple[str, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".", 1)[0] in ("harness", "__main__"):
            return True
        key = (record.name, str(record.msg))
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


def libraries(verbose: bool) -> None:
    """transformers' progress bars on or off (the GGUF conversion, once per model, keeps its bar)."""
    from transformers.utils import logging as hf_logging
    if verbose:
        hf_logging.enable_progress_bar()
    else:
        hf_logging.disable_progress_bar()


def setup(verbose: bool = False, announce: tuple[str, ...] = ()) -> None:
    """For the commands Hydra does not configure: one console handler showing warnings and errors,
    and INFO from the loggers in `announce` (the tool's own progress), everything with `verbose`."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s] %(message)s", "%H:%M:%S"))
    if not verbose:
        handler.addFilter(lambda r: r.levelno >= logging.WARNING or r.name in announce)
        handler.addFilter(LibraryWarningsOnce())
    root.addHandler(handler)
    libraries(verbose)


def show_info(verbose: bool) -> None:
    """Under Hydra (conf/hydra/job_logging/harness.yaml: the console at WARNING): `verbose` lowers the
    console handlers to INFO."""
    libraries(verbose)
    if verbose:
        for h in logging.getLogger().handlers:
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                h.setLevel(logging.INFO)
