"""The playground page in a real browser against a real server that requires an API key.

A person's path: the page loads without a key and says one is needed; the
key is entered once (and kept); a prompt generates with live partial images
and then a final image of the asked size that is not blank; a mask painted
on a canvas edits an uploaded picture (the unpainted area comes back
unchanged); variations come back with their seeds; an API error is shown in
words; a phone-sized screen needs no sideways scrolling; and the page asks
nothing of any other host.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from ..conftest import FAST, KARLO, TEST_KEY, TINY, LiveServer, running_server, tiny_settings

TIMEOUT_MS = 120_000  # a loaded CI machine; a tiny-model request usually takes well under a second

# What the page reads back from an <img>: natural size, and how many distinct colours it has.
IMAGE_FACTS = """img => {
  const canvas = document.createElement("canvas");
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const context = canvas.getContext("2d");
  context.drawImage(img, 0, 0);
  const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
  const colours = new Set();
  for (let i = 0; i < data.length; i += 4) colours.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
  const at = (x, y) => Array.from(context.getImageData(x, y, 1, 1).data.slice(0, 3));
  return {width: img.naturalWidth, height: img.naturalHeight, colours: colours.size, corner: at(2, 2)};
}"""


@pytest.fixture(scope="module")
def keyed_server(tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir = tmp_path_factory.mktemp("playground-data")  # the batches the Batches panel lists
    with running_server(tiny_settings(tiny_model_dirs, api_keys=(TEST_KEY,), data_dir=data_dir)) as live:
        yield live


@pytest.fixture
def page(browser_context, keyed_server: LiveServer):
    page = browser_context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    foreign: list[str] = []
    page.on(
        "request",
        lambda r: foreign.append(r.url) if not r.url.startswith((keyed_server.url, "data:", "blob:")) else None,
    )
    page.goto(keyed_server.url + "/")
    page.evaluate("localStorage.clear()")
    yield page
    page.close()
    assert foreign == [], "the page must work offline: it asked other hosts"


def expect(locator):
    from playwright.sync_api import expect  # only once the browser fixture knows playwright is usable

    return expect(locator)


def enter_key(page) -> None:
    page.fill("#api-key", TEST_KEY)
    page.click("#save-key")
    page.wait_for_selector(f"#generate .model option[value='{TINY}']", state="attached")


def set_stage(page, panel: str, field: str, value: int) -> None:
    page.locator(f"#{panel} details summary").click()
    page.fill(f"#{panel} [data-field='{field}']", str(value))


def test_a_missing_key_is_said_in_words_then_a_prompt_streams_partials_and_a_final_image(page, keyed_server):
    page.reload()
    assert "API key" in page.locator("#error").inner_text()
    enter_key(page)
    assert page.locator("#error").is_hidden()
    page.reload()  # the key was kept in the browser
    page.wait_for_selector(f"#generate .model option[value='{TINY}']", state="attached")
    assert page.input_value("#api-key") == TEST_KEY

    page.fill("#prompt", "a red circle in the top left corner")
    page.select_option("#generate .size", "256x256")
    page.fill("#generate .seed", "5")
    set_stage(page, "generate", "prior_steps", 2)
    page.fill("#generate [data-field='decoder_steps']", "8")
    page.click("#run-generate")
    partial = page.wait_for_selector("#partials img")
    final = page.wait_for_selector("#results img.result")
    assert partial.evaluate(IMAGE_FACTS)["width"] == 256
    facts = final.evaluate(IMAGE_FACTS)
    assert (facts["width"], facts["height"]) == (256, 256)
    assert facts["colours"] > 100  # a picture, not a blank
    caption = page.locator("#results figcaption").first
    assert "seed 5" in caption.inner_text()
    link = caption.locator("a")
    assert link.get_attribute("download") == "easel-5.png"
    assert (link.get_attribute("href") or "").startswith("data:image/png;base64,")


def test_a_painted_mask_edits_the_painted_area_only(page, tmp_path: Path):
    enter_key(page)
    picture = tmp_path / "blue.png"
    Image.new("RGB", (128, 128), (0, 0, 255)).save(picture)
    page.click("#tab-edit")
    page.set_input_files("#edit-image", str(picture))
    canvas = page.wait_for_selector("#mask-canvas", state="visible")
    box = canvas.bounding_box()
    assert box is not None
    centre_x, centre_y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(centre_x - 20, centre_y)
    page.mouse.down()
    page.mouse.move(centre_x + 20, centre_y, steps=8)
    page.mouse.up()
    page.fill("#edit-prompt", "a yellow star")
    set_stage(page, "edit", "prior_steps", 2)
    page.fill("#edit [data-field='decoder_steps']", "4")
    page.click("#run-edit")
    facts = page.wait_for_selector("#results img.result").evaluate(IMAGE_FACTS)
    assert (facts["width"], facts["height"]) == (128, 128)  # size auto: the input's own
    assert facts["corner"] == [0, 0, 255]  # outside the mask: the original pixels
    assert facts["colours"] > 10  # inside: repainted


def test_variations_come_back_with_their_seeds(page, tmp_path: Path):
    enter_key(page)
    picture = tmp_path / "input.png"
    Image.effect_noise((96, 96), 60).convert("RGB").save(picture)
    page.click("#tab-vary")
    page.set_input_files("#vary-image", str(picture))
    page.fill("#vary .seed", "40")
    set_stage(page, "vary", "decoder_steps", 2)
    page.click("#run-vary")
    expect(page.locator("#results img.result")).to_have_count(2, timeout=TIMEOUT_MS)
    captions = page.locator("#results figcaption span").all_inner_texts()
    assert sorted(text.split(" · ")[0] for text in captions) == ["seed 40", "seed 41"]
    assert page.locator("#results img.result").first.evaluate(IMAGE_FACTS)["width"] == 96


def test_an_api_error_is_shown_in_words(page):
    enter_key(page)
    page.select_option("#generate .model", KARLO)
    page.fill("#prompt", "a green square")
    page.fill("#negative-prompt", "blue")
    page.click("#run-generate")
    page.wait_for_selector("#error", state="visible")
    assert page.locator("#error").inner_text() == (
        f"Model '{KARLO}' does not support negative_prompt. (field: negative_prompt)"
    )
    assert page.locator("#results img").count() == 0


def submit_batch(server: LiveServer, lines: int) -> str:
    headers = {"Authorization": f"Bearer {TEST_KEY}"}
    body = {"model": TINY, "size": "64x64", "response_format": "b64_json", **FAST}
    requests = [
        {"custom_id": f"c{i}", "method": "POST", "url": "/v1/images/generations",
         "body": {**body, "prompt": f"a red circle {i}", "seed": i}}
        for i in range(lines)
    ]  # fmt: skip
    data = "".join(json.dumps(line) + "\n" for line in requests)
    upload = httpx.post(f"{server.api_url}/files", headers=headers, files={"file": ("in.jsonl", data)},
                        data={"purpose": "batch"}, timeout=30)  # fmt: skip
    batch = {"input_file_id": upload.json()["id"], "endpoint": "/v1/images/generations", "completion_window": "24h"}
    return str(httpx.post(f"{server.api_url}/batches", headers=headers, json=batch, timeout=30).json()["id"])


def test_the_batches_panel_follows_a_batch_to_completed_and_downloads_its_output(page, keyed_server, tmp_path: Path):
    enter_key(page)
    page.click("#tab-batches")
    expect(page.locator("#batches-state")).to_contain_text("No batches yet.")
    batch_id = submit_batch(keyed_server, 3)
    page.click("#refresh-batches")
    item = page.locator(f"#batch-list li[data-id='{batch_id}']")
    expect(item).to_have_count(1)
    # No more clicks: the panel refreshes itself while the batch is unfinished.
    expect(item.locator(".batch-state")).to_have_text("completed", timeout=TIMEOUT_MS)
    expect(item.locator(".batch-counts")).to_have_text("3/3 answered (3 completed, 0 failed)")
    assert item.locator("progress").evaluate("bar => [bar.value, bar.max]") == [3, 3]
    expect(page.locator("#batches-state")).to_have_text("1 newest, 0 unfinished")
    with page.expect_download() as download:
        item.locator("a.output-link").click()
    saved = tmp_path / "output.jsonl"
    download.value.save_as(saved)
    assert download.value.suggested_filename == f"{batch_id}_output.jsonl"
    headers = {"Authorization": f"Bearer {TEST_KEY}"}
    batch = httpx.get(f"{keyed_server.api_url}/batches/{batch_id}", headers=headers, timeout=30).json()
    content = httpx.get(f"{keyed_server.api_url}/files/{batch['output_file_id']}/content", headers=headers, timeout=30)
    assert saved.read_bytes() == content.content
    assert [json.loads(line)["custom_id"] for line in saved.read_text().splitlines()] == ["c0", "c1", "c2"]
    assert item.locator("a.error-link").count() == 0


def test_a_phone_sized_screen_needs_no_sideways_scrolling(page):
    page.set_viewport_size({"width": 375, "height": 740})
    enter_key(page)
    for tab in ("generate", "edit", "vary", "batches"):
        page.click(f"#tab-{tab}")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), tab
        button = page.locator(f"#{tab} button.primary").bounding_box()
        assert button is not None and button["x"] + button["width"] <= 375


def test_the_page_is_served_without_a_key_and_allows_nothing_foreign(keyed_server):
    response = httpx.get(keyed_server.url + "/", timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert "http" not in policy.replace("'self'", "")  # no other origin is allowed
    assert "<script src" not in response.text and '<link rel="stylesheet"' not in response.text
