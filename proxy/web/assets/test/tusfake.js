/** Stand-ins for tus-js-client, so Transfer's logic is tested without a network. */

/**
 * Like tus-js-client's DetailedError.
 *
 * @param {number | null} status null: no response (the network dropped)
 * @param {string} [body]
 */
export function httpError(status, body = "") {
  const error = new Error("tus: failed");
  return Object.assign(error, {
    originalRequest: { getMethod: () => "PATCH" },
    originalResponse:
      status === null
        ? null
        : { getStatus: () => status, getBody: () => body, getHeader: () => undefined },
  });
}

/**
 * Records what Transfer asks of it; a test plays the server through its methods, which call
 * the callbacks the way tus-js-client does.
 */
export class FakeUpload {
  /** @type {FakeUpload[]} */
  static made = [];

  /**
   * @param {Blob} file
   * @param {Record<string, any>} options
   */
  constructor(file, options) {
    this.file = file;
    this.options = options;
    this.url = options.uploadUrl ?? null;
    this.starts = 0;
    this.aborts = 0;
    this.retryAttempt = 0;
    /** @type {any} */
    this.previous = null;
    FakeUpload.made.push(this);
  }

  start() {
    this.starts += 1;
  }

  abort() {
    this.aborts += 1;
    return Promise.resolve();
  }

  /** @param {any} previous */
  resumeFromPreviousUpload(previous) {
    this.previous = previous;
    this.url = previous.uploadUrl;
  }

  /**
   * A request goes out and is answered.
   *
   * @param {string} method
   * @param {number} status
   * @param {Record<string, string>} [headers]
   */
  answer(method, status, headers = {}) {
    const req = { getMethod: () => method };
    const res = { getStatus: () => status, getHeader: (/** @type {string} */ h) => headers[h] };
    this.options.onBeforeRequest(req);
    this.options.onAfterResponse(req, res);
  }

  /** A request goes out and is not answered (yet). @param {string} method */
  send(method) {
    this.options.onBeforeRequest({ getMethod: () => method });
  }

  /** @param {number} sent bytes of the file handed to the socket so far */
  progress(sent) {
    this.options.onProgress(sent, this.file.size);
  }

  /**
   * A PATCH answered with the new offset, as tus-js-client reports it.
   *
   * @param {number} offset
   */
  chunk(offset) {
    this.answer("PATCH", 204, { "Upload-Offset": String(offset) });
    this.options.onChunkComplete(0, offset, this.file.size);
  }

  /**
   * A request failed: tus-js-client's _emitError (asks onShouldRetry while retryDelays last,
   * then gives up to onError).
   *
   * @param {any} error
   * @returns {boolean} whether tus-js-client would retry by itself
   */
  fail(error) {
    const delays = this.options.retryDelays;
    if (delays && this.retryAttempt < delays.length && error.originalRequest) {
      if (this.options.onShouldRetry(error, this.retryAttempt, this.options)) {
        this.retryAttempt += 1;
        return true;
      }
    }
    this.options.onError(error);
    return false;
  }

  succeed() {
    this.options.onSuccess({ lastResponse: null });
  }
}
