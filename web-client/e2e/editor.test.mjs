// End to end: the page the hub serves, in Debian's Chromium driven by playwright-core, two
// browser contexts in one room. Started by the hub's test `web_e2e` (hub/tests/web_e2e.rs),
// which runs a hub with the stand-in model server and passes:
//   CHORUS_URL     the hub (http://127.0.0.1:port)
//   STANDIN_URL    the stand-in model server, to script answers
//   WRITE_TOKEN    a JWT with the write role on every room
//   READ_TOKEN     a JWT with the read role on every room
//   CHROMIUM       the browser (default: /usr/bin/chromium)
//   SCREENSHOT     where to save a screenshot of two tabs editing together (optional)
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { after, before, test } from 'node:test'

import { chromium } from 'playwright-core'

const HUB = process.env.CHORUS_URL
const STANDIN = process.env.STANDIN_URL
const WRITE = process.env.WRITE_TOKEN
const READ = process.env.READ_TOKEN
const WAIT = { timeout: 15_000 }

let browser
const opened = []

before(async () => {
  assert.ok(HUB && STANDIN && WRITE && READ, 'CHORUS_URL, STANDIN_URL, WRITE_TOKEN and READ_TOKEN are set')
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
 * Opens `room` in a new browser context (its own storage: another person); `prepare(context)`
 * runs before the page loads.
 */
async function open (name, room, token, viewport = { width: 1100, height: 760 }, options = {}, prepare = async () => {}) {
  const context = await browser.newContext({ viewport, ...options })
  await prepare(context)
  const page = await context.newPage()
  const errors = []
  page.on('pageerror', (e) => errors.push(String(e)))
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()) })
  opened.push({ name, errors })
  await page.goto(`${HUB}/?room=${encodeURIComponent(room)}#token=${token}`)
  await page.getByTestId('state').filter({ hasText: /^saved$/ }).waitFor(WAIT)
  const who = await page.evaluate(() => JSON.parse(localStorage.getItem('chorus.identity')).name)
  return { context, page, who }
}

/**
 * A switch on a context's sockets to the hub (they go through a proxy): `cut()` closes the
 * open ones and refuses new ones, as a lost connection ends once TCP gives up; `mend()` lets
 * new ones through again.
 */
function socketSwitch () {
  let up = true
  const live = new Set()
  return {
    async install (context) {
      await context.routeWebSocket(/\/hocuspocus/, (ws) => {
        if (!up) return ws.close({ code: 4000, reason: 'cut by the test' })
        live.add({ ws, server: ws.connectToServer() })
      })
    },
    async cut () {
      up = false
      for (const { ws, server } of live) {
        await server.close()
        await ws.close({ code: 4000, reason: 'cut by the test' })
      }
      live.clear()
    },
    mend () { up = true },
  }
}

/** Both tabs, side by side, in one picture (for the README). */
async function screenshotSideBySide (left, right, path) {
  const shots = await Promise.all([left, right].map(async (p) => (await p.screenshot()).toString('base64')))
  const context = await browser.newContext({ viewport: { width: 1400, height: 500 } })
  const page = await context.newPage()
  await page.setContent(`<body style="margin:0;display:flex;gap:8px;background:#cbd5e1">${shots
    .map((s) => `<img style="width:696px" src="data:image/png;base64,${s}">`).join('')}</body>`)
  await page.screenshot({ path, fullPage: true })
  await context.close()
}

const doc = (p) => p.page.locator('.doc')
const text = (p) => doc(p).innerText()
/** The document's text alone, without the others' caret labels. */
const docText = (p) => doc(p).evaluate((el) => {
  const copy = el.cloneNode(true)
  for (const caret of copy.querySelectorAll('.collaboration-carets__caret')) caret.remove()
  return [...copy.children].map((c) => c.textContent).join('\n')
})

async function waitText (p, want) {
  await doc(p).filter({ hasText: want }).waitFor(WAIT)
}

/** Path ops on the room's document over REST (docs/API.md), as a bot or a backend sends them. */
async function postOps (room, ops) {
  const res = await fetch(`${HUB}/v1/rooms/${encodeURIComponent(room)}/document`, {
    method: 'POST',
    headers: { authorization: `Bearer ${WRITE}`, 'content-type': 'application/json' },
    body: JSON.stringify({ ops }),
  })
  assert.equal(res.status, 200, await res.text())
}

