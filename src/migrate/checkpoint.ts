import { DirtyMap } from '../track/dirty-map.js';

/** A resumable migration's durable progress; with the intent log it bounds what a crash costs. */
export interface Checkpoint {
  at: string;
  /** Source inode → destination path (relative) of its copy. */
  placed: [string, string][];
  /** Source inode → birth time (ns), to tell a reused inode number from the same file. */
  born: [string, string][];
  /** Source inode → size, mtime, ctime and birth time (ns) when its copy last started: compared after a crash
   * that left no heartbeat (recovery.ts). Absent in checkpoints of ferry before 0.1.1. */
  identity?: [string, string, string, string, string][];
  /** Inodes copied in full at least once, with the dirty bitmap they had at the checkpoint (base64). */
  complete: [string, string][];
  /** The file being copied in full when the checkpoint was taken, and how far that copy had got. */
  partial: { ino: string; copiedUpTo: number; dirty: string } | undefined;
}

export function encodeMap(map: DirtyMap): string {
  return Buffer.from(map.toBytes()).toString('base64');
}

export function decodeMap(blockSize: number, text: string): DirtyMap {
  return DirtyMap.fromBytes(blockSize, new Uint8Array(Buffer.from(text, 'base64')));
}
