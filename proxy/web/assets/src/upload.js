/**
 * /archives/new/: the browser upload. Wires the page (archives_new.html) to tus-js-client
 * through Transfer, resumes what the server lists as unfinished, and checks every finished
 * file's sha256 against the one the server recorded.
 */
import * as tus from "tus-js-client";
import { realClock } from "./clock.js";
import { readConfig } from "./config.js";
import { fingerprint } from "./fingerprint.js";
import { nameProblem, storedName } from "./names.js";
import { findResumable, readUnfinished, uploadIdOf } from "./resume.js";
import { Transfer } from "./transfer.js";
import { createRow, dropUnfinished, renderOverall, renderRow, showStoredName } from "./ui.js";
import { hashInWorker, storedSha256 } from "./verify.js";
import { ACTIVE, overallView, rowView } from "./view.js";

/** @typedef {import("./view.js").RowState} RowState */

const form = /** @type {HTMLFormElement} */ (document.getElementById("upload-form"));
const filesInput = /** @type {HTMLInputElement} */ (document.getElementById("files"));
const archiveName = /** @type {HTMLInputElement} */ (document.getElementById("archive-name"));
const autoStart = /** @type {HTMLInputElement} */ (document.getElementById("auto-start"));
const rowsList = /** @type {HTMLElement} */ (document.getElementById("uploads"));
const rowTemplate = /** @type {HTMLTemplateElement} */ (document.getElementById("upload-row"));
const overall = /** @type {HTMLElement} */ (document.getElementById("overall"));
const unfinishedList = document.getElementById("unfinished");

const config = readConfig(form.dataset);
const endpoint = new URL(config.tusEndpoint, window.location.href).href;
const workerUrl = new URL("./sha256-worker.js", import.meta.url);
const csrfToken =
  document.querySelector('meta[name="csrf-token"]')?.getAttribute("content") ?? "";
const pageLoadedAt = Date.now();

/** Unfinished uploads the server listed when the page was made: the source of truth. */
const listed = readUnfinished(unfinishedList ? unfinishedList.querySelectorAll("li") : []);
const listedIds = new Set(listed.map((u) => uploadIdOf(u.url)));
/** Those not yet taken up by a chosen file (one file per upload). */
const available = [...listed];

/** One chosen file and its row. */
class Item {
  /**
   * @param {File} file
   * @param {HTMLLIElement} li
   */
  constructor(file, li) {
    this.file = file;
    this.li = li;
    this.storedName = file.name;
    /** @type {"waiting" | "transfer" | "verifying" | "verified" | "mismatch" | "error"} */
    this.phase = "waiting";
    this.detail = "";
    this.queued = false;
    this.started = false;
    /** @type {Transfer | null} */
    this.transfer = null;
    /** @type {Promise<string> | null} */
    this.hash = null;
  }

  /** @returns {RowState} */
  get state() {
    if (this.phase !== "transfer" || !this.transfer) return this.phase;
    const state = this.transfer.state;
    if (state === "idle") return "uploading";
    if (state === "done") return "verifying";
    return state;
  }

  /** Holds one of the `parallel` places: getting ready, or a transfer not yet over. */
  get busy() {
    if (!this.started) return false;
    if (this.phase === "waiting") return true;
    return this.phase === "transfer" && !["done", "error"].includes(this.transfer?.state ?? "");
  }

  model() {
    const state = this.state;
    return {
      state,
      acked: this.transfer?.acked ?? 0,
      total: this.file.size,
      rate: this.transfer?.rate() ?? null,
      detail: this.phase === "transfer" ? (this.transfer?.detail ?? "") : this.detail,
      canResume:
        state === "paused" || (this.phase === "transfer" && this.transfer?.state === "error"),
      stalls: this.transfer?.stalls ?? 0,
      retries: this.transfer?.retries ?? 0,
    };
  }
}

/** @type {Item[]} */
const items = [];
/** @type {WeakMap<Element, Item>} */
const itemOfRow = new WeakMap();

function renderAll() {
  for (const item of items) renderRow(item.li, rowView(item.model()));
  renderOverall(overall, overallView(items.map((i) => i.model())));
}

/** @param {Item} item */
function changed(item) {
  renderRow(item.li, rowView(item.model()));
  renderOverall(overall, overallView(items.map((i) => i.model())));
  pump();
}

/**
 * @param {Item} item
 * @param {"verified" | "mismatch" | "error"} phase
 * @param {string} detail
 */
function finish(item, phase, detail) {
  item.phase = phase;
  item.detail = detail;
  changed(item);
}

/** @param {File} file */
function addFile(file) {
  const li = createRow(rowTemplate, file.name);
  const item = new Item(file, li);
  items.push(item);
  itemOfRow.set(li, item);
  rowsList.append(li);
  renderRow(li, rowView(item.model()));
  return item;
}

/**
 * Files chosen together get their stored names together (see names.js), then wait their turn.
 *
 * @param {Item[]} batch
 */
function queue(batch) {
  const name = archiveName.value;
  for (const item of batch) {
    item.storedName = storedName(name, item.file.name, batch.length);
    showStoredName(item.li, item.storedName);
    const problem = nameProblem(item.storedName);
    if (problem) {
      finish(item, "error", problem);
    } else {
      item.queued = true;
    }
  }
  pump();
}

