import fsp from 'node:fs/promises';
import { posix } from 'node:path';
import { RefusedError, planMigration, resolveOutsideMount } from '../migrate/preflight.js';
import { allocatedBytes } from '../migrate/walk.js';
import { siteOf } from '../migrate/site.js';
import type { MountServices } from '../migrate/context.js';
import { listDir, withObject } from '../util/beneath-tree.js';
import type { Beneath } from '../util/beneath.js';
import { isReserved } from '../fs/reserved.js';
import { formatBytes } from '../util/size.js';
import { isWithin } from '../util/paths.js';
import { matchesGlob } from './glob.js';

export type Order = 'smallest' | 'largest' | 'name';
export const ORDERS: readonly Order[] = ['smallest', 'largest', 'name'];

export interface HomePlan {
  name: string;
  /** The home's path in the mount. */
  virtual: string;
  /** Where it will live: `<dest>/<name>`. */
  dest: string;
  /** Allocated bytes of its files and directories. */
  bytes: number;
  /** What `ferry migrate` asks the destination to have free for it: its bytes plus the margin. */
  neededBytes: number;
}

export interface Refusal {
  name: string;
  virtual: string;
  reason: string;
}

export interface EvacuationPlan {
  virtual: string;
  dest: string;
  /** The homes to move, in the order they start. */
  homes: HomePlan[];
  /** Homes no migration could take: why each stays. */
  refused: Refusal[];
  /** Names that `--exclude` left out. */
  excluded: string[];
  /** With --fit: the homes that did not fit, which stay. */
  left: HomePlan[];
  neededBytes: number;
  freeBytes: number;
}

export interface PlanRequest {
  virtual: string;
  dest: string;
  order: Order;
  exclude: string[];
  /** --domains: only these names (the homes of libvirt's domains there); others are not considered at all. */
  only?: string[];
  /** Move what fits (in `order`, largest first by default) instead of refusing a plan that does not. */
  fit: boolean;
  /** `order` was given: --fit keeps it rather than going largest first. */
  orderGiven: boolean;
}

function sortHomes(homes: HomePlan[], order: Order): HomePlan[] {
  const byName = (a: HomePlan, b: HomePlan) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  if (order === 'name') return homes.sort(byName);
  const sign = order === 'smallest' ? 1 : -1;
  return homes.sort((a, b) => sign * (a.bytes - b.bytes) || byName(a, b));
}

/** The names directly under `virtual` that are directories (in its backing, or subtrees the path map serves). */
async function homeNames(services: MountServices, at: Beneath, virtual: string): Promise<string[]> {
  const site = siteOf(services.paths, services.paths.resolve(virtual));
  try {
    const names = await site
      .use('', (root, rel) =>
        withObject(at, root, rel, async (fd, st) => {
          if (!st.isDirectory()) throw new RefusedError(`${virtual} is not a directory: give the directory that holds the VM homes`);
          return (await listDir(fd)).filter((e) => e.isDirectory()).map((e) => e.name);
        }),
      )
      .catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT' || err.code === 'ENOTDIR' || err.code === 'ELOOP') throw new RefusedError(`no such directory in the mount: ${virtual}`);
        throw err;
      });
    const all = new Set([...names, ...services.paths.mappedChildren(virtual)]);
    return [...all].filter((name) => !isReserved(posix.join(virtual, name))).sort();
  } finally {
    site.root.retire();
  }
}

/**
 * The plan of an evacuation, checked before anything moves: each home through the preflight of `ferry migrate`
 * (the same refusals: hard links out of the home, a destination name already present, ...) and the claims of the
 * running migrations; then the destination's free space against the sum of what each migration asks for. Takes no
 * claim and changes nothing: each migration's own preflight checks again when it starts.
 */
export async function planEvacuation(services: MountServices, at: Beneath, request: PlanRequest): Promise<EvacuationPlan> {
  const { virtual, dest, mountpoint } = { ...request, mountpoint: services.mountpoint };
  if (!services.tracker.enabled) throw new RefusedError('this mount runs with --no-track: remount with tracking to evacuate');
  if (!posix.isAbsolute(dest)) throw new RefusedError(`destination ${dest} must be an absolute path`);
  if (isWithin(dest, mountpoint)) throw new RefusedError(`destination ${dest} is inside the ferry mount ${mountpoint}: give a directory outside it`);
  const { existing, missing } = await resolveOutsideMount(dest, mountpoint);
  if (missing.length > 0 || !(await fsp.stat(existing)).isDirectory()) throw new RefusedError(`destination ${dest} is not an existing directory: create it first`);

  const names = (await homeNames(services, at, virtual)).filter((name) => !request.only || request.only.includes(name));
  const homes: HomePlan[] = [];
  const refused: Refusal[] = [];
  const excluded: string[] = [];
  const otherMounts = await services.otherMounts();
  for (const name of names) {
    const home = virtual === '/' ? `/${name}` : `${virtual}/${name}`;
    if (request.exclude.some((glob) => matchesGlob(name, glob))) {
      excluded.push(name);
      continue;
    }
    const claimed = services.claims.conflict(home);
    if (claimed) {
      refused.push({ name, virtual: home, reason: claimed });
      continue;
    }
    try {
      // The trailing slash: into the directory, under the home's own name; a name already there is refused.
      const plan = await planMigration({ virtual: home, dest: `${existing}/`, mountpoint, paths: services.paths, at, tracking: true, otherMounts, spaceCheckedByCaller: true });
      plan.site.root.retire();
      const claimedDest = services.claims.conflict(home, plan.destRoot);
      if (claimedDest) refused.push({ name, virtual: home, reason: claimedDest });
      else homes.push({ name, virtual: home, dest: plan.destRoot, bytes: allocatedBytes(plan.tree), neededBytes: plan.neededBytes });
    } catch (err) {
      if (!(err instanceof RefusedError)) throw err;
      refused.push({ name, virtual: home, reason: err.message });
    }
  }

  const fs = await fsp.statfs(existing);
  const freeBytes = fs.bavail * fs.bsize;
  const total = homes.reduce((sum, h) => sum + h.neededBytes, 0);
  const left: HomePlan[] = [];
  let moving = sortHomes(homes, request.order);
  if (total > freeBytes) {
    if (!request.fit) {
      throw new RefusedError(
        `not enough space at ${existing}: ${formatBytes(freeBytes)} free, the ${homes.length} homes need ${formatBytes(total)} (data plus margin), ${formatBytes(total - freeBytes)} missing: free some space, leave homes out with --exclude, or move what fits with --fit`,
      );
    }
    // What fits, taken in order (largest first unless --order was given); the rest stays.
    let room = freeBytes;
    const taken: HomePlan[] = [];
    for (const home of request.orderGiven ? moving : sortHomes([...homes], 'largest')) {
      if (home.neededBytes <= room) {
        taken.push(home);
        room -= home.neededBytes;
      } else left.push(home);
    }
    moving = moving.filter((h) => taken.includes(h));
  }
  if (moving.length === 0) {
    const why = refused.length > 0 ? `: ${refused.map((r) => `${r.name} (${r.reason})`).join('; ')}` : left.length > 0 ? ': none fits' : excluded.length > 0 ? ': --exclude left out every home' : request.only ? ': no libvirt domain has its home directly in it' : ': it holds no directory';
    throw new RefusedError(`nothing to evacuate in ${virtual}${why}`);
  }
  return { virtual, dest: existing, homes: moving, refused, excluded, left, neededBytes: moving.reduce((sum, h) => sum + h.neededBytes, 0), freeBytes };
}
