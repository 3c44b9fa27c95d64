import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { findResumable, readUnfinished, uploadIdOf } from "../src/resume.js";

const FP = "a".repeat(64);
const OTHER = "b".repeat(64);

/** @param {Partial<import("../src/resume.js").Unfinished>} fields */
const listed = (fields) => ({
  url: "http://127.0.0.1:8000/files/0123",
  filename: "photo.raw",
  size: 1000,
  offset: 400,
  fingerprint: FP,
  ...fields,
});

const chosen = { fileName: "photo.raw", storedName: "photo.raw", size: 1000, fingerprint: FP };

describe("uploadIdOf", () => {
  it("is the last part of the URL's path", () => {
    assert.equal(uploadIdOf("http://h:1/files/abc123"), "abc123");
    assert.equal(uploadIdOf("http://h:1/files/abc123/"), "abc123");
    assert.equal(uploadIdOf("/files/abc123?x=1"), "abc123");
  });
});

describe("findResumable", () => {
  it("a file with the same name, size and fingerprint continues the listed upload", () => {
    const u = listed({});
    assert.equal(findResumable([u], chosen), u);
  });

  it("another size or fingerprint is another file", () => {
    assert.equal(findResumable([listed({ size: 999 })], chosen), null);
    assert.equal(findResumable([listed({ fingerprint: OTHER })], chosen), null);
  });

  it("an upload whose fingerprint the server does not know never matches", () => {
    assert.equal(findResumable([listed({ fingerprint: "" })], { ...chosen, fingerprint: "" }), null);
  });

  it("another name does not match, unless the browser remembers that upload for this file", () => {
    const u = listed({ filename: "Old archive name", url: "http://h/files/77" });
    assert.equal(findResumable([u], chosen), null);
    assert.equal(findResumable([u], chosen, ["http://h/files/77"]), u);
    assert.equal(findResumable([u], chosen, ["http://h/files/78"]), null);
  });

  it("the name it would be stored under now, or '<archive> - <its name>', matches", () => {
    const single = listed({ filename: "Trip" });
    assert.equal(findResumable([single], { ...chosen, storedName: "Trip" }), single);
    const several = listed({ filename: "Trip - photo.raw" });
    assert.equal(findResumable([several], chosen), several);
  });

  it("of several matches, the one with most bytes on the server wins", () => {
    const a = listed({ url: "http://h/files/1", offset: 10 });
    const b = listed({ url: "http://h/files/2", offset: 900 });
    const c = listed({ url: "http://h/files/3", offset: 500 });
    assert.equal(findResumable([a, b, c], chosen), b);
  });

  it("a name match is preferred to one the browser only remembers", () => {
    const byName = listed({ url: "http://h/files/1", offset: 10 });
    const remembered = listed({ url: "http://h/files/2", filename: "x", offset: 900 });
    assert.equal(findResumable([byName, remembered], chosen, ["http://h/files/2"]), byName);
  });
});

describe("readUnfinished", () => {
  it("reads the data attributes the page was rendered with", () => {
    const items = [
      {
        dataset: {
          uploadUrl: "http://h/files/1",
          filename: "a.bin",
          size: "2048",
          offset: "1024",
          fingerprint: FP,
        },
      },
      { dataset: { uploadUrl: "http://h/files/2", filename: "b.bin", size: "", offset: "0" } },
      { dataset: { filename: "no url" } },
    ];
    const read = readUnfinished(items);
    assert.equal(read.length, 2);
    assert.deepEqual(
      read.map(({ element, ...u }) => u),
      [
        { url: "http://h/files/1", filename: "a.bin", size: 2048, offset: 1024, fingerprint: FP },
        { url: "http://h/files/2", filename: "b.bin", size: null, offset: 0, fingerprint: "" },
      ],
    );
    assert.equal(read[0].element, items[0]);
  });
});
