/**
 * sha256 of a Blob (a File is one) with hash-wasm, read in slices so memory stays flat however
 * large the file is. Used by the worker (whole files) and by the fingerprint (two slices).
 */
import { createSHA256 } from "hash-wasm";

export const MIB = 1024 * 1024;
export const DEFAULT_SLICE = 4 * MIB;

/**
 * @param {Blob} blob
 * @param {object} [options]
 * @param {number} [options.sliceSize] bytes read at a time
 * @param {(bytesHashed: number) => void} [options.onProgress]
 * @returns {Promise<string>} hex sha256
 */
export async function sha256OfBlob(blob, { sliceSize = DEFAULT_SLICE, onProgress } = {}) {
  const hasher = await createSHA256();
  hasher.init();
  for (let start = 0; start < blob.size; start += sliceSize) {
    const slice = blob.slice(start, Math.min(start + sliceSize, blob.size));
    hasher.update(new Uint8Array(await slice.arrayBuffer()));
    onProgress?.(Math.min(start + sliceSize, blob.size));
  }
  return hasher.digest("hex");
}

/**
 * sha256 of several slices one after the other, as if they were one piece.
 *
 * @param {Blob[]} slices
 * @returns {Promise<string>} hex sha256
 */
export async function sha256OfSlices(slices) {
  const hasher = await createSHA256();
  hasher.init();
  for (const slice of slices) {
    hasher.update(new Uint8Array(await slice.arrayBuffer()));
  }
  return hasher.digest("hex");
}