/** The room's document as the hub holds it, XML as nodes (`?view=tree`). */
async function tree (room) {
  const res = await fetch(`${HUB}/v1/rooms/${encodeURIComponent(room)}/document?view=tree`, {
    headers: { authorization: `Bearer ${WRITE}` },
  })
  assert.equal(res.status, 200)
  return res.json()
}

/** Polls `probe` until it returns something truthy (bounded: WAIT's patience). */
async function eventually (what, probe) {
  const end = Date.now() + WAIT.timeout
  let last
  while (Date.now() < end) {
    last = await probe()
    if (last) return last
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  assert.fail(`${what}: never happened`)
}

const checklist = (...items) => ({
  type: 'taskList',
  content: items.map((text) => ({
    type: 'taskItem',
    attrs: { checked: false },
    content: [{ type: 'paragraph', content: [{ type: 'text', text }] }],
  })),
})

test('two people type into one room and see each other, their carets and the chat', async () => {
  const room = `e2e-${Date.now()}`
  const a = await open('a', room, WRITE)
  const b = await open('b', room, WRITE)
  await doc(a).click()
  await a.page.keyboard.type('Hello from A.')
  await waitText(b, 'Hello from A.')
  await doc(b).click()
  await b.page.keyboard.press('Control+End')
  await b.page.keyboard.press('Enter')
  await b.page.keyboard.type('And from B.')
  await waitText(a, 'And from B.')
  // Each sees the other's named caret and presence.
  await a.page.locator('.collaboration-carets__label', { hasText: b.who }).waitFor(WAIT)
  await b.page.locator('.collaboration-carets__label', { hasText: a.who }).waitFor(WAIT)
  await a.page.locator('.presence li', { hasText: b.who }).waitFor(WAIT)
  await a.page.getByTestId('state').filter({ hasText: /^saved$/ }).waitFor(WAIT)
  if (process.env.SCREENSHOT) await screenshotSideBySide(a.page, b.page, process.env.SCREENSHOT)
  // The chat, both ways.
  await a.page.getByLabel('Message').fill('Shall we start?')
  await a.page.getByRole('button', { name: 'Send' }).click()
  await b.page.getByTestId('chat').filter({ hasText: 'Shall we start?' }).waitFor(WAIT)
  await a.page.getByTestId('chat').filter({ hasText: 'Shall we start?' }).waitFor(WAIT)
  await b.page.getByLabel('Message').fill('Yes.')
  await b.page.getByRole('button', { name: 'Send' }).click()
  await a.page.getByTestId('chat').filter({ hasText: 'Yes.' }).waitFor(WAIT)
  // A reload keeps everything.
  await b.page.reload()
  await waitText(b, 'Hello from A.')
  await waitText(b, 'And from B.')
  await b.page.getByTestId('chat').filter({ hasText: 'Shall we start?' }).waitFor(WAIT)
  await a.context.close()
  await b.context.close()
})

test('one goes offline, both type, and both catch up once it is back', async () => {
  const room = `e2e-catchup-${Date.now()}`
  const sockets = socketSwitch()
  const a = await open('a-catchup', room, WRITE)
  const b = await open('b-catchup', room, WRITE, undefined, {}, sockets.install)
  const typeAtEnd = async (p, s, newLine = false) => {
    await doc(p).click()
    await p.page.keyboard.press('Control+End')
    if (newLine) await p.page.keyboard.press('Enter')
    await p.page.keyboard.type(s)
  }
  await typeAtEnd(a, 'Before.')
  await waitText(b, 'Before.')

  // A short outage: B's network goes (Chromium's offline emulation holds the open socket's
  // frames, as TCP does until it gives up); both type meanwhile.
  await b.context.setOffline(true)
  await typeAtEnd(a, ' A meanwhile.')
  await typeAtEnd(b, 'B meanwhile.', true)
  // Nothing crosses while B is away: its change waits for the hub's acknowledgement.
  await b.page.getByTestId('state').filter({ hasText: /^saving$/ }).waitFor(WAIT)
  assert.doesNotMatch(await docText(a), /B meanwhile/)
  assert.doesNotMatch(await docText(b), /A meanwhile/)
  await b.context.setOffline(false)
  await waitText(a, 'B meanwhile.')
  await waitText(b, 'A meanwhile.')
  for (const p of [a, b]) await p.page.getByTestId('state').filter({ hasText: /^saved$/ }).waitFor(WAIT)
  assert.equal(await docText(a), await docText(b))
  assert.equal(await docText(a), 'Before. A meanwhile.\nB meanwhile.')

  // A long one: the connection is lost too, so catching up takes a new connection and the
  // sync protocol (each side sends what the other lacks).
  await b.context.setOffline(true)
  await sockets.cut()
  await b.page.getByTestId('state').filter({ hasText: /connecting|disconnected/ }).waitFor(WAIT)
  await typeAtEnd(a, 'A again.', true)
  await typeAtEnd(b, ' B again.')
  assert.doesNotMatch(await docText(b), /A again/)
  await b.context.setOffline(false)
  sockets.mend()
  await waitText(a, 'B again.')
  await waitText(b, 'A again.')
  for (const p of [a, b]) await p.page.getByTestId('state').filter({ hasText: /^saved$/ }).waitFor(WAIT)
  assert.equal(await docText(a), await docText(b))
  assert.match(await docText(a), /^Before\. A meanwhile\.\nB meanwhile\. B again\.\nA again\.$/)
  await a.context.close()
  await b.context.close()
})

test('undo takes back only my own typing', async () => {
  const room = `e2e-undo-${Date.now()}`
  const a = await open('a-undo', room, WRITE)
  const b = await open('b-undo', room, WRITE)
  await doc(a).click()
  await a.page.keyboard.type('Mine')
  await waitText(b, 'Mine')
  await doc(b).click()
  await b.page.keyboard.press('Control+End')
  await b.page.keyboard.press('Enter')
  await b.page.keyboard.type('Theirs')
  await waitText(a, 'Theirs')
  await doc(a).click()
  await a.page.keyboard.press('Control+z')
  await doc(b).filter({ hasNotText: 'Mine' }).waitFor(WAIT)
  assert.match(await text(b), /Theirs/)
  await a.context.close()
  await b.context.close()
})

test('a read-only token cannot type', async () => {
  const room = `e2e-read-${Date.now()}`
  const w = await open('writer', room, WRITE)
  await doc(w).click()
  await w.page.keyboard.type('Written by the writer')
  const r = await open('reader', room, READ)
  await waitText(r, 'Written by the writer')
  await r.page.getByTestId('read-only').waitFor(WAIT)
  assert.equal(await doc(r).getAttribute('contenteditable'), 'false')
  await doc(r).click()
  await r.page.keyboard.type('sneaky')
  await w.page.keyboard.type('!')
  await waitText(r, 'Written by the writer!')
  assert.doesNotMatch(await text(r), /sneaky/)
  assert.doesNotMatch(await text(w), /sneaky/)
  await w.context.close()
  await r.context.close()
})

test('an answer streams in formatted, for both, and is reverted in one step', async () => {
  const script = await fetch(`${STANDIN}/_standin/script`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify([{ answer: '## Plan\n\nShip the **editor** first.\n', tokens_per_second: 40, token_chars: 3 }]),
  })
  assert.equal(script.status, 204)
  const room = `e2e-ai-${Date.now()}`
  const a = await open('a-ai', room, WRITE)
  const b = await open('b-ai', room, WRITE)
  await doc(a).click()
  await a.page.keyboard.type('Notes:')
  await waitText(b, 'Notes:')
  // B keeps every text its document shows while the answer arrives.
  await b.page.evaluate(() => {
    const seen = (window.__seen = [])
    const el = document.querySelector('.doc')
    new MutationObserver(() => seen.push(el.textContent)).observe(el, { subtree: true, childList: true, characterData: true })
  })
  await a.page.getByLabel('Ask the assistant').fill('Write our plan')
  await a.page.getByRole('button', { name: 'Ask AI' }).click()
  // Formatted: a heading and bold text, never the markdown symbols.
  await b.page.locator('.doc h2', { hasText: 'Plan' }).waitFor(WAIT)
  await b.page.locator('.doc strong', { hasText: 'editor' }).waitFor(WAIT)
  await doc(b).filter({ hasText: 'first.' }).waitFor(WAIT)
  assert.doesNotMatch(await text(b), /\*\*|##/)
  // Streamed: B saw the answer grow, in several steps, before it was whole.
  const partial = new Set(await b.page.evaluate(() => window.__seen.filter((t) => /Plan|Ship/.test(t) && !t.includes('first.'))))
  assert.ok(partial.size >= 2, `the answer arrived in ${partial.size} partial step(s), not streamed`)
  await a.page.locator('[data-testid="run"][data-status="done"]').waitFor(WAIT)
  await a.page.getByRole('button', { name: 'Revert' }).click()
  await b.page.locator('.doc h2').waitFor({ state: 'detached', ...WAIT })
  await doc(b).filter({ hasNotText: 'editor' }).waitFor(WAIT)
  assert.match(await text(b), /Notes:/)
  // As a suggestion: everyone sees it marked, then it is accepted and stays, unmarked.
  await fetch(`${STANDIN}/_standin/script`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify([{ answer: 'A suggested line.', tokens_per_second: 40, token_chars: 3 }]),
  })
  await doc(a).click()
  await a.page.keyboard.press('Control+End')
  await a.page.getByLabel('Ask the assistant').fill('Suggest a line')
  await a.page.getByLabel('as a suggestion').check()
  await a.page.getByRole('button', { name: 'Ask AI' }).click()
  await b.page.locator('.doc .ai-suggestion', { hasText: 'A suggested line.' }).waitFor(WAIT)
  await a.page.locator('[data-testid="run"][data-status="done"]', { hasText: 'suggestion' }).waitFor(WAIT)
  await a.page.getByRole('button', { name: 'Accept' }).click()
  await a.page.locator('[data-testid="run"][data-status="accepted"]').waitFor(WAIT)
  await b.page.locator('.doc .ai-suggestion').waitFor({ state: 'detached', ...WAIT })
  assert.match(await text(b), /A suggested line\./)
  assert.match(await text(b), /Notes:/)
  await a.context.close()
  await b.context.close()
})

