/**
 * The clock the upload logic reads and sets timers on. Injected, so tests drive time by hand
 * (see test/fakeclock.js) instead of waiting.
 *
 * @typedef {object} Clock
 * @property {() => number} now milliseconds; wall-clock time, which keeps running while a
 *   laptop sleeps, so a check after waking sees how long it was away
 * @property {(fn: () => void, ms: number) => unknown} setTimeout
 * @property {(handle: unknown) => void} clearTimeout
 */

/** @type {Clock} */
export const realClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(/** @type {any} */ (handle)),
};
