import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { storedSha256, VerifyError } from "../src/verify.js";

const SHA_V1 = "1".repeat(64);
const SHA_V2 = "2".repeat(64);

/**
 * A fetch that answers from a table of path -> list of answers (the last one repeats).
 *
 * @param {Record<string, Array<{ status: number, body?: any } | "network">>} table
 */
function fakeFetch(table) {
  const calls = [];
  /** @param {string} path @param {any} init */
  const fetch = async (path, init) => {
    calls.push({ path, init });
    const answers = table[path];
    if (!answers) return new Response("{}", { status: 404 });
    const answer = answers.length > 1 ? answers.shift() : answers[0];
    if (answer === "network") throw new TypeError("Failed to fetch");
    return new Response(JSON.stringify(answer.body ?? {}), { status: answer.status });
  };
  return { fetch, calls };
}

const sleep = async () => {};
const UPLOAD_URL = "http://127.0.0.1:8000/files/up1";
const file = {
  status: 200,
  body: {
    sha256: SHA_V2,
    versions: [
      { number: 2, sha256: SHA_V2 },
      { number: 1, sha256: SHA_V1 },
    ],
  },
};

describe("storedSha256", () => {
  it("follows the upload to its file and takes that version's sha256", async () => {
    const { fetch, calls } = fakeFetch({
      "/storage/tmp-upload/up1/": [{ status: 200, body: { status: 2, file_id: "f1", version: 1 } }],
      "/storage/files/f1/": [file],
    });
    assert.equal(await storedSha256(UPLOAD_URL, { fetch, sleep }), SHA_V1);
    assert.equal(calls[0].init.credentials, "same-origin");
  });

  it("without a version, the file's current sha256", async () => {
    const { fetch } = fakeFetch({
      "/storage/tmp-upload/up1/": [{ status: 200, body: { status: 2, file_id: "f1" } }],
      "/storage/files/f1/": [file],
    });
    assert.equal(await storedSha256(UPLOAD_URL, { fetch, sleep }), SHA_V2);
  });

  it("waits for the upload to become a file, through network errors and 5xx", async () => {
    const { fetch } = fakeFetch({
      "/storage/tmp-upload/up1/": [
        "network",
        { status: 503 },
        { status: 200, body: { status: 1, file_id: null } },
        { status: 200, body: { status: 2, file_id: "f1", version: 2 } },
      ],
      "/storage/files/f1/": [file],
    });
    assert.equal(await storedSha256(UPLOAD_URL, { fetch, sleep }), SHA_V2);
  });

  it("gives up with a VerifyError on a refusal, or after its attempts", async () => {
    const refused = fakeFetch({ "/storage/tmp-upload/up1/": [{ status: 403 }] });
    await assert.rejects(storedSha256(UPLOAD_URL, { ...refused, sleep }), VerifyError);
    const never = fakeFetch({
      "/storage/tmp-upload/up1/": [{ status: 200, body: { status: 1, file_id: null } }],
    });
    await assert.rejects(
      storedSha256(UPLOAD_URL, { ...never, sleep, attempts: 3 }),
      /did not become a file/,
    );
    const down = fakeFetch({ "/storage/tmp-upload/up1/": ["network"] });
    await assert.rejects(storedSha256(UPLOAD_URL, { ...down, sleep, attempts: 2 }), /could not reach/);
  });
});
