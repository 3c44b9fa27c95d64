// Keeps a page current from the live event stream (/api/events, server-sent events).
// The server renders; this only asks it again for the part of the page an event touches:
// a file's page swaps in /archives/<id>/live; any other page names the groups of events it
// follows on its script tag (data-live-groups="files", or "nodes", "jobs": the staff
// console's, which only staff accounts receive), re-reads itself when one arrives and swaps
// in each element marked data-live-region (by id).
// EventSource reconnects by itself and sends Last-Event-ID, so nothing is missed; a
// "reset" event (the cursor is too old) simply refreshes the same way.

const FILE_EVENTS = [
  "upload.progress", "upload.complete", "file.created", "file.updated", "file.deleted",
  "file.rolled_back", "file.moved", "replica.confirmed", "part.mirrored", "file.backed_up",
  "restore.progress", "file.restored",
];
const GROUPS = {
  files: FILE_EVENTS,
  nodes: ["node.status", "node.changed"],
  jobs: ["job.started", "job.finished"],
};

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

function regionIds(doc) {
  return [...doc.querySelectorAll("[data-live-region]")].map((region) => region.id).sort();
}

function ownScript() {
  return document.querySelector('script[src="/static/live.js"]');
}

function followedEvents() {
  const script = ownScript();
  const groups = (script && script.dataset.liveGroups) || "files";
  return groups.split(" ").flatMap((group) => GROUPS[group] || []);
}

function settleAddress() {
  // A form's answer (a node drained, a job's interval set) is drawn at the form's address,
  // which a GET answers with another page or not at all. Such a page names its own address
  // (data-live-page), which becomes the one shown: re-read by the refresher, and reloaded by
  // the browser without sending the form again.
  const script = ownScript();
  const own = script && script.dataset.livePage;
  if (own && own !== location.pathname) history.replaceState(null, "", own);
}

function regionRefresher() {
  return async () => {
    try {
      const page = new DOMParser().parseFromString(await fetchHtml(location.href), "text/html");
      // A region that came or went (the uploads section, say): the page as a whole changed.
      if (regionIds(page).join(" ") !== regionIds(document).join(" ")) {
        location.replace(location.href.split("#")[0]);  // a GET of the address shown, not a form
        return;
      }
      let typing = false;
      for (const id of regionIds(page)) {
        const shown = document.getElementById(id);
        // Never under someone's cursor: a field being typed into waits for them to leave it.
        if (shown.contains(document.activeElement) && document.activeElement.matches("input, select, textarea")) {
          typing = true;
          continue;
        }
        shown.replaceWith(page.getElementById(id));
      }
      if (typing) setTimeout(() => later(regionRefresher()), 2000);
    } catch (error) {
      console.warn("live update failed", error);
    }
  };
}

function start() {
  settleAddress();
  const live = document.getElementById("live");
  const fileId = live ? live.dataset.fileId : null;
  const refresh = live ? fileRefresher(live) : regionRefresher();
  const types = live ? FILE_EVENTS : followedEvents();
  // From the newest event when the page was read, so nothing between that and now is missed
  // (a reconnect then goes on from Last-Event-ID, which the server prefers to since).
  const since = document.querySelector('meta[name="events-since"]');
  const source = new EventSource(since ? `/api/events?since=${encodeURIComponent(since.content)}` : "/api/events");
  const onEvent = (message) => {
    let data = {};
    try { data = JSON.parse(message.data || "{}"); } catch { /* not ours to read */ }
    if (fileId === null || data.file_id === fileId || message.type === "reset") {
      later(refresh);
    }
  };
  for (const type of [...types, "reset"]) source.addEventListener(type, onEvent);
  document.documentElement.dataset.live = "on";
  source.addEventListener("open", () => { document.documentElement.dataset.live = "on"; });
  source.addEventListener("error", () => { document.documentElement.dataset.live = "reconnecting"; });
}

start();
