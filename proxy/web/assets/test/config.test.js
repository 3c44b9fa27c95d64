import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { DEFAULTS, readConfig } from "../src/config.js";

describe("readConfig", () => {
  it("reads the form's data attributes", () => {
    const config = readConfig({
      tusEndpoint: "/up/",
      chunkSize: "1048576",
      stallSeconds: "5",
      parallel: "3",
      retryDelays: "0, 500,2000",
    });
    assert.equal(config.tusEndpoint, "/up/");
    assert.equal(config.chunkSize, 1048576);
    assert.equal(config.stallSeconds, 5);
    assert.equal(config.parallel, 3);
    assert.deepEqual(config.retryDelays, [0, 500, 2000]);
  });

  it("falls back to the defaults: 8 MiB chunks, 30 s stall, /files/", () => {
    const config = readConfig({ chunkSize: "0", stallSeconds: "soon", retryDelays: "1,x" });
    assert.equal(config.tusEndpoint, "/files/");
    assert.equal(config.chunkSize, 8 * 1024 * 1024);
    assert.equal(config.stallSeconds, 30);
    assert.deepEqual(config.retryDelays, DEFAULTS.retryDelays);
  });
});
