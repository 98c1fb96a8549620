"""The cuda target: numba.cuda kernels, cuBLAS GEMMs through CuPy, a device-resident store."""
