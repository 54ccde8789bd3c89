import { defineConfig } from 'vite'

// The hub serves `dist/` at `/` (embedded in its binary), so asset URLs are absolute from
// the root, and the build is reproducible: CI rebuilds it and compares with what is
// committed.
export default defineConfig({
  base: '/',
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
