#!/usr/bin/env node
// Builds ferry's fuse-native addon from the native/ tree (native/fuse-native, the binding, and native/ferry,
// ferry's own C; see native-notes/fuse-native.md) with -Wall -Wextra -Werror: `npm run build:native`, also
// run by postinstall and scripts/setup.sh.
//
// Skips the compile when build/ferry-build.stamp matches (the sources' hash, this script, the node version)
// and build/Release/fuse.node exists. Prints one line on success; on failure one line on stderr and exit code 1.

import { createHash } from 'node:crypto'
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { nativeSourceHash } from '../native/source-hash.mjs'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const pkgDir = path.join(root, 'native', 'fuse-native')
const require = createRequire(path.join(pkgDir, 'package.json'))

function fail (msg) {
  console.error('build-native: ' + msg)
  process.exit(1)
}

const buildDir = path.join(pkgDir, 'build')
const addon = path.join(buildDir, 'Release', 'fuse.node')
const stampFile = path.join(buildDir, 'ferry-build.stamp')
const rel = p => path.relative(root, p)

// 1. Up to date?
const sourceHash = await nativeSourceHash()
const stamp = createHash('sha256')
  .update(sourceHash)
  .update(fs.readFileSync(fileURLToPath(import.meta.url)))
  .update(`${process.version} ${process.platform} ${process.arch}`)
const stampValue = stamp.digest('hex') + '\n'

if (fs.existsSync(addon) && readOr(stampFile, '') === stampValue) {
  console.log(`fuse-native: addon up to date (${rel(addon)})`)
  process.exit(0)
}

// 2. Tools, headers, node-gyp, and the binding's own dependencies (installed by npm ci).
const missing = ['make', 'python3'].filter(t => !which(t))
if (!which('g++') && !which('c++')) missing.unshift('g++')
if (missing.length) fail(`cannot compile fuse-native: ${missing.join(', ')} not found; install g++, make and python3 (Debian: apt-get install g++ make python3)`)

const nodeDir = ['/usr', path.resolve(path.dirname(process.execPath), '..')]
  .find(d => fs.existsSync(path.join(d, 'include/node/node_api.h')) && fs.existsSync(path.join(d, 'include/node/common.gypi')))
if (!nodeDir) fail('Node headers not found in /usr/include/node or next to ' + process.execPath + '; install the Node.js development headers')

const nodeGyp = findNodeGyp()
if (!nodeGyp) fail("cannot find npm's bundled node-gyp (…/npm/node_modules/node-gyp/bin/node-gyp.js); is npm installed?")

for (const dep of ['napi-macros', 'fuse-shared-library/include']) {
  try { require.resolve(dep) } catch { fail(`${dep} is not installed for native/fuse-native; run npm ci first`) }
}

// 3. Compile. node-gyp rebuild starts with a clean, so a failed build leaves no binary behind.
fs.rmSync(stampFile, { force: true })
const res = spawnSync(process.execPath, [nodeGyp, 'rebuild', `--nodedir=${nodeDir}`], {
  cwd: pkgDir,
  encoding: 'utf8',
  maxBuffer: 64 * 1024 * 1024,
  // binding.gyp runs `node -e ...`: make it the node running this script
  env: { ...process.env, PATH: path.dirname(process.execPath) + path.delimiter + (process.env.PATH || '') }
})
const log = path.join(buildDir, 'ferry-build.log')
fs.mkdirSync(buildDir, { recursive: true })
fs.writeFileSync(log, `${nodeGyp} rebuild --nodedir=${nodeDir}\n\n${res.stdout || ''}\n${res.stderr || ''}\n${res.error ? String(res.error) : ''}\n`)
if (res.status !== 0 || !fs.existsSync(addon)) {
  const firstError = `${res.stdout || ''}\n${res.stderr || ''}`.split('\n').find(l => / error: /.test(l))
  fail(`compiling fuse-native failed (node-gyp exit ${res.status ?? res.signal}${firstError ? `: ${firstError.trim()}` : ''}); needs g++, make, python3 and Node headers; see ${rel(log)}`)
}

// 4. The result must load (this also resolves libfuse.so.2) and carry the hash of these sources.
let loaded
try {
  loaded = require(addon)
} catch (err) {
  fail(`built ${rel(addon)} does not load (${err.message.split('\n')[0]}); is libfuse2 installed?`)
}
if (loaded.ferry_source_hash !== sourceHash) {
  fail(`built ${rel(addon)} reports source hash ${loaded.ferry_source_hash}, expected ${sourceHash} (did native/ change during the build?)`)
}

fs.writeFileSync(stampFile, stampValue)
fs.rmSync(log, { force: true })
console.log(`fuse-native: built addon ${rel(addon)} (sources ${sourceHash.slice(0, 12)})`)

function readOr (file, dflt) {
  try { return fs.readFileSync(file, 'utf8') } catch { return dflt }
}

function which (cmd) {
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    if (!dir) continue
    const p = path.join(dir, cmd)
    try {
      fs.accessSync(p, fs.constants.X_OK)
      if (fs.statSync(p).isFile()) return p
    } catch {}
  }
  return null
}

function findNodeGyp () {
  const rel = 'node_modules/node-gyp/bin/node-gyp.js'
  const candidates = []
  // set by npm for lifecycle scripts: its bundled node-gyp
  if (process.env.npm_config_node_gyp) candidates.push(process.env.npm_config_node_gyp)
  // npm-cli.js / npx-cli.js live in npm/bin
  if (process.env.npm_execpath) candidates.push(path.join(path.dirname(process.env.npm_execpath), '..', rel))
  const npm = which('npm')
  if (npm) {
    try { candidates.push(path.join(path.dirname(fs.realpathSync(npm)), '..', rel)) } catch {}
  }
  candidates.push(path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', rel))
  return candidates.find(p => p.endsWith('node-gyp.js') && fs.existsSync(p))
}
