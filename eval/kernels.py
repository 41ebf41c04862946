"""Which attention kernels a Qwen3.5 model runs with, so that a slow fallback is seen, not guessed.

Qwen3.5 mixes full-attention layers (``sdpa``, ``flash_attention_2``,
``eager``: whatever the loader asked for, in the config's
``_attn_implementation``) with gated-DeltaNet linear-attention layers. For the
latter, transformers (5.23) picks each function *once, when its modeling
module is imported* (``use_kernel_func_from_hub_with_fallback``): the
original package if it imports (``fla`` from fla-core for the chunked and the
recurrent gated delta rule, ``causal_conv1d`` for the short convolution),
else its reference PyTorch implementation, which is correct but several times
slower on a GPU. Hub kernels (the ``kernels`` package) would come first, but
only for a model loaded with ``use_kernels=True``, which the pod never does:
they are code fetched at run time.

The choice is read back from the decorated functions themselves (the
``implementation`` the wrapper closed over), so the report says what a forward
pass will call, not what an availability check predicts. On CUDA, linear
attention on the reference implementation is a finding (the GPU extra is
missing or its import failed): ``kernel_warning`` says so and why.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType
from typing import Any

FLA = "fla"
CAUSAL_CONV1D = "causal-conv1d"
TORCH_REFERENCE = "torch-reference"
NO_LAYERS = "none"  # the model has no layer of that kind
UNKNOWN = "unknown"  # transformers no longer decides the way this module reads

# What the pod's loader requests (eval.scoring.load_causal_lm) and transformers' own default.
DEFAULT_FULL_ATTENTION = "sdpa"
QWEN3_5_MODELING = "transformers.models.qwen3_5.modeling_qwen3_5"
# report field -> the module-level function in the modeling module that the layer calls
FUNCTIONS = {
    "linear_attention": "torch_chunk_gated_delta_rule",  # prefill / teacher-forced passes
    "linear_attention_decode": "torch_recurrent_gated_delta_rule",  # one-token generation steps
    "causal_conv1d": "causal_conv1d_fn",
    "causal_conv1d_decode": "causal_conv1d_update",
}
# what older transformers kept on each layer instance instead (``self.chunk_gated_delta_rule = ... or torch_...``)
_INSTANCE_ATTRS = {
    "linear_attention": "chunk_gated_delta_rule",
    "linear_attention_decode": "recurrent_gated_delta_rule",
    "causal_conv1d": "causal_conv1d_fn",
    "causal_conv1d_decode": "causal_conv1d_update",
}
_TOP_PACKAGE_LABELS = {"fla": FLA, "causal_conv1d": CAUSAL_CONV1D, "transformers": TORCH_REFERENCE}
_GPU_EXTRA = "pip install -c constraints.txt '.[gpu]'"


@dataclass(frozen=True)
class KernelReport:
    """The kernels one device runs a Qwen3.5 forward with; plain strings, JSON as is."""

    device: str
    full_attention: str
    linear_attention: str
    linear_attention_decode: str
    causal_conv1d: str
    causal_conv1d_decode: str
    fla_core: str | None  # installed distribution versions, None when absent
    triton: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def label_of(implementation: Callable[..., Any]) -> str:
    """The kernel family of one function, from the package that defines it."""
    top = (getattr(implementation, "__module__", None) or "").split(".")[0]
    return _TOP_PACKAGE_LABELS.get(top, top or UNKNOWN)


def implementation_of(fn: Callable[..., Any]) -> str:
    """What a function decorated by ``use_kernel_func_from_hub_with_fallback`` really calls.

    Follows ``__wrapped__`` through any outer decorators to the wrapper that
    closed over ``implementation`` and ``torch_function``; anything else (an
    undecorated function, a future transformers) is ``unknown``.
    """
    current: Any = fn
    seen: set[int] = set()
    while callable(current) and id(current) not in seen:
        seen.add(id(current))
        try:
            closed = inspect.getclosurevars(current).nonlocals
        except (TypeError, ValueError):
            closed = {}
        implementation = closed.get("implementation")
        if implementation is not None:
            return TORCH_REFERENCE if implementation is closed.get("torch_function") else label_of(implementation)
        current = getattr(current, "__wrapped__", None)
    return UNKNOWN


def _installed(distribution: str) -> str | None:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def _linear_fields(modeling: ModuleType | None, layer: Any = None) -> dict[str, str]:
    fields = {}
    for field, name in FUNCTIONS.items():
        own = getattr(layer, _INSTANCE_ATTRS[field], None) if layer is not None else None
        if callable(own):  # a decorated function again, or a plain one picked by the layer itself
            found = implementation_of(own)
            fields[field] = label_of(own) if found == UNKNOWN else found
        elif modeling is not None and callable(getattr(modeling, name, None)):
            fields[field] = implementation_of(getattr(modeling, name))
        else:
            fields[field] = UNKNOWN
    return fields


def _report(device: str, full_attention: str, fields: dict[str, str]) -> KernelReport:
    return KernelReport(
        device=device,
        full_attention=full_attention,
        **fields,
        fla_core=_installed("fla-core"),
        triton=_installed("triton"),
    )


def environment_report(device: str, full_attention: str = DEFAULT_FULL_ATTENTION) -> KernelReport:
    """What a Qwen3.5 model loaded now, on ``device``, will run (imports the modeling module; no model)."""
    try:
        modeling: ModuleType | None = importlib.import_module(QWEN3_5_MODELING)
    except ImportError:
        modeling = None
    return _report(device, full_attention, _linear_fields(modeling))


def model_report(model: Any, device: str | None = None) -> KernelReport:
    """What this loaded model runs: its config's attention, its own layers' modeling module."""
    config = model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    full = getattr(text, "_attn_implementation", None) or getattr(config, "_attn_implementation", None) or UNKNOWN
    layer = next((m for m in model.modules() if type(m).__name__.endswith("GatedDeltaNet")), None)
    if layer is None:
        fields = dict.fromkeys(FUNCTIONS, NO_LAYERS)
    else:
        fields = _linear_fields(sys.modules.get(type(layer).__module__), layer)
    where = device or str(next((p.device for p in model.parameters()), "cpu"))
    return _report(where.split(":")[0], str(full), fields)


def _fla_problem() -> str:
    """Why ``fla``'s gated delta rule does not import here (for the warning only)."""
    if _installed("fla-core") is None:
        return "fla-core is not installed"
    try:
        importlib.import_module("fla.ops.gated_delta_rule")
    except Exception as exc:  # any failure is the reason transformers fell back
        return f"importing fla failed: {type(exc).__name__}: {exc}"[:300]
    return "fla imports now, but did not when transformers loaded its Qwen3.5 code (restart the process)"


