import { describe, expect, it } from 'vitest';
import { parseDomblklist, parseNvram } from '../../src/cli/libvirt.js';

// What `ferry migrate --domain` reads from virsh (the libvirt test drives it against a real libvirtd).
describe('virsh output', () => {
  it('domblklist --details: file disks only, a path with spaces whole, empty drives skipped', () => {
    const text = [
      ' Type   Device   Target   Source',
      '-------------------------------------------------------',
      ' file   disk     vda      /vmstore/vm 1/disk.qcow2',
      ' block  disk     vdb      /dev/sdb',
      ' file   cdrom    sda      -',
      ' network disk    vdc      pool/image',
      ' file   disk     vdd      /vmstore/vm 1/data.raw',
      '',
    ].join('\n');
    expect(parseDomblklist(text)).toEqual(['/vmstore/vm 1/disk.qcow2', '/vmstore/vm 1/data.raw']);
  });

  it('dumpxml: <nvram> as text (with a template, entities decoded) or as <source file>; none without', () => {
    expect(parseNvram(`<domain><os><loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader>
      <nvram template='/usr/share/OVMF/OVMF_VARS.fd'>/vmstore/a&amp;b/VARS.fd</nvram></os></domain>`)).toEqual(['/vmstore/a&b/VARS.fd']);
    expect(parseNvram(`<os><nvram type='file'>\n  <source file='/vmstore/vm1/VARS.fd'/>\n</nvram></os>`)).toEqual(['/vmstore/vm1/VARS.fd']);
    expect(parseNvram(`<os><nvram template='/usr/share/OVMF/OVMF_VARS.fd'/></os>`)).toEqual([]);
    expect(parseNvram(`<domain><os><type>hvm</type></os></domain>`)).toEqual([]);
  });
});
