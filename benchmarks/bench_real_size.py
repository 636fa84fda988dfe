"""Kandinsky 2.2 and Karlo at their real size on this machine: loading time, memory on load, seconds per step.

    python benchmarks/bench_real_size.py [--root /work/realsize] [--family kandinsky22|karlo] [--quantize int8]

Writes the family's real configuration with random weights (:mod:`benchmarks.real_size_models`)
to ``--root`` (outside git) in two layouts: the hub's 2023 one (``.bin``, float32, the image encoder
in float16; about 15.9 GB for Kandinsky 2.2) and safetensors stored in bfloat16 (about 9.8 GB).
Then, each in its own process and one at a time (it waits for enough free memory first):

- ``easel serve`` in float32 under a 16 GB address-space limit: the one-line refusal, before loading;
- ``easel serve`` in bfloat16 on each layout: seconds to ready, and its peak RSS at ready against the
  weights' in-memory size; on the 2023 layout, one generation at 512x512 and one at 768x768 (``--sizes``), whose
  prior and decoder seconds per step come from the server's ``/metrics`` (``easel_stage_seconds``);
- the pull's load check (``python -m cli.check``) in bfloat16: its peak RSS, to compare with serving;
- float32 by stage (the whole model does not fit beside other work here): the decoder UNet alone and
  the prior alone, loaded as the pipeline loads them: seconds to load, peak RSS, seconds per step
  (classifier-free guidance's batch of two, as in serving).

``--family karlo`` writes Karlo's real configuration with its image-variation encoder (3.73 B
parameters) as safetensors in bfloat16 and serves it in bfloat16: seconds to ready, peak RSS, and one
generation at its 256x256, each stage's seconds per step from ``/metrics``. ``--quantize int8`` serves
with int8 weights (``--skip`` then applies as usual; its results go to ``results-int8.json``).

On a CPU without bfloat16 instructions ``--dtype bfloat16`` keeps the weights in bfloat16 and computes
in float32 (:mod:`pipelines.compute_dtype`); the server's ``/v1/models`` says which (``compute_dtype``).

Random weights: the FLOPs and bytes are real, the images are noise. The table goes to stdout and,
as JSON, to ``--root/results.json`` (``results-karlo.json`` for Karlo).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
LIMIT_16GB = 16 * 10**9
HEADROOM_FOR_OTHERS = 5 * 10**9  # this machine is shared: leave this much free beside a real-size process
PROMPT = "a lighthouse on a cliff at sunset, oil painting"
KARLO_LOW_SUPER_RES_STEPS = 4  # pipelines/presets.py: Karlo's "low"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("/work/realsize"))
    parser.add_argument("--family", default="kandinsky22", choices=["kandinsky22", "karlo"])
    parser.add_argument("--quantize", default="none", choices=["none", "int8"])
    parser.add_argument("--prior-steps", type=int, default=2)
    parser.add_argument("--decoder-steps", type=int, default=2, help="at each size (2 is the fewest allowed)")
    parser.add_argument("--sizes", default="512x512,768x768", help="Kandinsky's generation sizes, comma-separated")
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated parts to skip: serve-st (also skips writing that layout),check,fp32,generate",
    )
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    if args.family == "karlo":
        print(karlo_table(karlo(args)))
        return
    results: dict = {"family": args.family, "cpu_threads": os.cpu_count(), "quantize": args.quantize}
    args.results_name = "results.json" if args.quantize == "none" else f"results-{args.quantize}.json"
    hub, st = args.root / f"{args.family}-hub2023", args.root / f"{args.family}-bf16-safetensors"
    results["write_seconds"] = {"hub-2023": write(args.family, hub, "hub-2023", "float32")}
    if "serve-st" not in skip:  # the safetensors layout is written only to be served
        results["write_seconds"]["safetensors-bf16"] = write(args.family, st, "safetensors", "bfloat16")
    results["footprint"] = footprint(hub)
    say(f"footprint: {json.dumps(results['footprint'])}")
    results["refusal_fp32_at_16GB"] = refusal(hub)
    say(f"fp32 under a 16 GB limit: {results['refusal_fp32_at_16GB']}")
    weights_bf16 = results["footprint"]["memory_bytes"]["bfloat16"]
    results["serve_bf16_hub2023"] = serve(hub, "bfloat16", weights_bf16, generate="generate" not in skip, args=args)
    save(args.root, results, args.results_name)
    if "check" not in skip:
        results["check_bf16_hub2023"] = check(hub, "bfloat16", weights_bf16)
        save(args.root, results, args.results_name)
    if "fp32" not in skip:
        results["fp32_by_stage"] = by_stage(hub, "float32")
        save(args.root, results, args.results_name)
    if "serve-st" not in skip:
        results["serve_bf16_safetensors"] = serve(st, "bfloat16", weights_bf16, generate=False, args=args)
    save(args.root, results, args.results_name)
    print(table(results))


def karlo(args: argparse.Namespace) -> dict:
    """Karlo written as safetensors in bfloat16 and served in bfloat16, with one generation at 256x256."""
    target = args.root / "karlo-bf16-safetensors"
    results: dict = {"family": "karlo", "cpu_threads": os.cpu_count()}
    results["write_seconds"] = write("karlo", target, "safetensors", "bfloat16")
    results["footprint"] = footprint(target)
    say(f"footprint: {json.dumps(results['footprint'])}")
    save(args.root, results, "results-karlo.json")
    weights = results["footprint"]["memory_bytes"]["bfloat16"]
    results["serve_bf16"] = serve(target, "bfloat16", weights, generate=True, args=args, family="karlo")
    save(args.root, results, "results-karlo.json")
    return results


def save(root: Path, results: dict, name: str = "results.json") -> None:
    """Results so far, so a run cut short still leaves its figures."""
    (root / name).write_text(json.dumps(results, indent=2) + "\n")


def say(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def write(family: str, target: Path, layout: str, dtype: str) -> float | None:
    """Write the model in a child process (which holds one module at a time); skipped if already complete."""
    done = target / ".complete"
    if done.is_file():
        say(f"{target}: already written")
        return None
    wait_for_free_memory(8 * 10**9)
    code = (
        "import torch; from pathlib import Path; from benchmarks.real_size_models import write_real_model; "
        f"write_real_model({family!r}, Path({str(target)!r}), layout={layout!r}, dtype=torch.{dtype})"
    )
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    done.write_text(f"{seconds:.1f}\n")
    say(f"{target}: written in {seconds:.0f} s")
    return seconds


def footprint(model: Path) -> dict:
    sys.path.insert(0, str(REPO))
    from weights.footprint import model_footprint

    found = model_footprint(model)
    return {
        "parameters": found.parameters,
        "disk_bytes": found.disk_bytes,
        "stored_dtypes": list(found.stored_dtypes),
        "memory_bytes": {dtype: found.memory_bytes(dtype) for dtype in ("float32", "bfloat16")},
        "components": {c.folder: c.parameters for c in found.components},
    }


def wait_for_free_memory(need: int) -> None:
    """Block until MemAvailable covers ``need`` plus the headroom left for others."""
    while (available := mem_available()) < need + HEADROOM_FOR_OTHERS:
        say(f"waiting: {available / 1e9:.1f} GB available, need {(need + HEADROOM_FOR_OTHERS) / 1e9:.1f} GB")
        time.sleep(30)


def mem_available() -> int:
    text = Path("/proc/meminfo").read_text()
    return int(re.search(r"MemAvailable:\s+(\d+) kB", text).group(1)) * 1024  # type: ignore[union-attr]


def peak_rss(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", text).group(1)) * 1024  # type: ignore[union-attr]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def refusal(model: Path) -> dict:
    command = ["prlimit", f"--as={LIMIT_16GB}", sys.executable, "-m", "server", "--model", f"k=kandinsky22:{model}"]
    start = time.perf_counter()
    done = subprocess.run(command + ["--dtype", "float32"], cwd=REPO, capture_output=True, text=True, timeout=300)
    return {"exit": done.returncode, "seconds": round(time.perf_counter() - start, 1), "stderr": done.stderr.strip()}


def serve(
    model: Path, dtype: str, weights: int, *, generate: bool, args: argparse.Namespace, family: str = "kandinsky22"
) -> dict:
    quantize = getattr(args, "quantize", "none")
    wait_for_free_memory(int(weights * 1.3))
    port = free_port()
    command = [sys.executable, "-m", "server", "--model", f"k={family}:{model}", "--dtype", dtype]
    command += ["--port", str(port), "--log-level", "info", "--quantize", quantize]
    start = time.perf_counter()
    suffix = "" if quantize == "none" else f"-{quantize}"
    log = (model.parent / f"serve-{model.name}-{dtype}{suffix}.log").open("w")  # a file: a pipe nobody reads would fill
    process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        ready, anon = wait_ready(url, process)
        result: dict[str, Any] = {"ready_seconds": round(ready - start, 1), "peak_rss_at_ready": peak_rss(process.pid)}
        result["rss_ratio_at_ready"] = round(result["peak_rss_at_ready"] / weights, 3)
        result["peak_anonymous_rss_sampled"] = anon  # without the weight files' mapped pages (page cache)
        result["anonymous_ratio"] = round(anon / weights, 3)
        result["capabilities"] = model_capabilities(url)
        say(f"serve {model.name} {dtype}: {json.dumps(result)}")
        if generate:
            try:
                result["steps"] = generations(url, args, family)
            except httpx.HTTPError as error:  # keep the figures of loading
                result["steps_error"] = str(error)
                return result
            result["peak_rss_after_generating"] = peak_rss(process.pid)
            say(f"serve {model.name} {dtype} steps: {json.dumps(result['steps'])}")
        return result
    finally:
        process.terminate()
        process.wait(timeout=120)


def wait_ready(url: str, process: subprocess.Popen) -> tuple[float, int]:
    """When the server is ready, and the largest anonymous RSS sampled (every 0.2 s) until then."""
    anon = 0
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode}): see its log")
        anon = max(anon, anonymous_rss(process.pid))
        try:
            if httpx.get(f"{url}/health/ready", timeout=5).status_code == 200:
                return time.perf_counter(), anon
        except httpx.HTTPError:
            pass
        time.sleep(0.2)


def anonymous_rss(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"RssAnon:\s+(\d+) kB", text).group(1)) * 1024  # type: ignore[union-attr]


def model_capabilities(url: str) -> dict:
    """What /v1/models says of the loaded model: dtype, compute dtype, quantization."""
    capabilities = httpx.get(f"{url}/v1/models/k", timeout=30).json()["capabilities"]
    return {key: capabilities.get(key) for key in ("dtype", "compute_dtype", "optimizations")}


def generations(url: str, args: argparse.Namespace, family: str = "kandinsky22") -> dict:
    """Seconds per step of prior and decoder at 512x512 and 768x768 (Karlo: 256x256), from the stage timings."""
    steps = {}
    # The same decoder steps at each size (2, the default, is the fewest a request may ask for).
    sizes = [(size, args.decoder_steps) for size in args.sizes.split(",")]
    if family == "karlo":  # one fixed size
        sizes = [("256x256", args.decoder_steps)]
    for size, decoder_steps in sizes:
        before = stage_seconds(url)
        start = time.perf_counter()
        body = {"model": "k", "prompt": PROMPT, "size": size, "response_format": "b64_json"}
        body |= {"prior_steps": args.prior_steps, "decoder_steps": decoder_steps}
        if family == "karlo":  # the low preset's super-resolution: 1 step of the first UNet, 3 of the last
            body["quality"] = "low"
        response = httpx.post(f"{url}/v1/images/generations", json=body, timeout=None)
        response.raise_for_status()
        after = stage_seconds(url)
        spent = {stage: round(after.get(stage, 0) - before.get(stage, 0), 2) for stage in after}
        steps[size] = {
            "request_seconds": round(time.perf_counter() - start, 1),
            "stage_seconds": spent,
            "prior_seconds_per_step": round(spent.get("prior", 0) / args.prior_steps, 2),
            "decoder_seconds_per_step": round(spent.get("decoder", 0) / decoder_steps, 2),
        }
        for stage, count in (("super_res_first", 1), ("super_res_last", KARLO_LOW_SUPER_RES_STEPS - 1)):
            if stage in spent:
                steps[size][f"{stage}_seconds_per_step"] = round(spent[stage] / count, 2)
        say(f"{size}: {json.dumps(steps[size])}")
    return steps


def stage_seconds(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    pattern = r'easel_stage_seconds_sum\{model="k",stage="(\w+)"\} ([0-9.e+-]+)'
    return {stage: float(value) for stage, value in re.findall(pattern, text)}


def check(model: Path, dtype: str, weights: int) -> dict:
    """The pull's load check, as ``easel pull`` runs it: its own peak RSS from the kernel's accounting."""
    wait_for_free_memory(int(weights * 1.3))
    command = [sys.executable, "-m", "cli.check", "kandinsky22", str(model), "--dtype", dtype]
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    out = process.stdout.read().strip() if process.stdout else ""
    result = {"exit": os.waitstatus_to_exitcode(status), "seconds": round(seconds, 1), "output": out}
    result |= {"peak_rss": usage.ru_maxrss * 1024, "rss_ratio": round(usage.ru_maxrss * 1024 / weights, 3)}
    say(f"check {model.name} {dtype}: {json.dumps(result)}")
    return result


def by_stage(model: Path, dtype: str) -> dict:
    """Each large stage alone, in a fresh process (benchmarks/real_size_stage.py)."""
    results = {}
    for stage in ("unet", "prior"):
        wait_for_free_memory(6 * 10**9)
        command = [sys.executable, "-m", "benchmarks.real_size_stage", stage, str(model), dtype]
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        out = process.stdout.read() if process.stdout else ""
        ok = os.waitstatus_to_exitcode(status) == 0
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1]) if ok else {"out": out}
        result["peak_rss"] = usage.ru_maxrss * 1024
        if "weights_bytes" in result:
            result["rss_ratio"] = round(result["peak_rss"] / result["weights_bytes"], 3)
        results[stage] = result
        say(f"{stage} alone, {dtype}: {json.dumps(result)}")
    return results


def karlo_table(results: dict) -> str:
    r, fp = results["serve_bf16"], results["footprint"]
    step = r.get("steps", {}).get("256x256", {})
    return "\n".join([
        f"Karlo at real size: {fp['parameters'] / 1e9:.2f} B parameters; bfloat16 weights "
        f"{fp['memory_bytes']['bfloat16'] / 1e9:.1f} GB; computing in {r['capabilities'].get('compute_dtype')}",
        f"ready {r['ready_seconds']} s, peak RSS {r['peak_rss_at_ready'] / 1e9:.1f} GB ({r['rss_ratio_at_ready']}x)",
        f"s/step at 256x256: {json.dumps({k: v for k, v in step.items() if k.endswith('per_step')})}",
    ])  # fmt: skip


def table(results: dict) -> str:
    gb = 1e9
    fp = results["footprint"]
    lines = [
        f"Kandinsky 2.2 at real size: {fp['parameters'] / 1e9:.2f} B parameters; "
        f"weights {fp['memory_bytes']['float32'] / gb:.1f} GB in float32, {fp['memory_bytes']['bfloat16'] / gb:.1f} GB "
        f"in bfloat16; 2023 layout on disk {fp['disk_bytes'] / gb:.1f} GB",
        "",
        "| what | dtype | ready / load s | peak RSS | RSS / weights | prior s/step | decoder s/step 512² | 768² |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, label in (("serve_bf16_hub2023", "easel serve, 2023 layout (.bin)"),
                       ("serve_bf16_safetensors", "easel serve, safetensors")):  # fmt: skip
        if key in results:
            r = results[key]
            steps = r.get("steps", {})
            per = [steps.get(s, {}).get("decoder_seconds_per_step", "") for s in ("512x512", "768x768")]
            prior = steps.get("512x512", {}).get("prior_seconds_per_step", "")
            lines.append(
                f"| {label} | bfloat16 | {r['ready_seconds']} | {r['peak_rss_at_ready'] / gb:.1f} GB | "
                f"{r['rss_ratio_at_ready']} | {prior} | {per[0]} | {per[1]} |"
            )
    if "check_bf16_hub2023" in results:
        r = results["check_bf16_hub2023"]
        lines.append(f"| pull's load check, 2023 layout | bfloat16 | {r['seconds']} | {r['peak_rss'] / gb:.1f} GB | "
                     f"{r['rss_ratio']} | | | |")  # fmt: skip
    for stage, r in results.get("fp32_by_stage", {}).items():
        if "load_seconds" in r:
            step = r.get("seconds_per_step", {})
            lines.append(
                f"| {stage} alone, 2023 layout | float32 | {r['load_seconds']} | {r['peak_rss'] / gb:.1f} GB | "
                f"{r['rss_ratio']} | {step.get('prior', '')} | {step.get('512x512', '')} | {step.get('768x768', '')} |"
            )
    refusal = results["refusal_fp32_at_16GB"]
    lines += ["", f"float32, whole model, 16 GB limit (exit {refusal['exit']}): {refusal['stderr']}"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
