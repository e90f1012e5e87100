import { readFileSync } from 'node:fs';
// The QEMU guest kit lives with the demo; tests use the same code.
export * from '../../src/demo/guest.js';

/**
 * `maxcpus` of a running QEMU's -smp. TCG emits the guest's memory barriers only when it is above 1; with one
 * possible vCPU a virtio interrupt can be lost for good and the guest stalls (README, Limits).
 */
export function qemuMaxCpus(pid: number | string): number {
  const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  const smp = argv[argv.indexOf('-smp') + 1] ?? '';
  return Number(/maxcpus=(\d+)/.exec(smp)?.[1] ?? /^(?:cpus=)?(\d+)/.exec(smp)?.[1] ?? 1);
}
