import { formatBytes } from '../util/size.js';

/** What the demo learned, in the shape both reports draw from. */
export interface DemoFacts {
  guestKind: 'qemu' | 'host-writer';
  guestNote?: string;
  imageBytes: number;
  startedAt: number;
  events: Record<string, any>[];
  /** Things that happened outside the migration (the guest starting, finishing), for the timeline. */
  marks: { at: number; label: string }[];
  guest: {
    ioErrors: number;
    writes: number;
    bytes: number;
    maxStallMs?: number;
    checksum?: string;
  };
  checks: { label: string; ok: boolean; detail: string }[];
}

function passes(facts: DemoFacts): Record<string, any>[] {
  return facts.events.filter((e) => e.type === 'pass');
}

function final(facts: DemoFacts): Record<string, any> | undefined {
  return facts.events.find((e) => e.type === 'done' || e.type === 'error');
}

/** A few lines of text: the timeline, a bar per pass, downtime, throughput, and what the guest saw. */
export function textReport(facts: DemoFacts): string {
  const lines: string[] = [];
  const at = (e: Record<string, any>) => `${((e.at - facts.startedAt) / 1000).toFixed(2).padStart(7)} s`;
  lines.push(`ferry demo — ${facts.guestKind === 'qemu' ? 'QEMU guest' : 'host writer process'} on a ${formatBytes(facts.imageBytes)} disk`);
  if (facts.guestNote) lines.push(`  (${facts.guestNote})`);
  lines.push('', 'timeline');
  const timeline: { at: number; text: string }[] = facts.marks.map((m) => ({ at: m.at, text: m.label }));
  for (const e of facts.events) {
    if (e.type === 'phase') timeline.push({ at: e.at, text: `migration: ${e.phase}` });
    if (e.type === 'mode') timeline.push({ at: e.at, text: `migration: ${e.mode} mode (${e.reason})` });
    if (e.type === 'pass') timeline.push({ at: e.at, text: `  pass ${e.pass}: ${formatBytes(e.copiedBytes)} copied` });
  }
  for (const t of timeline.sort((a, b) => a.at - b.at)) lines.push(`  ${at(t)}  ${t.text}`);
  const list = passes(facts);
  const widest = Math.max(1, ...list.map((p) => p.copiedBytes));
  lines.push('', 'bytes copied per pass');
  for (const p of list) {
    const bar = '█'.repeat(Math.max(1, Math.round((p.copiedBytes / widest) * 40)));
    lines.push(`  pass ${String(p.pass).padStart(2)} ${bar.padEnd(40)} ${formatBytes(p.copiedBytes).padStart(10)}  ${formatBytes(p.throughputBytesPerSec)}/s`);
  }
  const end = final(facts);
  lines.push('');
  if (end?.type === 'done') {
    lines.push(`migration: done in ${(end.durationMs / 1000).toFixed(2)} s, ${end.passes} passes, ${formatBytes(end.bytesCopied)} copied, mode ${end.mode}`);
    lines.push(`downtime (I/O freeze at the switchover): ${end.downtimeMs} ms`);
  } else if (end) {
    lines.push(`migration: ABORTED (${end.code}): ${end.message}`);
  }
  lines.push(`guest: ${facts.guest.writes} writes, ${formatBytes(facts.guest.bytes)}, I/O errors: ${facts.guest.ioErrors}` + (facts.guest.maxStallMs !== undefined ? `, longest write stall ${facts.guest.maxStallMs.toFixed(1)} ms` : ''));
  lines.push('', 'checks');
  for (const c of facts.checks) lines.push(`  ${c.ok ? 'ok  ' : 'FAIL'}  ${c.label}: ${c.detail}`);
  return lines.join('\n');
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
}

