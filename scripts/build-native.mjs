#!/usr/bin/env node
// Builds node_modules/fuse-native's addon from its patched source (see
// patches/ and native-notes/fuse-native.md) and removes the upstream
// prebuilds so that an unpatched binary can never be loaded.
//
// Runs after `patch-package` in postinstall. Skips the compile when
// build/ferry-build.stamp matches (patches + node version) and
// build/Release/fuse.node exists. Prints one line on success; on failure one
// line on stderr and exit code 1.

import { createHash } from 'node:crypto'
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const patchesDir = path.join(root, 'patches')
const require = createRequire(path.join(root, 'package.json'))

function fail (msg) {
  console.error('build-native: ' + msg)
  process.exit(1)
}

let pkgDir
try {
  pkgDir = path.dirname(require.resolve('fuse-native/package.json'))
} catch {
  fail('fuse-native is not installed in node_modules; run npm install first')
}
const buildDir = path.join(pkgDir, 'build')
const addon = path.join(buildDir, 'Release', 'fuse.node')
const stampFile = path.join(buildDir, 'ferry-build.stamp')
const rel = p => path.relative(root, p)

// Never leave the upstream (unpatched) prebuilt binaries where node-gyp-build
// could pick them up, whatever happens below.
fs.rmSync(path.join(pkgDir, 'prebuilds'), { recursive: true, force: true })

// 1. The sources must carry our patches (patch-package exits 0 on failure
//    unless --error-on-fail, so check instead of trusting the exit code).
const ourPatches = fs.existsSync(patchesDir)
  ? fs.readdirSync(patchesDir).filter(f => f.startsWith('fuse-native+') && f.endsWith('.patch')).sort()
  : []
if (ourPatches.length === 0) fail(`no fuse-native patches found in ${rel(patchesDir)}`)

const cSource = fs.readFileSync(path.join(pkgDir, 'fuse-native.c'), 'utf8')
const jsSource = fs.readFileSync(path.join(pkgDir, 'index.js'), 'utf8')
const patchsetMatch = /static const uint32_t ferry_patchset = (\d+);/.exec(cSource)
if (!patchsetMatch || !jsSource.includes('FERRY_PATCHSET')) {
  fail('node_modules/fuse-native is not patched; run `npx patch-package --error-on-fail` first')
}
const statePath = path.join(pkgDir, '.patch-package.json')
if (fs.existsSync(statePath)) {
  const state = JSON.parse(fs.readFileSync(statePath, 'utf8'))
  for (const name of ourPatches) {
    const hash = createHash('sha256').update(fs.readFileSync(path.join(patchesDir, name))).digest('hex')
    const applied = (state.patches || []).find(p => p.patchFilename === name)
    if (!applied || !applied.didApply || applied.patchContentHash !== hash) {
      fail(`patch ${name} is not (or not in its current version) applied to node_modules/fuse-native; run \`npx patch-package --error-on-fail\``)
    }
  }
}

// 2. Up to date?
const stamp = createHash('sha256')
for (const name of fs.readdirSync(patchesDir).sort()) {
  stamp.update(name + '\0').update(fs.readFileSync(path.join(patchesDir, name))).update('\0')
}
stamp.update(fs.readFileSync(fileURLToPath(import.meta.url)))
stamp.update(`${process.version} ${process.platform} ${process.arch}`)
const stampValue = stamp.digest('hex') + '\n'

if (fs.existsSync(addon) && readOr(stampFile, '') === stampValue) {
  console.log(`fuse-native: patched addon up to date (${rel(addon)})`)
  process.exit(0)
}

// 3. Tools, headers, node-gyp.
const missing = ['make', 'python3'].filter(t => !which(t))
if (!which('g++') && !which('c++')) missing.unshift('g++')
if (missing.length) fail(`cannot compile fuse-native: ${missing.join(', ')} not found; install g++, make and python3 (Debian: apt-get install g++ make python3)`)

const nodeDir = ['/usr', path.resolve(path.dirname(process.execPath), '..')]
  .find(d => fs.existsSync(path.join(d, 'include/node/node_api.h')) && fs.existsSync(path.join(d, 'include/node/common.gypi')))
if (!nodeDir) fail('Node headers not found in /usr/include/node or next to ' + process.execPath + '; install the Node.js development headers')

const nodeGyp = findNodeGyp()
if (!nodeGyp) fail("cannot find npm's bundled node-gyp (…/npm/node_modules/node-gyp/bin/node-gyp.js); is npm installed?")

// 4. Compile. node-gyp rebuild starts with a clean, so a failed build leaves no binary behind.
fs.rmSync(stampFile, { force: true })
const res = spawnSync(process.execPath, [nodeGyp, 'rebuild', `--nodedir=${nodeDir}`], {
  cwd: pkgDir,
  encoding: 'utf8',
  maxBuffer: 64 * 1024 * 1024,
  // binding.gyp runs `node -e ...`: make it the node running this script
  env: { ...process.env, PATH: path.dirname(process.execPath) + path.delimiter + (process.env.PATH || '') }
})
const log = path.join(pkgDir, 'ferry-build.log')
fs.writeFileSync(log, `${nodeGyp} rebuild --nodedir=${nodeDir}\n\n${res.stdout || ''}\n${res.stderr || ''}\n${res.error ? String(res.error) : ''}\n`)
if (res.status !== 0 || !fs.existsSync(addon)) {
  fail(`compiling fuse-native failed (node-gyp exit ${res.status ?? res.signal}); needs g++, make, python3 and Node headers; see ${rel(log)}`)
}

// 5. The result must load (this also resolves libfuse.so.2) and be ours.
let loaded
try {
  loaded = require(addon)
} catch (err) {
  fail(`built ${rel(addon)} does not load (${err.message.split('\n')[0]}); is libfuse2 installed?`)
}
if (loaded.ferry_patchset !== Number(patchsetMatch[1])) {
  fail(`built ${rel(addon)} reports ferry_patchset ${loaded.ferry_patchset}, expected ${patchsetMatch[1]}`)
}

fs.writeFileSync(stampFile, stampValue)
fs.rmSync(log, { force: true })
console.log(`fuse-native: built patched addon (patchset ${loaded.ferry_patchset}) ${rel(addon)}`)

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
