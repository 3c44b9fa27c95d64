// Keeps a page current from the live event stream (/api/events, server-sent events).
// The server renders; this only asks it again for the part of the page an event touches:
// a file's page swaps in /archives/<id>/live, the archives list re-reads its own table.
// EventSource reconnects by itself and sends Last-Event-ID, so nothing is missed; a
// "reset" event (the cursor is too old) simply refreshes the same way.

const FILE_EVENTS = [
  "upload.progress", "upload.complete", "file.created", "file.updated", "file.deleted",
  "file.rolled_back", "replica.confirmed", "part.mirrored", "file.backed_up",
  "restore.progress", "file.restored",
];

let pending = null;

function later(refresh) {
  // Many events in a burst (parts of one file) make one request, not one each.
  if (pending === null) {
    pending = setTimeout(() => { pending = null; refresh(); }, 250);
  }
}

async function fetchHtml(url) {
  const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
  if (!response.ok) throw new Error(`${url}: ${response.status}`);
  return response.text();
}

function fileRefresher(live) {
  return async () => {
    try {
      live.innerHTML = await fetchHtml(live.dataset.liveUrl);
    } catch (error) {
      console.warn("live update failed", error);
    }
  };
}

function listRefresher() {
  return async () => {
    try {
      const page = new DOMParser().parseFromString(await fetchHtml(location.href), "text/html");
      for (const id of ["files", "uploading"]) {
        const fresh = page.getElementById(id);
        const shown = document.getElementById(id);
        if (fresh && shown) shown.replaceWith(fresh);
        else if (fresh || shown) { location.reload(); return; }
      }
    } catch (error) {
      console.warn("live update failed", error);
    }
  };
}

function start() {
  const live = document.getElementById("live");
  const fileId = live ? live.dataset.fileId : null;
  const refresh = live ? fileRefresher(live) : listRefresher();
  const source = new EventSource("/api/events");
  const onEvent = (message) => {
    let data = {};
    try { data = JSON.parse(message.data || "{}"); } catch { /* not ours to read */ }
    if (fileId === null || data.file_id === fileId || message.type === "reset") {
      later(refresh);
    }
  };
  for (const type of [...FILE_EVENTS, "reset"]) source.addEventListener(type, onEvent);
  document.documentElement.dataset.live = "on";
  source.addEventListener("open", () => { document.documentElement.dataset.live = "on"; });
  source.addEventListener("error", () => { document.documentElement.dataset.live = "reconnecting"; });
}

start();
