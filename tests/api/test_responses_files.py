"""POST /v1/responses reading its input images from the Files API by file_id, as image edits do."""

from __future__ import annotations

import base64

import openai
from PIL import Image

from tests.api.test_responses import FAST_TOOL, SIZE, data_url, mask_url, png


def test_images_uploaded_to_the_files_api_are_read_by_file_id(client: openai.OpenAI) -> None:
    """An input image and a mask named by file_id give the same bytes as the same images sent as data URLs."""
    photo = png(Image.new("RGBA", (SIZE, SIZE), (30, 160, 90, 255)))
    mask = base64.b64decode(mask_url().partition(",")[2])
    photo_id = client.files.create(file=("photo.png", photo, "image/png"), purpose="vision").id
    mask_id = client.files.create(file=("mask.png", mask, "image/png"), purpose="user_data").id

    def edit(image: dict, mask_ref: dict) -> str:
        content = [{"type": "input_text", "text": "a blue square"}, {"type": "input_image", **image}]
        tool = FAST_TOOL | {"seed": 21, "input_image_mask": mask_ref}
        response = client.responses.create(
            model="gpt-4o-mini", input=[{"role": "user", "content": content}], tools=[tool]
        )
        assert response.output[0].action == "edit"
        return response.output[0].result

    by_id = edit({"file_id": photo_id}, {"file_id": mask_id})
    assert by_id == edit({"image_url": data_url(photo)}, {"image_url": mask_url()})
