/**
 * The name a chosen file is stored under, from the optional archive name.
 *
 * - No archive name (empty or only spaces): the file's own name.
 * - One file: the archive name is the stored filename.
 * - Several files: each is stored as `<archive name> - <file name>`.
 *
 * @param {string} archiveName what the user typed (may be empty)
 * @param {string} fileName the chosen file's own name
 * @param {number} fileCount how many files are uploaded together under that name
 * @returns {string}
 *
 * @example storedName("", "a.jpg", 3)        // "a.jpg"
 * @example storedName("Trip", "a.jpg", 1)    // "Trip"
 * @example storedName("Trip", "a.jpg", 2)    // "Trip - a.jpg"
 */
export function storedName(archiveName, fileName, fileCount) {
  const name = archiveName.trim();
  if (name === "") return fileName;
  if (fileCount === 1) return name;
  return `${name} - ${fileName}`;
}

const MAX_NAME_BYTES = 255;

/**
 * Why the server would refuse a stored filename (the proxy's `validate_filename` rules), or
 * null when it is fine. Checked before an upload starts so the user sees it on the form.
 *
 * @param {string} name
 * @returns {string | null}
 */
export function nameProblem(name) {
  if (name.trim() === "") return "a name is required";
  if (/[/\\]/.test(name)) return "a name may not contain '/' or '\\'";
  if (name === "." || name === "..") return "a name may not be '.' or '..'";
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f-\u009f]/.test(name)) return "a name may not contain control characters";
  if (new TextEncoder().encode(name).length > MAX_NAME_BYTES) {
    return `a name may not be longer than ${MAX_NAME_BYTES} bytes`;
  }
  return null;
}
