// REST client for the WinDI Chat API (api/openapi.yaml): JSON in and out,
// RFC 9457 problems turned into ApiError, the session's access token on
// every call (session.js), refreshed and the call sent again after a 401.

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.code = problem?.code ?? "";
    this.errors = problem?.errors ?? [];
  }
}

export class Api {
  // token() returns the bearer token (refreshed when about to expire);
  // renew(stale) a new one after a 401; onUnauthorized runs when an
  // authenticated call is refused even so (a revoked session).
  constructor({ token, renew, onUnauthorized }) {
    this.token = token;
    this.renew = renew;
    this.onUnauthorized = onUnauthorized;
  }

  // request sends one call; bearer, when given, is the token to send (no
  // refresh, no retry).
  async request(method, path, { body, form, auth = true, retry = true, bearer } = {}) {
    const headers = { Accept: "application/json" };
    let payload;
    if (form) {
      payload = new URLSearchParams(Object.entries(form).filter(([, v]) => v !== undefined && v !== null));
    } else if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    const token = bearer ?? (auth ? await this.token() : "");
    if (token) headers.Authorization = `Bearer ${token}`;
    const res = await fetch(path, { method, headers, body: payload, cache: "no-store" });
    if (res.status === 204) return null;
    const type = res.headers.get("Content-Type") ?? "";
    const data = type.includes("json") ? await res.json().catch(() => null) : null;
    if (!res.ok) {
      // A 401 about the token (not a wrong password): refresh once and
      // send again once; a revoked session is over without asking.
      if (res.status === 401 && token && !bearer && data?.code !== "invalid_credentials") {
        if (retry && data?.code !== "session_revoked") {
          await this.renew(token);
          return this.request(method, path, { body, form, auth, retry: false });
        }
        this.onUnauthorized?.(data?.code ?? "");
      }
      throw new ApiError(res.status, data);
    }
    return data;
  }

  register(name, email, password) {
    return this.request("POST", "/register", { body: { name, email, password }, auth: false });
  }

  // OAuth2 password flow: the email is the username; device names the
  // session in the device list.
  login(email, password, device) {
    return this.request("POST", "/login", { form: { grant_type: "password", username: email, password, device }, auth: false });
  }

  // logout revokes the session of token on every replica (its sockets
  // close with 4401).
  logout(token) {
    return this.request("POST", "/logout", { bearer: token });
  }

  me() {
    return this.request("GET", "/users/me");
  }

  rename(name) {
    return this.request("PATCH", "/users/me", { body: { name } });
  }

  // changePassword revokes every other session of the user.
  changePassword(currentPassword, newPassword) {
    return this.request("POST", "/users/me/password", { body: { current_password: currentPassword, new_password: newPassword } });
  }

  sessions() {
    return this.request("GET", "/sessions");
  }

  revokeSession(id) {
    return this.request("DELETE", `/sessions/${id}`);
  }

  // user is another user's public profile ({id, name}).
  user(id) {
    return this.request("GET", `/users/${id}`);
  }

  // searchUsers matches a name prefix or an exact email; q is required.
  searchUsers(q, limit = 20) {
    return this.request("GET", `/users?${new URLSearchParams({ q, limit: String(limit) })}`);
  }

  chats() {
    return this.request("GET", "/chats");
  }

  chat(id) {
    return this.request("GET", `/chats/${id}`);
  }

  openPrivate(userId) {
    return this.request("POST", "/chats", { body: { type: "private", user_id: userId } });
  }

  createGroup(name, memberIds) {
    return this.request("POST", "/chats", { body: { type: "group", name, member_ids: memberIds } });
  }

  // history returns up to limit messages, oldest first; with beforeSeq, the
  // newest ones below it.
  history(chatId, { limit = 50, beforeSeq, afterSeq } = {}) {
    const params = new URLSearchParams({ limit: String(limit) });
    if (beforeSeq) params.set("before_seq", String(beforeSeq));
    if (afterSeq !== undefined) params.set("after_seq", String(afterSeq));
    return this.request("GET", `/history/${chatId}?${params}`);
  }

  // searchMessages finds messages of the user's chats holding every word of
  // q (or words beginning with them), newest first; chatId narrows to one
  // chat, beforeId pages back.
  searchMessages({ q, chatId, limit = 20, beforeId } = {}) {
    const params = new URLSearchParams({ q, limit: String(limit) });
    if (chatId) params.set("chat_id", String(chatId));
    if (beforeId) params.set("before_id", String(beforeId));
    return this.request("GET", `/search?${params}`);
  }

  presence(chatId) {
    return this.request("GET", `/chats/${chatId}/presence`);
  }

  addMember(groupId, userId) {
    return this.request("POST", `/groups/${groupId}/add_user/${userId}`);
  }

  removeMember(groupId, userId) {
    return this.request("POST", `/groups/${groupId}/remove_user/${userId}`);
  }
}

// Field-level problems as one readable line.
export function describeError(err) {
  if (err?.name === "SessionEnded") return err.message;
  if (err instanceof ApiError) {
    if (err.errors.length) return err.errors.map((e) => e.message).join("; ");
    if (err.status === 0 || err.status >= 500) return "The server is unavailable. Try again in a moment.";
    return err.message;
  }
  return "Cannot reach the server. Check your connection and try again.";
}
