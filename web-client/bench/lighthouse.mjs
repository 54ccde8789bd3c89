// Page load with Lighthouse (the `lighthouse` npm package) in Debian's Chromium: the figures
// docs/BENCHMARKS.md reports, and the helpers the e2e run's Lighthouse test uses
// (e2e/lighthouse.test.mjs).
//
//   node bench/lighthouse.mjs URL [--runs N] [--profiles mobile,mobile-devtools,unthrottled] [--out FILE]
//
// Profiles: `mobile` is Lighthouse's default (a mid-range phone, simulated slow 4G and 4x CPU
// slowdown), `mobile-devtools` the same phone with real throttling (DevTools: the network and
// the CPU are slowed while the page loads), `unthrottled` the desktop preset with no throttling
// (`provided`). Runs go round-robin over the profiles; the medians come last. Chromium is
// CHROME_PATH, CHROMIUM or /usr/bin/chromium.
import { writeFileSync } from 'node:fs'
import { pathToFileURL } from 'node:url'

import * as chromeLauncher from 'chrome-launcher'
import lighthouse from 'lighthouse'
import desktopConfig from 'lighthouse/core/config/desktop-config.js'

export const PROFILES = {
  mobile: { flags: {}, config: undefined },
  'mobile-devtools': { flags: { throttlingMethod: 'devtools' }, config: undefined },
  unthrottled: { flags: { throttlingMethod: 'provided' }, config: desktopConfig },
}

const METRICS = [
  ['FCP', 'first-contentful-paint'],
  ['LCP', 'largest-contentful-paint'],
  ['TBT', 'total-blocking-time'],
  ['TTI', 'interactive'],
]

/** A headless Chromium for Lighthouse (this machine's network is closed; root: no sandbox). */
export function launchChrome () {
  return chromeLauncher.launch({
    chromePath: process.env.CHROME_PATH || process.env.CHROMIUM || '/usr/bin/chromium',
    chromeFlags: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  })
}

/** The figures of one Lighthouse result. */
export function summary (lhr) {
  const out = {
    lighthouse: lhr.lighthouseVersion,
    url: lhr.finalDisplayedUrl.replace(/#.*/, ''), // (never a token from the fragment)
    runtimeError: lhr.runtimeError?.code ?? null,
  }
  for (const [name, id] of METRICS) {
    const v = lhr.audits[id]?.numericValue
    out[name] = typeof v === 'number' ? Math.round(v) : null
  }
  // Every script the page fetched while it loaded (modulepreloads and lazy chunks included),
  // as sent (gzipped, headers included).
  const requests = lhr.audits['network-requests']?.details?.items ?? []
  const scripts = requests.filter((r) => r.resourceType === 'Script')
  out.jsTransferBytes = scripts.reduce((sum, r) => sum + (r.transferSize ?? 0), 0)
  out.jsResourceBytes = scripts.reduce((sum, r) => sum + (r.resourceSize ?? 0), 0)
  out.scripts = scripts.map((r) => `${new URL(r.url).pathname} ${r.transferSize} B`)
  const lcp = lhr.audits['largest-contentful-paint-element']?.details?.items?.[0]?.items?.[0]?.node
  out.lcpElement = lcp ? `${lcp.selector} ${(lcp.snippet ?? '').slice(0, 100)}` : null
  // The page's own mark when the editor is on screen (src/EditorPane.tsx). A user timing is
  // what the browser observed: under simulated throttling, unthrottled.
  const marks = lhr.audits['user-timings']?.details?.items ?? []
  const ready = marks.find((m) => m.name === 'chorus:editor-ready')
  out.editorReady = ready ? Math.round(ready.startTime) : null
  return out
}

/** One Lighthouse run of `url` under `profile`, in the Chromium on `port`. */
export async function measure (url, profile, port) {
  const { flags, config } = PROFILES[profile]
  const result = await lighthouse(url, {
    port, output: 'json', logLevel: 'error', onlyCategories: ['performance'], maxWaitForLoad: 30_000, ...flags,
  }, config)
  return summary(result.lhr)
}

export const median = (xs) => {
  const v = xs.filter((x) => typeof x === 'number').sort((a, b) => a - b)
  if (v.length === 0) return null
  return v.length % 2 ? v[(v.length - 1) / 2] : Math.round((v[v.length / 2 - 1] + v[v.length / 2]) / 2)
}

/** A plain-text table: `rows` of cells, the first the header. */
export function table (rows) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)))
  return rows.map((r) => r.map((c, i) => String(c).padEnd(widths[i])).join(' | ')).join('\n')
}

