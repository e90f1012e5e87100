import { z } from 'zod';
import { DirtyMap } from '../track/dirty-map.js';

/** An inode number or a time in ns, as decimal text (JSON has no 64-bit integers). */
const decimal = z.string().regex(/^\d+$/);
const base64 = z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/);

/**
 * A resumable migration's durable progress; with the intent log it bounds what a crash costs. Read back only
 * through this schema: a file of another shape is as untrustworthy as a torn one (recovery undoes the copy).
 */
export const CheckpointSchema = z.object({
  at: z.string(),
  /** Source inode → destination path (relative) of its copy. */
  placed: z.array(z.tuple([decimal, z.string()])),
  /** Source inode → birth time (ns), to tell a reused inode number from the same file. */
  born: z.array(z.tuple([decimal, decimal])),
  /** Source inode → size, mtime, ctime and birth time (ns) when its copy last started: compared after a crash that
   * left no heartbeat (recovery.ts). Absent in checkpoints written before issue 27. */
  identity: z.array(z.tuple([decimal, decimal, decimal, decimal, decimal])).optional(),
  /** Inodes copied in full at least once, with the dirty bitmap they had at the checkpoint (base64). */
  complete: z.array(z.tuple([decimal, base64])),
  /** The file being copied in full when the checkpoint was taken, and how far that copy had got. */
  partial: z.object({ ino: decimal, copiedUpTo: z.number().int().nonnegative(), dirty: base64 }).optional(),
});
export type Checkpoint = z.infer<typeof CheckpointSchema>;

/** The write-intent log on disk: inode → regions (a negative one marks "every region from -(r+1) on"). */
export const IntentLogSchema = z.array(z.tuple([decimal, z.array(z.number().int())]));

export function encodeMap(map: DirtyMap): string {
  return Buffer.from(map.toBytes()).toString('base64');
}

export function decodeMap(blockSize: number, text: string): DirtyMap {
  return DirtyMap.fromBytes(blockSize, new Uint8Array(Buffer.from(text, 'base64')));
}
