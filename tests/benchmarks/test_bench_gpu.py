"""benchmarks/bench_gpu.py runs end to end at tiny shapes on the CPU: the same code a GPU run uses.

Kept short for CI: one timed call per figure, two decoder steps, batches 1 and
2, UNet throughput at batch 2, no float16 row, and only the stock and
all-eager variants (tests/pipelines/test_optimize.py checks every
optimisation, compile included, against the stock images).
"""

from __future__ import annotations

import json

import pytest

from benchmarks import bench_gpu
from pipelines import optimize

SKIPPED = ["math_attention", "channels_last", "fused_qkv", "compile", "compile_all", "cuda_graphs_all", "float16"]


@pytest.mark.server  # the benchmark's own in-process server, which tests/lanes.py cannot see
@pytest.mark.model
def test_tiny_cpu_run_measures_every_section(tmp_path, monkeypatch):
    monkeypatch.setattr(optimize, "COMPILE_BACKEND", optimize.COMPILE_BACKEND)  # the run sets it; put it back
    monkeypatch.setattr(bench_gpu, "THROUGHPUT_BATCH", 2)
    monkeypatch.setattr(bench_gpu, "TINY_STEPS", {"prior_steps": 2, "decoder_steps": 2, "super_res_steps": 2})
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))  # the run points it elsewhere
    out = tmp_path / "bench"
    argv = ["--tiny", "--device", "cpu", "--out", str(out), "--repeats", "1", "--batches", "1", "2"]
    bench_gpu.main([*argv, "--threads", "1", "--compile-cache-dir", str(tmp_path / "cache"), "--skip", *SKIPPED])

    results = json.loads((out / "results.json").read_text())
    rows = results["rows"]
    assert [row.get("trace") for row in rows if "error" in row] == []
    skipped = {(row["section"], row.get("dtype")) for row in rows if "skipped" in row}
    assert skipped == {("dtypes", "bfloat16")}  # Karlo has no CPU half kernels
    assert results["environment"]["compile_backend"] == "eager"
    for family in ("kandinsky22", "karlo"):
        variants = {r["variant"]: r for r in rows if r["section"] == "variants" and r["family"] == family}
        assert set(variants) == {"stock", "eager_all"}
        assert variants["eager_all"]["speedup_vs_stock"] > 0
        assert variants["eager_all"]["max_pixel_diff"] <= 2  # the optimised pipeline draws the stock images
    matrix = {(r["family"], r["variant"], r["size"], r["batch"]) for r in rows if r["section"] == "matrix"}
    assert {("kandinsky22", "stock", size, batch) for size in (64, 96) for batch in (1, 2)} <= matrix
    assert {("karlo", "stock", 64, batch) for batch in (1, 2)} <= matrix
    throughput = [r for r in rows if r["section"] == "unet_throughput"]
    assert {r["model"] for r in throughput} == {"unet", "decoder", "super_res_first"}
    assert all(r["tflop_per_forward"] > 0 and r["ms_per_forward"] > 0 for r in throughput)
    assert {r["rows"] for r in throughput if r["model"] != "super_res_first"} == {4}  # 2 images, guided
    dtypes = {(r["family"], r["dtype"]): r for r in rows if r["section"] == "dtypes" and "s_per_image" in r}
    assert set(dtypes) == {("kandinsky22", "float32"), ("kandinsky22", "bfloat16"), ("karlo", "float32")}
    assert "max_pixel_diff" in dtypes["kandinsky22", "bfloat16"] and "max_pixel_diff" not in dtypes["karlo", "float32"]
    serving = [r for r in rows if r["section"] == "serving" and "http_request_s" in r]
    assert len(serving) == 1 and serving[0]["backend_run_s"] > 0 and serving[0]["guidance_interval_speedup"] > 0
    assert serving[0]["first_http_request_s"] > 0
    assert (out / "results.md").read_text().startswith("# bench_gpu (tiny shapes)")
