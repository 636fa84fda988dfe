"""pipelines.memory: a model's memory need from its weight headers, what is free, and the one-line refusal.

The real-size test serves a Kandinsky 2.2 directory whose safetensors headers
declare the published shapes (4.89 B parameters) but whose data is a hole on
disk, under an address-space limit the test sets itself with ``prlimit``: the
server must refuse before loading, in one line, naming the dtype that fits.
"""

from __future__ import annotations

import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.real_size_models import write_real_model
from pipelines.memory import (
    GIB,
    FreeMemory,
    ModelTooLarge,
    check_fits,
    free_memory,
    memory_need,
    refusal,
    smaller_dtypes,
)
from weights.footprint import ComponentFootprint, ModelFootprint, TensorInfo

REPO = Path(__file__).resolve().parents[2]
KANDINSKY_PARAMETERS = 4_886_682_807  # the published configuration, counted from its headers
LIMIT_16GB = 16 * 10**9


def _footprint(parameters: int) -> ModelFootprint:
    tensors = (TensorInfo("float32", parameters), TensorInfo("int64", 77))
    return ModelFootprint((ComponentFootprint("unet", ("w.safetensors",), tensors, parameters * 4),))


def test_the_need_is_the_weights_in_the_serving_dtype_plus_a_working_margin():
    model = _footprint(KANDINSKY_PARAMETERS)
    assert memory_need(model, "float32") == 4 * KANDINSKY_PARAMETERS + 77 * 8 + int(
        (4 * KANDINSKY_PARAMETERS + 616) / 10
    )
    # Below 10 GiB of weights the margin is its floor, 1 GiB.
    assert memory_need(model, "bfloat16") == 2 * KANDINSKY_PARAMETERS + 77 * 8 + GIB
    assert memory_need(_footprint(1000), "float32") == 4000 + 616 + GIB


def test_the_refusal_names_the_smaller_dtype_that_fits_or_says_none_does():
    model = _footprint(KANDINSKY_PARAMETERS)
    need = memory_need(model, "float32")
    line = refusal("kandinsky-2-2", model, torch.float32, need, FreeMemory(14 * 10**9, "RLIMIT_AS"), [torch.bfloat16])
    assert line == (
        "model 'kandinsky-2-2' does not fit: it needs 21.5 GB in float32 (19.5 GB of weights + 2.0 GB working margin), "
        "but only 14.0 GB is free (RLIMIT_AS); --dtype bfloat16 would fit (10.8 GB)"
    )
    small = refusal(
        "kandinsky-2-2", model, torch.float32, need, FreeMemory(8 * 10**9, "MemAvailable"), [torch.bfloat16]
    )
    assert small.endswith("but only 8.0 GB is free (MemAvailable); free some memory, or use a machine with more")
    assert "\n" not in line + small


def test_smaller_dtypes_are_only_those_the_family_can_run_here():
    cpu = torch.device("cpu")
    assert smaller_dtypes(cpu, "kandinsky22", torch.float32) == [torch.bfloat16]
    assert smaller_dtypes(cpu, "karlo", torch.float32) == []  # no CPU half kernel for its upscale
    assert smaller_dtypes(cpu, "kandinsky22", torch.bfloat16) == []


def test_free_memory_on_this_cpu_is_the_tightest_limit():
    free = free_memory(torch.device("cpu"))
    assert free.source in ("MemAvailable", "cgroup memory limit", "RLIMIT_AS", "RLIMIT_DATA")
    meminfo = Path("/proc/meminfo").read_text()
    available = int(re.search(r"MemAvailable:\s+(\d+)", meminfo).group(1)) * 1024  # type: ignore[union-attr]
    assert 0 < free.bytes <= available * 1.5  # memory moves between the two reads on a shared machine
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        assert free.bytes <= soft


def test_a_tiny_model_fits(tiny_model_dirs: dict[str, Path]):
    check_fits("tiny", "kandinsky22", tiny_model_dirs["kandinsky"], torch.device("cpu"), torch.float32)


def test_a_model_beyond_what_is_free_is_refused(tiny_model_dirs: dict[str, Path]):
    with pytest.raises(ModelTooLarge, match=r"^model 'tiny' does not fit: it needs .* beside .* for the other models"):
        check_fits(
            "tiny", "kandinsky22", tiny_model_dirs["kandinsky"], torch.device("cpu"), torch.float32, others=1 << 50
        )


@pytest.fixture(scope="module")
def real_size_kandinsky(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_real_model("kandinsky22", tmp_path_factory.mktemp("real-size") / "k22", sparse=True)


def _under_16gb(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["prlimit", f"--as={LIMIT_16GB}", sys.executable, *command], cwd=REPO, capture_output=True, text=True
    )


def test_real_size_float32_under_16gb_is_refused_before_loading_in_one_line(real_size_kandinsky: Path):
    done = _under_16gb("-m", "server", "--model", f"kandinsky-2-2=kandinsky22:{real_size_kandinsky}", "--port", "9")
    assert done.returncode == 2, done.stderr  # a configuration error, not a kill by the kernel
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    match = re.fullmatch(
        r"easel: error: --model: model 'kandinsky-2-2' does not fit: it needs 21\.5 GB in float32 "
        r"\(19\.5 GB of weights \+ 2\.0 GB working margin\), but only ([\d.]+) GB is free \(([\w ]+)\); (.*)",
        lines[0],
    )
    assert match, lines[0]
    free, source, advice = float(match.group(1)), match.group(2), match.group(3)
    assert free < 16.0
    if free >= 10.8:  # the 16 GB limit was the tightest one: bfloat16's 10.8 GB fits under it
        assert advice == "--dtype bfloat16 would fit (10.8 GB)"
    else:  # the shared machine had less than that available at that moment
        assert source == "MemAvailable" and advice == "free some memory, or use a machine with more"


def test_the_pulls_load_check_refuses_the_same_way(real_size_kandinsky: Path):
    done = _under_16gb("-m", "cli.check", "kandinsky22", str(real_size_kandinsky))
    assert done.returncode == 1
    # Its last line is what `easel pull` reports (libraries may warn on the lines before).
    last = done.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"ModelTooLarge: model 'check' does not fit: it needs 21\.5 GB in float32 .*", last), last
