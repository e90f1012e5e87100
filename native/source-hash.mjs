// The identity of the addon built from this tree: a sha256 over the sources it is compiled from (every
// .c/.h/.js/.mjs/.gyp/.json file under native/, outside build/, node_modules/ and test/). binding.gyp bakes it
// into the addon (`node source-hash.mjs` prints it); ferry computes it again at startup and refuses an addon
// whose hash differs: one not built from these sources.
import { createHash } from 'node:crypto'
import { readdir, readFile } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const nativeDir = path.dirname(fileURLToPath(import.meta.url))
const skipDirs = new Set(['build', 'node_modules', 'test'])
const sourceExt = /\.(c|h|js|mjs|gyp|json)$/

async function sources (dir) {
  const found = []
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name)
    if (entry.isDirectory() && !skipDirs.has(entry.name)) found.push(...await sources(full))
    else if (entry.isFile() && sourceExt.test(entry.name)) found.push(full)
  }
  return found
}

/** Hex sha256 of native/'s sources, by relative path. */
export async function nativeSourceHash () {
  const hash = createHash('sha256')
  const files = (await sources(nativeDir)).map((f) => path.relative(nativeDir, f)).sort()
  for (const rel of files) hash.update(rel + '\0').update(await readFile(path.join(nativeDir, rel))).update('\0')
  return hash.digest('hex')
}

if (process.argv[1] === fileURLToPath(import.meta.url)) console.log(await nativeSourceHash())
