/**
 * The page's settings, from the upload form's data attributes (the page handler fills them
 * from the proxy's configuration).
 */
import { DEFAULT_RETRY_DELAYS } from "./transfer.js";

export const DEFAULTS = Object.freeze({
  tusEndpoint: "/files/",
  chunkSize: 8 * 1024 * 1024,
  stallSeconds: 30,
  parallel: 2,
  hashSliceSize: 4 * 1024 * 1024,
  retryDelays: DEFAULT_RETRY_DELAYS,
});

/**
 * @typedef {object} Config
 * @property {string} tusEndpoint
 * @property {number} chunkSize
 * @property {number} stallSeconds
 * @property {number} parallel how many files upload at once
 * @property {number} hashSliceSize bytes the checksum worker reads at a time
 * @property {number[]} retryDelays ms, tus-js-client's `retryDelays`
 */

/**
 * @param {string | undefined} text
 * @param {number} fallback
 * @returns {number} a positive integer
 */
function positiveInt(text, fallback) {
  const value = Number(text);
  return Number.isInteger(value) && value > 0 ? value : fallback;
}

/**
 * @param {Record<string, string | undefined>} data the form's `dataset`
 * @returns {Config}
 */
export function readConfig(data) {
  let retryDelays = DEFAULTS.retryDelays;
  if (data.retryDelays) {
    const parsed = data.retryDelays.split(",").map((s) => Number(s.trim()));
    if (parsed.length && parsed.every((n) => Number.isFinite(n) && n >= 0)) retryDelays = parsed;
  }
  return {
    tusEndpoint: data.tusEndpoint || DEFAULTS.tusEndpoint,
    chunkSize: positiveInt(data.chunkSize, DEFAULTS.chunkSize),
    stallSeconds: positiveInt(data.stallSeconds, DEFAULTS.stallSeconds),
    parallel: positiveInt(data.parallel, DEFAULTS.parallel),
    hashSliceSize: positiveInt(data.hashSliceSize, DEFAULTS.hashSliceSize),
    retryDelays,
  };
}
