// Easel's image edits through OpenAI's own Node SDK, as LobeHub and other Node apps call it.
// Usage: node edit.mjs BASE_URL PHOTO.png OTHER.png  -> one JSON line: what each call gave back.
import { readFile } from "node:fs/promises";
import OpenAI, { toFile } from "openai";

const [baseURL, photoPath, otherPath] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: "any-key-works", maxRetries: 0 });
const fast = { prior_steps: 2, decoder_steps: 2 }; // Easel extensions, sent as body fields
const file = async (path, name) => toFile(await readFile(path), name, { type: "image/png" });

async function sizes(result) {
  // The PNG header holds the width and height at bytes 16-23.
  return result.data.map((item) => {
    const png = Buffer.from(item.b64_json, "base64");
    return [png.readUInt32BE(16), png.readUInt32BE(20)];
  });
}

const one = await client.images.edit({
  image: await file(photoPath, "photo.png"),
  prompt: "make it night",
  response_format: "b64_json",
  ...fast,
});
const two = await client.images.edit({
  image: [await file(photoPath, "photo.png"), await file(otherPath, "other.png")],
  prompt: "combine them",
  n: 2,
  input_fidelity: "high",
  response_format: "b64_json",
  ...fast,
});
let refused;
try {
  await client.images.edit({
    image: await Promise.all(Array.from({ length: 17 }, () => file(photoPath, "photo.png"))),
    prompt: "too many",
  });
} catch (error) {
  refused = { status: error.status, param: error.param, message: error.message };
}
console.log(JSON.stringify({ one: await sizes(one), two: await sizes(two), refused }));
