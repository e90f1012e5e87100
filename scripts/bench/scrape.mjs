#!/usr/bin/env node
// A Prometheus stand-in for bench:io's ferry-metrics target: GET /metrics every <ms> milliseconds until killed,
// each answer read to its end. <where> is host:port or unix:/path, as `ferry mount --metrics` takes it. Exits 1 if
// a scrape fails, so a dead endpoint cannot pass unseen; prints the number of scrapes when killed (SIGTERM).
import { get } from 'node:http'

const [where, everyMs = '100'] = process.argv.slice(2)
if (!where) {
  console.error('usage: scrape.mjs <host:port | unix:/path> [ms]')
  process.exit(2)
}
const target = where.startsWith('unix:')
  ? { socketPath: where.slice(5) }
  : { host: where.slice(0, where.lastIndexOf(':')), port: Number(where.slice(where.lastIndexOf(':') + 1)) }
let scrapes = 0
process.on('SIGTERM', () => {
  console.error(`scrape: ${scrapes} scrapes of ${where}`)
  process.exit(0)
})

function scrape () {
  return new Promise((resolve, reject) => {
    get({ ...target, path: '/metrics' }, (res) => {
      res.resume()
      res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`HTTP ${res.statusCode}`))))
    }).on('error', reject)
  })
}

for (;;) {
  const started = Date.now()
  await scrape().catch((err) => {
    console.error(`scrape: ${where}: ${err.message}`)
    process.exit(1)
  })
  scrapes++
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, Number(everyMs) - (Date.now() - started))))
}
