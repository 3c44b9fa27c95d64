import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, it } from "node:test";
import { fingerprint } from "../src/fingerprint.js";
import { MIB, sha256OfBlob } from "../src/hashing.js";

/** Bytes that differ from place to place, so a slice in the wrong place would show. */
function pattern(size) {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i += 1) bytes[i] = (i * 31 + (i >> 12)) & 0xff;
  return bytes;
}

const sha256 = (/** @type {Uint8Array[]} */ ...parts) => {
  const hash = createHash("sha256");
  for (const part of parts) hash.update(part);
  return hash.digest("hex");
};

describe("sha256OfBlob", () => {
  it("equals the sha256 of the whole, read in slices", async () => {
    const bytes = pattern(5 * MIB + 123);
    const seen = [];
    const hex = await sha256OfBlob(new Blob([bytes]), {
      sliceSize: MIB,
      onProgress: (n) => seen.push(n),
    });
    assert.equal(hex, sha256(bytes));
    assert.deepEqual(seen, [1, 2, 3, 4, 5].map((n) => n * MIB).concat([5 * MIB + 123]));
  });

  it("of an empty file", async () => {
    assert.equal(await sha256OfBlob(new Blob([])), sha256(new Uint8Array(0)));
  });
});

describe("fingerprint", () => {
  it("is the sha256 of the first MiB followed by the last MiB", async () => {
    const bytes = pattern(10 * MIB + 7);
    const expected = sha256(bytes.subarray(0, MIB), bytes.subarray(bytes.length - MIB));
    assert.equal(await fingerprint(new Blob([bytes])), expected);
  });

  it("for a file under 2 MiB the two overlap; under 1 MiB both are the whole file", async () => {
    const middling = pattern(MIB + 10);
    assert.equal(
      await fingerprint(new Blob([middling])),
      sha256(middling.subarray(0, MIB), middling.subarray(10)),
    );
    const small = pattern(1000);
    assert.equal(await fingerprint(new Blob([small])), sha256(small, small));
  });

  it("changes when a byte in the middle does not show, but does when the end changes", async () => {
    const a = pattern(4 * MIB);
    const b = a.slice();
    b[2 * MIB] ^= 1;
    const c = a.slice();
    c[4 * MIB - 1] ^= 1;
    const [fa, fb, fc] = await Promise.all([a, b, c].map((x) => fingerprint(new Blob([x]))));
    assert.equal(fa, fb); // why the whole-file sha256 is checked after the upload as well
    assert.notEqual(fa, fc);
  });
});
