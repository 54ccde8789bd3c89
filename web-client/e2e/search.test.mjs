// End to end: the header's search box (src/Search.tsx) over the hub's `GET /v1/search`, in
// Debian's Chromium driven by playwright-core. Started with the other e2e tests by the hub's
// test `web_e2e` (hub/tests/web_e2e.rs), which passes:
//   CHORUS_URL     the hub (http://127.0.0.1:port), with search on
//   WRITE_TOKEN    a JWT with the write role on every room
//   READ_TOKEN     a JWT with the read role on every room
//   CHROMIUM       the browser (default: /usr/bin/chromium)
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'

import { chromium } from 'playwright-core'

const HUB = process.env.CHORUS_URL
const WRITE = process.env.WRITE_TOKEN
const READ = process.env.READ_TOKEN
const WAIT = { timeout: 15_000 }
/** How long the hub may take to index a change. */
const INDEXED_WITHIN_MS = 20_000

let browser
const opened = []

before(async () => {
  assert.ok(HUB && WRITE && READ, 'CHORUS_URL, WRITE_TOKEN and READ_TOKEN are set')
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    // This machine's network is closed: no background requests, no QUIC, no sandbox (root).
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  })
})

after(async () => {
  await browser?.close()
  // Every page of every test: nothing thrown, nothing logged as an error.
  for (const { name, errors } of opened) {
    assert.deepEqual(errors, [], `console errors in ${name}`)
  }
})

/**
 * Opens `room` in a new browser context; `prepare(context)` runs before the page loads.
 * Console errors matching `expected` are not counted (a refusal the test asks for).
 */
async function open (name, room, token, { prepare = async () => {}, expected = null } = {}) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 760 } })
  await prepare(context)
  const page = await context.newPage()
  const errors = []
  page.on('pageerror', (e) => errors.push(String(e)))
  page.on('console', (m) => { if (m.type() === 'error' && !(expected && expected.test(m.text()))) errors.push(m.text()) })
  opened.push({ name, errors })
  await page.goto(`${HUB}/?room=${encodeURIComponent(room)}#token=${token}`)
  await page.getByTestId('state').filter({ hasText: /^saved$/ }).waitFor(WAIT)
  return { context, page }
}

/** Path ops on the room's document over REST (docs/API.md); an unknown room is created. */
async function postOps (room, ops) {
  const res = await fetch(`${HUB}/v1/rooms/${encodeURIComponent(room)}/document`, {
    method: 'POST',
    headers: { authorization: `Bearer ${WRITE}`, 'content-type': 'application/json' },
    body: JSON.stringify({ ops }),
  })
  assert.equal(res.status, 200, await res.text())
}

const paragraph = (text) => ({ type: 'paragraph', content: [{ type: 'text', text }] })
const write = (room, nodes) => postOps(room, [{ op: 'splice', path: ['default'], index: 0, xml: true, insert: nodes }])
/** Enough lines before a hit that the page has to scroll to show it. */
const filler = (n) => Array.from({ length: n }, (_, i) => paragraph(`Filler line number ${i + 1}, nothing to find here.`))

/**
 * A word found nowhere else: letters only (a tokenizer may split at digits), ending in a
 * letter no stemmer strips.
 */
function uniqueWord (prefix) {
  const digits = `${Date.now()}${Math.floor(Math.random() * 1e6)}`
  return `${prefix}${digits.replace(/\d/g, (d) => 'bcdfghjlmn'[d])}k`
}

/** Polls the hub's search until `word` is found in `room` (the hub indexes within seconds); the hit. */
async function indexed (word, room) {
  const end = Date.now() + INDEXED_WITHIN_MS
  let last = 'no answer'
  while (Date.now() < end) {
    const res = await fetch(`${HUB}/v1/search?${new URLSearchParams({ q: word, mode: 'text', limit: '10' })}`, {
      headers: { authorization: `Bearer ${WRITE}` },
    })
    const body = await res.text()
    last = `${res.status} ${body}`
    if (res.ok) {
      const hit = JSON.parse(body).results.find((r) => r.room === room)
      if (hit) return hit
    }
    await new Promise((resolve) => setTimeout(resolve, 250))
  }
  assert.fail(`"${word}" never found in ${room} within ${INDEXED_WITHIN_MS} ms; last answer: ${last}`)
}

/** In the page: whether the selection is in the editor's paragraph holding `word`. */
function selectionAt (word) {
  const node = window.getSelection()?.anchorNode
  const el = node && (node.nodeType === Node.ELEMENT_NODE ? node : node.parentElement)
  const block = el?.closest('.doc p')
  return !!block && block.textContent.includes(word)
}

