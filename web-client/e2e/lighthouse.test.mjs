// Page load, measured with Lighthouse (the `lighthouse` npm package) in Debian's Chromium
// (CHROME_PATH = CHROMIUM), inside the e2e run (hub/tests/web_e2e.rs passes CHORUS_URL,
// WRITE_TOKEN and CHROMIUM). Two runs on one room's page: Lighthouse's mobile profile
// (its default: simulated slow 4G and a 4x slower CPU) and unthrottled (the desktop preset,
// throttling "provided", i.e. none).
//
// Performance is measured here, never asserted: the test fails only when Lighthouse did not
// run or did not produce the metrics. It prints a table and, with LIGHTHOUSE_OUT set, writes
// the figures there as JSON. The goals (issue 17) and the figures are in docs/BENCHMARKS.md.
import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { test } from 'node:test'

// (Imported here so that a node_modules installed before Lighthouse joined the devDependencies
// fails with a message that says what to do.)
const [chromeLauncher, { default: lighthouse }, { default: desktopConfig }] = await Promise.all([
  import('chrome-launcher'), import('lighthouse'), import('lighthouse/core/config/desktop-config.js'),
]).catch((e) => {
  throw new Error(`lighthouse is not installed: run \`npm ci\` in web-client (${e.message})`)
})

const HUB = process.env.CHORUS_URL
const WRITE = process.env.WRITE_TOKEN

const METRICS = [
  ['FCP', 'first-contentful-paint'],
  ['LCP', 'largest-contentful-paint'],
  ['TBT', 'total-blocking-time'],
  ['TTI', 'interactive'],
]

/** The figures of one Lighthouse result. */
function summary (lhr) {
  const out = { lighthouse: lhr.lighthouseVersion, url: lhr.finalDisplayedUrl.replace(/#.*/, ''), runtimeError: lhr.runtimeError?.code ?? null }
  for (const [name, id] of METRICS) {
    const v = lhr.audits[id]?.numericValue
    out[name] = typeof v === 'number' ? Math.round(v) : null
  }
  // Every script the first view fetched (modulepreloads included), as sent (gzipped).
  const requests = lhr.audits['network-requests']?.details?.items ?? []
  const scripts = requests.filter((r) => r.resourceType === 'Script')
  out.jsTransferBytes = scripts.reduce((sum, r) => sum + (r.transferSize ?? 0), 0)
  out.jsResourceBytes = scripts.reduce((sum, r) => sum + (r.resourceSize ?? 0), 0)
  out.scripts = scripts.map((r) => `${new URL(r.url).pathname} ${r.transferSize} B`)
  const lcp = lhr.audits['largest-contentful-paint-element']?.details?.items?.[0]?.items?.[0]?.node
  out.lcpElement = lcp ? `${lcp.selector} "${(lcp.snippet ?? '').slice(0, 80)}"` : null
  return out
}

const ms = (v, version) => (v === null ? `not reported by Lighthouse ${version}` : `${v} ms`)

test('page load under Lighthouse: mobile profile and unthrottled (measured, not asserted)', { timeout: 120_000 }, async () => {
  assert.ok(HUB && WRITE, 'CHORUS_URL and WRITE_TOKEN are set')
  // The e2e hub has a JWT secret, so it hands out no development token: the page gets one in
  // its fragment, as from an embedding app.
  const url = `${HUB}/?room=lighthouse-${Date.now()}#token=${WRITE}`
  const chrome = await chromeLauncher.launch({
    chromePath: process.env.CHROME_PATH || process.env.CHROMIUM || '/usr/bin/chromium',
    // This machine's network is closed: nothing in the background, no sandbox (root).
    chromeFlags: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  })
  const results = {}
  try {
    const flags = { port: chrome.port, output: 'json', logLevel: 'error', onlyCategories: ['performance'], maxWaitForLoad: 30_000 }
    results.mobile = summary((await lighthouse(url, flags)).lhr)
    results.unthrottled = summary((await lighthouse(url, { ...flags, throttlingMethod: 'provided' }, desktopConfig)).lhr)
  } finally {
    await chrome.kill()
  }

  const rows = [
    ['profile', 'FCP', 'LCP', 'TBT', 'TTI', 'JS transferred'],
    ['goal, mobile', '≤ 1500 ms', '≤ 2500 ms', '≤ 200 ms', '≤ 3500 ms', '≤ 300 KB'],
    ['goal, unthrottled', '≤ 500 ms', '≤ 833 ms', '≤ 67 ms', '≤ 1167 ms', ''],
    ...Object.entries(results).map(([name, r]) =>
      [name, ...['FCP', 'LCP', 'TBT', 'TTI'].map((m) => ms(r[m], r.lighthouse)), `${(r.jsTransferBytes / 1024).toFixed(1)} KiB`]),
  ]
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)))
  console.log(`Lighthouse ${results.mobile.lighthouse}, ${url.replace(/#.*/, '')}`)
  for (const r of rows) console.log(r.map((c, i) => c.padEnd(widths[i])).join(' | '))
  for (const [name, r] of Object.entries(results)) {
    console.log(`${name}: LCP element ${r.lcpElement}; scripts: ${r.scripts.join(', ')}`)
  }
  if (process.env.LIGHTHOUSE_OUT) writeFileSync(process.env.LIGHTHOUSE_OUT, JSON.stringify(results, null, 2))

  // Only that Lighthouse ran and measured: FCP, LCP and TBT in both runs, and the scripts.
  for (const [name, r] of Object.entries(results)) {
    assert.equal(r.runtimeError, null, `${name}: Lighthouse failed: ${r.runtimeError}`)
    for (const m of ['FCP', 'LCP', 'TBT']) assert.equal(typeof r[m], 'number', `${name}: no ${m}`)
    assert.ok(r.jsTransferBytes > 0, `${name}: no script was fetched`)
  }
})