const ms = (v, version) => (v === null ? `not reported by Lighthouse ${version}` : `${v} ms`)

/** Rows for results by profile: FCP, LCP, TBT, TTI, scripts transferred, editor on screen. */
export function rows (results) {
  return [
    ['profile', 'FCP', 'LCP', 'TBT', 'TTI', 'JS transferred', 'editor on screen'],
    ['goal, mobile', '≤ 1500 ms', '≤ 2500 ms', '≤ 200 ms', '≤ 3500 ms', '≤ 300 KB', ''],
    ['goal, unthrottled', '≤ 500 ms', '≤ 833 ms', '≤ 67 ms', '≤ 1167 ms', '', ''],
    ...Object.entries(results).map(([name, r]) => [
      name,
      ...['FCP', 'LCP', 'TBT', 'TTI'].map((m) => ms(r[m], r.lighthouse)),
      r.jsTransferBytes === null ? '' : `${(r.jsTransferBytes / 1024).toFixed(1)} KiB`,
      r.editorReady === null ? '' : `${r.editorReady} ms (observed)`,
    ]),
  ]
}

async function main (argv) {
  const url = argv.find((a) => !a.startsWith('--') && /^https?:/.test(a))
  const opt = (name, fallback) => {
    const i = argv.indexOf(`--${name}`)
    return i >= 0 ? argv[i + 1] : fallback
  }
  if (!url) {
    console.error('usage: node bench/lighthouse.mjs URL [--runs N] [--profiles mobile,mobile-devtools,unthrottled] [--out FILE]')
    process.exit(2)
  }
  const runs = Number(opt('runs', '5'))
  const profiles = opt('profiles', Object.keys(PROFILES).join(',')).split(',')
  const chrome = await launchChrome()
  const all = Object.fromEntries(profiles.map((p) => [p, []]))
  try {
    for (let i = 0; i < runs; i++) {
      for (const p of profiles) {
        const r = await measure(url, p, chrome.port)
        all[p].push(r)
        console.log(`run ${i + 1} ${p}: FCP ${r.FCP} LCP ${r.LCP} TBT ${r.TBT} TTI ${r.TTI} JS ${r.jsTransferBytes} B` +
          ` editor ${r.editorReady} ms${r.runtimeError ? ` ERROR ${r.runtimeError}` : ''}; LCP element ${r.lcpElement}`)
      }
    }
  } finally {
    await chrome.kill()
  }
  const medians = Object.fromEntries(profiles.map((p) => {
    const m = { lighthouse: all[p][0].lighthouse }
    for (const k of ['FCP', 'LCP', 'TBT', 'TTI', 'jsTransferBytes', 'editorReady']) m[k] = median(all[p].map((r) => r[k]))
    return [p, m]
  }))
  console.log(`\nmedians of ${runs} runs, ${url.replace(/#.*/, '')}`)
  console.log(table(rows(medians)))
  for (const p of profiles) {
    const ranges = ['FCP', 'LCP', 'TBT', 'TTI'].map((k) => `${k} ${all[p].map((r) => r[k]).join('/')}`)
    console.log(`${p}: ${ranges.join('; ')}`)
  }
  if (opt('out')) writeFileSync(opt('out'), JSON.stringify({ url: url.replace(/#.*/, ''), runs: all, medians }, null, 2))
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) await main(process.argv.slice(2))
