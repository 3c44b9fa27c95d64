/**
 * One file's transfer over tus, with tus-js-client doing the protocol. What this adds:
 *
 * - progress counted in bytes the server acknowledged: `onChunkComplete` and the
 *   `Upload-Offset` of every answer (a HEAD after a resume says what the server kept of a
 *   PATCH that was cut), never bytes handed to the socket;
 * - retries that never give up on a network error: tus-js-client's `retryDelays` first, then
 *   one attempt every last delay for as long as it takes (offline included), and at once when
 *   the page says the network is back or it is visible again (`kick`);
 * - stall detection: a request that moved nothing for `stallMs` is aborted and tried again;
 * - pause and resume.
 *
 * The same tus.Upload object is aborted and started again throughout: an aborted request of
 * tus-js-client's never settles, so no stale request chain comes back to life, and its URL
 * storage keeps one entry per file.
 */
import { describeError, isRetryable } from "./errors.js";
import { RateMeter, StallDetector } from "./progress.js";

/** @typedef {import("./clock.js").Clock} Clock */
/** @typedef {"idle" | "uploading" | "paused" | "retrying" | "stalled" | "done" | "error"} TransferState */

export const DEFAULT_RETRY_DELAYS = [0, 1000, 3000, 5000, 10000, 20000, 30000];

/**
 * @typedef {object} TransferOptions
 * @property {any} Upload tus-js-client's Upload class (or a stand-in in tests)
 * @property {Clock} clock
 * @property {() => boolean} isOnline
 * @property {string} endpoint absolute tus endpoint URL
 * @property {number} chunkSize bytes per PATCH (finite, so acknowledgements come often)
 * @property {number} stallMs
 * @property {number[]} [retryDelays]
 * @property {Record<string, string>} [headers]
 * @property {Record<string, string>} [metadata]
 * @property {string} [tusFingerprint] the key tus-js-client's URL storage files this upload under
 * @property {string | null} [uploadUrl] an upload the server holds, to continue
 * @property {any} [previousUpload] or one tus-js-client's storage remembers (findPreviousUploads)
 * @property {number} [initialOffset] what the server said it holds, until it answers again
 * @property {() => void} [onChange]
 * @property {(url: string) => void} [onSuccess]
 */

export class Transfer {
  /**
   * @param {Blob} file
   * @param {TransferOptions} options
   */
  constructor(file, options) {
    this.file = file;
    this.clock = options.clock;
    this.isOnline = options.isOnline;
    this.stallMs = options.stallMs;
    this.retryDelays = options.retryDelays ?? DEFAULT_RETRY_DELAYS;
    this.onChange = options.onChange ?? (() => {});
    this.onSuccess = options.onSuccess ?? (() => {});
    /** @type {TransferState} */
    this.state = "idle";
    this.total = file.size;
    this.acked = options.initialOffset ?? 0;
    this.detail = "";
    /** Stalls detected and retries begun so far (shown on the row for tests and curious users). */
    this.stalls = 0;
    this.retries = 0;
    this.meter = new RateMeter();
    /** Bytes of the current request handed to the socket: only a sign of life. */
    this.sent = 0;
    /** Waiting for a retry timer (tus-js-client's or ours), no request in flight. */
    this.waiting = false;
    /** @type {unknown} */
    this.retryTimer = null;
    this.stall = new StallDetector({
      timeoutMs: options.stallMs,
      clock: options.clock,
      onStall: () => this.#stalled(),
    });

    /** @type {Record<string, any>} */
    const tusOptions = {
      endpoint: options.endpoint,
      chunkSize: options.chunkSize,
      retryDelays: this.retryDelays,
      headers: options.headers ?? {},
      metadata: options.metadata ?? {},
      storeFingerprintForResuming: true,
      removeFingerprintOnSuccess: true,
      onBeforeRequest: () => this.#requestStarting(),
      onAfterResponse: (/** @type {any} */ req, /** @type {any} */ res) =>
        this.#answered(req, res),
      onProgress: (/** @type {number} */ sent) => this.#sentBytes(sent),
      onChunkComplete: (/** @type {number} */ _chunk, /** @type {number} */ accepted) =>
        this.#acknowledged(accepted),
      onShouldRetry: (/** @type {any} */ error) => this.#shouldRetry(error),
      onSuccess: () => this.#succeeded(),
      onError: (/** @type {any} */ error) => this.#failed(error),
    };
    if (options.uploadUrl) tusOptions.uploadUrl = options.uploadUrl;
    if (options.tusFingerprint) {
      const key = options.tusFingerprint;
      tusOptions.fingerprint = () => Promise.resolve(key);
    }
    this.upload = new options.Upload(file, tusOptions);
    if (options.previousUpload) this.upload.resumeFromPreviousUpload(options.previousUpload);
  }

