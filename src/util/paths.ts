/** True when `path` is `dir` itself or lies below it (absolute, normalized paths; '/' holds everything). */
export function isWithin(path: string, dir: string): boolean {
  return dir === '/' || path === dir || path.startsWith(dir + '/');
}
