import type cliProgress from 'cli-progress';
import { formatBytes } from '../util/size.js';

interface Event {
  type: string;
  [key: string]: unknown;
}

/** Passes are counted from 1 here (the bulk copy is pass 1), as the final "N passes" counts them. */
const passLabel = (pass: unknown) => `pass ${Number(pass) + 1}`;

/** Ferry's own estimate of the freeze, in seconds; none while no rate is known (the JSON carries null). */
function switchoverText(ms: unknown): string {
  const value = Number(ms);
  return ms === null || !Number.isFinite(value) ? '' : `, switchover ~${(value / 1000).toFixed(value < 10_000 ? 1 : 0)} s`;
}

/**
 * Shows migration events: a progress bar on a TTY, one line per event otherwise. The bar counts data bytes (holes
 * excluded) of the whole migration, with the rate measured as it copies and ferry's own estimates; its payload
 * names avoid cli-progress's own ({eta}, {percentage}, {value}, {total}), which it fills in itself.
 */
export class MigrationProgress {
  private bar: cliProgress.SingleBar | undefined;
  private phase = 'preflight';
  private pass = passLabel(0);
  private switchover = '';

  /** The bar's library loads only for a TTY: scripts (--json, pipes) start faster without it. */
  static async start(tty: boolean): Promise<MigrationProgress> {
    return new MigrationProgress(tty ? (await import('cli-progress')).default : undefined);
  }

  private constructor(cliProgress: typeof import('cli-progress') | undefined) {
    if (cliProgress) {
      this.bar = new cliProgress.SingleBar(
        {
          format: '{phase}, {pass} |{bar}| {pct}% {copied} of {all}{rate}{left}{switchover}',
          hideCursor: true,
          clearOnComplete: true,
        },
        cliProgress.Presets.shades_classic,
      );
      this.bar.start(1, 0, { ...this.labels(), pct: 0, copied: '0 B', all: '-', rate: '', left: '' });
    }
  }

  private labels() {
    return { phase: this.phase, pass: this.pass, switchover: this.switchover };
  }

  show(event: Event, path: string): void {
    if (event.type === 'plan') {
      // Above the bar: the bar is redrawn below the line.
      this.bar?.stop();
      console.log(`moving ${path} to ${event.destination}`);
      this.bar?.start(1, 0, { ...this.labels(), pct: 0, copied: '0 B', all: '-', rate: '', left: '' });
      return;
    }
    if (event.type === 'phase') this.phase = event.phase === 'bulk' ? 'bulk copy' : String(event.phase);
    if (event.type === 'mode') this.phase = `${this.phase} (${event.mode})`;
    if (event.type === 'progress') this.pass = passLabel(event.pass);
    if (event.type === 'pass') this.switchover = switchoverText(event.estimatedSwitchoverMs);
    if (event.type === 'done') this.pass = `${event.passes} pass${event.passes === 1 ? '' : 'es'}`;
    if (!this.bar) {
      if (event.type === 'phase') console.log(`phase: ${event.phase}`);
      if (event.type === 'mode') console.log(`switching to ${event.mode} mode: ${event.reason}`);
      if (event.type === 'switchover') console.log(`switchover ${event.attempt} abandoned after ${event.frozenMs} ms frozen (over --max-downtime): I/O thawed, copying on`);
      if (event.type === 'pass') console.log(`${passLabel(event.pass)}: copied ${formatBytes(Number(event.copiedBytes))}, ${formatBytes(Number(event.throughputBytesPerSec))}/s${this.switchover}`);
      return;
    }
    if (event.type === 'progress' || event.type === 'done') {
      const copied = Number(event.copiedBytes);
      const total = Math.max(1, Number(event.totalBytes), copied);
      const rate = Number(event.rateBytesPerSec);
      const eta = event.etaSeconds;
      this.bar.setTotal(total);
      this.bar.update(copied, {
        ...this.labels(),
        pct: event.percent,
        copied: formatBytes(copied),
        all: formatBytes(Number(event.totalBytes)),
        rate: rate > 0 ? `, ${formatBytes(rate)}/s` : '',
        left: typeof eta === 'number' && eta > 0 ? `, ~${eta} s left` : '',
      });
    } else {
      this.bar.update(this.labels());
    }
  }

  stop(): void {
    this.bar?.stop();
  }
}
