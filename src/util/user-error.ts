/** A problem with the caller's input or environment: printed as one line, never as a stack trace. */
export class UserError extends Error {
  constructor(
    message: string,
    readonly exitCode = 2,
    readonly code = 'EINVAL_INPUT',
  ) {
    super(message);
    this.name = 'UserError';
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export function errnoCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : undefined;
}
