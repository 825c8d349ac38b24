"""The accepted names of the device and precision choices (no torch import: the CLI parser reads them)."""

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
