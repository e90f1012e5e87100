import type { PathMap } from '../fs/path-map.js';
import { isWithin } from '../util/paths.js';
import { RefusedError } from './preflight.js';

interface Claim {
  virtual: string;
  /** The destination root, once preflight has resolved it. */
  dest: string | undefined;
}

/**
 * What each migration owns while it runs or waits for --resume: its subtree of the mount and its destination.
 * A claim is checked and taken in one synchronous step (no await between the two), so two requests can never
 * both pass the check. Who changes it: the control handlers take and narrow claims, the engine releases its
 * own when it ends (done or aborted); all on the JS thread.
 */
export class Claims {
  private readonly held = new Map<object, Claim>();

  /** `paths` learns each claimed subtree, so that the mount refuses to rename it or its ancestors away. */
  constructor(private readonly paths: PathMap) {}

  /** Claims a subtree of the mount, before anything is awaited; throws RefusedError if another owns part of it. */
  take(owner: object, virtual: string, dest?: string): void {
    const claim = { virtual, dest };
    this.check(owner, claim);
    this.held.set(owner, claim);
    this.paths.pin(virtual);
  }

  /** Adds the resolved destination to an owner's claim, checked against every other claim. */
  claimDestination(owner: object, dest: string): void {
    const claim = { ...this.held.get(owner)!, dest };
    this.check(owner, claim);
    this.held.set(owner, claim);
  }

  release(owner: object): void {
    const claim = this.held.get(owner);
    if (!claim) return;
    this.held.delete(owner);
    if (![...this.held.values()].some((c) => c.virtual === claim.virtual)) this.paths.unpin(claim.virtual);
  }

  /** Why a claim of `virtual` (and `dest`) would be refused now, or undefined: for plans that take nothing yet. */
  conflict(virtual: string, dest?: string, owner?: object): string | undefined {
    for (const [other, held] of this.held) {
      if (other === owner) continue;
      if (isWithin(held.virtual, virtual) || isWithin(virtual, held.virtual)) return `${virtual} overlaps the running migration of ${held.virtual}`;
      if (dest && held.dest && (isWithin(held.dest, dest) || isWithin(dest, held.dest))) {
        return `destination ${dest} overlaps the destination of the migration of ${held.virtual} (${held.dest}): choose another directory`;
      }
    }
    return undefined;
  }

  private check(owner: object, claim: Claim): void {
    const conflict = this.conflict(claim.virtual, claim.dest, owner);
    if (conflict) throw new RefusedError(conflict);
  }
}
