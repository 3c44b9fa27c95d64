/**
 * Which unfinished upload, of those the server lists, a chosen file continues.
 *
 * The server's list is the source of truth: an upload it does not list (finished, expired,
 * deleted) is never resumed, whatever the browser remembers. A listed upload matches a file
 * when the size and the fingerprint (sha256 of the first and last MiB) are equal and the name
 * fits: the listed filename is the name this file would be stored under now, or its own name,
 * or ends in " - <its own name>" (it was one of several under an archive name). Failing the
 * name, a listed upload the browser's own tus storage remembers for this fingerprint matches
 * too (the archive name was changed since). An upload whose fingerprint the server does not
 * know (made by another client) never matches: its bytes cannot be told apart from another
 * file's of the same name and size.
 */

/**
 * @typedef {object} Unfinished an upload the server lists as unfinished
 * @property {string} url the tus upload URL
 * @property {string} filename the name it will be stored under
 * @property {number | null} size
 * @property {number} offset bytes the server holds
 * @property {string} fingerprint empty when unknown
 */

/**
 * The id at the end of a tus upload URL (`.../files/<id>`, with or without a trailing slash).
 *
 * @param {string} url
 * @returns {string}
 */
export function uploadIdOf(url) {
  const path = new URL(url, "http://x/").pathname.replace(/\/+$/, "");
  return decodeURIComponent(path.slice(path.lastIndexOf("/") + 1));
}

/**
 * @param {Unfinished[]} unfinished
 * @param {object} chosen
 * @param {string} chosen.fileName the file's own name
 * @param {string} chosen.storedName the name it would be stored under now
 * @param {number} chosen.size
 * @param {string} chosen.fingerprint
 * @param {string[]} [rememberedUrls] upload URLs tus-js-client's storage has for this file
 * @returns {Unfinished | null} the best match (most bytes on the server), or null
 */
export function findResumable(unfinished, chosen, rememberedUrls = []) {
  const same = unfinished.filter(
    (u) => u.fingerprint !== "" && u.fingerprint === chosen.fingerprint && u.size === chosen.size,
  );
  const nameFits = (/** @type {Unfinished} */ u) =>
    u.filename === chosen.storedName ||
    u.filename === chosen.fileName ||
    u.filename.endsWith(` - ${chosen.fileName}`);
  const remembered = new Set(rememberedUrls.map(uploadIdOf));
  const byName = same.filter(nameFits);
  const candidates = byName.length ? byName : same.filter((u) => remembered.has(uploadIdOf(u.url)));
  if (!candidates.length) return null;
  return candidates.reduce((best, u) => (u.offset > best.offset ? u : best));
}

/**
 * Reads the unfinished list the page was rendered with.
 *
 * @param {Iterable<{ dataset: DOMStringMap }>} items the `#unfinished li` elements
 * @returns {(Unfinished & { element: any })[]}
 */
export function readUnfinished(items) {
  return Array.from(items, (li) => {
    const d = li.dataset;
    const size = d.size === undefined || d.size === "" ? null : Number(d.size);
    return {
      url: d.uploadUrl ?? "",
      filename: d.filename ?? "",
      size: Number.isFinite(size) ? size : null,
      offset: Number(d.offset ?? 0) || 0,
      fingerprint: d.fingerprint ?? "",
      element: li,
    };
  }).filter((u) => u.url !== "");
}
