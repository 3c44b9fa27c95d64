import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { formatBytes, formatPercent, formatRate, formatTimeLeft } from "../src/format.js";

describe("format", () => {
  it("bytes in binary units", () => {
    assert.equal(formatBytes(0), "0 B");
    assert.equal(formatBytes(1023), "1023 B");
    assert.equal(formatBytes(1536), "1.5 KiB");
    assert.equal(formatBytes(8 * 1024 * 1024), "8.0 MiB");
    assert.equal(formatBytes(300 * 1024 * 1024), "300 MiB");
    assert.equal(formatBytes(2.5 * 1024 ** 4), "2.5 TiB");
  });

  it("a rate, or nothing when unknown", () => {
    assert.equal(formatRate(12 * 1024 * 1024), "12 MiB/s");
    assert.equal(formatRate(null), "");
  });

  it("time left", () => {
    assert.equal(formatTimeLeft(null), "");
    assert.equal(formatTimeLeft(Infinity), "");
    assert.equal(formatTimeLeft(0), "0 s left");
    assert.equal(formatTimeLeft(44.2), "45 s left");
    assert.equal(formatTimeLeft(200), "3 min 20 s left");
    assert.equal(formatTimeLeft(7500), "2 h 5 min left");
    assert.equal(formatTimeLeft(5 * 86400), "5 days left");
  });

  it("a percentage as '42 %'", () => {
    assert.equal(formatPercent(42), "42 %");
  });
});
