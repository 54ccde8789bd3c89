import { defineConfig, type Plugin } from 'vite'

/**
 * `<link rel="modulepreload" fetchpriority="low">` in the page for the room's lazy chunks
 * (src/chunks.ts: the live part and the editor) and what they import. The browser fetches
 * them while it fetches the first script instead of after that script has run (the editor is
 * on screen sooner), at a low priority: the first script and the stylesheet, which the room's
 * frame needs, go first. (Vite preloads only what the entry imports statically.)
 */
function preloadChunks(entries: string[]): Plugin {
  return {
    name: 'chorus-preload-chunks',
    apply: 'build',
    transformIndexHtml: {
      order: 'post',
      handler(html, ctx) {
        const chunks = Object.values(ctx.bundle ?? {}).flatMap((c) => (c.type === 'chunk' ? [c] : []))
        const byFile = new Map(chunks.map((c) => [c.fileName, c]))
        const files = new Set<string>()
        const add = (file: string) => {
          if (files.has(file)) return
          files.add(file)
          for (const i of byFile.get(file)?.imports ?? []) add(i)
        }
        for (const entry of entries) {
          const found = chunks.filter((c) => c.isDynamicEntry && c.facadeModuleId?.endsWith(`/src/${entry}`))
          if (found.length !== 1) throw new Error(`expected one chunk for src/${entry}, found ${found.length}`)
          add(found[0]!.fileName)
        }
        // (What the entry imports statically is in the page already.)
        return [...files]
          .filter((f) => !html.includes(`"/${f}"`))
          .map((f) => ({
            tag: 'link',
            attrs: { rel: 'modulepreload', crossorigin: true, fetchpriority: 'low', href: `/${f}` },
            injectTo: 'head' as const,
          }))
      },
    },
  }
}

export default defineConfig({
  base: '/',
  plugins: [preloadChunks(['live.ts', 'EditorPane.tsx'])],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    sourcemap: false,
    reportCompressedSize: true,
    chunkSizeWarningLimit: 1200,
    rolldownOptions: {
      onLog(level, log, handler) {
        // Tiptap's React package starts with "use client" (for server components), which a
        // client-only bundle drops on purpose.
        if (log.code === 'MODULE_LEVEL_DIRECTIVE') return
        handler(level, log)
      },
    },
  },
  server: {
    // `npm run dev` beside a hub on 8080: the socket and the REST API go to the hub.
    proxy: {
      '/v1': 'http://127.0.0.1:8080',
      '/hocuspocus': { target: 'ws://127.0.0.1:8080', ws: true },
    },
  },
})
