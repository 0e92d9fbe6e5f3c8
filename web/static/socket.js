// The all-chats WebSocket (/ws?token=…) with reconnects: exponential
// backoff with jitter after a drop, at once after a server shutdown (1001),
// after the token expired (4501, with a refreshed one) or when the browser
// comes back online, never while it is offline; never again after 4401
// (the session was revoked).

// Close codes from the server (README, "WebSocket protocol").
const GOING_AWAY = 1001; // the replica shuts down: reconnect to another
const REVOKED = 4401; // the session was revoked (signed out elsewhere, password changed): log in again
const TOKEN_EXPIRED = 4501; // reconnect with a refreshed token

const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;

export class Socket {
  // token(expired) resolves to the access token of each attempt (expired:
  // the last one was refused, get a new one); urlOf builds its URL with it;
  // onOpen runs on every (re)connect, onFrame for each decoded server
  // frame, onState with "connecting", "open", "waiting" (with the delay in
  // ms), "offline" or "closed"; onRevoked when the server ends the session
  // (4401); checkAuth when the handshake keeps failing (a 401 looks like a
  // network error from here).
  constructor({ token, urlOf, onOpen, onFrame, onState, onRevoked, checkAuth }) {
    Object.assign(this, { token, urlOf, onOpen, onFrame, onState, onRevoked, checkAuth });
    this.ws = null;
    this.dialing = false; // waiting for a token
    this.expired = false;
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
      if (document.visibilityState === "visible" && this.running && !this.ws && !this.dialing && navigator.onLine) this.connectNow();
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

  // retry schedules the next attempt after the backoff.
  retry() {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
    const delay = base / 2 + Math.random() * (base / 2);
    this.attempt++;
    this.onState?.("waiting", delay);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  drop() {
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      if (ws.readyState === WebSocket.CONNECTING || ws.readyState === WebSocket.OPEN) ws.close(1000, "client closing");
    }
  }

  async connect() {
    if (!this.running || this.ws || this.dialing) return;
    if (!navigator.onLine) {
      this.onState?.("offline");
      return;
    }
    this.onState?.("connecting");
    this.dialing = true;
    let token;
    try {
      token = await this.token(this.expired);
    } catch {
      // The session ended (then stop() follows), or the refresh did not
      // reach the server: back off.
      this.dialing = false;
      if (this.running && !this.ws) this.retry();
      return;
    }
    this.dialing = false;
    if (!this.running || this.ws || !navigator.onLine) return;
    this.expired = false;
    let opened = false;
    const ws = new WebSocket(this.urlOf(token));
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
      if (ev.code === REVOKED) {
        this.onRevoked?.();
        return;
      }
      if (ev.code === TOKEN_EXPIRED) {
        this.expired = true;
        this.connect(); // at once, with a refreshed token
        return;
      }
      if (!opened && this.attempt >= 1) {
        // Refused twice before the upgrade: a 401 looks like any network
        // error from here, so ask the API whether the token still works
        // (a 401 there refreshes it, or ends the session).
        this.checkAuth?.();
      }
      if (!navigator.onLine) {
        this.onState?.("offline");
        return;
      }
      if (ev.code === GOING_AWAY && opened) {
        const delay = 100 + Math.random() * 400; // another replica takes over
        this.attempt++;
        this.onState?.("waiting", delay);
        this.timer = setTimeout(() => this.connect(), delay);
        return;
      }
      this.retry();
    };
  }
}
