import dataclasses
import json

import pytest
from PIL import Image

from pipelines.base import ImageJob, ModelInfo
from pipelines.lab.evaluate import (
    CAPTION_LINES,
    CELL_HEIGHT,
    CELL_WIDTH,
    contact_sheet,
    evaluate,
    main,
    markdown_table,
    random_baseline_scores,
)
from pipelines.lab.scenes import heldout_prompts, render
from pipelines.lab.scorer import ImageScore, ObjectScore, summarize
from pipelines.presets import presets_for

METRIC_ROWS = (
    "colour accuracy (objects)",
    "shape accuracy (objects)",
    "position accuracy (objects)",
    "object fully correct",
    "one-object prompts correct",
    "two-object prompts, both correct",
    "all prompts correct",
)


def test_cell_geometry():
    # 128 px thumbnails, padding, a pass/fail bar and four caption lines.
    assert (CELL_WIDTH, CELL_HEIGHT) == (136, 191)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    import torch

    from pipelines.tiny import build_tiny_kandinsky

    # A few-thousand-parameter model: threads only contend with each other.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = build_tiny_kandinsky(tmp_path_factory.mktemp("model") / "easel-tiny")
        out = tmp_path_factory.mktemp("eval") / "run"
        args = ["--model", str(model), "--count", "6", "--quality", "low", "--device", "cpu", "--out", str(out)]
        results = main(args)
    finally:
        torch.set_num_threads(threads)
    return out, results


def test_end_to_end_on_a_tiny_model_writes_every_output(tiny_run, capsys):
    out, results = tiny_run
    assert sorted(p.name for p in out.iterdir()) == ["contact_sheet.png", "images", "results.json", "table.md"]

    table = (out / "table.md").read_text()
    assert table.startswith(
        "| metric | easel-tiny | its variations of ground-truth renders | random baseline | ground-truth renders |\n"
        "|---|---|---|---|---|\n"
    )
    for row in METRIC_ROWS:
        assert f"| {row} | " in table
    # The scorer gets its own renders right: the ground-truth column is 100 % throughout.
    for line in table.splitlines()[2 : 2 + len(METRIC_ROWS)]:
        assert line.endswith("| 100.0% |"), line

    saved = json.loads((out / "results.json").read_text())
    assert saved["model"] == "easel-tiny" and saved["count"] == 6 and saved["images"] == 6
    assert (saved["width"], saved["height"]) == (64, 64)
    assert saved["preset"]["decoder_steps"] == presets_for("easel-mini")["low"].decoder_steps
    assert saved["seconds_per_image"] > 0
    assert set(saved["summaries"]) == {"model", "variations", "random_baseline", "ground_truth"}
    assert saved["summaries"]["model"]["prompts"] == saved["summaries"]["variations"]["prompts"] == 6
    prompts = heldout_prompts(6, seed=0)
    assert [r["prompt"] for r in saved["prompts"]] == [text for text, _ in prompts]
    assert [r["images"][0]["seed"] for r in saved["prompts"]] == list(range(6))

    images = sorted((out / "images").iterdir())
    assert [p.name for p in images] == [f"{i:04d}_0.png" for i in range(6)]
    assert all(Image.open(p).size == (64, 64) for p in images)

    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.mode == "RGB" and sheet.size == (6 * CELL_WIDTH, CELL_HEIGHT)
    assert results["summaries"] == saved["summaries"]


class PerfectBackend:
    """Draws exactly the scene each prompt describes: the model column must equal ground truth."""

    def __init__(self, prompts):
        self.scenes = dict(prompts)
        self.jobs: list[ImageJob] = []
        self.info = ModelInfo(
            name="perfect", family="kandinsky22", native_area=64 * 64, size_multiple=8, min_side=64, max_side=512,
            fixed_native_size=None, tasks=frozenset({"generate", "variation"}), presets=presets_for("easel-mini"),
            parameter_counts={}, device="cpu", dtype="float32",
        )  # fmt: skip

    def run(self, job: ImageJob) -> list[Image.Image]:
        self.jobs.append(job)
        if job.task == "variation":  # a perfect decoder gives back the picture it was shown
            return [job.image.resize((job.width, job.height)) for _ in range(job.n)]
        return [render(self.scenes[job.prompt], job.width) for _ in range(job.n)]

    def count_tokens(self, prompt: str) -> int:
        return len(prompt.split())


