// WinDI Chat TypeScript SDK. The types come from api/openapi.yaml through
// openapi-typescript (src/schema.d.ts, committed; `npm run generate`
// rewrites it); REST calls go through openapi-fetch, typed by path and
// method; WindiConnection is a WebSocket that reconnects and resumes by
// itself; WindiSession keeps a login's tokens fresh (refresh with rotation,
// one refresh at a time) for both; frames are the spec's ClientFrame and
// ServerFrame schemas.
import type { components, paths } from "./schema.js";

export type { components, paths };
export type Schemas = components["schemas"];
export type User = Schemas["User"];
/** Another user as everyone sees them: id and name, never the email. */
export type UserPublic = Schemas["UserPublic"];
/** One login of the user (a device), from GET /sessions. */
export type Session = Schemas["Session"];
export type Chat = Schemas["Chat"];
export type Message = Schemas["Message"];
/** A message found by GET /search, with its chat. */
export type SearchHit = Schemas["SearchHit"];
export type Problem = Schemas["Problem"];
export type Token = Schemas["Token"];
/** A frame the client sends on /ws or /ws/{chat_id}. */
export type ClientFrame = Schemas["ClientFrame"];
/** A frame the server sends; narrow it on `type`. */
export type ServerFrame = Schemas["ServerFrame"];
/** The server frame with the given `type`, e.g. ServerFrameOf<"message.new">. */
export type ServerFrameOf<T extends ServerFrame["type"]> = Extract<ServerFrame, { type: T }>;

export {
  RefreshError,
  SessionEndedError,
  WindiSession,
  type LoginOptions,
  type SessionOptions,
  type SessionTokens,
  type SharedSession,
} from "./session.js";
export { ApiError, createWindiClient, formBody, login, wsURL, type WindiClient } from "./rest.js";
export {
  CloseCode,
  CloseError,
  ClosedError,
  FrameError,
  HandshakeError,
  MAX_FRAME_BYTES,
  WindiConnection,
  defaultBackoff,
  exponentialBackoff,
  newClientMsgId,
  type Backoff,
  type Clock,
  type ConnectionOptions,
  type ConnectionState,
  type PendingSend,
  type Position,
  type SendOptions,
  TYPING_INTERVAL_MS,
  type TokenProvider,
  type WebSocketConstructor,
  type WebSocketLike,
} from "./connection.js";

/** parseServerFrame decodes one JSON text frame from the server. */
export function parseServerFrame(data: string): ServerFrame {
  const frame: unknown = JSON.parse(data);
  if (typeof frame !== "object" || frame === null || typeof (frame as { type?: unknown }).type !== "string") {
    throw new Error(`not a server frame: ${data.slice(0, 200)}`);
  }
  return frame as ServerFrame;
}
