// WinDI Chat TypeScript SDK. The types come from api/openapi.yaml through
// openapi-typescript (`npm run generate` writes src/schema.d.ts); REST calls
// go through openapi-fetch, typed by path and method; WebSocket frames are
// the spec's ClientFrame and ServerFrame schemas.
import createClient, { type Client } from "openapi-fetch";

import type { components, paths } from "./schema.js";

export type { components, paths };
export type Schemas = components["schemas"];
export type User = Schemas["User"];
export type Chat = Schemas["Chat"];
export type Message = Schemas["Message"];
export type Problem = Schemas["Problem"];
export type Token = Schemas["Token"];
/** A frame the client sends on /ws or /ws/{chat_id}. */
export type ClientFrame = Schemas["ClientFrame"];
/** A frame the server sends; narrow it on `type`. */
export type ServerFrame = Schemas["ServerFrame"];
/** The server frame with the given `type`, e.g. ServerFrameOf<"message.new">. */
export type ServerFrameOf<T extends ServerFrame["type"]> = Extract<ServerFrame, { type: T }>;

export type WindiClient = Client<paths>;

/**
 * createWindiClient returns a REST client for the server at baseUrl; with a
 * token every request carries `Authorization: Bearer <token>`.
 */
export function createWindiClient(baseUrl: string, token?: string): WindiClient {
  return createClient<paths>({ baseUrl, headers: token ? { Authorization: `Bearer ${token}` } : {} });
}

/**
 * formBody encodes a form as application/x-www-form-urlencoded, the body
 * POST /login takes (the OAuth2 password flow). Use it as openapi-fetch's
 * bodySerializer.
 */
export function formBody(form: object): string {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(form)) {
    if (v !== undefined && v !== null) params.append(k, String(v));
  }
  return params.toString();
}

/** login exchanges an email and password for an access token. */
export async function login(client: WindiClient, email: string, password: string): Promise<Token> {
  const { data, error, response } = await client.POST("/login", {
    body: { username: email, password },
    bodySerializer: formBody,
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
  });
  if (!data) {
    throw new Error(`login ${email}: ${response.status} ${error?.code ?? ""} ${error?.detail ?? ""}`);
  }
  return data;
}

/**
 * wsURL is the WebSocket URL of one chat (`/ws/{chat_id}`) or, without a
 * chatId, of every chat of the user (`/ws`).
 */
export function wsURL(baseUrl: string, token: string, chatId?: number, sinceSeq?: number): string {
  const u = new URL(chatId === undefined ? "/ws" : `/ws/${chatId}`, baseUrl);
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  u.searchParams.set("token", token);
  if (sinceSeq !== undefined) u.searchParams.set("since_seq", String(sinceSeq));
  return u.toString();
}

/** parseServerFrame decodes one JSON text frame from the server. */
export function parseServerFrame(data: string): ServerFrame {
  const frame: unknown = JSON.parse(data);
  if (typeof frame !== "object" || frame === null || typeof (frame as { type?: unknown }).type !== "string") {
    throw new Error(`not a server frame: ${data.slice(0, 200)}`);
  }
  return frame as ServerFrame;
}
