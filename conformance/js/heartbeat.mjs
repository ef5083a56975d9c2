// A js-libp2p peer of go-filecoin's heartbeat protocol for
// ../tests/heartbeat_peers.rs, driven by ../src/heartbeat_peer.rs: it is
// always an aggregator, and a beater too on command.
//
// Usage: node heartbeat.mjs --seed N [--port P]
//
// The identity is the Ed25519 key whose 32-byte seed is the byte N repeated.
// The node listens on loopback TCP port P (a free one if unset: a test
// restarting an aggregator gives it its old port back), speaks /noise and
// /yamux/1.0.0, and runs identify and ping.
//
// The heartbeat protocol, `fil/heartbeat/1.0.0` (no leading slash, as
// go-filecoin names it): the beater opens a stream to the aggregator and
// writes one JSON object per line, the way Go's json.Encoder does (compact
// JSON, `<`, `>`, `&`, U+2028 and U+2029 escaped as \u00xx, then "\n"):
//   {"Head":STRING,"Height":UINT64,"Nickname":STRING,"MinerAddress":STRING,
//    "GenesisCID":{"/":STRING}}      (go-cid's JSON; may be null or missing)
// The aggregator never writes; it reads every inbound stream line by line.
// A line longer than 64 KiB, a line that is not UTF-8, not a JSON object, or
// has a known key of the wrong type (as Go's json.Decoder refuses it) is an
// error: the aggregator resets the stream. Blank lines are skipped, unknown
// keys kept, and a last line without "\n" at the end of the stream still
// counts (Go's decoder reads it too).
//
// Protocol on stdin/stdout, one JSON object per line on stdout:
//   at start:  {"event":"ready","impl":"js","peer":ID,"addrs":[...],"agent":...}
//   aggregator events, STREAM numbering the inbound heartbeat streams 1, 2,
//   ... in the order they opened:
//     {"event":"beat","peer":ID,"stream":STREAM,"beat":OBJECT}  one per line
//     {"event":"beat:closed","peer":ID,"stream":STREAM}  the stream ended:
//         the beater closed it, or the connection went away (js-libp2p ends
//         the stream without an error then, even when the beater is killed)
//     {"event":"beat:error","peer":ID,"stream":STREAM,"error":MESSAGE}  a bad
//         line (then we reset the stream) or the beater reset it; no
//         beat:closed follows
//   beater events, TARGET being the aggregator's peer id:
//     {"event":"beat:connected","target":TARGET}  a heartbeat stream opened
//     {"event":"beat:sent","target":TARGET,"count":N,"beat":OBJECT}  the Nth
//         heartbeat (Height N) was handed to the stream
//     {"event":"beat:failed","target":TARGET,"error":MESSAGE}  the dial, the
//         stream or a write failed; the next try comes PERIOD_MS later
//   commands, one per stdin line, numbered 1, 2, ... in the order read; they
//   run concurrently and each prints exactly one result line
//   {"seq":N,"cmd":NAME,"ok":true,...} or {"seq":N,"cmd":NAME,"ok":false,
//   "error":MESSAGE,"name":ERROR_NAME}:
//     beat MULTIADDR PERIOD_MS [NICKNAME]
//                    beat to the aggregator at MULTIADDR (with /p2p/<id>),
//                    answering at once {"target":TARGET}: a heartbeat at once
//                    and then every PERIOD_MS, Height 1, 2, ... (counting on
//                    across new streams), Head "bafy-js-head-<Height>",
//                    Nickname NICKNAME or "js", MinerAddress "t01000",
//                    GenesisCID {"/":"bafy-genesis"}; after a failure it dials and
//                    opens a new stream again, until `stop`. One beater per
//                    target at a time.
//     stop           stop every beater, closing its stream (waits for that):
//                    {"stopped":[{"target":TARGET,"count":N}, ...]}
//     close PEER     close every connection to PEER: {"closed":[CONN_ID,...]}
// End of stdin stops the node and exits.

import { createLibp2p } from 'libp2p'
import { emit, serveCommands } from './lines.mjs'
import { tcp } from '@libp2p/tcp'
import { yamux } from '@libp2p/yamux'
import { noise } from '@chainsafe/libp2p-noise'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { generateKeyPairFromSeed } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'

const AGENT = 'sansp2p-conformance-js-heartbeat/1.0.0'
const HEARTBEAT = 'fil/heartbeat/1.0.0'
const MAX_LINE = 64 * 1024
// Every network operation gives up after this long, well before the Rust
// side's own deadline, so a stall is reported as an error line.
const OP_TIMEOUT_MS = 15_000

