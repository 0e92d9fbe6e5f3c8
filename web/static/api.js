// REST for the page through the SDK (vendor/windi-sdk.js): each call goes
// through the openapi-fetch client of the login's WindiSession, typed by
// the spec's paths, which puts the access token on it, refreshes the token
// before it expires and once more after a 401 (then sends the call again).
// What is left here is the page's own: one method per call it makes, each
// returning the answer's body or throwing the SDK's ApiError (status and
// RFC 9457 problem), and a readable line for any error.
import { ApiError, RefreshError, SessionEndedError, createWindiClient } from "./vendor/windi-sdk.js";

export { ApiError };

// noStore: no API answer comes from the browser's cache.
export const noStore = (input, init) => fetch(input, { ...init, cache: "no-store" });

async function body(call) {
  const { data, error, response } = await call;
  if (!response.ok) throw new ApiError(response.status, typeof error === "object" && error?.code ? error : undefined);
  return data ?? null;
}

export class Api {
  // client() returns the session's REST client (WindiSession.api); it
  // throws when there is no session.
  constructor(client) {
    this.client = client;
  }

  get(path, params) {
    return body(this.client().GET(path, { params }));
  }

  me() {
    return this.get("/users/me");
  }

  rename(name) {
    return body(this.client().PATCH("/users/me", { body: { name } }));
  }

  // changePassword revokes every other session of the user.
  changePassword(currentPassword, newPassword) {
    return body(this.client().POST("/users/me/password", { body: { current_password: currentPassword, new_password: newPassword } }));
  }

  sessions() {
    return this.get("/sessions");
  }

  revokeSession(id) {
    return body(this.client().DELETE("/sessions/{session_id}", { params: { path: { session_id: id } } }));
  }

  // user is another user's public profile ({id, name}).
  user(id) {
    return this.get("/users/{user_id}", { path: { user_id: id } });
  }

  // searchUsers matches a name prefix or an exact email; q is required.
  searchUsers(q, limit = 20) {
    return this.get("/users", { query: { q, limit } });
  }

  chats() {
    return this.get("/chats");
  }

  chat(id) {
    return this.get("/chats/{chat_id}", { path: { chat_id: id } });
  }

  openPrivate(userId) {
    return body(this.client().POST("/chats", { body: { type: "private", user_id: userId } }));
  }

  createGroup(name, memberIds) {
    return body(this.client().POST("/chats", { body: { type: "group", name, member_ids: memberIds } }));
  }

  // history returns up to limit messages, oldest first; with beforeSeq, the
  // newest ones below it.
  history(chatId, { limit = 50, beforeSeq, afterSeq } = {}) {
    const query = { limit };
    if (beforeSeq) query.before_seq = beforeSeq;
    if (afterSeq !== undefined) query.after_seq = afterSeq;
    return this.get("/history/{chat_id}", { path: { chat_id: chatId }, query });
  }

  // searchMessages finds messages of the user's chats holding every word of
  // q (or words beginning with them), newest first; chatId narrows to one
  // chat, beforeId pages back.
  searchMessages({ q, chatId, limit = 20, beforeId } = {}) {
    const query = { q, limit };
    if (chatId) query.chat_id = chatId;
    if (beforeId) query.before_id = beforeId;
    return this.get("/search", { query });
  }

  presence(chatId) {
    return this.get("/chats/{chat_id}/presence", { path: { chat_id: chatId } });
  }

  addMember(groupId, userId) {
    return body(this.client().POST("/groups/{group_id}/add_user/{user_id}", { params: { path: { group_id: groupId, user_id: userId } } }));
  }

  removeMember(groupId, userId) {
    return body(this.client().POST("/groups/{group_id}/remove_user/{user_id}", { params: { path: { group_id: groupId, user_id: userId } } }));
  }
}

// register needs no session.
export function register(name, email, password) {
  return body(createWindiClient(location.origin, undefined, { fetch: noStore }).POST("/register", { body: { name, email, password } }));
}

// describeError: field-level problems as one readable line.
export function describeError(err) {
  if (err instanceof SessionEndedError) return "Your session has ended. Please log in again.";
  if (err instanceof ApiError) {
    const p = err.problem;
    if (p?.errors?.length) return p.errors.map((e) => e.message).join("; ");
    if (err.status >= 500) return "The server is unavailable. Try again in a moment.";
    return p?.detail || p?.title || `HTTP ${err.status}`;
  }
  if (err instanceof RefreshError && err.status >= 500) return "The server is unavailable. Try again in a moment.";
  return "Cannot reach the server. Check your connection and try again.";
}
