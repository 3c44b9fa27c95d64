/**
 * What a tus-js-client error means for the page: whether to try again, and what to say.
 */

/**
 * Statuses worth retrying: no answer at all (the network dropped: status 0), the server's
 * trouble (5xx), a conflict or lock that a HEAD sorts out (409 offset moved, 423), a request
 * the server timed out (408) and "too many requests" (429). Anything else (403 CSRF, 404 the
 * upload is gone, 413 too large, ...) retried would only fail again.
 *
 * @param {number} status 0 when there was no response
 * @returns {boolean}
 */
export function isRetryableStatus(status) {
  return status === 0 || status >= 500 || [408, 409, 423, 429].includes(status);
}

/**
 * @param {any} error a tus-js-client DetailedError, or any Error
 * @returns {number} the HTTP status, 0 when there was none
 */
export function statusOf(error) {
  return error?.originalResponse?.getStatus?.() ?? 0;
}

/**
 * Whether an error came from a request (and so may pass with time), rather than from reading
 * the file or from tus-js-client's own checks.
 *
 * @param {any} error
 * @returns {boolean}
 */
export function isRetryable(error) {
  return error?.originalRequest != null && isRetryableStatus(statusOf(error));
}

/**
 * A short message for the page: the server's JSON `detail` when it gave one.
 *
 * @param {any} error
 * @returns {string}
 */
export function describeError(error) {
  const status = statusOf(error);
  if (status !== 0) {
    let detail = "";
    try {
      const body = JSON.parse(error.originalResponse.getBody() ?? "");
      if (body && typeof body.detail === "string") detail = body.detail;
    } catch {
      // Not JSON: the status says enough.
    }
    return detail ? `${detail} (HTTP ${status})` : `the server answered HTTP ${status}`;
  }
  if (error?.originalRequest != null) return "no answer from the server (network down?)";
  return String(error?.message ?? error);
}
