/**
 * The dedicated worker that hashes a whole file while it uploads, off the page's thread.
 *
 * In:  { file: File, sliceSize?: number }
 * Out: { type: "progress", bytes } now and then, then { type: "done", sha256 }
 *      or { type: "error", message }.
 */
import { sha256OfBlob } from "./hashing.js";

const PROGRESS_EVERY_MS = 500;

self.addEventListener("message", async (event) => {
  const { file, sliceSize } = event.data;
  let lastReport = 0;
  try {
    const sha256 = await sha256OfBlob(file, {
      sliceSize,
      onProgress: (bytes) => {
        const now = Date.now();
        if (now - lastReport >= PROGRESS_EVERY_MS) {
          lastReport = now;
          self.postMessage({ type: "progress", bytes });
        }
      },
    });
    self.postMessage({ type: "done", sha256 });
  } catch (error) {
    self.postMessage({ type: "error", message: String(error?.message ?? error) });
  }
});
