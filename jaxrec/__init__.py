"""jaxrec: training and studying softmax retrieval models for recommendation in JAX."""

from jaxrec import host_malloc as _host_malloc

__version__ = "0.1.0"

# With JAXREC_GLIBC_MALLOC=keep, keep XLA:CPU's freed buffers for reuse (jaxrec/host_malloc.py
# says when that helps and what it costs). It must run before the first JAX computation.
_host_malloc.apply()
