// The login of this browser (SPEC §12) on the SDK's WindiSession
// (vendor/windi-sdk.js), which keeps the access token current: refreshed
// when it is about to expire, after a 401 (the call is sent again) and
// after close 4501, one refresh at a time. What is the page's own:
//
// The refresh token is kept in localStorage, so every tab, and a tab
// opened after all were closed, is logged in; the access token lives in
// memory only, one per tab. Refresh tokens rotate and the server revokes
// the whole session when a spent one is presented again, so the tabs take
// turns: every refresh runs under a Web Lock and spends the token the last
// one stored (WindiSession's `shared` option). Browsers without
// navigator.locks (plain http to a host other than localhost) only get one
// refresh at a time per tab. A tab also refreshes a quarter of the token's
// lifetime (at most a minute) before it expires, so a REST call or the
// reconnect after 4501 finds a fresh token waiting; offline, it waits for
// the network.
import { ApiError, WindiSession } from "./vendor/windi-sdk.js";
import { noStore } from "./api.js";

const KEY = "windi.session"; // {"session_id": 12, "refresh_token": "…"}
const LOCK = "windi.refresh";

export const REVOKED_NOTICE = "This device was signed out (from another device, or by a password change). Log in again.";
const ENDED_NOTICE = "Your session has ended. Please log in again.";
const OTHER_TAB_NOTICE = "You logged out in another tab.";

function stored() {
  try {
    const s = JSON.parse(localStorage.getItem(KEY) ?? "null");
    return s && typeof s.refresh_token === "string" && s.refresh_token ? s : null;
  } catch {
    return null;
  }
}

// The lock every tab's refresh takes (none without Web Locks).
const lock = (fn) => (navigator.locks ? navigator.locks.request(LOCK, fn) : fn());

export class Login {
  // onEnd(notice) runs when the session ends without this tab asking;
  // onStart() when another tab of this browser logs in while this one is
  // logged out.
  constructor({ onEnd, onStart }) {
    this.onEnd = onEnd;
    this.onStart = onStart;
    this.timer = 0;
    this.reloading = false;
    const s = stored();
    this.session = s ? this.resume(s) : null; // WindiSession, or null when logged out
    window.addEventListener("storage", (ev) => {
      if (ev.key !== KEY && ev.key !== null) return;
      const now = stored();
      if (!now) {
        if (this.session) this.end(OTHER_TAB_NOTICE);
      } else if (!this.session) {
        this.session = this.resume(now);
        this.onStart?.();
      } else if (this.session.sessionId && now.session_id !== this.session.sessionId) {
        this.reload(); // another tab logged in anew: follow it
      }
    });
  }

  // active: this browser has a login (it may still turn out to be revoked).
  get active() {
    return this.session !== null && stored() !== null;
  }

  // options are the WindiSession options of this browser's login; ref.s
  // is the session they belong to (callbacks of a session that is no
  // longer this page's do nothing).
  options(ref) {
    return {
      fetch: noStore,
      shared: {
        lock,
        read: () => {
          const now = stored();
          if (now && ref.s.sessionId && now.session_id !== ref.s.sessionId) {
            this.reload(); // another tab logged in anew
            return null;
          }
          return now?.refresh_token ?? null;
        },
      },
      onTokens: (t) => {
        if (this.session === ref.s) this.keep(t);
      },
      onEnd: (err) => {
        if (this.session !== ref.s) return;
        this.end(err.status === 4401 || err.problem?.code === "session_revoked" ? REVOKED_NOTICE : err.status === 0 ? OTHER_TAB_NOTICE : ENDED_NOTICE);
      },
    };
  }

  // resume picks up the stored login: the first call refreshes.
  resume(s) {
    const ref = {};
    ref.s = new WindiSession({ ...this.options(ref), baseUrl: location.origin, tokens: { refreshToken: s.refresh_token, sessionId: s.session_id } });
    return ref.s;
  }

  // login logs in (POST /login, the OAuth2 password form; device names the
  // session in the device list) and keeps the session; a wrong password
  // throws ApiError 401.
  async login(email, password, device) {
    const ref = {};
    ref.s = await WindiSession.login(location.origin, email, password, { ...this.options(ref), device });
    this.session = ref.s;
    this.keep(ref.s.tokens);
  }

  // keep stores the refresh token of t and times the next refresh.
  keep(t) {
    localStorage.setItem(KEY, JSON.stringify({ session_id: t.sessionId, refresh_token: t.refreshToken }));
    const life = Math.max(0, t.expiresAt - Date.now());
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.ahead(), Math.max(1000, life - Math.min(60_000, life / 4)));
  }

  // ahead refreshes before the token expires; offline, it waits for the
  // network (whoever needs a token first then refreshes it).
  ahead() {
    const s = this.session;
    if (!s) return;
    if (!navigator.onLine) {
      window.addEventListener("online", () => this.ahead(), { once: true });
      return;
    }
    s.renew(s.tokens.accessToken).catch(() => {});
  }

  // logout revokes the session on the server (POST /logout: its sockets
  // close with 4401 on every replica). It is forgotten here first, so the
  // browser's other tabs say "logged out" rather than "signed out" (they
  // hear of it from a storage event before their sockets close). When the
  // server cannot be reached it is forgotten all the same; it can then be
  // signed out from another device's list.
  async logout() {
    const s = this.session;
    if (!s) return;
    try {
      await s.accessToken(); // refreshed while the store still holds the session
    } catch {
      // ended already, or no server to ask
    }
    this.forget();
    await s.logout().catch(() => {});
  }

  // end forgets the session because the server (or another tab) ended it
  // and tells onEnd.
  end(notice) {
    if (!this.session || this.reloading) return;
    this.forget();
    this.onEnd?.(notice);
  }

  reload() {
    this.reloading = true;
    location.reload();
  }

  // forget drops the session here; every other tab of the browser logs
  // out too (a storage event).
  forget() {
    clearTimeout(this.timer);
    this.session = null;
    localStorage.removeItem(KEY);
  }
}

// wrongPassword: the answer of a login with a wrong email or password.
export const wrongPassword = (err) => err instanceof ApiError && err.status === 401;
