import { formatBytes } from '../util/size.js';

type Event = { type: string; home?: string; [key: string]: unknown };

interface Row {
  state: string;
  copied: number;
  total: number;
  pass: number;
  rate: number;
  eta: number | null;
}

const REDRAW_MS = 250;

/**
 * An evacuation on a TTY: one line per home (state, bytes, pass, rate, time left) and a total line, redrawn in
 * place (at most every 250 ms); the plan and each home's end are printed above it, once.
 */
export class EvacuationTable {
  private readonly rows = new Map<string, Row>();
  private drawn = 0;
  private last = 0;

  constructor(private readonly write: (text: string) => void) {}

  /** Lines printed above the table (it is drawn again below them). */
  note(text: string): void {
    this.clear();
    this.write(text + '\n');
    this.draw();
  }

  show(event: Event): void {
    if (event.type === 'planned' || event.type === 'resumed') {
      for (const h of event.homes as { name: string; bytes: number; state?: string }[]) {
        this.rows.set(h.name, { state: h.state ?? 'pending', copied: h.state === 'moved' ? h.bytes : 0, total: h.bytes, pass: 0, rate: 0, eta: null });
      }
    }
    const row = event.home === undefined ? undefined : this.rows.get(event.home);
    if (row) {
      if (event.type === 'started') row.state = 'starting';
      if (event.type === 'phase') {
        row.state = event.phase === 'bulk' ? 'bulk copy' : String(event.phase);
        // Past the copy passes: no rate or time left to show.
        if (event.phase !== 'bulk' && event.phase !== 'iterate') {
          row.rate = 0;
          row.eta = null;
        }
      }
      if (event.type === 'progress') {
        row.copied = Number(event.copiedBytes);
        row.total = Math.max(Number(event.totalBytes), row.copied);
        row.pass = Number(event.pass);
        row.rate = Number(event.rateBytesPerSec);
        row.eta = typeof event.etaSeconds === 'number' ? event.etaSeconds : null;
      }
      if (event.type === 'finished') {
        row.state = String(event.state);
        row.rate = 0;
        row.eta = null;
        if (event.state === 'moved') row.copied = row.total;
        if (event.reason) this.note(`${event.home}: ${event.state}: ${event.reason}`);
      }
    }
    // Progress comes every 250 ms per move: redraw at that pace; anything else at once.
    if (event.type !== 'progress' || Date.now() - this.last >= REDRAW_MS) {
      this.clear();
      this.draw();
    }
  }

  stop(): void {
    this.clear();
    this.draw();
    this.drawn = 0;
  }

  private lines(): string[] {
    const width = Math.max(4, ...[...this.rows.keys()].map((n) => n.length));
    const lines = [...this.rows].map(([name, r]) => {
      const running = r.rate > 0 ? `, pass ${r.pass + 1}, ${formatBytes(r.rate)}/s${r.eta !== null && r.eta > 0 ? `, ~${r.eta} s left` : ''}` : '';
      return `  ${name.padEnd(width)}  ${r.state.padEnd(10)} ${formatBytes(r.copied)} of ${formatBytes(r.total)}${running}`;
    });
    const rows = [...this.rows.values()];
    const done = rows.filter((r) => r.state === 'moved').length;
    const rate = rows.reduce((sum, r) => sum + r.rate, 0);
    const copied = rows.reduce((sum, r) => sum + r.copied, 0);
    const total = rows.reduce((sum, r) => sum + r.total, 0);
    lines.push(`  ${'total'.padEnd(width)}  ${`${done}/${rows.length} moved`.padEnd(10)} ${formatBytes(copied)} of ${formatBytes(total)}${rate > 0 ? `, ${formatBytes(rate)}/s` : ''}`);
    return lines;
  }

  private draw(): void {
    if (this.rows.size === 0) return;
    const lines = this.lines();
    this.write(lines.map((l) => `\x1b[2K${l}\n`).join(''));
    this.drawn = lines.length;
    this.last = Date.now();
  }

  /** Moves the cursor back over the table drawn last, so the next output replaces it. */
  private clear(): void {
    if (this.drawn > 0) this.write(`\x1b[${this.drawn}A\x1b[0J`);
    this.drawn = 0;
  }
}
