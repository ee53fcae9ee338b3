"""SpecNet (Guan et al.): convolution and activation in the FFT domain, stored sparsely.

Representation
--------------
A spectral feature map (:class:`SpecMap`) is the orthonormal ``rfft2`` of a real
``support x support`` map zero-padded at the bottom/right to a ``grid x grid`` FFT grid,
so it has ``grid x (grid // 2 + 1)`` complex entries per channel (conjugate symmetry
halves the last axis). Between blocks it travels *compactly*: the complex entries
that survived the threshold (``values``, row-major over ``[B, C, grid, grid//2+1]``)
plus a packed bitmask of where they are (``bits``, one bit per entry). The half spectrum
still repeats itself in column 0 and (even grids) the Nyquist column, where row ``r`` is
the conjugate of row ``G - r``; those redundant entries (:func:`redundant_mask`, about
``G`` of the ``G (G/2 + 1)`` per channel, and low frequencies, so kept more often than
most) are never stored and are rebuilt on densifying (:func:`hermitian_fill`).

Conv block (Algorithm 1 of the paper, :class:`SpectralConv2d`)
---------------------------------------------------------------
For an input supported on ``M x M`` and a ``k x k`` kernel with padding ``p`` the block

1. builds the input spectrum on the linear-convolution grid ``G = M + k - 1`` (rounded
   up to a multiple of the stride). A spatial input is zero-padded and ``rfft2``-ed; a
   spectral input is *not* re-transformed from scratch but cropped (see below);
2. multiplies by the kernel spectrum and sums over input channels: a per-frequency
   complex GEMM ``Y[b, o, f] = sum_i X[b, i, f] K[o, i, f]``. ``K`` is the unnormalised
   ``rfft2`` of the (flipped, centred) spatial kernel, which stays the stored parameter
   (the paper keeps kernels spatial too). With ``G >= M + p`` there is no wrap-around,
   so ``irfft2(Y)`` restricted to ``[0, M + 2p - k + 1)^2`` is exactly ``nn.Conv2d``
   with the same padding; the rest of the grid holds the halo of the full linear
   convolution;
3. stride ``s``: decimation in frequency (the spectrum of ``y[::s, ::s]`` is the mean
   of the ``s x s`` spectral replicas), giving grid ``G / s``;
4. crops the halo of the linear convolution: the output is projected onto its own support
   ``M' x M'`` and stored on that grid, ``rfft2(irfft2(Y)[:M', :M'])`` (storing the halo
   would cost entries that every consumer crops away);
5. adds the bias (a constant map is a DC term), thresholds (``|Y| <= beta -> 0``) and
   applies the spectral tanh ``f(a + ib) = tanh(a) + i tanh(b)``, which keeps zeros at
   zero (sparsity) and conjugate symmetry (the inverse transform stays real).

Beyond the paper: ``activation="spatial_relu"``
-----------------------------------------------
The paper's activation (``"spectral_tanh"``, the default) acts frequency by frequency, so
between pools each frequency is an odd function of roughly its own coefficient. The
variant ``SpectralConv2d(..., activation="spatial_relu")`` (``get_specnet(...,
activation="spatial_relu")``) puts a ReLU in space inside the ``irfft2 -> crop ->
rfft2`` round trip that the halo crop (step 4) already makes, adds the bias there, and
thresholds the spectrum of the activated map, which is what it stores; no FFT is added
in a padded or strided block, one pair in a 1x1 unpadded block (no round trip there).
Backward recomputes the ReLU mask from the stored input. At ``beta = 0`` a Spec-network
with it computes exactly its ReLU twin.

Bounded spatial size
--------------------
A spectral input lives on its own support grid ``M x M``; the next block re-grids it onto
its linear-convolution grid, ``X = rfft2(irfft2(Z), s=(G, G))`` (zero padding in the
spectral domain). Crop (step 4) and re-gridding are fixed linear maps of the spectrum,
evaluated with inverse/forward FFT pairs because that is ``O(G^2 log G)`` instead of a
dense ``G^2 x G^2`` operator; backward recomputes the re-gridding from the compact input
and applies the adjoint of the crop, so no dense or spatial tensor is ever stored.
Spatial size therefore stays at the "same" convolution size. A 1x1 unpadded conv needs
neither: it runs on its input's grid (its kernel spectrum is constant: one plain GEMM).
Average pooling (:class:`AvgPool`) is done in frequency (box-filter product +
decimation) and folded lazily into the next consumer.

Storage and gradients
---------------------
:class:`SpectralConv2d` is one :class:`torch.autograd.Function`. What it saves for
backward is exactly: its compact input (the previous block's ``values`` and ``bits``,
the same tensors, so they are stored once), its compact output (``values``, ``bits``),
the spatial kernel and bias. Backward rebuilds the dense input spectrum from the
compact input (cheap, linear) and uses the stored output for the tanh derivative
(``1 - tanh^2`` from the kept values). The resulting gradient is the exact gradient of
the thresholded forward; with ``beta = 0`` nothing is dropped and it equals autograd of
the plain dense implementation (:func:`spectral_conv2d_reference`). What is approximate
for ``beta > 0`` (relative to the un-thresholded network) is:

* entries with ``|Y| <= beta`` carry zero gradient (the a.e. derivative of the hard
  threshold; no straight-through estimator), and
* the next block's input, hence its kernel gradient ``dL/dK = sum_b conj(X) dL/dY``,
  sees the dropped entries as zeros.

Dense spectra exist only transiently, for a batch chunk at a time, and the kernel
spectrum only in frequency slices (``SpectralConv2d.workspace_bytes``, default
:data:`DEFAULT_WORKSPACE_BYTES`), which bounds the block's working memory.

Scale of beta
-------------
Feature maps use the orthonormal FFT, so by Parseval a spectral entry is on the scale of
a pixel; ``beta`` is compared with ``|Y|`` before the tanh. Without batch norm the
magnitudes are set by the initialisation: :func:`calibrate_` (LSUV) rescales every
block to unit pre-activation RMS on a data batch, so that ``beta`` in ``[0.5, 1.5]`` drops
a share of the entries rather than all of them (the benchmark reports the kept share).

Spatial twins
-------------
The models are written once. ``spectral=False`` swaps :class:`SpectralConv2d` for
``nn.Conv2d`` + ReLU (or tanh); pooling (:class:`AvgPool`) and the head
(:class:`ToSpatial`) work on either representation, so the twins share parameter
names and shapes (their state dicts are interchangeable). Batch norm is removed, as
in the paper, and pooling is average pooling in both twins (max pooling has no
spectral counterpart).

Only square inputs are supported.

Modules
-------
``storage``
    :class:`SpecMap`, bitmask packing, redundant entries, :func:`hermitian_fill`.
``ops``
    Functional spectral ops: kernel spectrum, tanh, threshold, decimation, pooling,
    crop, conv grid.
``autograd``
    The block's autograd Function and :func:`spectral_conv2d_reference`.
``layers``
    :class:`SpectralConv2d`, :class:`SpectralTanh`, :class:`AvgPool`,
    :class:`ToSpatial`, :class:`ConvAct`, :func:`set_lowering`, :func:`spectral_layers`.
``lowering``
    The real-arithmetic (``torch.export``) path of the blocks.
``relax_import``
    Trained SpecNet -> Relax ``IRModule`` (imports TVM lazily).
``models``
    The Spec-networks and :func:`get_specnet`.
``init``
    :func:`calibrate_` (LSUV), :func:`set_beta`, :func:`set_workspace`.
``memory``
    Training-memory measurement (``python -m tvm_freq.specnet.memory``).

Nothing here imports TVM: ``import tvm_freq.specnet`` loads PyTorch and NumPy only.
"""

