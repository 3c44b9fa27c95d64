/**
 * End-to-end check: the sha256 the server recorded for a finished upload, to compare with the
 * one the page computed from the file itself.
 *
 * The tus upload URL ends in the upload id; `GET /storage/tmp-upload/<id>/` gives `file_id`
 * (and `version`) once the upload is a file, and `GET /storage/files/<file_id>/` that
 * version's `sha256`.
 */
import { uploadIdOf } from "./resume.js";

/**
 * @typedef {object} FetchDeps
 * @property {(url: string, init?: RequestInit) => Promise<Response>} fetch
 * @property {(ms: number) => Promise<void>} sleep
 * @property {number} [attempts] how many times to ask before giving up
 * @property {number} [delayMs] between attempts
 */

export class VerifyError extends Error {}

/**
 * @param {string} uploadUrl the tus upload URL
 * @param {FetchDeps} deps
 * @returns {Promise<string>} hex sha256 of the stored version
 */
export async function storedSha256(uploadUrl, { fetch, sleep, attempts = 10, delayMs = 1000 }) {
  const id = encodeURIComponent(uploadIdOf(uploadUrl));
  /** @param {string} path */
  const getJson = async (path) => {
    for (let attempt = 1; ; attempt += 1) {
      let response = null;
      try {
        response = await fetch(path, {
          credentials: "same-origin",
          headers: { Accept: "application/json" },
        });
      } catch (error) {
        if (attempt >= attempts) throw new VerifyError(`could not reach the server: ${error}`);
      }
      if (response?.ok) return response.json();
      if (response && response.status < 500 && response.status !== 429) {
        throw new VerifyError(`the server answered HTTP ${response.status} for ${path}`);
      }
      if (attempt >= attempts) {
        throw new VerifyError(`the server answered HTTP ${response?.status} for ${path}`);
      }
      await sleep(delayMs);
    }
  };

  let upload = await getJson(`/storage/tmp-upload/${id}/`);
  for (let attempt = 1; !upload.file_id; attempt += 1) {
    // The last PATCH was answered; the file may be a moment behind.
    if (attempt >= attempts) throw new VerifyError("the upload did not become a file");
    await sleep(delayMs);
    upload = await getJson(`/storage/tmp-upload/${id}/`);
  }
  const file = await getJson(`/storage/files/${encodeURIComponent(upload.file_id)}/`);
  const version = (file.versions ?? []).find(
    (/** @type {any} */ v) => v.number === upload.version,
  );
  const sha256 = version?.sha256 ?? file.sha256;
  if (typeof sha256 !== "string") throw new VerifyError("the server gave no sha256");
  return sha256.toLowerCase();
}

/**
 * The file's sha256 computed in a Web Worker (its own script: the page's CSP allows no blob:
 * workers), read in slices so memory stays flat.
 *
 * @param {File} file
 * @param {object} options
 * @param {string | URL} options.workerUrl
 * @param {number} [options.sliceSize]
 * @param {(bytes: number) => void} [options.onProgress]
 * @returns {Promise<string>}
 */
export function hashInWorker(file, { workerUrl, sliceSize, onProgress }) {
  return new Promise((resolve, reject) => {
    const worker = new Worker(workerUrl);
    worker.addEventListener("message", (event) => {
      const message = event.data;
      if (message.type === "progress") {
        onProgress?.(message.bytes);
        return;
      }
      worker.terminate();
      if (message.type === "done") resolve(message.sha256);
      else reject(new VerifyError(`could not read the file: ${message.message}`));
    });
    worker.addEventListener("error", (event) => {
      worker.terminate();
      reject(new VerifyError(`the checksum worker failed: ${event.message || "no message"}`));
    });
    worker.postMessage({ file, sliceSize });
  });
}
