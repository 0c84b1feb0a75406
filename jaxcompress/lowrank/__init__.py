"""Low-rank factorization of kernels by truncated SVD."""