function usage (why) {
  process.stderr.write(`heartbeat.mjs: ${why}\nusage: heartbeat.mjs --seed N [--port P]\n`)
  process.exit(2)
}

// The value after `flag` as a non-negative integer, or undefined if absent.
function flagNumber (argv, flag) {
  const i = argv.indexOf(flag)
  if (i < 0) return undefined
  const n = Number(argv[i + 1])
  if (!Number.isSafeInteger(n) || n < 0) usage(`${flag} needs a non-negative integer`)
  return n
}

const argv = process.argv.slice(2)
const seedByte = flagNumber(argv, '--seed')
if (seedByte === undefined || seedByte > 255) usage('--seed N (0-255) is required')
const port = flagNumber(argv, '--port') ?? 0
if (port > 65535) usage('--port 0-65535')

process.on('unhandledRejection', (err) => {
  process.stderr.write(`unhandled rejection: ${err?.stack ?? err}\n`)
})

const node = await createLibp2p({
  privateKey: await generateKeyPairFromSeed('Ed25519', new Uint8Array(32).fill(seedByte)),
  nodeInfo: { userAgent: AGENT },
  addresses: { listen: [`/ip4/127.0.0.1/tcp/${port}`] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: { identify: identify(), ping: ping() }
})

const errorText = (err) => String(err?.message ?? err)

// ---------------------------------------------------------------------------
// The aggregator

// The types Go's json.Decoder would insist on for the fields of a heartbeat.
const FIELD_CHECKS = {
  Head: (v) => typeof v === 'string',
  Height: (v) => Number.isInteger(v) && v >= 0,
  Nickname: (v) => typeof v === 'string',
  MinerAddress: (v) => typeof v === 'string',
  // go-cid writes {"/":"<cid>"} (null when undefined)
  GenesisCID: (v) => v === null ||
    (typeof v === 'object' && !Array.isArray(v) && typeof v['/'] === 'string')
}

const utf8 = new TextDecoder('utf-8', { fatal: true })

// One line (without its "\n") as a heartbeat object, or undefined if blank.
function parseBeat (bytes) {
  const text = utf8.decode(bytes)
  if (text.trim() === '') return undefined
  const beat = JSON.parse(text)
  if (beat === null || typeof beat !== 'object' || Array.isArray(beat)) {
    throw new Error(`not a JSON object: ${text.slice(0, 80)}`)
  }
  for (const [key, ok] of Object.entries(FIELD_CHECKS)) {
    if (key in beat && !ok(beat[key])) throw new Error(`bad ${key}: ${JSON.stringify(beat[key])}`)
  }
  return beat
}

// Inbound heartbeat streams so far: the number of each in our events.
let inboundStreams = 0

// Reads an inbound heartbeat stream to its end, line by line. Chunks split
// lines anywhere (a multi-byte character too), so bytes are kept until their
// "\n" arrives and decoded a whole line at a time.
async function aggregate (stream, connection) {
  inboundStreams += 1
  const from = { peer: connection.remotePeer.toString(), stream: inboundStreams }
  const onLine = (bytes) => {
    if (bytes.length > MAX_LINE) throw new Error(`a line longer than ${MAX_LINE} bytes`)
    const beat = parseBeat(bytes)
    if (beat !== undefined) emit({ event: 'beat', ...from, beat })
  }
  let pending = Buffer.alloc(0)
  try {
    for await (const chunk of stream) {
      const bytes = chunk instanceof Uint8Array ? chunk : chunk.subarray()
      pending = pending.length === 0 ? Buffer.from(bytes) : Buffer.concat([pending, bytes])
      let nl
      while ((nl = pending.indexOf(0x0a)) >= 0) {
        onLine(pending.subarray(0, nl))
        pending = pending.subarray(nl + 1)
      }
      if (pending.length > MAX_LINE) throw new Error(`a line longer than ${MAX_LINE} bytes`)
    }
    onLine(pending)
  } catch (err) {
    emit({ event: 'beat:error', ...from, error: errorText(err) })
    stream.abort(err instanceof Error ? err : new Error(errorText(err)))
    return
  }
  emit({ event: 'beat:closed', ...from })
  // The beater closed its side; close ours so the stream is done.
  await stream.close({ signal: AbortSignal.timeout(OP_TIMEOUT_MS) }).catch(() => {})
}

await node.handle(HEARTBEAT, (stream, connection) => {
  aggregate(stream, connection).catch((err) => process.stderr.write(`aggregate: ${err?.stack ?? err}\n`))
})

// ---------------------------------------------------------------------------
// The beater

// A heartbeat line as Go's json.Encoder writes it (HTML-safe escapes; these
// characters only occur inside strings, so replacing them anywhere is safe).
function encodeBeat (beat) {
  return new TextEncoder().encode(JSON.stringify(beat).replace(/[<>&\u2028\u2029]/g,
    (c) => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0')) + '\n')
}

// The running beaters by target peer id: { stopped, stopping (an
// AbortController), wake, done, count }.
const beaters = new Map()

// Resolves after `ms`, or at once when the beater is stopped.
function pause (beater, ms) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms)
    beater.wake = () => { clearTimeout(timer); resolve() }
  })
}