def test_a_perfect_model_scores_like_ground_truth(tmp_path):
    backend = PerfectBackend(heldout_prompts(10, seed=3))
    results = evaluate(backend, count=10, seed=3, quality="high", images_per_prompt=2, out=tmp_path)
    summaries = results["summaries"]
    model, varied, truth = summaries["model"], summaries["variations"], summaries["ground_truth"]
    assert model["all_correct"] == varied["all_correct"] == truth["all_correct"] == 1.0
    assert model["prompts"] == varied["prompts"] == 20 and truth["prompts"] == 10
    assert len(backend.jobs) == 20
    generations, variations = backend.jobs[:10], backend.jobs[10:]
    assert all(job.n == 2 and job.task == "generate" and (job.width, job.height) == (64, 64) for job in generations)
    # Each variation starts from its prompt's ground-truth render, with that prompt's seeds.
    for generation, variation in zip(generations, variations):
        assert variation.task == "variation" and variation.prompt == ""
        assert variation.seeds == generation.seeds
        assert variation.image.tobytes() == render(backend.scenes[generation.prompt], 64).tobytes()
    assert backend.jobs[0].preset == presets_for("easel-mini")["high"]
    assert [job.seeds for job in backend.jobs[:2]] == [[3_000_000, 3_000_001], [3_000_002, 3_000_003]]
    assert len(list((tmp_path / "images").iterdir())) == 20
    assert Image.open(tmp_path / "contact_sheet.png").size == (8 * CELL_WIDTH, 2 * CELL_HEIGHT)


def test_variations_are_skipped_on_request_and_for_models_without_them(tmp_path):
    backend = PerfectBackend(heldout_prompts(3, seed=0))
    results = evaluate(backend, count=3, seed=0, quality="low", images_per_prompt=1, out=tmp_path, variations=False)
    assert "variations" not in results["summaries"] and len(backend.jobs) == 3
    backend.info = dataclasses.replace(backend.info, tasks=frozenset({"generate"}))
    backend.jobs.clear()
    results = evaluate(backend, count=3, seed=0, quality="low", images_per_prompt=1, out=tmp_path)
    assert "variations" not in results["summaries"] and len(backend.jobs) == 3
    assert "variations" not in (tmp_path / "table.md").read_text()


def test_random_baseline_is_deterministic_and_low():
    scenes = [scene for _, scene in heldout_prompts(100, seed=0)]
    first = random_baseline_scores(scenes, seed=0)
    assert first == random_baseline_scores(scenes, seed=0)
    assert [len(s.objects) for s in first] == [len(s.objects) for s in scenes]
    assert summarize(first, scenes)["all_correct"] < 0.05


def test_markdown_table_formats_percentages_and_missing_values():
    scenes = [scene for _, scene in heldout_prompts(4, seed=0) if len(scene.objects) == 1][:1]
    one = summarize([ImageScore([ObjectScore(True, False, True)], all_correct=False)], scenes)
    table = markdown_table("m", {"model": one, "random_baseline": one, "ground_truth": one})
    assert "| colour accuracy (objects) | 100.0% | 100.0% | 100.0% |" in table
    assert "| shape accuracy (objects) | 0.0% | 0.0% | 0.0% |" in table
    assert "| two-object prompts, both correct | n/a | n/a | n/a |" in table


def test_contact_sheet_wraps_long_prompts_within_the_cell():
    long = " ".join(["a large violet hollow circle in the bottom-right corner"] * 4)
    score = ImageScore([ObjectScore(True, True, True)], all_correct=True)
    sheet = contact_sheet([(Image.new("RGB", (64, 64), (0, 0, 255)), long, score)] * 9)
    assert sheet.size == (8 * CELL_WIDTH, 2 * CELL_HEIGHT)
    # Thumbnail upscaled to 128 px, the pass bar green, text dark pixels below it, none past the cell.
    assert sheet.getpixel((4, 4)) == sheet.getpixel((131, 131)) == (0, 0, 255)
    assert sheet.getpixel((10, 133)) == (40, 170, 50)
    caption = sheet.crop((4, 139, 132, 139 + CAPTION_LINES * 12))
    assert caption.convert("L").getextrema()[0] < 100
    assert sheet.crop((132, 0, 136, CELL_HEIGHT)).convert("L").getextrema() == (255, 255)
    with pytest.raises(ValueError):
        contact_sheet([])
