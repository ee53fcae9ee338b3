"""TIR kernel generators (installed as ``tvm_freq.kernels``)."""