test('a checklist written over REST shows in the editor, and ticks go both ways', async () => {
  const room = `e2e-checklist-${Date.now()}`
  const a = await open('a-checklist', room, WRITE)
  // A bot's checklist (examples/python-bot): task list > task item {checked} > paragraph.
  await postOps(room, [{ op: 'splice', path: ['default'], index: 0, xml: true, insert: [checklist('passport')] }])
  const item = a.page.locator('.doc li.task-item', { hasText: 'passport' })
  const box = a.page.getByRole('checkbox', { name: 'passport' })
  await item.waitFor(WAIT)
  assert.equal(await box.isChecked(), false)
  // Ticked by the hub: the page's checkbox follows.
  await postOps(room, [{ op: 'set', path: ['default', 0, 'content', 0, 'attrs', 'checked'], value: true }])
  await a.page.locator('.doc li.task-item[data-checked="true"]', { hasText: 'passport' }).waitFor(WAIT)
  assert.equal(await box.isChecked(), true)
  // Unticked, then ticked again in the page: the hub's document follows.
  const checked = async () => (await tree(room)).default?.[0]?.content?.[0]?.attrs?.checked
  await box.uncheck()
  await eventually('checked: false in the tree view', async () => (await checked()) === false)
  await box.check()
  await eventually('checked: true in the tree view', async () => (await checked()) === true)
  assert.equal((await tree(room)).default[0].content[0].content[0].content[0].text, 'passport')
  // And typed: `[ ] ` starts a checklist; Tab nests an item under the one above.
  await doc(a).click()
  await a.page.keyboard.press('Control+End')
  await a.page.keyboard.press('Enter')
  await a.page.keyboard.press('Enter')
  await a.page.keyboard.type('[ ] tickets')
  await a.page.keyboard.press('Enter')
  await a.page.keyboard.press('Tab')
  await a.page.keyboard.type('train')
  await a.page.locator('.doc li.task-item li.task-item', { hasText: 'train' }).waitFor(WAIT)
  await a.page.getByRole('checkbox', { name: 'tickets' }).waitFor(WAIT)
  await a.context.close()
})

