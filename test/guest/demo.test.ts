import { describe, expect, it } from 'vitest';
import fs from 'node:fs';
import { join } from 'node:path';
import { ferry } from '../helpers/cli.js';
import { makeRoot, mountsUnder } from '../helpers/mounts.js';

describe('ferry demo (README\'s main command)', () => {
  it('migrates a live guest, passes every check, writes the HTML report, and cleans up', async () => {
    const root = await makeRoot();
    const report = join(root, 'report.html');
    const r = await ferry(['demo', '--json', '--report', report], { env: { FERRY_DEMO_DIR: root }, timeoutMs: 170_000 });
    expect(r.code, `stderr: ${r.stderr}\nstdout: ${r.stdout}`).toBe(0);
    const facts = JSON.parse(r.stdout);
    expect(facts.guestKind).toBe('qemu');
    expect(facts.checks.length).toBeGreaterThanOrEqual(5);
    expect(facts.checks.filter((c: { ok: boolean }) => !c.ok)).toEqual([]);
    expect(facts.events.at(-1)).toMatchObject({ type: 'done' });
    const html = fs.readFileSync(report, 'utf8');
    expect(html).toContain('<svg');
    expect(html).toContain('guest I/O errors');
    expect(fs.readdirSync(root).filter((n) => n.startsWith('ferry-demo-'))).toEqual([]);
    expect(await mountsUnder(root)).toEqual([]);
  });
});

describe('ferry demo --guest host-writer (the fallback where QEMU cannot run)', () => {
  it('says so, migrates under a writer process, and checks the copy against its model', async () => {
    const root = await makeRoot();
    const r = await ferry(['demo', '--guest', 'host-writer', '--json', '--report', join(root, 'report.html')], { env: { FERRY_DEMO_DIR: root }, timeoutMs: 170_000 });
    expect(r.code, `stderr: ${r.stderr}\nstdout: ${r.stdout}`).toBe(0);
    const facts = JSON.parse(r.stdout);
    expect(facts).toMatchObject({ guestKind: 'host-writer', guestNote: expect.stringContaining('host writer') });
    expect(facts.checks.map((c: { label: string }) => c.label)).toContain("image on the destination = the writer's model");
    expect(facts.checks.filter((c: { ok: boolean }) => !c.ok)).toEqual([]);
    expect(await mountsUnder(root)).toEqual([]);
  });
});
