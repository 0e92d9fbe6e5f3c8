// The login of this browser (SPEC §12). The refresh token is kept in
// localStorage, so every tab, and a tab opened after all were closed, is
// logged in; the access token (JWT_TTL, 15 minutes by default) lives in
// memory only, one per tab, and is refreshed a little before it expires,
// after a 401, and after close 4501.
//
// Refresh tokens rotate: each refresh spends the stored one and stores its
// successor, and the server revokes the whole session when a spent one is
// presented again. So refreshes never race: one at a time per tab (callers
// share it), and across tabs one at a time under a Web Lock, each reading
// the token the previous one stored. (Browsers without navigator.locks,
// e.g. on plain http to another host than localhost, only get the first.)

const KEY = "windi.session"; // {"session_id": 12, "refresh_token": "…"}
const LOCK = "windi.refresh";

// SessionEnded: the session cannot be refreshed (revoked, expired, logged
// out in another tab); log in again.
export class SessionEnded extends Error {
  constructor(notice) {
    super(notice);
    this.name = "SessionEnded";
  }
}

function stored() {
  try {
    const s = JSON.parse(localStorage.getItem(KEY) ?? "null");
    return s && typeof s.refresh_token === "string" && s.refresh_token ? s : null;
  } catch {
    return null;
  }
}

export class Session {
  // onEnd(notice) runs when the session ends without this tab asking;
  // onStart() when another tab of this browser logs in while this one is
  // logged out.
  constructor({ onEnd, onStart }) {
    this.onEnd = onEnd;
    this.onStart = onStart;
    this.access = "";
    this.expiresAt = 0;
    this.lifetime = 0;
    this.id = stored()?.session_id ?? 0;
    this.inflight = null;
    this.timer = 0;
    window.addEventListener("storage", (ev) => {
      if (ev.key !== KEY && ev.key !== null) return;
      const now = stored();
      if (!now) {
        if (this.id) this.end("You logged out in another tab.");
      } else if (!this.id) {
        this.id = now.session_id;
        this.onStart?.();
      } else if (now.session_id !== this.id) {
        location.reload(); // another tab logged in anew: follow it
      }
    });
  }

  // active: this browser has a login (it may still turn out to be revoked).
  get active() {
    return this.id !== 0 && stored() !== null;
  }

  // start keeps the answer of POST /login.
  start(tok) {
    this.apply(tok);
  }

  // token returns an access token good for a while, refreshed first when it
  // is about to expire. It throws SessionEnded, or another error when the
  // server could not be asked (try again later).
  async token() {
    if (this.access && Date.now() < this.expiresAt - this.early()) return this.access;
    return this.renew(this.access);
  }

  // renew returns a token other than stale: the current one when a refresh
  // already replaced it, else a refresh's (the one in flight, or a new one).
  renew(stale) {
    if (this.inflight) return this.inflight;
    if (this.access && this.access !== stale) return Promise.resolve(this.access);
    this.inflight = (navigator.locks ? navigator.locks.request(LOCK, () => this.refresh()) : this.refresh()).finally(() => {
      this.inflight = null;
    });
    return this.inflight;
  }

  async refresh() {
    const s = stored();
    if (!s) throw this.end("Your session has ended. Please log in again.");
    if (this.id && s.session_id !== this.id) {
      location.reload(); // another tab logged in anew
      throw new SessionEnded("");
    }
    const res = await fetch("/token/refresh", {
      method: "POST",
      headers: { Accept: "application/json", "Content-Type": "application/json" },
      body: JSON.stringify({ refresh_token: s.refresh_token }),
      cache: "no-store",
    });
    if (res.status === 400 || res.status === 401 || res.status === 422) {
      throw this.end("Your session has ended. Please log in again.");
    }
    if (!res.ok) throw new Error(`token refresh: HTTP ${res.status}`);
    const tok = await res.json();
    this.apply(tok);
    return tok.access_token;
  }

  apply(tok) {
    localStorage.setItem(KEY, JSON.stringify({ session_id: tok.session_id, refresh_token: tok.refresh_token }));
    this.id = tok.session_id;
    this.access = tok.access_token;
    this.lifetime = tok.expires_in * 1000;
    this.expiresAt = Date.now() + this.lifetime;
    // Refresh ahead, so REST calls and the reconnect after 4501 find a
    // fresh token waiting.
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.ahead(), Math.max(1000, this.lifetime - this.early()));
  }

  // ahead refreshes before the token expires; offline, it waits for the
  // network (whoever needs a token first then refreshes it).
  ahead() {
    if (!this.id) return;
    if (!navigator.onLine) {
      window.addEventListener("online", () => this.ahead(), { once: true });
      return;
    }
    this.renew(this.access).catch(() => {});
  }

  // early: how long before expiry a token counts as expired here; a quarter
  // of its lifetime, at most a minute.
  early() {
    return Math.min(60_000, this.lifetime / 4);
  }

  // end forgets the session because the server ended it, tells onEnd once
  // and returns the error for callers to throw.
  end(notice) {
    const was = this.id;
    this.forget();
    if (was) this.onEnd?.(notice);
    return new SessionEnded(notice);
  }

  // forget drops the tokens here (after a logout, or when the server says
  // the session is over); every other tab of the browser logs out too.
  forget() {
    clearTimeout(this.timer);
    this.id = 0;
    this.access = "";
    this.expiresAt = 0;
    localStorage.removeItem(KEY);
  }
}
