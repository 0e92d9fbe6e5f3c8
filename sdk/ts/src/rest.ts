// REST through openapi-fetch, typed by the paths generated from
// api/openapi.yaml (src/schema.d.ts, committed and checked current in CI).
import createClient, { type Client, type ClientOptions } from "openapi-fetch";

import type { components, paths } from "./schema.js";

type Schemas = components["schemas"];
export type WindiClient = Client<paths>;

/** An answer the caller did not expect: status and RFC 9457 problem. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly problem?: Schemas["Problem"],
  ) {
    super(
      problem
        ? `${status} ${problem.code}: ${problem.title}${problem.detail ? `: ${problem.detail}` : ""}${(problem.errors ?? []).map((e) => `; ${e.field}: ${e.message}`).join("")}`
        : `status ${status}`,
    );
    this.name = "ApiError";
  }
}

/**
 * createWindiClient returns a REST client for the server at baseUrl; with a
 * token every request carries `Authorization: Bearer <token>`. options go
 * to openapi-fetch (e.g. a custom fetch).
 */
export function createWindiClient(baseUrl: string, token?: string, options: Omit<ClientOptions, "baseUrl"> = {}): WindiClient {
  const headers = { ...(options.headers as Record<string, string> | undefined), ...(token ? { Authorization: `Bearer ${token}` } : {}) };
  return createClient<paths>({ ...options, baseUrl, headers });
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

/** login exchanges an email and password for an access token; it throws an ApiError otherwise. */
export async function login(client: WindiClient, email: string, password: string): Promise<Schemas["Token"]> {
  const { data, error, response } = await client.POST("/login", {
    body: { username: email, password },
    bodySerializer: formBody,
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
  });
  if (!data) throw new ApiError(response.status, error);
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
