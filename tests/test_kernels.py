"""eval/kernels.py: the report names what a Qwen3.5 forward really calls, and a CUDA fallback is a warning.

The fast path is exercised without a GPU: a stand-in ``fla`` package (the
module layout transformers imports from) is put in ``sys.modules`` and
transformers' own ``use_kernel_func_from_hub_with_fallback`` decides with it,
exactly as it does at import time on a pod with fla-core installed; the tiny
model's forward then really goes through the stand-in.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
from types import ModuleType
from typing import Any

import pytest
import torch
from transformers import Qwen3_5ForCausalLM
from transformers.integrations.hub_kernels import use_kernel_func_from_hub_with_fallback
from transformers.models.qwen3_5 import modeling_qwen3_5

from eval import kernels
from eval.kernels import (
    FLA,
    NO_LAYERS,
    TORCH_REFERENCE,
    UNKNOWN,
    environment_report,
    implementation_of,
    kernel_warning,
    model_report,
)
from scripts.tiny_models import tiny_config, tiny_model


def _fla_importable() -> bool:
    try:
        importlib.import_module("fla.ops.gated_delta_rule")
        return True
    except ImportError:  # not installed, or installed without triton (a CPU machine)
        return False


needs_no_fla = pytest.mark.skipif(_fla_importable(), reason="fla imports here: the reference path is not in use")


@pytest.fixture(scope="module")
def model() -> Qwen3_5ForCausalLM:
    config = tiny_config(64, layers=2)  # one linear-attention layer, one full-attention layer
    assert config.layer_types == ["linear_attention", "full_attention"]
    return tiny_model(config, seed=0)


@pytest.fixture
def fake_fla(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """An importable ``fla`` whose chunked gated delta rule runs the reference and records each call."""
    reference = inspect.unwrap(modeling_qwen3_5.torch_chunk_gated_delta_rule)
    calls: list[tuple[int, ...]] = []

    def chunk_gated_delta_rule(
        q: Any,
        k: Any,
        v: Any,
        g: Any,
        beta: Any,
        scale: Any = None,
        initial_state: Any = None,
        output_final_state: bool = False,
        use_qk_l2norm_in_kernel: bool = False,
        cu_seqlens: Any = None,
    ) -> Any:
        calls.append(tuple(q.shape))
        return reference(
            q,
            k,
            v,
            g=g,
            beta=beta,
            initial_state=initial_state,
            output_final_state=output_final_state,
            use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
        )

    chunk_gated_delta_rule.__module__ = "fla.ops.gated_delta_rule.chunk"
    fla, ops, gdr = ModuleType("fla"), ModuleType("fla.ops"), ModuleType("fla.ops.gated_delta_rule")
    gdr.chunk_gated_delta_rule = chunk_gated_delta_rule  # type: ignore[attr-defined]
    ops.gated_delta_rule = gdr  # type: ignore[attr-defined]
    fla.ops = ops  # type: ignore[attr-defined]
    for name, module in (("fla", fla), ("fla.ops", ops), ("fla.ops.gated_delta_rule", gdr)):
        monkeypatch.setitem(sys.modules, name, module)
    # what importing modeling_qwen3_5 does on a machine where fla imports
    decided = use_kernel_func_from_hub_with_fallback("chunk_gated_delta_rule", "fla")(reference)
    monkeypatch.setattr(modeling_qwen3_5, "torch_chunk_gated_delta_rule", decided)
    return calls


@needs_no_fla
def test_tiny_model_on_cpu_runs_the_reference_and_that_is_no_finding(model: Qwen3_5ForCausalLM) -> None:
    report = model_report(model)
    assert report.device == "cpu"
    assert report.full_attention == "sdpa"
    assert report.linear_attention == TORCH_REFERENCE
    assert report.linear_attention_decode == TORCH_REFERENCE
    assert report.causal_conv1d == TORCH_REFERENCE
    assert report.fla_core is None or isinstance(report.fla_core, str)
    assert kernel_warning(report) is None
    assert environment_report("cpu") == report  # the environment predicts what the model runs


@needs_no_fla
def test_reference_on_cuda_is_a_warning_that_says_why_and_how_to_fix(model: Qwen3_5ForCausalLM) -> None:
    for report in (model_report(model, device="cuda:0"), environment_report("cuda")):
        assert report.device == "cuda"
        assert report.linear_attention == TORCH_REFERENCE
        warning = kernel_warning(report)
        assert warning is not None
        assert "torch-reference" in warning
        assert ("fla-core is not installed" in warning and ".[gpu]" in warning) or "importing fla failed" in warning


@needs_no_fla
def test_the_warning_says_when_fla_core_is_installed_but_does_not_import(
    model: Qwen3_5ForCausalLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kernels, "_installed", lambda name: "0.6.0")
    monkeypatch.setitem(sys.modules, "fla.ops.gated_delta_rule", None)  # import raises, as without triton
    warning = kernel_warning(model_report(model, device="cuda"))
    assert warning is not None and "importing fla failed: ModuleNotFoundError" in warning
    assert "CUDA build of torch" in warning and ".[gpu]" not in warning  # installing again would not help


def test_fla_chosen_by_transformers_is_reported_and_really_runs(model: Qwen3_5ForCausalLM, fake_fla: list) -> None:
    report = model_report(model, device="cuda")
    assert report.linear_attention == FLA
    assert kernel_warning(report) is None
    assert environment_report("cuda").linear_attention == FLA
    with torch.no_grad():
        model(input_ids=torch.arange(12).unsqueeze(0))
    assert len(fake_fla) == 1  # one linear-attention layer, one prefill call through "fla"
    assert fake_fla[0][:2] == (1, 12)


def test_eager_full_attention_on_cuda_is_a_finding() -> None:
    config = tiny_config(64, layers=2)
    eager = Qwen3_5ForCausalLM._from_config(config, attn_implementation="eager")
    report = model_report(eager, device="cuda")
    assert report.full_attention == "eager"
    warning = kernel_warning(report)
    assert warning is not None and "eager" in warning


def test_a_model_without_linear_attention_layers_says_none() -> None:
    config = tiny_config(64, layers=2)
    config.layer_types = ["full_attention", "full_attention"]
    report = model_report(Qwen3_5ForCausalLM(config))
    assert report.linear_attention == report.causal_conv1d == NO_LAYERS


def test_implementation_of_reads_through_outer_decorators_and_refuses_to_guess() -> None:
    decided = modeling_qwen3_5.torch_chunk_gated_delta_rule

    @functools.wraps(decided)
    def outer(*args: Any, **kwargs: Any) -> Any:
        return decided(*args, **kwargs)

    assert implementation_of(outer) == implementation_of(decided)
    assert implementation_of(lambda x: x) == UNKNOWN  # no transformers decision to read: unknown, not "fast"
    assert implementation_of(inspect.unwrap(decided)) == UNKNOWN


@needs_no_fla
def test_unknown_linear_attention_on_cuda_is_a_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(modeling_qwen3_5, "torch_chunk_gated_delta_rule", lambda *a, **k: None)
    report = environment_report("cuda")
    assert report.linear_attention == UNKNOWN
    assert kernel_warning(report) is not None


@needs_no_fla
def test_fla_on_a_cpu_is_a_blocker_not_a_slow_path(model: Qwen3_5ForCausalLM, fake_fla: list) -> None:
    # transformers would hand CPU tensors to fla's Triton kernels: every forward fails, which must
    # never read as the miner's fault.
    report = model_report(model, device="cpu")
    assert report.linear_attention == FLA
    assert kernels.cpu_blocker(report) is not None and kernel_warning(report) == kernels.cpu_blocker(report)
    assert kernels.cpu_blocker(model_report(model, device="cuda")) is None


@needs_no_fla
def test_loading_on_a_cpu_with_fla_bound_is_an_infra_error(model, fake_fla, tmp_path) -> None:
    from eval.errors import InfraError
    from eval.scoring import load_causal_lm

    model.save_pretrained(tmp_path)
    with pytest.raises(InfraError, match="flash-linear-attention"):
        load_causal_lm(tmp_path, "cpu")


@needs_no_fla
def test_without_fla_a_cpu_load_is_fine(model, tmp_path) -> None:
    from eval.scoring import load_causal_lm

    model.save_pretrained(tmp_path)
    assert kernels.cpu_blocker(model_report(load_causal_lm(tmp_path, "cpu"))) is None
