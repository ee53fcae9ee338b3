"""Training-memory measurement for SpecNet and its spatial twins.

Three numbers, all for one training step (forward, loss, backward, optimizer step):

* **Saved-for-backward bytes** (:class:`SavedTensorCounter`): every tensor autograd keeps
  for backward passes through ``torch.autograd.graph.saved_tensors_hooks``; each distinct
  storage is counted once at its full size (``untyped_storage().nbytes()``), so a tensor
  saved by two ops, or a view of a saved tensor, is not double counted. Storages of the
  model's parameters and buffers are reported apart (``parameter_bytes``); everything
  else, including the input batch the first conv keeps, is ``activation_bytes``. A
  compact SpecNet map is saved as its kept ``values`` plus its packed bitmask, so its
  true compressed size is what gets counted. This is deterministic and independent of
  the allocator.
* **Peak resident memory** (:func:`peak_rss_step`): run in a fresh Python process
  (``python -m tvm_freq.specnet.memory peak CONFIG``) so that nothing else lives in the heap.
  After one warm-up step (lazy FFT plans, thread pools, autograd engine), the kernel's
  high-water mark is reset (``/proc/self/clear_refs``) and the next step's
  ``VmHWM - VmRSS_before`` is reported: the extra resident memory the step needed,
  activations plus gradients plus transient buffers. glibc is told to serve blocks of
  64 KiB and more with ``mmap`` (``MALLOC_MMAP_THRESHOLD_``) so freed tensors leave the
  resident set. Where ``clear_refs`` cannot be written it falls back to ``ru_maxrss``
  without the warm-up (reported as ``method``). Python-level tools such as
  ``tracemalloc`` do not see torch's allocations, hence the process-level measure.
* **Overall peak** (``overall_peak_bytes`` of :func:`peak_rss_step` with an
  ``optimizer``), the training process's memory as the paper reports it: the model's
  parameters and buffers plus the optimizer state (counted exactly, tensor by tensor)
  plus the step's peak above (which holds the gradients: they are freed before the step,
  ``zero_grad(set_to_none=True)``, and allocated in backward). The optimizer takes its
  step inside the measured step, after one warm-up step that creates its state. What it
  leaves out is the same for both twins: the Python/PyTorch runtime and the input batch.

:func:`memory_ratios` gives them as ratios to the spatial twin over a range of
thresholds ``beta``; ``python -m tvm_freq.specnet.memory ratios --model vgg16 ...`` prints them.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .init import calibrate_, set_workspace
from .layers import spectral_layers
from .models import get_specnet

__all__ = [
    "SavedTensorStats",
    "SavedTensorCounter",
    "saved_tensor_bytes",
    "peak_rss_step",
    "MemoryRatio",
    "memory_ratios",
    "DEFAULT_BETAS",
    "OPTIMIZERS",
    "make_optimizer",
    "tensor_bytes",
]

DEFAULT_BETAS: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5)
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")


@dataclass
class SavedTensorStats:
    """What autograd saved for backward in one forward pass.

    Attributes
    ----------
    activation_bytes : int
        Bytes of distinct non-parameter storages (activations, masks, the input).
    parameter_bytes : int
        Bytes of distinct parameter/buffer storages that were saved.
    num_storages : int
        Distinct storages saved.
    by_dtype : dict of str to int
        ``activation_bytes`` split by dtype.
    """

    activation_bytes: int
    parameter_bytes: int
    num_storages: int
    by_dtype: dict[str, int] = field(default_factory=dict)


class SavedTensorCounter:
    """Context manager counting the storages autograd saves, each once.

    Parameters
    ----------
    model : nn.Module, optional
        Its parameters and buffers are counted as ``parameter_bytes``.

    Examples
    --------
    >>> with SavedTensorCounter(model) as counter:
    ...     loss = loss_fn(model(x), y)
    >>> counter.stats().activation_bytes
    """

    def __init__(self, model: nn.Module | None = None):
        self._params: set[int] = set()
        if model is not None:
            for t in list(model.parameters()) + list(model.buffers()):
                self._params.add(t.untyped_storage().data_ptr())
        self._seen: dict[int, tuple[int, str, bool]] = {}
        self._ctx: Any = None

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        key = st.data_ptr()
        # Saved tensors stay alive until backward, so live storages have distinct addresses.
        if key not in self._seen and st.nbytes() > 0:
            self._seen[key] = (st.nbytes(), str(t.dtype).replace("torch.", ""), key in self._params)
        return t

    def __enter__(self) -> SavedTensorCounter:
        self._seen.clear()
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)

    def stats(self) -> SavedTensorStats:
        """Summarise what was saved inside the ``with`` block.

        Returns
        -------
        SavedTensorStats
            Byte counts.
        """
        act = par = 0
        by_dtype: dict[str, int] = {}
        for nbytes, dtype, is_param in self._seen.values():
            if is_param:
                par += nbytes
            else:
                act += nbytes
                by_dtype[dtype] = by_dtype.get(dtype, 0) + nbytes
        return SavedTensorStats(act, par, len(self._seen), by_dtype)


def saved_tensor_bytes(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    *,
    backward: bool = True,
) -> SavedTensorStats:
    """Count the bytes saved for backward by one training step.

    Parameters
    ----------
    model : nn.Module
        Model (in training mode for a training step).
    x : torch.Tensor
        Input batch.
    y : torch.Tensor, optional
        Targets; default all zeros.
    loss_fn : callable, optional
        Default cross-entropy.
    backward : bool
        Also run backward (frees the graph; checks the step really works).

    Returns
    -------
    SavedTensorStats
        Counts for the forward pass (the saved tensors all exist at the end of forward).
    """
    loss_fn = loss_fn or F.cross_entropy
    with SavedTensorCounter(model) as counter:
        out = model(x)
        loss = loss_fn(out, y if y is not None else torch.zeros(len(x), dtype=torch.long))
    if backward:
        loss.backward()
        model.zero_grad(set_to_none=True)
    return counter.stats()


# --------------------------------------------------------------------------- peak RSS


def _proc_status_kb(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def make_optimizer(params: Iterable[nn.Parameter], name: str, lr: float) -> torch.optim.Optimizer:
    """The optimizers the memory measurement and the benchmark use.

    Parameters
    ----------
    params : iterable of nn.Parameter
        Parameters to optimise.
    name : {"sgd", "adam"}
        ``"sgd"`` is the paper's (momentum 0.95, one state tensor per parameter);
        ``"adam"`` keeps two.
    lr : float
        Learning rate.

    Returns
    -------
    torch.optim.Optimizer
        The optimizer.
    """
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.95)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def tensor_bytes(tensors: Iterable[Any]) -> int:
    """Bytes of the distinct storages among ``tensors`` (non-tensors are skipped).

    Parameters
    ----------
    tensors : iterable
        Tensors (e.g. parameters, or the values of an optimizer's state dicts).

    Returns
    -------
    int
        Sum of the storage sizes, each storage once.
    """
    seen: dict[int, int] = {}
    for t in tensors:
        if isinstance(t, torch.Tensor):
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())


def _peak_worker(config: Mapping[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(int(config.get("threads", 1)))
    model = get_specnet(
        config["name"], spectral=config["spectral"], beta=config["beta"], width=config["width"],
        in_channels=config["in_channels"], num_classes=config["num_classes"],
        **config.get("model_kwargs", {}),
    )  # fmt: skip
    if config.get("state"):
        model.load_state_dict(torch.load(config["state"], weights_only=True))
    if config.get("workspace_bytes") is not None:
        set_workspace(model, config["workspace_bytes"])
    data = torch.load(config["data"], weights_only=True)
    x, y = data["x"], data["y"]
    model.train()
    # lr 0: the state is created and updated, the weights (so the kept entries) stay.
    opt = make_optimizer(model.parameters(), config["optimizer"], 0.0) if config.get(
        "optimizer") else None  # fmt: skip

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        if opt is not None:
            opt.step()
        model.zero_grad(set_to_none=True)

    can_reset = _reset_hwm() and _proc_status_kb("VmHWM") is not None
    if can_reset:
        step()
        gc.collect()
        before = _proc_status_kb("VmRSS")
        _reset_hwm()
        step()
        peak = _proc_status_kb("VmHWM")
        method = "VmHWM after clear_refs, second step"
    else:
        gc.collect()
        before = _proc_status_kb("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        step()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        method = "ru_maxrss, first step"
    res = {"peak_bytes": max(0, peak - before) * 1024, "rss_before_bytes": before * 1024,
           "method": method, "optimizer": config.get("optimizer")}  # fmt: skip
    res["param_bytes"] = tensor_bytes(list(model.parameters()) + list(model.buffers()))
    res["grad_bytes"] = tensor_bytes(p for p in model.parameters() if p.requires_grad)
    if opt is not None:
        state = [v for st in opt.state.values() for v in st.values()]
        res["optimizer_state_bytes"] = tensor_bytes(state)
        res["overall_peak_bytes"] = (res["param_bytes"] + res["optimizer_state_bytes"]
                                     + res["peak_bytes"])  # fmt: skip
    return res


def peak_rss_step(
    name: str,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    spectral: bool,
    beta: float = 1.0,
    width: float = 1.0,
    num_classes: int = 10,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    threads: int = 1,
    model_kwargs: Mapping[str, Any] | None = None,
    workspace_bytes: int | None = None,
    optimizer: str | None = None,
    timeout: float = 600.0,
) -> dict[str, Any]:
    """Peak extra resident memory of one training step, measured in a fresh process.

    Parameters
    ----------
    name : str
        SpecNet model name (:func:`tvm_freq.specnet.get_specnet`).
    x, y : torch.Tensor
        Batch and labels.
    spectral : bool
        SpecNet or spatial twin.
    beta, width, num_classes : float, float, int
        Model options.
    state_dict : mapping, optional
        Weights to load (default: the seed-0 initialisation).
    threads : int
        Torch intra-op threads in the worker.
    model_kwargs : mapping, optional
        Extra constructor arguments.
    workspace_bytes : int, optional
        ``SpectralConv2d.workspace_bytes`` of every spectral block (default: the
        library default); the transient peak grows with it.
    optimizer : {"sgd", "adam"}, optional
        Take an optimizer step in each step (:func:`make_optimizer`) and report the
        overall peak. ``None``: forward and backward only.
    timeout : float
        Seconds before the worker is killed.

    Returns
    -------
    dict
        ``peak_bytes`` (extra resident bytes at the step's peak, gradients included),
        ``rss_before_bytes``, the ``method`` used, ``param_bytes`` (parameters and
        buffers) and ``grad_bytes``; with an ``optimizer`` also
        ``optimizer_state_bytes`` and ``overall_peak_bytes`` (parameters + optimizer
        state + step peak: the training process's memory, see the module docstring).
    """
    if workspace_bytes is not None and workspace_bytes < 1:
        raise ValueError(f"workspace_bytes must be at least 1, got {workspace_bytes}")
    if optimizer is not None and optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS} or None, got {optimizer!r}")
    with tempfile.TemporaryDirectory(prefix="tvm_freq_mem_") as tmp:
        tmpdir = Path(tmp)
        torch.save({"x": x, "y": y}, tmpdir / "data.pt")
        state = None
        if state_dict is not None:
            state = str(tmpdir / "state.pt")
            torch.save(dict(state_dict), state)
        config = dict(
            name=name, spectral=spectral, beta=beta, width=width, in_channels=int(x.shape[1]),
            num_classes=num_classes, state=state, data=str(tmpdir / "data.pt"), threads=threads,
            model_kwargs=dict(model_kwargs or {}), workspace_bytes=workspace_bytes,
            optimizer=optimizer,
        )  # fmt: skip
        cfg_path = tmpdir / "config.json"
        cfg_path.write_text(json.dumps(config))
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
        proc = subprocess.run(
            [sys.executable, "-m", "tvm_freq.specnet.memory", "peak", str(cfg_path)],
            capture_output=True, text=True, env=env, timeout=timeout, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"peak-memory worker failed:\n{proc.stderr[-2000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- ratios


@dataclass
class MemoryRatio:
    """SpecNet memory relative to its spatial twin at one threshold.

    Attributes
    ----------
    beta : float
        Threshold.
    saved_bytes, spatial_saved_bytes : int
        Activation bytes saved for backward (SpecNet, twin).
    saved_ratio : float
        ``saved_bytes / spatial_saved_bytes``.
    density : float
        Mean kept fraction of the unique spectral entries over the blocks.
    peak_bytes, spatial_peak_bytes : int or None
        Peak extra resident bytes of a training step (``None`` if not measured).
    peak_ratio : float or None
        ``peak_bytes / spatial_peak_bytes``.
    overall_peak_bytes, spatial_overall_peak_bytes : int or None
        Parameters + optimizer state + step peak (``None`` if not measured).
    overall_ratio : float or None
        ``overall_peak_bytes / spatial_overall_peak_bytes``: the paper's overall memory.
    """

    beta: float
    saved_bytes: int
    spatial_saved_bytes: int
    saved_ratio: float
    density: float
    peak_bytes: int | None = None
    spatial_peak_bytes: int | None = None
    peak_ratio: float | None = None
    overall_peak_bytes: int | None = None
    spatial_overall_peak_bytes: int | None = None
    overall_ratio: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-friendly dict.

        Returns
        -------
        dict
            Field values.
        """
        return asdict(self)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _state_for(states: Any, beta: float) -> Mapping[str, torch.Tensor] | None:
    # A state dict has str keys; a per-threshold mapping has float keys.
    if not states:
        return None
    if all(isinstance(k, (int, float)) for k in states):
        return states.get(beta)
    return states


def memory_ratios(
    name: str,
    x: torch.Tensor,
    y: torch.Tensor,
    betas: Iterable[float] = DEFAULT_BETAS,
    *,
    width: float = 1.0,
    num_classes: int = 10,
    spectral_states: Any = None,
    spatial_state: Mapping[str, torch.Tensor] | None = None,
    calibrate: bool = True,
    peak: bool = True,
    threads: int = 1,
    model_kwargs: Mapping[str, Any] | None = None,
    workspace_bytes: int | None = None,
    optimizer: str | None = "sgd",
) -> list[MemoryRatio]:
    """SpecNet training memory over thresholds, as ratios to the spatial twin.

    Parameters
    ----------
    name : str
        SpecNet model name.
    x, y : torch.Tensor
        The batch of the measured training step (``x`` fixes ``in_channels``).
    betas : iterable of float
        Thresholds (default 0.5 to 1.5).
    width, num_classes : float, int
        Model options.
    spectral_states : state dict or {beta: state dict}, optional
        Trained SpecNet weights (one for all thresholds, or one per threshold). Default:
        the seed-0 initialisation, calibrated on ``x`` when ``calibrate``.
    spatial_state : state dict, optional
        Trained twin weights (same default).
    calibrate : bool
        Apply :func:`tvm_freq.specnet.calibrate_` to fresh (untrained) models.
    peak : bool
        Also measure peak RSS in fresh subprocesses (slower).
    threads : int
        Torch threads for the peak workers.
    model_kwargs : mapping, optional
        Extra constructor arguments (e.g. ``activation="spatial_relu"``).
    workspace_bytes : int, optional
        Working memory of each spectral block in the peak workers (default: the library
        default). Saved-for-backward bytes do not depend on it.
    optimizer : {"sgd", "adam"} or None
        Optimizer of the measured steps (default the paper's SGD with momentum), for the
        overall peak; ``None`` measures forward and backward only.

    Returns
    -------
    list of MemoryRatio
        One per threshold.
    """
    kw = dict(model_kwargs or {})
    in_ch = int(x.shape[1])

    def build(spectral: bool, beta: float, state: Mapping[str, torch.Tensor] | None):
        m = get_specnet(name, spectral=spectral, beta=beta, width=width, in_channels=in_ch,
                        num_classes=num_classes, **kw)  # fmt: skip
        if state is not None:
            m.load_state_dict(state)
        elif calibrate:
            calibrate_(m, x)
        return m.train()

    spatial = build(False, 1.0, spatial_state)
    base_saved = saved_tensor_bytes(spatial, x, y).activation_bytes
    base: dict[str, Any] = {}
    if peak:
        base = peak_rss_step(name, x, y, spectral=False, width=width, num_classes=num_classes,
                             state_dict=spatial.state_dict(), threads=threads, model_kwargs=kw,
                             optimizer=optimizer)  # fmt: skip
    out = []
    for beta in betas:
        model = build(True, float(beta), _state_for(spectral_states, float(beta)))
        saved = saved_tensor_bytes(model, x, y).activation_bytes
        dens = [m.last_density for _, m in spectral_layers(model) if m.last_density is not None]
        r = MemoryRatio(float(beta), saved, base_saved, saved / base_saved,
                        sum(dens) / max(1, len(dens)))  # fmt: skip
        if peak:
            p = peak_rss_step(name, x, y, spectral=True, beta=float(beta), width=width,
                              num_classes=num_classes, state_dict=model.state_dict(),
                              threads=threads, model_kwargs=kw, workspace_bytes=workspace_bytes,
                              optimizer=optimizer)  # fmt: skip
            r.peak_bytes, r.spatial_peak_bytes = p["peak_bytes"], base["peak_bytes"]
            r.peak_ratio = _ratio(r.peak_bytes, r.spatial_peak_bytes)
            r.overall_peak_bytes = p.get("overall_peak_bytes")
            r.spatial_overall_peak_bytes = base.get("overall_peak_bytes")
            r.overall_ratio = _ratio(r.overall_peak_bytes, r.spatial_overall_peak_bytes)
        out.append(r)
    return out


# --------------------------------------------------------------------------- CLI


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    desc = "Training-memory measurement for SpecNet and its spatial twins."
    ap = argparse.ArgumentParser(prog="python -m tvm_freq.specnet.memory", description=desc)
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("peak", help="internal: peak-RSS worker (reads a JSON config)")
    w.add_argument("config")
    r = sub.add_parser("ratios", help="SpecNet/twin memory ratios over beta (random batch)")
    r.add_argument("--model", default="vgg16")
    r.add_argument("--width", type=float, default=1.0)
    r.add_argument("--batch", type=int, default=32)
    r.add_argument("--in-channels", type=int, default=3)
    r.add_argument("--num-classes", type=int, default=10)
    r.add_argument("--betas", type=float, nargs="+", default=list(DEFAULT_BETAS))
    r.add_argument("--no-peak", action="store_true")
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--activation", default="spectral_tanh",
                   help="spectral_tanh (the paper's) or spatial_relu (beyond the paper)")
    r.add_argument("--optimizer", choices=[*OPTIMIZERS, "none"], default="sgd",
                   help="optimizer of the measured step, for the overall peak")
    r.add_argument("--workspace-mb", type=float, default=None,
                   help="working memory of each spectral block (default: the library's)")
    args = ap.parse_args(argv)
    if getattr(args, "workspace_mb", None) is not None and args.workspace_mb <= 0:
        ap.error("--workspace-mb must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m tvm_freq.specnet.memory``).

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status.
    """
    args = _parse(argv)
    if args.cmd == "peak":
        result = _peak_worker(json.loads(Path(args.config).read_text()))
        print(json.dumps(result))
        return 0
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch, args.in_channels, 32, 32, generator=g)
    y = torch.randint(0, args.num_classes, (args.batch,), generator=g)
    ws = None if args.workspace_mb is None else int(args.workspace_mb * 2**20)
    rows = memory_ratios(args.model, x, y, args.betas, width=args.width,
                         num_classes=args.num_classes, peak=not args.no_peak,
                         threads=args.threads, workspace_bytes=ws,
                         model_kwargs={"activation": args.activation},
                         optimizer=None if args.optimizer == "none" else args.optimizer,
                         )  # fmt: skip
    print(json.dumps([r.as_dict() for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
