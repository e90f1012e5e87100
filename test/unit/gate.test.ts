import { describe, expect, it } from 'vitest';
import { IoGate } from '../../src/fs/gate.js';

describe('IoGate', () => {
  it('lets ops through while nothing is frozen', () => {
    const gate = new IoGate();
    const ran: string[] = [];
    gate.admit('/vm/disk', undefined, (t) => {
      ran.push('a');
      gate.leave(t);
    });
    expect(ran).toEqual(['a']);
    expect(gate.inflightCount).toBe(0);
  });

  it('freezes only the subtree, waits for ops admitted before, and releases held ops on thaw', async () => {
    const gate = new IoGate();
    let early = -1;
    gate.admit('/vm/disk', undefined, (t) => (early = t));
    let frozen = false;
    const freezing = gate.freeze('/vm').then((f) => {
      frozen = true;
      return f;
    });
    const ran: string[] = [];
    gate.admit('/vm/disk', undefined, (t) => {
      ran.push('held');
      gate.leave(t);
    });
    gate.admit('/other/disk', undefined, (t) => {
      ran.push('other');
      gate.leave(t);
    });
    gate.admit('/vmx', undefined, (t) => {
      ran.push('sibling');
      gate.leave(t);
    });
    await Promise.resolve();
    expect(frozen).toBe(false);
    expect(ran).toEqual(['other', 'sibling']);
    gate.leave(early);
    const freeze = await freezing;
    expect(frozen).toBe(true);
    expect(gate.waitingCount).toBe(1);
    gate.thaw(freeze);
    expect(ran).toEqual(['other', 'sibling', 'held']);
  });

  it('holds a rename that touches the frozen subtree on either side', async () => {
    const gate = new IoGate();
    const freeze = await gate.freeze('/vm');
    let ran = false;
    gate.admit('/elsewhere/a', '/vm/a', (t) => {
      ran = true;
      gate.leave(t);
    });
    expect(ran).toBe(false);
    gate.thaw(freeze);
    expect(ran).toBe(true);
  });

  it('reports how long the oldest op has been running', () => {
    const gate = new IoGate();
    let ticket = -1;
    gate.admit('/a', undefined, (t) => (ticket = t));
    gate.advance();
    expect(gate.oldestInflightAgeMs(Date.now() + 5000)).toBeGreaterThanOrEqual(5000);
    gate.leave(ticket);
    expect(gate.oldestInflightAgeMs()).toBe(0);
  });
});