def cpu_blocker(report: KernelReport) -> str | None:
    """Why a Qwen3.5 forward on this CPU would fail, or None.

    transformers binds the gated delta rule once, at import: with fla importable,
    CPU tensors go to Triton kernels too and every forward raises. A student's
    failing forward reads as the model's fault, so the pod must refuse to score
    on the CPU at all rather than blame every miner.
    """
    if report.device == "cpu" and FLA in (report.linear_attention, report.linear_attention_decode):
        return (
            "flash-linear-attention (fla-core) is importable, and transformers then runs it on CPU tensors too, "
            "where it fails: evaluate on a CUDA device, or uninstall fla-core for CPU evaluation"
        )
    return None


def kernel_warning(report: KernelReport) -> str | None:
    """A sentence for the log and ``/health`` when a CUDA pod runs a slow path (or a CPU one cannot run)."""
    if report.device != "cuda":
        return cpu_blocker(report)  # otherwise the reference implementations are what a CPU runs
    problems = []
    if report.linear_attention in (TORCH_REFERENCE, UNKNOWN):
        cause = _fla_problem() if report.linear_attention == TORCH_REFERENCE else "transformers' choice is unreadable"
        fix = (
            f"install the GPU extra ({_GPU_EXTRA})"
            if report.fla_core is None
            else "fla-core needs a CUDA build of torch >= 2.7 with triton"
        )
        problems.append(
            f"linear attention runs {report.linear_attention} instead of flash-linear-attention ({cause}); "
            f"scoring is several times slower: {fix}"
        )
    if report.full_attention == "eager":
        problems.append("full attention runs eager (no fused kernel): expect more memory and time")
    return "; ".join(problems) or None
