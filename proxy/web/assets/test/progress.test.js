import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { percent, RateMeter, secondsLeft, StallDetector } from "../src/progress.js";
import { FakeClock } from "./fakeclock.js";

describe("percent", () => {
  it("rounds down, so 100 % means every byte", () => {
    assert.equal(percent(0, 1000), 0);
    assert.equal(percent(425, 1000), 42);
    assert.equal(percent(999, 1000), 99);
    assert.equal(percent(1000, 1000), 100);
  });

  it("is 0 of nothing (the caller knows when an empty file is done)", () => {
    assert.equal(percent(0, 0), 0);
  });
});

describe("RateMeter", () => {
  it("knows no rate from one sample", () => {
    const meter = new RateMeter();
    meter.add(0, 0);
    assert.equal(meter.rate(1000), null);
  });

  it("measures acknowledged bytes from the oldest sample to now", () => {
    const meter = new RateMeter(20_000);
    meter.add(0, 0);
    meter.add(2000, 8_000_000);
    assert.equal(meter.rate(2000), 4_000_000);
    // Nothing acknowledged for 2 s more: the rate falls.
    assert.equal(meter.rate(4000), 2_000_000);
  });

  it("forgets samples older than its window, keeping one to span it", () => {
    const meter = new RateMeter(10_000);
    meter.add(0, 0);
    meter.add(10_000, 1_000_000);
    meter.add(20_000, 11_000_000);
    meter.add(21_000, 12_000_000);
    // Samples at 10 s, 20 s and 21 s remain: 11 MB in 11 s.
    assert.equal(meter.rate(21_000), 1_000_000);
    assert.equal(meter.samples.length, 3);
  });

  it("starts over when the server's total goes down (a new upload)", () => {
    const meter = new RateMeter();
    meter.add(0, 0);
    meter.add(1000, 5_000_000);
    meter.add(2000, 0);
    assert.equal(meter.rate(3000), null);
  });

  it("after reset, says nothing until two samples", () => {
    const meter = new RateMeter();
    meter.add(0, 0);
    meter.add(1000, 1000);
    meter.reset();
    assert.equal(meter.rate(2000), null);
  });
});

describe("secondsLeft", () => {
  it("divides what is left by the rate", () => {
    assert.equal(secondsLeft(10_000_000, 1_000_000), 10);
  });

  it("is unknown without a rate, and 0 when nothing is left", () => {
    assert.equal(secondsLeft(10, null), null);
    assert.equal(secondsLeft(10, 0), null);
    assert.equal(secondsLeft(0, null), 0);
  });
});

describe("StallDetector", () => {
  /** @param {FakeClock} clock */
  const detector = (clock, timeoutMs = 30_000) => {
    const stalls = [];
    const d = new StallDetector({ timeoutMs, clock, onStall: () => stalls.push(clock.now()) });
    return { d, stalls };
  };

  it("reports a stall once nothing moved for the timeout", () => {
    const clock = new FakeClock(0);
    const { d, stalls } = detector(clock);
    d.arm();
    clock.advance(29_999);
    assert.deepEqual(stalls, []);
    clock.advance(1);
    assert.deepEqual(stalls, [30_000]);
  });

  it("reports only once, and disarms itself", () => {
    const clock = new FakeClock(0);
    const { d, stalls } = detector(clock);
    d.arm();
    clock.advance(120_000);
    assert.equal(stalls.length, 1);
    assert.equal(d.armed, false);
    assert.equal(clock.timers.size, 0);
  });

  it("a touch moves the deadline", () => {
    const clock = new FakeClock(0);
    const { d, stalls } = detector(clock);
    d.arm();
    clock.advance(20_000);
    d.touch();
    clock.advance(20_000);
    assert.deepEqual(stalls, []);
    d.touch();
    clock.advance(29_000);
    assert.deepEqual(stalls, []);
    clock.advance(1000);
    assert.deepEqual(stalls, [70_000]);
  });

  it("keeps one timer however often it is touched", () => {
    const clock = new FakeClock(0);
    const { d } = detector(clock);
    d.arm();
    for (let i = 0; i < 100; i += 1) {
      clock.advance(1000);
      d.touch();
    }
    assert.equal(clock.timers.size, 1);
  });

  it("disarmed, it reports nothing and a touch does not arm it", () => {
    const clock = new FakeClock(0);
    const { d, stalls } = detector(clock);
    d.arm();
    d.disarm();
    d.touch();
    clock.advance(100_000);
    assert.deepEqual(stalls, []);
    assert.equal(d.check(), false);
  });

  it("after the machine slept past the deadline, the stall is reported on waking", () => {
    const clock = new FakeClock(0);
    const { d, stalls } = detector(clock);
    d.arm();
    clock.advance(5000);
    d.touch();
    clock.sleep(600_000);
    assert.deepEqual(stalls, [605_000]);
  });

  it("check() reports at once when the deadline has passed, else waits on", () => {
    const clock = new FakeClock(0);
    const { d, stalls } = detector(clock, 10_000);
    d.arm();
    clock.time = 5000; // time moved, no timer ran
    assert.equal(d.check(), false);
    clock.time = 10_000;
    assert.equal(d.check(), true);
    assert.deepEqual(stalls, [10_000]);
  });

  it("re-armed after a stall, it watches again from then", () => {
    const clock = new FakeClock(0);
    const { d, stalls } = detector(clock, 10_000);
    d.arm();
    clock.advance(10_000);
    d.arm();
    clock.advance(9_000);
    assert.equal(stalls.length, 1);
    clock.advance(1000);
    assert.deepEqual(stalls, [10_000, 20_000]);
  });
});
