/**
 * Fault injection for crash tests: FERRY_FAULTS="after-commit=crash,bulk=pause:3000" makes the daemon
 * kill itself (as kill -9 would) or stall at a named point of a migration. Unset in normal use.
 */
const configured = new Map<string, string>(
  (process.env.FERRY_FAULTS ?? '')
    .split(',')
    .filter(Boolean)
    .map((item) => item.split('=') as [string, string]),
);

export async function faultPoint(name: string): Promise<void> {
  const action = configured.get(name);
  if (!action) return;
  if (action === 'crash') process.kill(process.pid, 'SIGKILL');
  const pause = /^pause:(\d+)$/.exec(action);
  if (pause) await new Promise((r) => setTimeout(r, Number(pause[1])));
}