function pump() {
  let busy = items.filter((i) => i.busy).length;
  for (const item of items) {
    if (busy >= config.parallel) return;
    if (item.queued && !item.started) {
      item.started = true;
      busy += 1;
      begin(item).catch((error) => finish(item, "error", String(error?.message ?? error)));
    }
  }
}

/**
 * tus-js-client's own memory of this file (its URL storage, keyed by our fingerprint key).
 * Entries made before this page was loaded whose upload the server no longer lists are
 * forgotten: the server's list is the truth.
 *
 * @param {File} file
 * @param {string} key
 * @returns {Promise<any[]>}
 */
async function rememberedUploads(file, key) {
  const probe = new tus.Upload(file, { endpoint, fingerprint: () => Promise.resolve(key) });
  let previous = [];
  try {
    previous = await probe.findPreviousUploads();
  } catch {
    return [];
  }
  const kept = [];
  for (const p of previous) {
    const stale =
      p.uploadUrl &&
      !listedIds.has(uploadIdOf(p.uploadUrl)) &&
      Date.parse(p.creationTime) < pageLoadedAt;
    if (stale) {
      await tus.defaultOptions.urlStorage.removeUpload(p.urlStorageKey).catch(() => {});
    } else if (p.uploadUrl) {
      kept.push(p);
    }
  }
  return kept;
}

/** @param {Item} item */
async function begin(item) {
  const { file } = item;
  item.detail = "reading the file";
  changed(item);
  const print = await fingerprint(file);
  const key = `pyarchive::${print}::${file.size}`;
  const remembered = await rememberedUploads(file, key);
  const match = findResumable(
    available,
    { fileName: file.name, storedName: item.storedName, size: file.size, fingerprint: print },
    remembered.map((p) => p.uploadUrl),
  );
  let previousUpload = null;
  if (match) {
    available.splice(available.indexOf(/** @type {any} */ (match)), 1);
    dropUnfinished(/** @type {any} */ (match).element);
    item.storedName = match.filename;
    showStoredName(item.li, item.storedName);
    previousUpload = remembered.find((p) => uploadIdOf(p.uploadUrl) === uploadIdOf(match.url));
  }

  item.hash = hashInWorker(file, { workerUrl, sliceSize: config.hashSliceSize });
  item.hash.catch(() => {}); // read when the transfer is done

  /** @type {Record<string, string>} */
  const metadata = { filename: item.storedName, fingerprint: print };
  if (file.type) metadata.filetype = file.type;
  item.transfer = new Transfer(file, {
    Upload: tus.Upload,
    clock: realClock,
    isOnline: () => navigator.onLine,
    endpoint,
    chunkSize: config.chunkSize,
    stallMs: config.stallSeconds * 1000,
    retryDelays: config.retryDelays,
    headers: { "X-CSRF-Token": csrfToken },
    metadata,
    tusFingerprint: key,
    uploadUrl: previousUpload ? null : (match?.url ?? null),
    previousUpload,
    initialOffset: match?.offset ?? 0,
    onChange: () => changed(item),
    onSuccess: (url) => {
      verify(item, url);
    },
  });
  item.phase = "transfer";
  item.detail = "";
  item.transfer.start();
}

/**
 * @param {Item} item
 * @param {string} url
 */
async function verify(item, url) {
  item.phase = "verifying";
  item.detail = "comparing checksums";
  changed(item);
  try {
    const [local, stored] = await Promise.all([
      /** @type {Promise<string>} */ (item.hash),
      storedSha256(url, {
        fetch: (path, init) => window.fetch(path, init),
        sleep: (ms) => new Promise((resolve) => window.setTimeout(resolve, ms)),
      }),
    ]);
    if (local === stored) {
      finish(item, "verified", `sha256 ${local}`);
    } else {
      finish(item, "mismatch", `checksum mismatch: this file's sha256 is ${local}, the server stored ${stored}`);
    }
  } catch (error) {
    finish(item, "error", `not verified: ${/** @type {any} */ (error)?.message ?? error}`);
  }
}

/** Every transfer waiting to retry tries now; every one in flight is checked for a stall. */
function kickAll() {
  for (const item of items) item.transfer?.kick();
}

filesInput.addEventListener("change", () => {
  const batch = Array.from(filesInput.files ?? [], addFile);
  // Cleared, so choosing the same file again (to resume it) is a change too.
  filesInput.value = "";
  if (autoStart.checked) queue(batch);
  renderAll();
});

form.addEventListener("submit", (event) => {
  event.preventDefault();
  queue(items.filter((i) => !i.queued && i.phase === "waiting"));
});

rowsList.addEventListener("click", (event) => {
  const button = /** @type {Element} */ (event.target).closest("button");
  const item = button && itemOfRow.get(/** @type {Element} */ (button.closest("li.upload")));
  if (!button || !item?.transfer) return;
  if (button.classList.contains("pause")) item.transfer.pause();
  if (button.classList.contains("resume")) item.transfer.resume();
});

window.addEventListener("online", kickAll);
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") kickAll();
});
// Rates and times left move even when no event does.
window.setInterval(() => {
  if (items.some((i) => ACTIVE.has(i.state))) renderAll();
}, 1000);

form.dataset.ready = "true"; // for tests: the script has wired the page
renderAll();
