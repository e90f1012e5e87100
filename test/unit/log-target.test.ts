import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { escapePath, logFileFor } from '../../src/daemon/log-target.js';

// The log file of a mount is named as systemd names the mount unit of its mount point.
describe('escapePath', () => {
  const paths = ['/srv/vm-a', '/mnt/a b/.x/ü', '/', '/a//b/', '/x.y/-z_:', '/.hidden/dir', '/tab\there'];

  it('is systemd-escape --path', () => {
    expect(escapePath('/srv/vm-a')).toBe('srv-vm\\x2da');
    expect(escapePath('/')).toBe('-');
    expect(escapePath('/mnt/a b/.x/ü')).toBe('mnt-a\\x20b-.x-\\xc3\\xbc');
    let systemd: string[] | undefined;
    try {
      systemd = execFileSync('systemd-escape', ['--path', ...paths], { encoding: 'utf8' }).trim().split(/\s+/);
    } catch {
      // No systemd-escape here: the fixed cases above stand alone.
    }
    if (systemd) expect(paths.map(escapePath)).toEqual(systemd);
  });

  it('gives two mount points two files', () => {
    expect(logFileFor('/var/lib/ferry', '/srv/a-b')).not.toBe(logFileFor('/var/lib/ferry', '/srv/a/b'));
    expect(logFileFor('/var/lib/ferry', '/srv/vm')).toBe('/var/lib/ferry/logs/srv-vm.log');
  });
});
