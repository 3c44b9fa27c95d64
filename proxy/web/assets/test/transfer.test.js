import assert from "node:assert/strict";
import { beforeEach, describe, it } from "node:test";
import { Transfer } from "../src/transfer.js";
import { FakeClock } from "./fakeclock.js";
import { FakeUpload, httpError } from "./tusfake.js";

const MIB = 1024 * 1024;
const STALL_MS = 30_000;
const DELAYS = [0, 1000, 3000];

/**
 * @param {Partial<import("../src/transfer.js").TransferOptions>} [options]
 * @param {number} [size]
 */
function setUp(options = {}, size = 32 * MIB) {
  const clock = new FakeClock();
  const changes = [];
  const successes = [];
  let online = true;
  const transfer = new Transfer(new Blob([new Uint8Array(size)]), {
    Upload: FakeUpload,
    clock,
    isOnline: () => online,
    endpoint: "http://127.0.0.1:8000/files/",
    chunkSize: 8 * MIB,
    stallMs: STALL_MS,
    retryDelays: DELAYS,
    headers: { "X-CSRF-Token": "t0ken" },
    metadata: { filename: "a.bin", fingerprint: "f".repeat(64) },
    onChange: () => changes.push(transfer.state),
    onSuccess: (url) => successes.push(url),
    ...options,
  });
  const upload = /** @type {FakeUpload} */ (FakeUpload.made.at(-1));
  return {
    clock,
    transfer,
    upload,
    changes,
    successes,
    /** @param {boolean} value */
    setOnline: (value) => {
      online = value;
    },
  };
}

beforeEach(() => {
  FakeUpload.made = [];
});

describe("Transfer: starting", () => {
  it("hands tus-js-client a finite chunk size, the CSRF header, metadata and retry delays", () => {
    const { upload } = setUp();
    assert.equal(upload.options.chunkSize, 8 * MIB);
    assert.deepEqual(upload.options.headers, { "X-CSRF-Token": "t0ken" });
    assert.equal(upload.options.metadata.filename, "a.bin");
    assert.deepEqual(upload.options.retryDelays, DELAYS);
    assert.equal(upload.options.endpoint, "http://127.0.0.1:8000/files/");
    assert.equal("uploadUrl" in upload.options, false);
    assert.equal("fingerprint" in upload.options, false);
  });

  it("start() starts the upload once", () => {
    const { transfer, upload } = setUp();
    transfer.start();
    transfer.start();
    assert.equal(upload.starts, 1);
    assert.equal(transfer.state, "uploading");
  });

  it("continues an upload the server holds, showing its offset until the HEAD answers", async () => {
    const { transfer, upload } = setUp({ uploadUrl: "http://h/files/abc", initialOffset: 3 * MIB });
    assert.equal(upload.options.uploadUrl, "http://h/files/abc");
    assert.equal(transfer.acked, 3 * MIB);
    transfer.start();
    upload.answer("HEAD", 200, { "Upload-Offset": String(5 * MIB), "Upload-Length": "x" });
    assert.equal(transfer.acked, 5 * MIB);
  });

  it("or one tus-js-client's storage remembers, under our fingerprint key", async () => {
    const previous = { uploadUrl: "http://h/files/abc", urlStorageKey: "tus::k::1" };
    const { upload } = setUp({ previousUpload: previous, tusFingerprint: "pyarchive::ff::5" });
    assert.equal(upload.previous, previous);
    assert.equal(await upload.options.fingerprint(), "pyarchive::ff::5");
  });
});

