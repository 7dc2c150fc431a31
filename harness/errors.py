"""Errors a user can fix. Each carries one message that names the fix; the CLI prints it and exits 2."""


class HarnessError(Exception):
    """Base class: bad input or environment, reported without a traceback."""


class ConfigError(HarnessError):
    pass


class DataError(HarnessError):
    pass


class ModelError(HarnessError):
    pass


class Diverged(Exception):
    """The training loss became NaN or infinite (recorded as status 'diverged')."""

    def __init__(self, step: int, loss: float):
        super().__init__(f"loss became {loss} at step {step}")
        self.step = step
        self.loss = loss
