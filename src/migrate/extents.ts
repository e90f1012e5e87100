import type { Extent } from '../track/dirty-map.js';

/** Sorts and merges overlapping or touching extents. */
export function mergeExtents(lists: Extent[][]): Extent[] {
  const all = lists.flat().sort((a, b) => a[0] - b[0]);
  const merged: Extent[] = [];
  for (const [offset, length] of all) {
    const last = merged.at(-1);
    if (last && offset <= last[0] + last[1]) last[1] = Math.max(last[1], offset + length - last[0]);
    else merged.push([offset, length]);
  }
  return merged;
}
