"""User-facing errors (reported as one line on stderr with exit code 2). Torch-free on purpose,
so the CLI can reject bad input before paying for the torch import."""


class ConfigError(ValueError):
    """A config file, key or value is wrong."""


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt or does not match the configuration."""


class GameError(ValueError):
    """A game name, game option or user game module is not usable."""


class LearnerError(RuntimeError):
    """The background learner failed or died; the run stops with this one-line reason."""