/** An SVG chart per pass: bars of dirty and copied bytes, and the copy throughput as a line. */
export function svgChart(facts: DemoFacts): string {
  const list = passes(facts);
  const width = 640;
  const height = 280;
  const pad = { left: 70, right: 70, top: 20, bottom: 40 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const maxBytes = Math.max(1, ...list.flatMap((p) => [p.dirtyBytes, p.copiedBytes]));
  const maxRate = Math.max(1, ...list.map((p) => p.throughputBytesPerSec));
  const slot = plotW / Math.max(1, list.length);
  const barW = Math.max(4, slot / 3);
  const y = (v: number, max: number) => pad.top + plotH - (v / max) * plotH;
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="11">`);
  parts.push(`<line x1="${pad.left}" y1="${pad.top + plotH}" x2="${pad.left + plotW}" y2="${pad.top + plotH}" stroke="#333"/>`);
  parts.push(`<text x="8" y="${pad.top + 10}" fill="#555">${escapeHtml(formatBytes(maxBytes))}</text>`);
  parts.push(`<text x="${width - pad.right + 6}" y="${pad.top + 10}" fill="#c0392b">${escapeHtml(formatBytes(maxRate))}/s</text>`);
  const points: string[] = [];
  list.forEach((p, i) => {
    const x = pad.left + i * slot + slot / 2;
    parts.push(`<rect x="${x - barW}" y="${y(p.dirtyBytes, maxBytes)}" width="${barW}" height="${pad.top + plotH - y(p.dirtyBytes, maxBytes)}" fill="#f5b041"><title>pass ${p.pass}: ${escapeHtml(formatBytes(p.dirtyBytes))} dirty</title></rect>`);
    parts.push(`<rect x="${x}" y="${y(p.copiedBytes, maxBytes)}" width="${barW}" height="${pad.top + plotH - y(p.copiedBytes, maxBytes)}" fill="#2e86c1"><title>pass ${p.pass}: ${escapeHtml(formatBytes(p.copiedBytes))} copied</title></rect>`);
    parts.push(`<text x="${x}" y="${pad.top + plotH + 14}" text-anchor="middle">${p.pass}</text>`);
    points.push(`${x},${y(p.throughputBytesPerSec, maxRate)}`);
  });
  if (points.length > 1) parts.push(`<polyline points="${points.join(' ')}" fill="none" stroke="#c0392b" stroke-width="2"/>`);
  for (const pt of points) parts.push(`<circle cx="${pt.split(',')[0]}" cy="${pt.split(',')[1]}" r="3" fill="#c0392b"/>`);
  parts.push(`<text x="${pad.left + plotW / 2}" y="${height - 8}" text-anchor="middle">pass</text>`);
  parts.push(`<rect x="${pad.left}" y="${height - 20}" width="10" height="10" fill="#f5b041"/><text x="${pad.left + 14}" y="${height - 11}">dirty at pass start</text>`);
  parts.push(`<rect x="${pad.left + 130}" y="${height - 20}" width="10" height="10" fill="#2e86c1"/><text x="${pad.left + 144}" y="${height - 11}">copied</text>`);
  parts.push(`<line x1="${pad.left + 200}" y1="${height - 15}" x2="${pad.left + 214}" y2="${height - 15}" stroke="#c0392b" stroke-width="2"/><text x="${pad.left + 218}" y="${height - 11}">throughput</text>`);
  parts.push('</svg>');
  return parts.join('\n');
}

export function htmlReport(facts: DemoFacts): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ferry demo report</title>
<style>body{font-family:sans-serif;max-width:760px;margin:2em auto;color:#222}pre{background:#f6f6f6;padding:1em;overflow:auto}
td,th{padding:2px 10px;text-align:right}th{background:#eee}.ok{color:#1e8449}.fail{color:#c0392b;font-weight:bold}</style></head>
<body><h1>ferry live migration</h1>
${svgChart(facts)}
<h2>Passes</h2>
<table><tr><th>pass</th><th>mode</th><th>dirty</th><th>copied</th><th>throughput</th><th>est. switchover</th><th>duration</th></tr>
${passes(facts)
  .map((p) => `<tr><td>${p.pass}</td><td>${escapeHtml(String(p.mode ?? ''))}</td><td>${escapeHtml(formatBytes(p.dirtyBytes))}</td><td>${escapeHtml(formatBytes(p.copiedBytes))}</td><td>${escapeHtml(formatBytes(p.throughputBytesPerSec))}/s</td><td>${p.estimatedSwitchoverMs} ms</td><td>${p.durationMs} ms</td></tr>`)
  .join('\n')}
</table>
<h2>Checks</h2>
<ul>${facts.checks.map((c) => `<li class="${c.ok ? 'ok' : 'fail'}">${c.ok ? '✔' : '✘'} ${escapeHtml(c.label)}: ${escapeHtml(c.detail)}</li>`).join('')}</ul>
<h2>Report</h2>
<pre>${escapeHtml(textReport(facts))}</pre>
</body></html>
`;
}
