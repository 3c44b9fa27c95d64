/**
 * What a row and the overall line show, from an upload's numbers. Pure, so it is tested
 * without a DOM; ui.js puts the result into the page.
 */
import { formatPercent, formatRate, formatTimeLeft } from "./format.js";
import { percent, secondsLeft } from "./progress.js";

/**
 * The states a row shows (its `.state` text and its `data-state`).
 *
 * @typedef {"waiting" | "uploading" | "paused" | "retrying" | "stalled" | "verifying" |
 *   "verified" | "mismatch" | "error"} RowState
 */

/** States in which bytes are (or are about to be) moving. */
export const ACTIVE = new Set(["uploading", "retrying", "stalled"]);
/** States after the server acknowledged every byte. */
export const TRANSFERRED = new Set(["verifying", "verified", "mismatch"]);

/**
 * @typedef {object} RowModel
 * @property {RowState} state
 * @property {number} acked bytes the server acknowledged
 * @property {number} total the file's size
 * @property {number | null} rate acknowledged bytes per second lately
 * @property {string} detail
 * @property {boolean} canResume whether "Resume" can do something (paused, or a retry after an error)
 * @property {number} [stalls] stalls detected so far
 * @property {number} [retries] retries begun so far
 */

/**
 * @param {RowModel} row
 */
export function rowView({ state, acked, total, rate, detail, canResume, stalls = 0, retries = 0 }) {
  const active = ACTIVE.has(state);
  const done = TRANSFERRED.has(state) ? total : Math.min(acked, total);
  const value = TRANSFERRED.has(state) ? 100 : percent(done, total);
  return {
    state,
    detail,
    max: total > 0 ? total : 1,
    value: total > 0 ? done : TRANSFERRED.has(state) ? 1 : 0,
    percent: formatPercent(value),
    rate: active ? formatRate(rate) : "",
    eta: active ? formatTimeLeft(secondsLeft(total - done, rate)) : "",
    canPause: active,
    canResume,
    stalls,
    retries,
  };
}

/**
 * The overall line: every file but those that failed (they will not finish by themselves).
 *
 * @param {RowModel[]} rows
 */
export function overallView(rows) {
  const counted = rows.filter((r) => r.state !== "error");
  let total = 0;
  let done = 0;
  let rate = null;
  for (const r of counted) {
    total += r.total;
    done += TRANSFERRED.has(r.state) ? r.total : Math.min(r.acked, r.total);
    if (ACTIVE.has(r.state) && r.rate !== null) rate = (rate ?? 0) + r.rate;
  }
  const allDone = counted.length > 0 && counted.every((r) => TRANSFERRED.has(r.state));
  const value = allDone ? 100 : percent(done, total);
  const moving = counted.some((r) => ACTIVE.has(r.state));
  const verified = rows.filter((r) => r.state === "verified").length;
  return {
    max: total > 0 ? total : 1,
    value: total > 0 ? done : allDone ? 1 : 0,
    percent: formatPercent(value),
    rate: moving ? formatRate(rate) : "",
    eta: moving ? formatTimeLeft(secondsLeft(total - done, rate)) : "",
    summary: rows.length ? `${verified} of ${rows.length} verified` : "",
  };
}
