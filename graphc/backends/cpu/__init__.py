"""The cpu and parallel targets: Numba @njit kernels, each a cached module of its own, and one driver per program."""
