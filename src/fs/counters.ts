/** Cheap counters for `ferry status`: plain numbers bumped on the op path, nothing allocated. */
export class Counters {
  readonly ops: Record<string, number> = Object.create(null);
  bytesRead = 0;
  bytesWritten = 0;
  errors = 0;

  count(op: string): void {
    this.ops[op] = (this.ops[op] ?? 0) + 1;
  }

  get totalOps(): number {
    let total = 0;
    for (const n of Object.values(this.ops)) total += n;
    return total;
  }
}
