// Version history: save the document as a named version, list versions, view one
// (read-only, from its Yjs update) and restore it (a new edit every member receives).
import { lazy, Suspense, useCallback, useEffect, useState } from 'react'

import type { Api, Version } from './api'

// The preview is an editor: it comes with the editor's chunk (EditorPane.tsx).
const Preview = lazy(() => import('./EditorPane').then((m) => ({ default: m.Preview })))

/** `ready`: the room exists (this page has joined it), so its versions can be listed. */
export function History({ api, readOnly, ready }: { api: Api; readOnly: boolean; ready: boolean }) {
  const [versions, setVersions] = useState<Version[]>([])
  const [name, setName] = useState('')
  const [viewing, setViewing] = useState<{ id: number; update: Uint8Array } | null>(null)
  const [error, setError] = useState<string | null>(null)
  const refresh = useCallback(() => {
    if (ready) api.versions().then(setVersions, (e: Error) => setError(e.message))
  }, [api, ready])
  useEffect(refresh, [refresh])
  const run = (what: Promise<unknown>) => {
    setError(null)
    what.then(refresh, (e: Error) => setError(e.message))
  }
  return (
    <section aria-label="History" className="panel">
      <h2>History</h2>
      {!readOnly && (
        <form
          className="row"
          onSubmit={(e) => {
            e.preventDefault()
            if (name.trim()) run(api.saveVersion(name.trim()).then(() => setName('')))
          }}
        >
          <input aria-label="Version name" placeholder="Version name" value={name} maxLength={200} onChange={(e) => setName(e.target.value)} />
          <button type="submit" disabled={!name.trim()}>Save version</button>
        </form>
      )}
      {error && <p className="error" role="alert">{error}</p>}
      <ul className="versions" data-testid="versions">
        {versions.map((v) => (
          <li key={v.id}>
            <span>{v.name}</span>
            <button type="button" onClick={() => run(api.versionUpdate(v.id).then((update) => setViewing({ id: v.id, update })))}>
              View
            </button>
            {!readOnly && (
              <button type="button" onClick={() => run(api.restore(v.id).then(() => setViewing(null)))}>
                Restore {v.name}
              </button>
            )}
          </li>
        ))}
      </ul>
      {viewing && (
        <div className="preview-box" data-testid="preview">
          <div className="row">
            <b>Version {versions.find((v) => v.id === viewing.id)?.name}</b>
            <button type="button" onClick={() => setViewing(null)}>Close</button>
          </div>
          <Suspense fallback={<p className="loading">Loading…</p>}>
            <Preview update={viewing.update} />
          </Suspense>
        </div>
      )}
    </section>
  )
}
