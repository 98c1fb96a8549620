"""Code generation backends (cpu/parallel Numba, CUDA) and the module cache."""
