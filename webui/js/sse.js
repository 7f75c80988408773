// Server-Sent Events with recovery.
//
// EventSource reconnects by itself after a dropped connection and sends the last event id
// it saw as the Last-Event-ID header, so the server resumes where we were. But when the
// server is down long enough that a reconnect gets a refused connection or a non-200,
// the browser gives up (readyState CLOSED). Then we open a fresh EventSource after a
// backoff, passing the last id we saw as `cursor` in the query (the header cannot
// be set from script) and call `onResync` so the page can reload anything it missed.

import { checkSession } from "./api.js";

const live = new Set();
// Counters for diagnostics (and the browser tests): opens, and reconnects we made ourselves.
window.__runyard = window.__runyard || {};
const stats = (window.__runyard.sse = window.__runyard.sse || { opens: 0, manualReconnects: 0, errors: 0 });

function updateIndicator() {
  const el = document.getElementById("conn");
  if (!el) return;
  if (live.size === 0) { el.className = "conn conn-idle"; el.title = "No live stream open"; return; }
  const allOpen = [...live].every((s) => s.open);
  el.className = allOpen ? "conn conn-ok" : "conn conn-down";
  el.title = allOpen ? "Live: receiving updates" : "Reconnecting to the server…";
}

export class LiveStream {
  /**
   * @param {string} url  SSE endpoint
   * @param {Record<string, (data:any, ev:MessageEvent)=>void>} handlers  per event name
   * @param {{onResync?: () => void, onOpen?: () => void}} opts
   */
  constructor(url, handlers, opts = {}) {
    this.url = url;
    this.handlers = handlers;
    this.opts = opts;
    this.lastEventId = null;
    this.open = false;
    this.closed = false;
    this.retryMs = 500;
    this.timer = null;
    this.hadError = false;
    live.add(this);
    this.connect();
  }

  connect() {
    if (this.closed) return;
    let url = this.url;
    if (this.lastEventId) url += (url.includes("?") ? "&" : "?") + "cursor=" + encodeURIComponent(this.lastEventId);
    const es = new EventSource(url);
    this.es = es;
    es.onopen = () => {
      stats.opens += 1;
      this.closedInRow = 0;
      this.open = true;
      this.retryMs = 500;
      updateIndicator();
      if (this.hadError && this.opts.onResync) this.opts.onResync();
      this.hadError = false;
      if (this.opts.onOpen) this.opts.onOpen();
    };
    es.onerror = () => {
      stats.errors += 1;
      this.open = false;
      this.hadError = true;
      updateIndicator();
      if (es.readyState === EventSource.CLOSED) {
        // The browser gave up; try again ourselves, backing off to 5 s.
        clearTimeout(this.timer);
        stats.manualReconnects += 1;
        // A cursor the server refuses (say its database was replaced) would fail forever:
        // after two refusals start fresh; onResync reloads everything anyway.
        this.closedInRow = (this.closedInRow || 0) + 1;
        if (this.closedInRow >= 2) this.lastEventId = null;
        // Refused because the session ended (a 401)? Then the login page, not endless retries.
        checkSession();
        this.timer = setTimeout(() => this.connect(), this.retryMs);
        this.retryMs = Math.min(this.retryMs * 2, 5000);
      }
    };
    for (const [name, fn] of Object.entries(this.handlers)) {
      es.addEventListener(name, (ev) => {
        if (ev.lastEventId) this.lastEventId = ev.lastEventId;
        let data = null;
        try { data = ev.data ? JSON.parse(ev.data) : null; } catch { data = ev.data; }
        fn(data, ev);
      });
    }
    updateIndicator();
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.es) this.es.close();
    live.delete(this);
    updateIndicator();
  }
}
