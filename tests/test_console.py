"""What reaches the console (harness.ui.console): warnings and a tool's own lines by default, every INFO
line with verbose; the root logger stays at INFO so a run's log file still gets everything."""
from __future__ import annotations

import logging

import pytest

from harness.ui import console


@pytest.fixture
def root_handlers():
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    yield
    for h in root.handlers[:]:
        if h not in before:
            root.removeHandler(h)
    root.setLevel(level)
    console.libraries(True)  # transformers' default: bars on


@pytest.mark.parametrize("verbose", [False, True])
def test_the_console_shows_the_tools_lines_and_warnings_and_verbose_shows_all(verbose, capsys, root_handlers):
    console.setup(verbose, announce=("harness.study",))
    logging.getLogger("harness.study").info("[1/3] lora")
    logging.getLogger("harness.pipeline.train").info("step 10/30 loss 2.5")
    logging.getLogger("harness.pipeline.train").warning("loss spike")
    out = capsys.readouterr().out
    assert "[1/3] lora" in out and "loss spike" in out
    assert ("step 10/30" in out) == verbose
    assert logging.getLogger().getEffectiveLevel() == logging.INFO  # the run's log file still gets INFO


def test_verbose_lowers_hydras_console_handler(root_handlers):
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING)  # as conf/hydra/job_logging/harness.yaml sets it
    logging.getLogger().addHandler(handler)
    console.show_info(False)
    assert handler.level == logging.WARNING
    console.show_info(True)
    assert handler.level == logging.INFO


def test_a_librarys_repeated_warning_shows_once_and_the_harnesss_own_every_time(capsys, root_handlers):
    console.setup(False)
    for _ in range(3):
        logging.getLogger("bitsandbytes.autograd._functions").warning("MatMul8bitLt: inputs will be cast")
        logging.getLogger("harness.pipeline.train").warning("loss spike")
    logging.getLogger("bitsandbytes.autograd._functions").warning("another message")
    out = capsys.readouterr().out
    assert out.count("MatMul8bitLt") == 1 and out.count("loss spike") == 3 and "another message" in out