test('the layout works 360 px wide', async () => {
  const room = `e2e-narrow-${Date.now()}`
  const m = await open('mobile', room, WRITE, { width: 360, height: 740 })
  // A nested checklist with a long unbroken line must fit too.
  const nested = checklist('pack', 'a-very-long-item-name-without-any-space-to-break-it-at-all-anywhere')
  nested.content[0].content.push(checklist('socks', 'charger'))
  await postOps(room, [{ op: 'splice', path: ['default'], index: 0, xml: true, insert: [nested] }])
  await m.page.getByRole('checkbox', { name: 'charger' }).waitFor(WAIT)
  const overflow = await m.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth)
  assert.ok(overflow <= 0, `the page scrolls sideways by ${overflow}px`)
  await doc(m).click()
  await m.page.keyboard.type('small screen')
  await waitText(m, 'small screen')
  await m.context.close()
})

test('a version is saved, viewed and restored from the history', async () => {
  const room = `e2e-history-${Date.now()}`
  const a = await open('a-history', room, WRITE)
  const b = await open('b-history', room, WRITE)
  await doc(a).click()
  await a.page.keyboard.type('First draft.')
  await waitText(b, 'First draft.')
  await a.page.getByTestId('state').filter({ hasText: /^saved$/ }).waitFor(WAIT)
  await a.page.getByLabel('Version name').fill('draft one')
  await a.page.getByRole('button', { name: 'Save version' }).click()
  await a.page.getByRole('button', { name: 'Restore draft one' }).waitFor(WAIT)
  await doc(a).click()
  await a.page.keyboard.press('Control+End')
  await a.page.keyboard.type(' Then a second thought.')
  await waitText(b, 'Then a second thought.')
  // Viewing shows the version, not the live text.
  await a.page.getByRole('button', { name: 'View' }).first().click()
  const preview = a.page.getByTestId('preview')
  await preview.filter({ hasText: 'First draft.' }).waitFor(WAIT)
  assert.doesNotMatch(await preview.innerText(), /second thought/)
  // Restoring is an edit every member receives.
  await a.page.getByRole('button', { name: 'Restore draft one' }).click()
  await doc(b).filter({ hasNotText: 'second thought' }).waitFor(WAIT)
  assert.match(await text(b), /First draft\./)
  await a.context.close()
  await b.context.close()
})

