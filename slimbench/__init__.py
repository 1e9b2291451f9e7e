"""slimbench: compress fine-tuned transformer checkpoints and measure every variant honestly.

The four parts live in subpackages: optimize (steps), kernels (Triton), bench (harness), reports.
"""

__version__ = "0.1.0"


class SlimbenchError(Exception):
    """An error meant for a person: the CLI prints its message on one line and exits with code 2."""


class RecipeError(SlimbenchError):
    """A recipe names an unknown step, an unknown field, or a value outside what a step allows."""