from __future__ import annotations

from .autograd import spectral_conv2d_reference
from .init import calibrate_, set_beta, set_workspace
from .layers import (
    DEFAULT_WORKSPACE_BYTES,
    AvgPool,
    ConvAct,
    SpectralConv2d,
    SpectralTanh,
    ToSpatial,
    set_lowering,
    spectral_layers,
)
from .models import SPECNET_NAMES, SpecAlexNet, SpecDenseNet, SpecLeNet, SpecVGG16, get_specnet
from .ops import (
    ACTIVATIONS,
    PAPER_ACTIVATION,
    check_activation,
    conv_grid,
    kernel_spectrum,
    spectral_avg_pool2d,
    spectral_crop,
    spectral_decimate,
    spectral_tanh,
    spectral_threshold,
)
from .storage import (
    SpecMap,
    hermitian_fill,
    pack_mask,
    redundant_mask,
    unique_entries,
    unpack_mask,
)

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_WORKSPACE_BYTES",
    "PAPER_ACTIVATION",
    "SPECNET_NAMES",
    "AvgPool",
    "ConvAct",
    "SpecAlexNet",
    "SpecDenseNet",
    "SpecLeNet",
    "SpecMap",
    "SpecVGG16",
    "SpectralConv2d",
    "SpectralTanh",
    "ToSpatial",
    "calibrate_",
    "check_activation",
    "conv_grid",
    "get_specnet",
    "hermitian_fill",
    "kernel_spectrum",
    "pack_mask",
    "redundant_mask",
    "set_beta",
    "set_lowering",
    "set_workspace",
    "spectral_avg_pool2d",
    "spectral_conv2d_reference",
    "spectral_crop",
    "spectral_decimate",
    "spectral_layers",
    "spectral_tanh",
    "spectral_threshold",
    "unique_entries",
    "unpack_mask",
]
