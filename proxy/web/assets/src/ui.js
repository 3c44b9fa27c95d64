/**
 * The page's DOM: rows cloned from the `<template id="upload-row">` of archives_new.html, and
 * the numbers of view.js put into them. No inline styles (the CSP forbids them): visibility
 * is the `hidden` attribute, bars are `<progress>` elements.
 */

/**
 * @param {ParentNode} root
 * @param {string} selector
 * @returns {HTMLElement}
 */
function part(root, selector) {
  const found = root.querySelector(selector);
  if (!found) throw new Error(`upload page: ${selector} is missing from the template`);
  return /** @type {HTMLElement} */ (found);
}

/**
 * A new `li.upload` for a chosen file.
 *
 * @param {HTMLTemplateElement} template
 * @param {string} fileName
 * @returns {HTMLLIElement}
 */
export function createRow(template, fileName) {
  const li = /** @type {HTMLLIElement} */ (part(template.content, "li.upload").cloneNode(true));
  li.dataset.filename = fileName;
  part(li, ".name").textContent = fileName;
  return li;
}

/**
 * Says under which name the file is stored, when that is not its own name.
 *
 * @param {HTMLElement} li
 * @param {string} storedName
 */
export function showStoredName(li, storedName) {
  const el = part(li, ".stored-name");
  li.dataset.storedName = storedName;
  el.textContent = `stored as “${storedName}”`;
  el.hidden = storedName === li.dataset.filename;
}

/**
 * @param {HTMLElement} li
 * @param {ReturnType<typeof import("./view.js").rowView>} view
 */
export function renderRow(li, view) {
  li.dataset.state = view.state;
  li.dataset.stalls = String(view.stalls);
  li.dataset.retries = String(view.retries);
  const bar = /** @type {HTMLProgressElement} */ (part(li, "progress"));
  bar.max = view.max;
  bar.value = view.value;
  setText(part(li, ".percent"), view.percent);
  setText(part(li, ".rate"), view.rate);
  setText(part(li, ".eta"), view.eta);
  setText(part(li, ".state"), view.state);
  setText(part(li, ".detail"), view.detail);
  part(li, ".pause").hidden = !view.canPause;
  part(li, ".resume").hidden = !view.canResume;
}

/**
 * @param {HTMLElement} overall the `#overall` element
 * @param {ReturnType<typeof import("./view.js").overallView>} view
 */
export function renderOverall(overall, view) {
  const bar = /** @type {HTMLProgressElement} */ (part(overall, "progress"));
  bar.max = view.max;
  bar.value = view.value;
  setText(part(overall, ".percent"), view.percent);
  setText(part(overall, ".rate"), view.rate);
  setText(part(overall, ".eta"), view.eta);
  setText(part(overall, ".summary"), view.summary);
}

/**
 * Takes an unfinished upload off the list once a chosen file continues it.
 *
 * @param {HTMLElement} li an `#unfinished li`
 */
export function dropUnfinished(li) {
  const list = li.parentElement;
  li.remove();
  if (list && !list.querySelector("li")) {
    const empty = document.getElementById("no-unfinished");
    if (empty) empty.hidden = false;
  }
}

/**
 * @param {HTMLElement} el
 * @param {string} text
 */
function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}
