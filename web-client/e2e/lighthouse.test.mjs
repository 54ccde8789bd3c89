// Page load, measured with Lighthouse (the `lighthouse` npm package) in Debian's Chromium
// (CHROME_PATH = CHROMIUM), inside the e2e run (hub/tests/web_e2e.rs passes CHORUS_URL,
// WRITE_TOKEN and CHROMIUM). Two runs on one room's page: Lighthouse's mobile profile
// (its default: simulated slow 4G and a 4x slower CPU) and unthrottled (the desktop preset,
// throttling "provided", i.e. none). The helpers are bench/lighthouse.mjs's, which measures
// the medians docs/BENCHMARKS.md reports.
//
// Performance is measured here, never asserted: the test fails only when Lighthouse did not
// run or did not produce the metrics. It prints a table and, with LIGHTHOUSE_OUT set, writes
// the figures there as JSON.
import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { test } from 'node:test'

// (Imported here so that a node_modules installed before Lighthouse joined the devDependencies
// fails with a message that says what to do.)
const { launchChrome, measure, rows, table } = await import('../bench/lighthouse.mjs').catch((e) => {
  throw new Error(`lighthouse is not installed: run \`npm ci\` in web-client (${e.message})`)
})

const HUB = process.env.CHORUS_URL
const WRITE = process.env.WRITE_TOKEN

test('page load under Lighthouse: mobile profile and unthrottled (measured, not asserted)', { timeout: 120_000 }, async () => {
  assert.ok(HUB && WRITE, 'CHORUS_URL and WRITE_TOKEN are set')
  // The e2e hub has a JWT secret, so it hands out no development token: the page gets one in
  // its fragment, as from an embedding app.
  const url = `${HUB}/?room=lighthouse-${Date.now()}#token=${WRITE}`
  const chrome = await launchChrome()
  const results = {}
  try {
    for (const profile of ['mobile', 'unthrottled']) results[profile] = await measure(url, profile, chrome.port)
  } finally {
    await chrome.kill()
  }

  // (Every line starts with "lighthouse": hub/tests/web_e2e.rs shows those lines with --nocapture.)
  const say = (line) => console.log(`lighthouse ${line}`)
  say(`${results.mobile.lighthouse}, ${url.replace(/#.*/, '')}`)
  for (const line of table(rows(results)).split('\n')) say(`| ${line}`)
  for (const [name, r] of Object.entries(results)) {
    say(`${name}: LCP element ${r.lcpElement}; scripts: ${r.scripts.join(', ')}`)
  }
  if (process.env.LIGHTHOUSE_OUT) writeFileSync(process.env.LIGHTHOUSE_OUT, JSON.stringify(results, null, 2))

  // Only that Lighthouse ran and measured: FCP, LCP and TBT in both runs, and the scripts.
  for (const [name, r] of Object.entries(results)) {
    assert.equal(r.runtimeError, null, `${name}: Lighthouse failed: ${r.runtimeError}`)
    for (const m of ['FCP', 'LCP', 'TBT']) assert.equal(typeof r[m], 'number', `${name}: no ${m}`)
    assert.ok(r.jsTransferBytes > 0, `${name}: no script was fetched`)
  }
})
