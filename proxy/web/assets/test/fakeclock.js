/** A Clock (src/clock.js) whose time moves only when a test says so. */
export class FakeClock {
  constructor(start = 1_000_000) {
    this.time = start;
    this.nextId = 1;
    /** @type {Map<number, { at: number, fn: () => void }>} */
    this.timers = new Map();
  }

  now() {
    return this.time;
  }

  /**
   * @param {() => void} fn
   * @param {number} ms
   */
  setTimeout(fn, ms) {
    const id = this.nextId++;
    this.timers.set(id, { at: this.time + Math.max(0, ms), fn });
    return id;
  }

  /** @param {unknown} id */
  clearTimeout(id) {
    this.timers.delete(/** @type {number} */ (id));
  }

  /** Moves time forward by `ms`, running each timer that falls due, in order. */
  advance(ms) {
    const end = this.time + ms;
    for (;;) {
      let next = null;
      for (const [id, timer] of this.timers) {
        if (timer.at <= end && (next === null || timer.at < next[1].at)) next = [id, timer];
      }
      if (next === null) break;
      this.timers.delete(next[0]);
      this.time = Math.max(this.time, next[1].at);
      next[1].fn();
    }
    this.time = end;
  }

  /** Jumps forward without running timers in between (a laptop asleep), then runs what is due. */
  sleep(ms) {
    this.time += ms;
    this.advance(0);
  }
}
