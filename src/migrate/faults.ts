/**
 * Fault injection for crash and race tests: FERRY_FAULTS="after-commit=crash,bulk=pause:3000,intent-trimmed=crash@2"
 * makes the daemon kill itself (as kill -9 would) or stall at a named point of a migration or of a FUSE op
 * (create); `@N`: only the Nth time the point is reached (default: every time). Unset in normal use.
 */
const configured = new Map<string, string>(
  (process.env.FERRY_FAULTS ?? '')
    .split(',')
    .filter(Boolean)
    .map((item) => item.split('=') as [string, string]),
);
const reached = new Map<string, number>();

export async function faultPoint(name: string): Promise<void> {
  const spec = configured.get(name);
  if (!spec) return;
  const [action, nth] = spec.split('@');
  const count = (reached.get(name) ?? 0) + 1;
  reached.set(name, count);
  if (nth !== undefined && Number(nth) !== count) return;
  if (action === 'crash') process.kill(process.pid, 'SIGKILL');
  const pause = /^pause:(\d+)$/.exec(action);
  if (pause) await new Promise((r) => setTimeout(r, Number(pause[1])));
}
