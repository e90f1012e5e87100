import type cliProgress from 'cli-progress';
import { formatBytes } from '../util/size.js';

interface Event {
  type: string;
  [key: string]: unknown;
}

/** Shows migration events: a progress bar on a TTY, one line per event otherwise. */
export class MigrationProgress {
  private bar: cliProgress.SingleBar | undefined;
  private phase = 'preflight';

  /** The bar's library loads only for a TTY: scripts (--json, pipes) start faster without it. */
  static async start(tty: boolean): Promise<MigrationProgress> {
    return new MigrationProgress(tty ? (await import('cli-progress')).default : undefined);
  }

  private constructor(cliProgress: typeof import('cli-progress') | undefined) {
    if (cliProgress) {
      this.bar = new cliProgress.SingleBar(
        {
          format: '{phase} pass {pass} |{bar}| {copied} copied, {dirty} dirty, {rate}/s, switchover ~{eta}',
          hideCursor: true,
          clearOnComplete: true,
        },
        cliProgress.Presets.shades_classic,
      );
      this.bar.start(1, 0, { phase: this.phase, pass: 0, copied: '0 B', dirty: '-', rate: '-', eta: '-' });
    }
  }

  show(event: Event, path: string): void {
    if (event.type === 'plan') {
      // Above the bar: the bar is redrawn below the line.
      this.bar?.stop();
      console.log(`moving ${path} to ${event.destination}`);
      this.bar?.start(1, 0, { phase: this.phase, pass: 0, copied: '0 B', dirty: '-', rate: '-', eta: '-' });
      return;
    }
    if (event.type === 'phase') this.phase = String(event.phase);
    if (event.type === 'mode') this.phase = `${this.phase} (${event.mode})`;
    if (!this.bar) {
      if (event.type === 'progress') return;
      if (event.type === 'phase') console.log(`phase: ${event.phase}`);
      if (event.type === 'mode') console.log(`switching to ${event.mode} mode: ${event.reason}`);
      if (event.type === 'switchover') console.log(`switchover ${event.attempt} abandoned after ${event.frozenMs} ms frozen (over --max-downtime): I/O thawed, copying on`);
      if (event.type === 'pass') console.log(`pass ${event.pass}: copied ${formatBytes(Number(event.copiedBytes))}, ${formatBytes(Number(event.throughputBytesPerSec))}/s, ~${event.estimatedSwitchoverMs} ms to switch over`);
      return;
    }
    if (event.type === 'progress') {
      const total = Math.max(1, Number(event.totalBytes), Number(event.copiedBytes));
      this.bar.setTotal(total);
      this.bar.update(Number(event.copiedBytes), { phase: this.phase, pass: event.pass, copied: formatBytes(Number(event.copiedBytes)), dirty: formatBytes(Number(event.totalBytes)) });
      return;
    }
    if (event.type === 'pass') {
      const dirty = Number(event.dirtyBytes);
      const copied = Number(event.copiedBytes);
      this.bar.setTotal(Math.max(1, dirty, copied));
      this.bar.update(copied, {
        phase: this.phase,
        pass: event.pass,
        copied: formatBytes(copied),
        dirty: formatBytes(dirty),
        rate: formatBytes(Number(event.throughputBytesPerSec)),
        eta: `${event.estimatedSwitchoverMs} ms`,
      });
    } else {
      this.bar.update({ phase: this.phase });
    }
  }

  stop(): void {
    this.bar?.stop();
  }
}