/** In the page: whether the selection is in the editor, away from the paragraph holding `word`. */
function selectionAway (word) {
  const node = window.getSelection()?.anchorNode
  const el = node && (node.nodeType === Node.ELEMENT_NODE ? node : node.parentElement)
  const block = el?.closest('.doc p')
  return !!block && !block.textContent.includes(word)
}

/** Waits for the selection to be in the paragraph holding `word`; says where it is if never. */
async function waitSelectionAt (page, word) {
  try {
    await page.waitForFunction(selectionAt, word, WAIT)
  } catch (e) {
    const where = await page.evaluate((w) => {
      const s = window.getSelection()
      const node = s?.anchorNode
      return {
        url: location.href,
        anchor: node ? `${node.nodeName} "${(node.textContent || '').slice(0, 80)}" @${s.anchorOffset}` : null,
        focused: document.activeElement?.outerHTML.slice(0, 80),
        shown: !!document.querySelector('.doc')?.textContent.includes(w),
        state: document.querySelector('[data-testid="state"]')?.textContent,
      }
    }, word)
    assert.fail(`the selection never reached "${word}": ${JSON.stringify(where)} (${e.message})`)
  }
}

/** Whether the paragraph holding `word` is on screen. */
async function onScreen (page, word) {
  return page.locator('.doc p', { hasText: word }).evaluate((p) => {
    const r = p.getBoundingClientRect()
    return r.top >= 0 && r.bottom <= window.innerHeight
  })
}

const hitFor = (page, room) => page.locator(`[data-testid="search-hit"][data-room="${room}"]`).filter({ has: page.locator('mark') })

/** The hit's highlighted words, which must include `word`. */
async function assertMarked (hit, word) {
  const marks = (await hit.first().locator('mark').allInnerTexts()).join(' ').toLowerCase()
  assert.ok(marks.includes(word.toLowerCase()), `"${word}" is highlighted (marks: ${marks})`)
}

/** Two rooms: `here` with one word, `there` with another far down its document. */
async function twoRooms (tag) {
  const stamp = Date.now()
  const rooms = { here: `e2e-search-${tag}-here-${stamp}`, there: `e2e-search-${tag}-there-${stamp}` }
  const words = { here: uniqueWord('zqnear'), there: uniqueWord('zqfar') }
  await write(rooms.here, [paragraph(`Notes about ${words.here}, kept here.`)])
  await write(rooms.there, [...filler(40), paragraph(`The ${words.there} plan lives in this paragraph.`), ...filler(3)])
  const hit = await indexed(words.there, rooms.there)
  assert.equal(hit.position?.field, 'default', JSON.stringify(hit))
  assert.equal(typeof hit.position?.relative, 'string', `the hit has a relative position: ${JSON.stringify(hit)}`)
  await indexed(words.here, rooms.here)
  return { rooms, words }
}

test('a hit in another room opens that room with the cursor at the hit; one in this room moves the cursor', async () => {
  const { rooms, words } = await twoRooms('w')
  const { context, page } = await open('search', rooms.here, WRITE)
  const box = page.getByTestId('search')
  assert.equal(await box.getAttribute('type'), 'search')
  await page.getByRole('search').getByRole('combobox', { name: 'Search all rooms' }).waitFor(WAIT)

  // Enter searches at once; the other room's hit shows its snippet with the word marked.
  await box.fill(words.there)
  await box.press('Enter')
  const hit = hitFor(page, rooms.there)
  await hit.first().waitFor(WAIT)
  await assertMarked(hit, words.there)
  assert.match(await page.getByTestId('search-results').innerText(), new RegExp(rooms.there))

  // Chosen: the page is that room's (the token kept), with the cursor in the hit's paragraph,
  // scrolled into view, and the position gone from the URL once used.
  await hit.first().click()
  await page.waitForURL((url) => url.searchParams.get('room') === rooms.there, WAIT)
  await page.locator('.room-name', { hasText: rooms.there }).waitFor(WAIT)
  await page.getByTestId('state').filter({ hasText: /^saved$/ }).waitFor(WAIT)
  await waitSelectionAt(page, words.there)
  assert.ok(await page.evaluate(() => !!document.activeElement?.closest('.doc')), 'the editor has the focus')
  assert.ok(await onScreen(page, words.there), 'the hit is scrolled into view')
  const hash = new URLSearchParams(new URL(page.url()).hash.slice(1))
  assert.equal(hash.get('token'), WRITE)
  assert.equal(hash.get('at'), null)
  // The cursor is a real one: typing lands in that paragraph.
  await page.keyboard.type(' typed')
  await page.locator('.doc p', { hasText: words.there }).filter({ hasText: 'typed' }).waitFor(WAIT)

  // In this room, with the keyboard: after typing's pause the box searches by itself, Escape
  // closes the list, the arrows reopen it and pick the hit, Enter moves the cursor back to it.
  await page.locator('.doc p').first().click()
  await page.waitForFunction(selectionAway, words.there, WAIT)
  await box.fill(words.there)
  const here = hitFor(page, rooms.there)
  await here.first().waitFor(WAIT)
  await here.first().filter({ hasText: '(this room)' }).waitFor(WAIT)
  await box.press('Escape')
  await page.getByTestId('search-results').waitFor({ state: 'hidden', ...WAIT })
  assert.equal(await box.inputValue(), words.there, 'Escape closes the list and keeps the query')
  await box.press('ArrowDown')
  await page.getByTestId('search-results').waitFor(WAIT)
  let picked = false
  for (let i = 0; i < 12 && !picked; i++) {
    await box.press('ArrowDown')
    const active = page.locator('[data-testid="search-hit"][aria-selected="true"]')
    picked = (await active.getAttribute('data-room')) === rooms.there && (await active.locator('mark').count()) > 0
  }
  assert.ok(picked, 'the arrows reach the hit')
  await box.press('Enter')
  await waitSelectionAt(page, words.there)
  await page.getByTestId('search-results').waitFor({ state: 'hidden', ...WAIT })
  assert.equal(new URL(page.url()).searchParams.get('room'), rooms.there)
  await context.close()
})

