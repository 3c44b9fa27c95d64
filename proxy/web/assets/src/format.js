/** How numbers read on the page. */

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/**
 * @param {number} bytes
 * @returns {string} e.g. "512 B", "1.5 MiB"
 */
export function formatBytes(bytes) {
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  if (unit === 0) return `${Math.round(value)} B`;
  return `${value.toFixed(value < 10 ? 1 : 0)} ${UNITS[unit]}`;
}

/**
 * @param {number | null} bytesPerSecond
 * @returns {string} e.g. "12 MiB/s", or "" when unknown
 */
export function formatRate(bytesPerSecond) {
  if (bytesPerSecond === null) return "";
  return `${formatBytes(bytesPerSecond)}/s`;
}

/**
 * @param {number | null} seconds
 * @returns {string} e.g. "45 s left", "3 min 20 s left", "2 h 5 min left", or "" when unknown
 */
export function formatTimeLeft(seconds) {
  if (seconds === null || !Number.isFinite(seconds)) return "";
  const s = Math.ceil(seconds);
  if (s < 60) return `${s} s left`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s left`;
  const hours = Math.floor(s / 3600);
  if (hours >= 48) return `${Math.round(hours / 24)} days left`;
  return `${hours} h ${Math.floor((s % 3600) / 60)} min left`;
}

/**
 * @param {number} value 0..100
 * @returns {string} e.g. "42 %"
 */
export function formatPercent(value) {
  return `${value} %`;
}
