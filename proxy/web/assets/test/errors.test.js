import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { describeError, isRetryable, isRetryableStatus } from "../src/errors.js";
import { httpError } from "./tusfake.js";

describe("errors", () => {
  it("network drops, server trouble, conflicts and locks are retried", () => {
    for (const status of [0, 408, 409, 423, 429, 500, 502, 503]) {
      assert.equal(isRetryableStatus(status), true, String(status));
    }
    assert.equal(isRetryable(httpError(null)), true);
    assert.equal(isRetryable(httpError(503)), true);
  });

  it("refusals are not", () => {
    for (const status of [400, 401, 403, 404, 410, 413, 460]) {
      assert.equal(isRetryableStatus(status), false, String(status));
    }
    assert.equal(isRetryable(httpError(403)), false);
  });

  it("an error that came from no request (reading the file) is not retried", () => {
    assert.equal(isRetryable(new Error("upload was configured with a size of 5 bytes")), false);
  });

  it("says the server's detail when it gave one", () => {
    assert.equal(
      describeError(httpError(403, '{"detail": "CSRF token missing"}')),
      "CSRF token missing (HTTP 403)",
    );
    assert.equal(describeError(httpError(502, "<html>")), "the server answered HTTP 502");
    assert.equal(describeError(httpError(null)), "no answer from the server (network down?)");
    assert.equal(describeError(new Error("boom")), "boom");
  });
});