test('a reader opens a hit too, the cursor shown in the read-only view', async () => {
  const { rooms, words } = await twoRooms('r')
  const { context, page } = await open('search-reader', rooms.here, READ)
  await page.getByTestId('read-only').waitFor(WAIT)
  const box = page.getByTestId('search')
  await box.fill(words.there)
  await box.press('Enter')
  const hit = hitFor(page, rooms.there)
  await hit.first().waitFor(WAIT)
  await hit.first().click()
  await page.waitForURL((url) => url.searchParams.get('room') === rooms.there, WAIT)
  await page.getByTestId('read-only').waitFor(WAIT)
  await waitSelectionAt(page, words.there)
  assert.ok(await onScreen(page, words.there), 'the hit is scrolled into view')
  await context.close()
})

test('what the hub answers is shown as text: marks, the text-only note, no matches, refusals', async () => {
  // The hub's answers stood in for (page.route), to show what a real hub rarely says.
  let answer = { status: 200, body: {} }
  const room = `e2e-search-shown-${Date.now()}`
  const { context, page } = await open('search-shown', room, WRITE, {
    // A refusal is a failed request, which Chromium logs.
    expected: /status of (503|403)/,
    prepare: (c) => c.route(/\/v1\/search\?/, (route) =>
      route.fulfill({ status: answer.status, contentType: 'application/json', body: JSON.stringify(answer.body) })),
  })
  const box = page.getByTestId('search')
  const results = page.getByTestId('search-results')
  const search = async (q) => {
    await box.fill(q)
    await box.press('Enter')
  }

  answer = {
    status: 200,
    body: {
      query: 'img', mode: 'hybrid', semantic: false, took_ms: 1,
      results: [{
        room: 'elsewhere', score: 1,
        snippet: '😀 <img src=x onerror="window.__pwned=1"> café',
        highlights: [[2, 6], [60, 999], [5, 3], [-4, 1], ['x', 2], [44, 999]],
        position: { field: 'default', offset: 3, relative: 'not/base64?' },
        matched: ['text'],
      }],
    },
  }
  await search('img tag')
  await results.filter({ hasText: 'text matches only' }).waitFor(WAIT)
  const hit = page.getByTestId('search-hit')
  await hit.filter({ hasText: '<img src=x' }).waitFor(WAIT)
  assert.equal(await results.locator('img').count(), 0, 'the snippet is text, never markup')
  assert.deepEqual(await hit.locator('mark').allInnerTexts(), ['😀', '<img', 'é'])
  assert.equal(await page.evaluate(() => window.__pwned), undefined)

  answer = { status: 200, body: { query: 'q', mode: 'hybrid', semantic: true, took_ms: 1, results: [] } }
  await search('nothing at all')
  await results.filter({ hasText: 'No matches' }).waitFor(WAIT)
  assert.doesNotMatch(await results.innerText(), /text matches only/)

  answer = { status: 503, body: { code: 'unavailable', detail: 'search is disabled' } }
  await search('switched off')
  await results.getByRole('alert').filter({ hasText: 'Search is off on this hub' }).waitFor(WAIT)

  answer = { status: 403, body: { code: 'forbidden', detail: 'no' } }
  await search('not mine')
  await results.getByRole('alert').filter({ hasText: 'Not allowed' }).waitFor(WAIT)
  await context.close()
})
