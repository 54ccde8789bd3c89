// Typing latency in the browser: a keystroke in one tab until it shows in another tab's
// editor, while `chorus-loadtest edit` runs protocol clients editing the same room. Both tabs
// are Chromium pages on this machine, so both read the same clock.
//
// Usage: node bench/typing-latency.mjs HUB_URL LOADTEST [KEYS] [CLIENTS]
//   HUB_URL   the hub serving the editor (http://127.0.0.1:8080; anonymous loopback access)
//   LOADTEST  the chorus-loadtest binary
//   KEYS      keystrokes to time (default 300, one every 50 ms)
//   CLIENTS   protocol clients typing in the room (default 18, 5 edits/s each)
// Prints p50/p95/p99/max in ms. Traffic goes only to the given loopback hub; bounded in time.
import { spawn } from 'node:child_process'

import { chromium } from 'playwright-core'

const [hub, loadtest, keysArg, clientsArg] = process.argv.slice(2)
if (!hub || !loadtest) {
  console.error('usage: node bench/typing-latency.mjs HUB_URL LOADTEST [KEYS] [CLIENTS]')
  process.exit(2)
}
const keys = Number(keysArg ?? 300)
const clients = Number(clientsArg ?? 18)
const prefix = `typing-${Date.now()}-`
const room = `${prefix}0`
const ws = hub.replace(/^http/, 'ws') + '/ws'

const load = spawn(loadtest, ['edit', '--url', ws, '--users', String(clients), '--room-size', String(clients),
  '--rate', '5', '--duration', `${Math.ceil(keys * 0.05) + 20}s`, '--room-prefix', prefix, '--no-progress'],
{ stdio: 'ignore' })
await new Promise((r) => setTimeout(r, 3000))

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
})
const open = async () => {
  const context = await browser.newContext()
  const page = await context.newPage()
  await page.goto(`${hub}/?room=${encodeURIComponent(room)}`)
  await page.getByTestId('state').filter({ hasText: /^saved$/ }).waitFor({ timeout: 20_000 })
  return page
}
const a = await open()
const b = await open()
// B notes when each new character arrives (the editor's text length, in a paragraph of its own).
await b.evaluate(() => {
  window.arrivals = []
  const doc = document.querySelector('.doc')
  // ('q' is in no caret label: the names are animals without one.)
  const seen = () => (doc.innerText.match(/q/g) ?? []).length
  new MutationObserver(() => {
    const now = performance.timeOrigin + performance.now()
    const n = seen()
    while (window.arrivals.length < n) window.arrivals.push(now)
  }).observe(doc, { subtree: true, childList: true, characterData: true })
})
await a.evaluate(() => {
  window.sent = []
  document.querySelector('.doc').addEventListener('keydown', () => {
    window.sent.push(performance.timeOrigin + performance.now())
  }, true)
})
await a.locator('.doc').click()
for (let i = 0; i < keys; i++) {
  await a.keyboard.press('q')
  await new Promise((r) => setTimeout(r, 50))
}
await new Promise((r) => setTimeout(r, 1000))
const sent = await a.evaluate(() => window.sent)
const arrivals = await b.evaluate(() => window.arrivals)
await browser.close()
load.kill()

const lat = sent.slice(0, arrivals.length).map((t, i) => arrivals[i] - t).sort((x, y) => x - y)
const q = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))].toFixed(1)
console.log(JSON.stringify({
  keys, clients, arrived: arrivals.length,
  p50_ms: Number(q(0.5)), p95_ms: Number(q(0.95)), p99_ms: Number(q(0.99)), max_ms: Number(lat.at(-1).toFixed(1)),
}))
if (arrivals.length < keys) process.exitCode = 1
