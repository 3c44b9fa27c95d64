import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { nameProblem, storedName } from "../src/names.js";

describe("storedName", () => {
  it("without an archive name, a file keeps its own name", () => {
    assert.equal(storedName("", "photo.raw", 1), "photo.raw");
    assert.equal(storedName("", "photo.raw", 3), "photo.raw");
  });

  it("an archive name of spaces only counts as none", () => {
    assert.equal(storedName("   ", "photo.raw", 2), "photo.raw");
  });

  it("with one file, the archive name is the stored filename", () => {
    assert.equal(storedName("Holiday 2026", "photo.raw", 1), "Holiday 2026");
  });

  it("with several files, each is stored as '<name> - <file name>'", () => {
    assert.equal(storedName("Holiday 2026", "a.jpg", 2), "Holiday 2026 - a.jpg");
    assert.equal(storedName(" Holiday 2026 ", "b.jpg", 5), "Holiday 2026 - b.jpg");
  });
});

describe("nameProblem", () => {
  it("accepts an ordinary name", () => {
    assert.equal(nameProblem("report 2024.pdf"), null);
  });

  it("refuses what the server refuses", () => {
    assert.match(nameProblem("a/b") ?? "", /may not contain/);
    assert.match(nameProblem("a\\b") ?? "", /may not contain/);
    assert.match(nameProblem("..") ?? "", /may not be/);
    assert.match(nameProblem("a\u0007b") ?? "", /control characters/);
    assert.match(nameProblem("a\u0085b") ?? "", /control characters/);
    assert.match(nameProblem(" ") ?? "", /required/);
    assert.match(nameProblem("é".repeat(128)) ?? "", /longer than 255 bytes/);
    assert.equal(nameProblem("é".repeat(127)), null);
  });
});
