/**
 * A file's fingerprint: hex sha256 of its first MiB followed by its last MiB (for a file of
 * less than 2 MiB the two overlap; for one of 1 MiB or less both are the whole file). Sent as
 * the tus `Upload-Metadata` key `fingerprint`, so a file chosen again after a reload can be
 * matched with the upload the server kept. Cheap: 2 MiB read whatever the file's size.
 */
import { MIB, sha256OfSlices } from "./hashing.js";

export const FINGERPRINT_SPAN = MIB;

/**
 * @param {Blob} file
 * @returns {Promise<string>}
 */
export function fingerprint(file) {
  const head = file.slice(0, Math.min(FINGERPRINT_SPAN, file.size));
  const tail = file.slice(Math.max(0, file.size - FINGERPRINT_SPAN), file.size);
  return sha256OfSlices([head, tail]);
}
