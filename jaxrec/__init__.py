"""jaxrec: training and studying softmax retrieval models for recommendation in JAX."""

__version__ = "0.1.0"
