/**
 * Progress arithmetic: percentages, the rate and time left from acknowledged bytes, and the
 * stall detector. Pure: time comes from an injected clock or is passed in.
 */

/** @typedef {import("./clock.js").Clock} Clock */

/**
 * Whole percent of `done` out of `total`, rounded down so 100 means every byte (0 when the
 * total is 0: the caller knows whether an empty file is finished).
 *
 * @param {number} done
 * @param {number} total
 * @returns {number}
 */
export function percent(done, total) {
  if (total <= 0) return 0;
  return Math.min(100, Math.floor((done * 100) / total));
}

/**
 * The rate of acknowledged bytes over a sliding window of samples. Because it measures from the
 * oldest sample to *now*, the rate falls when acknowledgements stop, and so the time left grows.
 */
export class RateMeter {
  /** @param {number} windowMs how far back samples count */
  constructor(windowMs = 20_000) {
    this.windowMs = windowMs;
    /** @type {{ t: number, bytes: number }[]} */
    this.samples = [];
  }

  /** Forget every sample (after a pause: time paused is not time spent uploading). */
  reset() {
    this.samples = [];
  }

  /**
   * Record that `bytes` were acknowledged in total at time `t` (ms).
   *
   * @param {number} t
   * @param {number} bytes
   */
  add(t, bytes) {
    const last = this.samples.at(-1);
    // A smaller total means the server started over (a new upload): measure from there.
    if (last && bytes < last.bytes) this.samples = [];
    this.samples.push({ t, bytes });
    // Keep one sample older than the window, so the window is always spanned.
    while (this.samples.length > 2 && this.samples[1].t <= t - this.windowMs) {
      this.samples.shift();
    }
  }

  /**
   * Bytes per second at time `now`, or null until two samples say something.
   *
   * @param {number} now
   * @returns {number | null}
   */
  rate(now) {
    if (this.samples.length < 2) return null;
    const first = this.samples[0];
    const last = /** @type {{ t: number, bytes: number }} */ (this.samples.at(-1));
    const seconds = (now - first.t) / 1000;
    if (seconds <= 0) return null;
    return (last.bytes - first.bytes) / seconds;
  }
}

/**
 * Seconds left for `remaining` bytes at `rate` bytes per second; null when unknown.
 *
 * @param {number} remaining
 * @param {number | null} rate
 * @returns {number | null}
 */
export function secondsLeft(remaining, rate) {
  if (remaining <= 0) return 0;
  if (rate === null || !(rate > 0)) return null;
  return remaining / rate;
}

/**
 * Calls `onStall` once when, while armed, nothing moved for `timeoutMs`. `touch()` says
 * something moved. One timer at a time, set for the current deadline; a timer that fires
 * early (the deadline moved) sets the next one, and one that fires late (the machine slept)
 * finds the deadline long past and reports the stall at once.
 */
export class StallDetector {
  /**
   * @param {object} options
   * @param {number} options.timeoutMs
   * @param {Clock} options.clock
   * @param {() => void} options.onStall
   */
  constructor({ timeoutMs, clock, onStall }) {
    this.timeoutMs = timeoutMs;
    this.clock = clock;
    this.onStall = onStall;
    this.armed = false;
    this.last = 0;
    /** @type {unknown} */
    this.timer = null;
  }

  /** Start watching, from now. */
  arm() {
    this.armed = true;
    this.last = this.clock.now();
    this.#schedule();
  }

  /** Stop watching (paused, waiting to retry, finished). */
  disarm() {
    this.armed = false;
    this.#clear();
  }

  /** Something moved: the deadline is `timeoutMs` from now. */
  touch() {
    if (this.armed) this.last = this.clock.now();
  }

  /**
   * Report a stall now if the deadline has passed (also called when the page wakes up).
   *
   * @returns {boolean} whether it reported one
   */
  check() {
    if (!this.armed) return false;
    if (this.clock.now() - this.last >= this.timeoutMs) {
      this.disarm();
      this.onStall();
      return true;
    }
    this.#schedule();
    return false;
  }

  #schedule() {
    this.#clear();
    const wait = Math.max(0, this.last + this.timeoutMs - this.clock.now());
    this.timer = this.clock.setTimeout(() => {
      this.timer = null;
      this.check();
    }, wait);
  }

  #clear() {
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
  }
}
