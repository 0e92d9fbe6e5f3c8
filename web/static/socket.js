// The all-chats WebSocket (/ws?token=…) with reconnects: exponential
// backoff with jitter after a drop, at once after a server shutdown (1001)
// or when the browser comes back online, never while it is offline.

// Close codes from the server (README, "WebSocket protocol").
const GOING_AWAY = 1001; // the replica shuts down: reconnect to another
const TOKEN_EXPIRED = 4501; // log in again

const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;

export class Socket {
  // url() builds the URL of each attempt; onOpen runs on every (re)connect,
  // onFrame for each decoded server frame, onState with "connecting",
  // "open", "waiting" (with the delay in ms), "offline" or "closed";
  // onAuthFailed when the server rejects the token.
  constructor({ url, onOpen, onFrame, onState, onAuthFailed, checkAuth }) {
    Object.assign(this, { url, onOpen, onFrame, onState, onAuthFailed, checkAuth });
    this.ws = null;
    this.attempt = 0;
    this.timer = 0;
    this.running = false;
    this.onOnline = () => this.connectNow();
    this.onOffline = () => {
      // The network is gone: say so and wait for it instead of letting a
      // half-dead socket linger until the heartbeat notices.
      clearTimeout(this.timer);
      this.drop();
      this.onState?.("offline");
    };
    this.onVisible = () => {
      if (document.visibilityState === "visible" && this.running && !this.ws && navigator.onLine) this.connectNow();
    };
  }

  start() {
    if (this.running) return;
    this.running = true;
    window.addEventListener("online", this.onOnline);
    window.addEventListener("offline", this.onOffline);
    document.addEventListener("visibilitychange", this.onVisible);
    this.connect();
  }

  stop() {
    this.running = false;
    clearTimeout(this.timer);
    window.removeEventListener("online", this.onOnline);
    window.removeEventListener("offline", this.onOffline);
    document.removeEventListener("visibilitychange", this.onVisible);
    this.drop();
    this.onState?.("closed");
  }

  get isOpen() {
    return this.ws?.readyState === WebSocket.OPEN;
  }

  // send writes one frame if the socket is open; false otherwise (the
  // caller keeps it and sends it again from onOpen).
  send(frame) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  connectNow() {
    if (!this.running) return;
    clearTimeout(this.timer);
    this.attempt = 0;
    if (!this.ws) this.connect();
  }

  drop() {
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      if (ws.readyState === WebSocket.CONNECTING || ws.readyState === WebSocket.OPEN) ws.close(1000, "client closing");
    }
  }

  connect() {
    if (!this.running || this.ws) return;
    if (!navigator.onLine) {
      this.onState?.("offline");
      return;
    }
    this.onState?.("connecting");
    let opened = false;
    const ws = new WebSocket(this.url());
    this.ws = ws;
    ws.onopen = () => {
      opened = true;
      this.attempt = 0;
      this.onState?.("open");
      this.onOpen?.();
    };
    ws.onmessage = (ev) => {
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch {
        return;
      }
      this.onFrame?.(frame);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (!this.running) return;
      if (ev.code === TOKEN_EXPIRED) {
        this.onAuthFailed?.();
        return;
      }
      if (!opened && this.attempt >= 1) {
        // Refused twice before the upgrade: a 401 looks like any network
        // error from here, so ask the API whether the token still works.
        this.checkAuth?.();
      }
      if (!navigator.onLine) {
        this.onState?.("offline");
        return;
      }
      let delay;
      if (ev.code === GOING_AWAY && opened) {
        delay = 100 + Math.random() * 400; // another replica takes over
      } else {
        const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
        delay = base / 2 + Math.random() * (base / 2);
      }
      this.attempt++;
      this.onState?.("waiting", delay);
      this.timer = setTimeout(() => this.connect(), delay);
    };
  }
}
