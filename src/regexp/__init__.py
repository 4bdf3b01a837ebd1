"""regexp: run the regularization lessons of a PyTorch course and see them in TensorBoard."""

__version__ = "0.1.0"
