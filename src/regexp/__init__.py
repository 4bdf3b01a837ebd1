"""regexp: run the regularization lessons of a PyTorch course and see them in TensorBoard."""

__version__ = "0.1.0"

from regexp import process  # noqa: E402 (before torch's first product, anywhere)

process.reproducible_products()
