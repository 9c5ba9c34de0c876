"""The GPU-fitting rules, run on CPU with the device's answers given."""

from __future__ import annotations

import pytest

from bertino_rag.training.hardware import (
    dataloader_settings,
    largest_fitting,
    loop_settings,
    mini_batch_candidates,
    pick_mini_batch_size,
    resolve_precision,
    warmup_kwargs,
)


def test_precision_prefers_bf16_where_the_device_has_it():
    assert resolve_precision("cuda", bf16_supported=True) == "bf16"
    assert resolve_precision("cuda:1", bf16_supported=False) == "fp16"
    assert resolve_precision("cpu", bf16_supported=False) == "fp32"
    assert resolve_precision("cpu", bf16_supported=True) == "bf16"  # AMX or AVX512-BF16
    assert resolve_precision("cpu", "fp32", bf16_supported=True) == "fp32"
    # the older fp16 switch still decides when precision is auto
    assert resolve_precision("cuda", fp16=True, bf16_supported=True) == "fp16"
    assert resolve_precision("cuda", fp16=False, bf16_supported=True) == "fp32"
    assert resolve_precision("cuda", "fp32", bf16_supported=True) == "fp32"


def test_fp16_off_cuda_and_bf16_on_a_cpu_without_it_are_refused():
    with pytest.raises(ValueError, match="needs a CUDA device"):
        resolve_precision("cpu", "fp16")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        resolve_precision("cpu", fp16=True)
    with pytest.raises(ValueError, match="no bfloat16 instructions"):
        resolve_precision("cpu", "bf16", bf16_supported=False)


def test_bf16_on_a_gpu_without_it_is_refused():
    with pytest.raises(ValueError, match="does not support bfloat16"):
        resolve_precision("cuda", "bf16", bf16_supported=False)
    with pytest.raises(ValueError, match="expected one of"):
        resolve_precision("cuda", "int8")


def test_candidates_run_from_one_pass_down_to_one():
    assert mini_batch_candidates(128, columns=4) == [512, 128, 64, 32, 16, 8, 4, 2, 1]
    assert mini_batch_candidates(96) == [96, 64, 32, 16, 8, 4, 2, 1]
    assert mini_batch_candidates(1) == [1]


def test_the_largest_mini_batch_under_the_budget_wins():
    tried = []

    def peak(n):  # 1 GB per sequence
        tried.append(n)
        return n * 10**9

    assert largest_fitting(mini_batch_candidates(128, 4), peak, budget=40e9) == 32
    assert tried == [512, 128, 64, 32]  # stops at the first that fits


def test_out_of_memory_falls_back_to_a_smaller_mini_batch():
    def peak(n):  # the peak estimate says 64 fits, but running it runs out of memory
        return None if n >= 64 else n * 10**9

    assert largest_fitting([128, 64, 32, 16], peak, budget=100e9) == 32
    assert largest_fitting([4, 2, 1], lambda n: None, budget=1e9) == 1  # nothing fits: the least


def test_mini_batch_rules_without_a_probe():
    assert pick_mini_batch_size(None, None, 128, "cpu") == 16
    assert pick_mini_batch_size(None, 1000, 128, "cpu", columns=4) == 512  # one pass at most
    assert pick_mini_batch_size(None, 32, 128, "cuda", columns=4) == 32  # explicit: no probe


def test_the_loop_reads_no_loss_on_the_host_each_step():
    cpu = loop_settings("cpu", "fp32")
    assert cpu == {"fp16": False, "bf16": False, "logging_nan_inf_filter": False}
    assert dataloader_settings("cpu", None)["dataloader_num_workers"] == 0


def test_warmup_is_a_ratio_for_the_installed_transformers():
    import transformers
    from sentence_transformers import SentenceTransformerTrainingArguments

    kw = warmup_kwargs(0.1)
    if int(transformers.__version__.split(".")[0]) >= 5:
        assert kw == {"warmup_steps": 0.1}
    else:
        assert kw == {"warmup_ratio": 0.1}
    args = SentenceTransformerTrainingArguments(output_dir="unused", use_cpu=True,
                                                report_to="none", **kw)
    assert args.get_warmup_steps(200) == 20
