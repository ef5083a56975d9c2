// The JSON-lines command loop shared by the interop peers (peer.mjs,
// relay.mjs): one command per stdin line, one JSON object per stdout line.
// Commands run concurrently; each answer carries the command's sequence
// number. When stdin closes, pending commands finish and the node stops.
import { createInterface } from 'node:readline'

export function emit (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

export function serveCommands (node, commands) {
  let seq = 0
  const pending = new Set()
  const lines = createInterface({ input: process.stdin, crlfDelay: Infinity })
  lines.on('line', (line) => {
    const words = line.trim().split(/\s+/).filter(Boolean)
    if (words.length === 0) return
    seq += 1
    const id = seq
    const [cmd, ...args] = words
    const run = (async () => {
      try {
        const handler = commands[cmd]
        if (handler === undefined) throw new Error(`unknown command ${cmd}`)
        emit({ seq: id, cmd, ok: true, ...(await handler(args)) })
      } catch (err) {
        // An error may carry extra fields for the test (`details`).
        emit({
          ...(err?.details ?? {}),
          seq: id,
          cmd,
          ok: false,
          name: err?.name ?? 'Error',
          error: String(err?.message ?? err)
        })
      }
    })()
    pending.add(run)
    run.finally(() => pending.delete(run))
  })
  lines.on('close', async () => {
    await Promise.allSettled([...pending])
    await node.stop().catch(() => {})
    process.exit(0)
  })
}