  /** The upload's URL on the server, once it has one. @returns {string | null} */
  get url() {
    return this.upload.url ?? null;
  }

  /** Bytes per second the server acknowledged lately, or null. @returns {number | null} */
  rate() {
    return this.meter.rate(this.clock.now());
  }

  start() {
    if (this.state !== "idle") return;
    this.#set("uploading", "");
    this.#begin();
  }

  pause() {
    if (!["uploading", "retrying", "stalled"].includes(this.state)) return;
    this.#halt();
    this.meter.reset();
    this.#set("paused", "");
  }

  /** Continue after a pause, or try again after an error. */
  resume() {
    if (this.state !== "paused" && this.state !== "error") return;
    this.meter.reset();
    this.#set("uploading", "");
    this.#begin();
  }

  /**
   * The network is back, or the page is visible again (perhaps after the laptop slept): a
   * transfer waiting to retry tries now, and one in flight is checked for a stall at once.
   */
  kick() {
    if (!["uploading", "retrying", "stalled"].includes(this.state)) return;
    if (this.waiting) {
      this.#restart();
    } else {
      this.stall.check();
    }
  }

  #begin() {
    this.waiting = false;
    this.stall.arm();
    this.upload.start();
  }

  /** Stop every request and timer; the upload itself stays on the server. */
  #halt() {
    this.stall.disarm();
    this.#clearRetryTimer();
    this.waiting = false;
    this.upload.abort();
  }

  #restart() {
    this.#halt();
    this.#begin();
  }

  #clearRetryTimer() {
    if (this.retryTimer !== null) this.clock.clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }

  #requestStarting() {
    this.waiting = false;
    this.sent = 0;
    if (this.stall.armed) this.stall.touch();
    else this.stall.arm();
  }

  /**
   * @param {any} req
   * @param {any} res
   */
  #answered(req, res) {
    const status = res.getStatus();
    if (status < 200 || status >= 300) return;
    const offset = Number.parseInt(res.getHeader("Upload-Offset") ?? "", 10);
    if (Number.isFinite(offset)) {
      this.#acknowledged(offset);
    } else if (req.getMethod() === "POST") {
      this.#acknowledged(0); // a new upload: the server holds nothing yet
    }
    if (this.state === "retrying" || this.state === "stalled") this.#set("uploading", "");
  }

  /** @param {number} sent */
  #sentBytes(sent) {
    if (sent > this.sent) {
      this.sent = sent;
      this.stall.touch();
    }
  }

  /** @param {number} offset */
  #acknowledged(offset) {
    this.stall.touch();
    this.meter.add(this.clock.now(), offset);
    if (offset !== this.acked) {
      this.acked = offset;
      this.onChange();
    }
  }

  /**
   * tus-js-client asks before each of its own retries (while `retryDelays` lasts).
   *
   * @param {any} error
   * @returns {boolean}
   */
  #shouldRetry(error) {
    if (!isRetryable(error)) return false;
    this.stall.disarm();
    this.waiting = true;
    this.retries += 1;
    this.#set("retrying", this.#retryDetail(error));
    return true;
  }

  /** @param {any} error */
  #failed(error) {
    this.stall.disarm();
    if (isRetryable(error)) {
      // tus-js-client's delays are used up: go on at the pace of the last one.
      this.waiting = true;
      this.retries += 1;
      this.#clearRetryTimer();
      const delay = this.retryDelays.at(-1) ?? 30_000;
      this.retryTimer = this.clock.setTimeout(() => {
        this.retryTimer = null;
        this.#restart();
      }, delay);
      this.#set("retrying", this.#retryDetail(error));
      return;
    }
    this.#set("error", describeError(error));
  }

  #stalled() {
    this.stalls += 1;
    const seconds = Math.round(this.stallMs / 1000);
    this.#set("stalled", `no progress for ${seconds} s; trying again`);
    this.#restart();
  }

  #succeeded() {
    this.stall.disarm();
    this.#clearRetryTimer();
    this.waiting = false;
    this.acked = this.total;
    this.#set("done", "");
    this.onSuccess(this.url ?? "");
  }

  /** @param {any} error */
  #retryDetail(error) {
    if (!this.isOnline()) return "offline; will go on when the network is back";
    return `${describeError(error)}; trying again`;
  }

  /**
   * @param {TransferState} state
   * @param {string} detail
   */
  #set(state, detail) {
    this.state = state;
    this.detail = detail;
    this.onChange();
  }
}
