// Live updates for the team dashboard: follow the server-sent events of this team and, on each
// change the projections announce, fetch the re-rendered numbers and swap them in. Bursts
// collapse into one fetch at a time. The window switch works without reloading (and, without
// this script, as plain links).
(() => {
  "use strict";
  const root = document.getElementById("live");
  if (!root) return;
  const team = root.dataset.team;
  let current = root.dataset.window;
  const status = document.getElementById("live-status");
  // At most one re-read at a time, and at least this long between re-reads: a burst of
  // changes costs one or two fetches, not one per change.
  const REFRESH_INTERVAL_MIN_MS = 200;
  let busy = false;
  let again = false;
  let lastFetch = 0;

  function setStatus(state, text) {
    if (!status) return;
    status.dataset.state = state;
    status.textContent = text;
  }

  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      do {
        again = false;
        const wait = lastFetch + REFRESH_INTERVAL_MIN_MS - Date.now();
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
        lastFetch = Date.now();
        const url = `/dashboard/teams/${team}/live?window=${encodeURIComponent(current)}`;
        const response = await fetch(url, { credentials: "same-origin" });
        if (response.status === 401) {
          window.location.assign("/login?next=" + encodeURIComponent(location.pathname + location.search));
          return;
        }
        if (response.ok) {
          root.innerHTML = await response.text();
          root.dataset.window = current;
          root.dataset.updatedAt = String(Date.now());
          root.dispatchEvent(new CustomEvent("ledger:updated"));
        }
      } while (again);
    } catch (error) {
      setStatus("error", "Update failed; retrying on the next change");
    } finally {
      busy = false;
    }
  }

  function selectWindow(link) {
    current = link.dataset.window;
    document.querySelectorAll("nav.segmented a[data-window]").forEach((a) => {
      if (a === link) a.setAttribute("aria-current", "true"); else a.removeAttribute("aria-current");
    });
    history.replaceState(null, "", `?window=${encodeURIComponent(current)}`);
    refresh();
  }

  document.querySelectorAll("nav.segmented a[data-window]").forEach((link) => {
    link.addEventListener("click", (event) => {
      if (event.metaKey || event.ctrlKey || event.shiftKey) return;
      event.preventDefault();
      selectWindow(link);
    });
  });

  if (!window.EventSource) {
    setStatus("off", "Live updates need a newer browser; reload to refresh");
    return;
  }
  const source = new EventSource(`/dashboard/teams/${team}/events`);
  let connectedOnce = false;
  source.addEventListener("ready", () => {
    setStatus("live", "Live");
    // After a reconnect, changes may have happened while the stream was down.
    if (connectedOnce) refresh();
    connectedOnce = true;
  });
  source.addEventListener("balance", refresh);
  source.addEventListener("usage", refresh);
  source.addEventListener("ended", () => {
    source.close();
    setStatus("off", "Signed out: log in again for live updates");
  });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) setStatus("off", "Live updates stopped; reload the page");
    else setStatus("reconnecting", "Reconnecting…");
  });
})();