// Bounds a network operation of the beater; `stop` cuts it short.
const beaterSignal = (beater) => AbortSignal.any([beater.stopping.signal, AbortSignal.timeout(OP_TIMEOUT_MS)])

async function beatLoop (beater, addr, target, period, nickname) {
  while (!beater.stopped) {
    let stream
    try {
      stream = await node.dialProtocol(addr, HEARTBEAT, { signal: beaterSignal(beater) })
      if (beater.stopped) break
      emit({ event: 'beat:connected', target })
      // A reset or a lost connection closes the stream: notice it while
      // waiting for the next beat rather than at the next write.
      const broken = new Promise((resolve) => stream.addEventListener('close', resolve, { once: true }))
      while (!beater.stopped) {
        const n = beater.count + 1
        const beat = {
          Head: `bafy-js-head-${n}`,
          Height: n,
          Nickname: nickname,
          MinerAddress: 't01000',
          GenesisCID: { '/': 'bafy-genesis' }
        }
        if (!stream.send(encodeBeat(beat))) await stream.onDrain({ signal: beaterSignal(beater) })
        beater.count = n
        emit({ event: 'beat:sent', target, count: n, beat })
        const closed = await Promise.race([pause(beater, period).then(() => null), broken])
        // js-libp2p closes the stream without an error when the connection
        // goes, so say what state it was left in.
        if (closed !== null) throw closed.error ?? new Error(`the stream closed under us (${stream.status})`)
      }
      await stream.close({ signal: AbortSignal.timeout(OP_TIMEOUT_MS) })
    } catch (err) {
      stream?.abort(err instanceof Error ? err : new Error(errorText(err)))
      if (beater.stopped) break
      emit({ event: 'beat:failed', target, error: errorText(err) })
      await pause(beater, period)
    }
  }
}

const commands = {
  async beat ([addr, periodMs, nickname]) {
    if (addr === undefined || periodMs === undefined) throw new Error('usage: beat MULTIADDR PERIOD_MS [NICKNAME]')
    const ma = multiaddr(addr)
    const target = ma.getComponents().filter((c) => c.name === 'p2p').pop()?.value
    if (target == null) throw new Error(`no /p2p/<aggregator> in ${addr}`)
    const period = Number(periodMs)
    if (!Number.isSafeInteger(period) || period <= 0) throw new Error(`PERIOD_MS: not a positive count: ${periodMs}`)
    if (beaters.has(target)) throw new Error(`already beating to ${target}`)
    const beater = { stopped: false, stopping: new AbortController(), wake: () => {}, count: 0 }
    beater.done = beatLoop(beater, ma, target, period, nickname ?? 'js')
      .catch((err) => process.stderr.write(`beater: ${err?.stack ?? err}\n`))
    beaters.set(target, beater)
    return { target }
  },
  async stop () {
    const stopped = []
    for (const [target, beater] of beaters) {
      beater.stopped = true
      beater.stopping.abort()
      beater.wake()
      await beater.done
      beaters.delete(target)
      stopped.push({ target, count: beater.count })
    }
    return { stopped }
  },
  async close ([peer]) {
    if (peer === undefined) throw new Error('usage: close PEER')
    const conns = node.getConnections().filter((c) => c.remotePeer.toString() === peer)
    if (conns.length === 0) throw new Error(`not connected to ${peer}`)
    await Promise.all(conns.map((c) => c.close({ signal: AbortSignal.timeout(OP_TIMEOUT_MS) })))
    return { closed: conns.map((c) => c.id) }
  }
}

emit({
  event: 'ready',
  impl: 'js',
  peer: node.peerId.toString(),
  addrs: node.getMultiaddrs().map((a) => a.toString()),
  agent: AGENT
})

serveCommands(node, commands)