describe("Transfer: progress is what the server acknowledged", () => {
  it("bytes handed to the socket do not count; acknowledged chunks do", () => {
    const { transfer, upload } = setUp();
    transfer.start();
    upload.answer("POST", 201, { Location: "/files/x" });
    upload.progress(6 * MIB);
    assert.equal(transfer.acked, 0);
    upload.chunk(8 * MIB);
    assert.equal(transfer.acked, 8 * MIB);
  });

  it("the rate comes from acknowledgements over time", () => {
    const { clock, transfer, upload } = setUp();
    transfer.start();
    upload.answer("POST", 201);
    clock.advance(2000);
    upload.chunk(8 * MIB);
    assert.equal(transfer.rate(), 4 * MIB);
  });

  it("a new upload (the old one was gone) starts the count again", () => {
    const { transfer, upload } = setUp({ uploadUrl: "http://h/files/old", initialOffset: 9 * MIB });
    transfer.start();
    upload.answer("HEAD", 404);
    assert.equal(transfer.acked, 9 * MIB);
    upload.answer("POST", 201);
    assert.equal(transfer.acked, 0);
  });

  it("success: every byte, and the upload's URL", () => {
    const { transfer, upload, successes } = setUp({ uploadUrl: "http://h/files/abc" });
    transfer.start();
    upload.succeed();
    assert.equal(transfer.state, "done");
    assert.equal(transfer.acked, transfer.total);
    assert.deepEqual(successes, ["http://h/files/abc"]);
  });
});

describe("Transfer: stalls", () => {
  it("a request that moves nothing for the stall time is aborted and tried again", () => {
    const { clock, transfer, upload } = setUp();
    transfer.start();
    upload.send("PATCH");
    clock.advance(STALL_MS - 1);
    assert.equal(transfer.state, "uploading");
    clock.advance(1);
    assert.equal(transfer.state, "stalled");
    assert.match(transfer.detail, /no progress for 30 s/);
    assert.equal(upload.aborts, 1);
    assert.equal(upload.starts, 2);
    assert.equal(transfer.stalls, 1);
  });

  it("stays 'stalled' until the server answers again, then is 'uploading'", () => {
    const { clock, transfer, upload } = setUp();
    transfer.start();
    clock.advance(STALL_MS);
    assert.equal(transfer.state, "stalled");
    upload.answer("HEAD", 200, { "Upload-Offset": "0" });
    assert.equal(transfer.state, "uploading");
    assert.equal(transfer.detail, "");
  });

  it("bytes leaving on a slow link, and acknowledgements, keep it from stalling", () => {
    const { clock, transfer, upload } = setUp();
    transfer.start();
    upload.send("PATCH");
    for (let sent = 1; sent <= 10; sent += 1) {
      clock.advance(20_000);
      upload.progress(sent * 100_000);
    }
    clock.advance(20_000);
    upload.chunk(8 * MIB);
    clock.advance(20_000);
    assert.equal(transfer.state, "uploading");
    assert.equal(upload.aborts, 0);
  });

  it("the same byte count reported again is no sign of life", () => {
    const { clock, transfer, upload } = setUp();
    transfer.start();
    upload.send("PATCH");
    upload.progress(100);
    clock.advance(20_000);
    upload.progress(100);
    clock.advance(10_000);
    assert.equal(transfer.state, "stalled");
  });

  it("a laptop that slept through the deadline finds the stall when it wakes", () => {
    const { clock, transfer, upload } = setUp();
    transfer.start();
    upload.send("PATCH");
    clock.sleep(3_600_000);
    assert.equal(transfer.state, "stalled");
    assert.equal(upload.starts, 2);
  });

  it("the stall time is configurable", () => {
    const { clock, transfer } = setUp({ stallMs: 5000 });
    transfer.start();
    clock.advance(5000);
    assert.equal(transfer.state, "stalled");
    assert.match(transfer.detail, /no progress for 5 s/);
  });
});