test('edits made without the hub survive a reload and reach the others once it is back', async () => {
  const room = `e2e-offline-${Date.now()}`
  const a = await open('a-offline', room, WRITE)
  const b = await open('b-offline', room, WRITE)
  await doc(a).click()
  await a.page.keyboard.type('Online line.')
  await waitText(b, 'Online line.')
  // B loses the hub (its socket is refused; the page itself still loads).
  await b.page.routeWebSocket(/\/hocuspocus/, (ws) => ws.close())
  await b.page.reload()
  await waitText(b, 'Online line.') // from this browser's own copy (IndexedDB)
  await b.page.getByTestId('state').filter({ hasText: /connecting|disconnected/ }).waitFor(WAIT)
  await doc(b).click()
  await b.page.keyboard.press('Control+End')
  await b.page.keyboard.press('Enter')
  await b.page.keyboard.type('Written offline.')
  // (y-indexeddb stores each update in its own IndexedDB transaction: give the last one a
  // moment, as any person reloading would.)
  await b.page.waitForTimeout(500)
  await b.page.reload()
  await waitText(b, 'Written offline.')
  // Back online (a new page of the same browser, so the same stored copy, and no blocked
  // socket): both sides catch up.
  await b.page.close()
  const back = await b.context.newPage()
  await back.goto(`${HUB}/?room=${encodeURIComponent(room)}#token=${WRITE}`)
  await waitText(a, 'Written offline.')
  await back.getByTestId('state').filter({ hasText: /^saved$/ }).waitFor(WAIT)
  await back.locator('.doc').filter({ hasText: 'Online line.' }).waitFor(WAIT)
  await a.context.close()
  await b.context.close()
})

test('no serious accessibility violations (axe-core)', async () => {
  const axe = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8')
  // (The page's policy forbids inline scripts, axe's included: this context may inject it.)
  const room = `e2e-a11y-${Date.now()}`
  const a = await open('a11y', room, WRITE, undefined, { bypassCSP: true })
  // With a checklist, so its checkboxes are checked too.
  await postOps(room, [{ op: 'splice', path: ['default'], index: 0, xml: true, insert: [checklist('milk', 'bread')] }])
  await a.page.getByRole('checkbox', { name: 'bread' }).waitFor(WAIT)
  const pages = [['room', a.page]]
  const picker = await a.context.newPage()
  await picker.goto(`${HUB}/`)
  pages.push(['picker', picker])
  for (const [name, page] of pages) {
    await page.addScriptTag({ content: axe })
    const found = await page.evaluate(async () => {
      const r = await window.axe.run(document)
      return r.violations
        .filter((v) => v.impact === 'serious' || v.impact === 'critical')
        .map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`)
    })
    assert.deepEqual(found, [], `${name}: ${found.join('; ')}`)
  }
  await a.context.close()
})
