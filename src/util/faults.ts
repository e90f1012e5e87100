/**
 * Fault injection for crash and race tests: FERRY_FAULTS="after-commit=crash,bulk=pause:3000,intent-trimmed=crash@2"
 * makes the daemon kill itself (as kill -9 would), stall, or fail (`fail`: the step at the point throws EIO) at a
 * named point of a migration (journaled: the journal written, the destination's root not made yet; root-made: the root made, the journal not yet naming it), of its walk (walk-listed: a directory listed, its entries not yet opened;
 * walk-readlink: a symlink's target about to be read), of the commit (commit-save, commit-saved, commit-restore), of
 * an abort's undo (aborting, undo-barred, undo-removed) or of a FUSE op (create;
 * open-direct: an O_DIRECT handle's second fd, at an open, a create or a switchover's reopen); `@N`: only the Nth time the point
 * is reached (default: every time). Unset in normal use.
 * The point names are an interface (tests outside the repo use them): keep them.
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
  if (action === 'fail') throw Object.assign(new Error(`injected failure at ${name}`), { code: 'EIO' });
  const pause = /^pause:(\d+)$/.exec(action);
  if (pause) await new Promise((r) => setTimeout(r, Number(pause[1])));
}