describe("Transfer: retries", () => {
  it("a dropped network is retried by tus-js-client, shown as 'retrying'", () => {
    const { transfer, upload } = setUp();
    transfer.start();
    assert.equal(upload.fail(httpError(null)), true);
    assert.equal(transfer.state, "retrying");
    assert.match(transfer.detail, /network/);
    upload.answer("HEAD", 200, { "Upload-Offset": String(8 * MIB) });
    assert.equal(transfer.state, "uploading");
  });

  it("waiting for tus-js-client's retry is not a stall", () => {
    const { clock, transfer, upload } = setUp();
    transfer.start();
    upload.fail(httpError(503));
    clock.advance(STALL_MS * 3);
    assert.equal(transfer.state, "retrying");
    assert.equal(upload.aborts, 0);
    // The retry's request is watched again.
    upload.send("HEAD");
    clock.advance(STALL_MS);
    assert.equal(transfer.state, "stalled");
  });

  it("after tus-js-client's delays run out, it goes on trying at the last delay, forever", () => {
    const { clock, transfer, upload } = setUp();
    transfer.start();
    for (let i = 0; i < DELAYS.length; i += 1) assert.equal(upload.fail(httpError(null)), true);
    for (let round = 1; round <= 5; round += 1) {
      assert.equal(upload.fail(httpError(null)), false);
      assert.equal(transfer.state, "retrying");
      clock.advance(2999);
      assert.equal(upload.starts, round);
      clock.advance(1);
      assert.equal(upload.starts, round + 1);
      assert.equal(upload.aborts, round);
    }
    assert.equal(transfer.retries, DELAYS.length + 5);
  });

  it("offline, it says so and keeps trying", () => {
    const { clock, transfer, upload, setOnline } = setUp();
    transfer.start();
    setOnline(false);
    upload.retryAttempt = DELAYS.length;
    upload.fail(httpError(null));
    assert.equal(transfer.state, "retrying");
    assert.match(transfer.detail, /offline/);
    clock.advance(3000);
    assert.equal(upload.starts, 2);
  });

  it("when the network comes back (kick), a waiting transfer tries at once", () => {
    const { transfer, upload } = setUp();
    transfer.start();
    upload.retryAttempt = DELAYS.length;
    upload.fail(httpError(null));
    transfer.kick();
    assert.equal(upload.starts, 2);
    assert.equal(upload.aborts, 1);
  });

  it("a kick while a request is in flight only checks it for a stall", () => {
    const { clock, transfer, upload } = setUp();
    transfer.start();
    upload.send("PATCH");
    transfer.kick();
    assert.equal(upload.starts, 1);
    clock.time += STALL_MS; // woke from sleep; no timer has run yet
    transfer.kick();
    assert.equal(transfer.state, "stalled");
    assert.equal(upload.starts, 2);
  });

  it("a refusal is an error, not retried; Resume tries again", () => {
    const { clock, transfer, upload } = setUp();
    transfer.start();
    assert.equal(upload.fail(httpError(403, '{"detail": "CSRF check failed"}')), false);
    assert.equal(transfer.state, "error");
    assert.equal(transfer.detail, "CSRF check failed (HTTP 403)");
    clock.advance(600_000);
    assert.equal(upload.starts, 1);
    transfer.resume();
    assert.equal(transfer.state, "uploading");
    assert.equal(upload.starts, 2);
  });

  it("an error reading the file is an error", () => {
    const { transfer, upload } = setUp();
    transfer.start();
    upload.fail(new Error("NotReadableError: the file changed"));
    assert.equal(transfer.state, "error");
  });
});

describe("Transfer: pause and resume", () => {
  it("pause aborts the request, and nothing fires while paused", () => {
    const { clock, transfer, upload } = setUp();
    transfer.start();
    upload.send("PATCH");
    transfer.pause();
    assert.equal(transfer.state, "paused");
    assert.equal(upload.aborts, 1);
    clock.advance(10 * STALL_MS);
    assert.equal(transfer.state, "paused");
    assert.equal(upload.starts, 1);
    transfer.kick();
    assert.equal(upload.starts, 1);
  });

  it("pause also cancels a pending retry", () => {
    const { clock, transfer, upload } = setUp();
    transfer.start();
    upload.retryAttempt = DELAYS.length;
    upload.fail(httpError(null));
    transfer.pause();
    clock.advance(60_000);
    assert.equal(upload.starts, 1);
  });

  it("resume starts it again from the server's offset (tus-js-client HEADs first)", () => {
    const { transfer, upload } = setUp();
    transfer.start();
    upload.chunk(8 * MIB);
    transfer.pause();
    transfer.resume();
    assert.equal(transfer.state, "uploading");
    assert.equal(upload.starts, 2);
    upload.answer("HEAD", 200, { "Upload-Offset": String(8 * MIB) });
    assert.equal(transfer.acked, 8 * MIB);
  });

  it("pause does nothing once done, resume nothing unless paused or failed", () => {
    const { transfer, upload } = setUp();
    transfer.resume();
    assert.equal(upload.starts, 0);
    transfer.start();
    upload.succeed();
    transfer.pause();
    assert.equal(transfer.state, "done");
  });
});
