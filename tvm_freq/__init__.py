"""tvm_freq: frequency-domain pruning of pointwise convolutions, compiled with Apache TVM."""

__version__ = "0.1.0"
