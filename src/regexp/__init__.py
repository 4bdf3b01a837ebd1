"""regexp: run the regularization lessons of a PyTorch course and see them in TensorBoard."""

import os

__version__ = "0.1.0"

# Intel MKL's strict reproducible mode, read at its first call (so before any product runs):
# without it, MKL rounds a matrix product by where its output lies in memory, and a member
# of a population, whose output is a slice of the members' one, would round apart from its
# lone run. Strict mode costs nothing measurable here (docs/exact.md). A user's own setting
# is kept.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
