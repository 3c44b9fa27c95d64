import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { overallView, rowView } from "../src/view.js";

/** @param {Partial<import("../src/view.js").RowModel>} fields */
const row = (fields) => ({
  state: "uploading",
  acked: 0,
  total: 1000,
  rate: null,
  detail: "",
  canResume: false,
  ...fields,
});

describe("rowView", () => {
  it("shows the acknowledged percentage, rate and time left while uploading", () => {
    const view = rowView(row({ acked: 420, rate: 58 }));
    assert.equal(view.percent, "42 %");
    assert.equal(view.value, 420);
    assert.equal(view.max, 1000);
    assert.equal(view.rate, "58 B/s");
    assert.equal(view.eta, "10 s left");
    assert.equal(view.canPause, true);
    assert.equal(view.state, "uploading");
    assert.equal(view.stalls, 0);
    assert.equal(rowView(row({ stalls: 2, retries: 5 })).retries, 5);
  });

  it("paused: no rate, no time left, resume instead of pause", () => {
    const view = rowView(row({ state: "paused", acked: 500, rate: 10, canResume: true }));
    assert.equal(view.percent, "50 %");
    assert.equal(view.rate, "");
    assert.equal(view.eta, "");
    assert.equal(view.canPause, false);
    assert.equal(view.canResume, true);
  });

  it("after the transfer, every byte counts as acknowledged, an empty file too", () => {
    assert.equal(rowView(row({ state: "verified", acked: 0 })).percent, "100 %");
    const empty = rowView(row({ state: "mismatch", total: 0 }));
    assert.equal(empty.percent, "100 %");
    assert.equal(empty.value, empty.max);
    assert.equal(rowView(row({ state: "waiting", total: 0 })).percent, "0 %");
  });
});

describe("overallView", () => {
  it("adds up bytes and rates over the files, failed ones left out", () => {
    const view = overallView([
      row({ acked: 250, rate: 100 }),
      row({ state: "verified" }),
      row({ state: "retrying", acked: 0, rate: 50 }),
      row({ state: "error", acked: 10 }),
    ]);
    assert.equal(view.percent, "41 %"); // 1250 of 3000
    assert.equal(view.rate, "150 B/s");
    assert.equal(view.eta, "12 s left"); // 1750 / 150
    assert.equal(view.summary, "1 of 4 verified");
  });

  it("all done is 100 %, and with nothing chosen 0 %", () => {
    assert.equal(overallView([row({ state: "verified", total: 0 })]).percent, "100 %");
    assert.equal(overallView([]).percent, "0 %");
    assert.equal(overallView([]).summary, "");
  });
});
