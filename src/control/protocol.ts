/**
 * The control protocol: JSON lines over the daemon's Unix socket.
 * Request:  {"id": 1, "method": "status", "params": {...}}
 * Replies:  {"id": 1, "event": {...}}  (zero or more, for long operations)
 *           {"id": 1, "ok": true, "result": {...}}  or  {"id": 1, "ok": false, "error": {"code": "...", "message": "..."}}
 */
export const MAX_LINE_BYTES = 1 << 20;

export interface Request {
  id: number;
  method: string;
  params: Record<string, unknown>;
}

export interface ErrorBody {
  code: string;
  message: string;
}

export type Reply =
  | { id: number; ok: true; result: unknown }
  | { id: number; ok: false; error: ErrorBody }
  | { id: number; event: unknown };

/** A failure to report to the client as a reply, not a crash. */
export class ControlError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export function parseRequest(line: string): Request {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    throw new ControlError('EPROTO', 'request is not valid JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ControlError('EPROTO', 'request must be a JSON object');
  const { id, method, params } = value as Record<string, unknown>;
  if (typeof id !== 'number' || !Number.isSafeInteger(id)) throw new ControlError('EPROTO', 'request id must be an integer');
  if (typeof method !== 'string' || method === '') throw new ControlError('EPROTO', 'request method must be a non-empty string');
  if (params !== undefined && (typeof params !== 'object' || params === null || Array.isArray(params))) {
    throw new ControlError('EPROTO', 'request params must be an object');
  }
  return { id, method, params: (params ?? {}) as Record<string, unknown> };
}

export function stringParam(params: Record<string, unknown>, name: string): string {
  const value = params[name];
  if (typeof value !== 'string' || value === '') throw new ControlError('EINVAL', `parameter '${name}' must be a non-empty string`);
  return value;
}

export function booleanParam(params: Record<string, unknown>, name: string): boolean {
  const value = params[name] ?? false;
  if (typeof value !== 'boolean') throw new ControlError('EINVAL', `parameter '${name}' must be true or false`);
  return value;
}
