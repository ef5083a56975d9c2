// A js-libp2p node for the interop tests in ../tests/js_libp2p.rs.
//
// Usage: node peer.mjs --seed N [--security noise|plaintext]
//
// The identity is the Ed25519 key whose 32-byte seed is the byte N repeated.
// The node listens on a free loopback TCP port, speaks /noise (default) or
// /plaintext/2.0.0, and /yamux/1.0.0, and runs identify, ping and echo
// (/echo/1.0.0).
//
// Protocol on stdin/stdout, one JSON object per line on stdout:
//   at start:  {"event":"ready","peer":ID,"addrs":[...],"agent":...}
//   events:    {"event":"connection:open"|"connection:close", ...}
//              {"event":"identify", ...}
//   commands, one per stdin line, numbered 1, 2, ... in the order read; they
//   run concurrently and each prints exactly one result line
//   {"seq":N,"cmd":NAME,"ok":true,...} or {"seq":N,"cmd":NAME,"ok":false,
//   "error":MESSAGE,"name":ERROR_NAME}:
//     dial MULTIADDR           connect; reports the peer and what was negotiated
//     ping PEER                one ping; reports rtt (ms)
//     echo PEER LEN [SEED]     one /echo/1.0.0 stream with LEN pseudo-random bytes
//     echo-many PEER N LEN     N concurrent echo streams (seeds 1..N)
//     open-unknown PEER        try to open /unknown/1.0.0 on the existing connection
//     identify PEER            what identify told us about PEER (waits for it)
//     protocols PEER           PEER's protocols in the peer store now (identify push updates them)
//     connections PEER         the open connections to PEER
//     close PEER               close every connection to PEER
// End of stdin stops the node and exits.

import { createLibp2p } from 'libp2p'
import { emit, serveCommands } from './lines.mjs'
import { tcp } from '@libp2p/tcp'
import { yamux } from '@libp2p/yamux'
import { plaintext } from '@libp2p/plaintext'
import { noise } from '@chainsafe/libp2p-noise'
import { identify, identifyPush } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { echo } from '@libp2p/echo'
import { generateKeyPairFromSeed } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'

const AGENT = 'sansp2p-conformance-js/1.0.0'
const ECHO = '/echo/1.0.0'
const UNKNOWN = '/unknown/1.0.0'
// Every network operation gives up after this long, well before the Rust
// side's own deadline, so a stall is reported as an error line.
const OP_TIMEOUT_MS = 15_000
const CHUNK = 64 * 1024
const MAX_ECHO_STREAMS = 256

function parseSecurity (argv) {
  const i = argv.indexOf('--security')
  const name = i >= 0 ? argv[i + 1] : 'noise'
  if (name === 'noise') return noise()
  if (name === 'plaintext') return plaintext()
  process.stderr.write('usage: peer.mjs --seed N [--security noise|plaintext]\n')
  process.exit(2)
}

function parseSeed (argv) {
  const i = argv.indexOf('--seed')
  const n = i >= 0 ? Number(argv[i + 1]) : NaN
  if (!Number.isInteger(n) || n < 0 || n > 255) {
    process.stderr.write('usage: peer.mjs --seed N (0-255)\n')
    process.exit(2)
  }
  return new Uint8Array(32).fill(n)
}

// The test data generator and checksum; tests/js_libp2p.rs has the same two
// functions, so both sides can tell what the other sent and received.
// xorshift32 from a nonzero state, one byte (the low 8 bits) per step.
function pseudoRandomBytes (len, seed) {
  const out = new Uint8Array(len)
  let x = (Math.imul(seed >>> 0, 0x9e3779b9) ^ 0x12345678) >>> 0
  if (x === 0) x = 1
  for (let i = 0; i < len; i++) {
    x ^= x << 13
    x >>>= 0
    x ^= x >>> 17
    x ^= x << 5
    x >>>= 0
    out[i] = x & 0xff
  }
  return out
}

// FNV-1a, 32 bits, folded over any number of chunks.
const FNV_OFFSET = 0x811c9dc5
function fnv1a (hash, bytes) {
  let h = hash
  for (let i = 0; i < bytes.length; i++) {
    h ^= bytes[i]
    h = Math.imul(h, 0x01000193) >>> 0
  }
  return h
}

function bytesOf (chunk) {
  return chunk instanceof Uint8Array ? chunk : chunk.subarray()
}

function describeConnection (conn) {
  return {
    id: conn.id,
    peer: conn.remotePeer.toString(),
    direction: conn.direction,
    encryption: conn.encryption ?? null,
    multiplexer: conn.multiplexer ?? null,
    remoteAddr: conn.remoteAddr.toString(),
    status: conn.status,
    streams: conn.streams.length
  }
}

// Report, rather than die of, anything that escapes a command's own handling.
process.on('unhandledRejection', (err) => {
  process.stderr.write(`unhandled rejection: ${err?.stack ?? err}\n`)
})

const privateKey = await generateKeyPairFromSeed('Ed25519', parseSeed(process.argv))

const node = await createLibp2p({
  privateKey,
  nodeInfo: { userAgent: AGENT },
  addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
  transports: [tcp()],
  connectionEncrypters: [parseSecurity(process.argv)],
  streamMuxers: [yamux()],
  services: {
    identify: identify(),
    identifyPush: identifyPush(),
    ping: ping(),
    echo: echo({
      maxInboundStreams: MAX_ECHO_STREAMS,
      maxOutboundStreams: MAX_ECHO_STREAMS,
      timeout: OP_TIMEOUT_MS
    })
  }
})

// What identify told us, per peer id string, and who waits for it.
const identified = new Map()
const identifyWaiters = new Map()

node.addEventListener('connection:open', (evt) => {
  emit({ event: 'connection:open', ...describeConnection(evt.detail) })
})
node.addEventListener('connection:close', (evt) => {
  emit({ event: 'connection:close', ...describeConnection(evt.detail) })
})
node.addEventListener('peer:identify', (evt) => {
  const r = evt.detail
  const info = {
    peer: r.peerId.toString(),
    agent: r.agentVersion ?? null,
    protocolVersion: r.protocolVersion ?? null,
    protocols: r.protocols,
    listenAddrs: r.listenAddrs.map((a) => a.toString()),
    observedAddr: r.observedAddr?.toString() ?? null,
    connection: r.connection?.id ?? null
  }
  identified.set(info.peer, info)
  emit({ event: 'identify', ...info })
  for (const wake of identifyWaiters.get(info.peer) ?? []) wake(info)
  identifyWaiters.delete(info.peer)
})

await node.start()

function timeoutSignal () {
  return AbortSignal.timeout(OP_TIMEOUT_MS)
}

// The open connection to a peer given by its id string (the newest one).
function connectionTo (peer) {
  const conns = node.getConnections().filter((c) => c.remotePeer.toString() === peer && c.status === 'open')
  if (conns.length === 0) {
    const err = new Error(`not connected to ${peer}`)
    err.name = 'NotConnectedError'
    throw err
  }
  return conns[conns.length - 1]
}

// One echo stream on `conn`: sends `len` bytes from `seed` (honouring back
// pressure) while reading the echo, half-closes, reads to the end.
async function echoOnce (conn, len, seed) {
  const signal = timeoutSignal()
  const data = pseudoRandomBytes(len, seed)
  const stream = await conn.newStream(ECHO, { signal, maxOutboundStreams: MAX_ECHO_STREAMS })
  const reading = (async () => {
    let received = 0
    let hash = FNV_OFFSET
    for await (const chunk of stream) {
      const bytes = bytesOf(chunk)
      received += bytes.length
      hash = fnv1a(hash, bytes)
    }
    return { received, hash }
  })()
  // Awaited below; this only keeps an early failure (a reset while we are
  // still sending) from counting as an unhandled rejection meanwhile.
  reading.catch(() => {})
  for (let off = 0; off < len; off += CHUNK) {
    if (!stream.send(data.subarray(off, off + CHUNK))) {
      await stream.onDrain({ signal })
    }
  }
  await stream.close({ signal })
  const { received, hash } = await Promise.race([
    reading,
    new Promise((resolve, reject) => {
      signal.addEventListener('abort', () => reject(signal.reason))
    })
  ])
  return { seed, len, sent: fnv1a(FNV_OFFSET, data), received, checksum: hash }
}

function needArgs (args, n, usage) {
  if (args.length < n) throw new Error(`usage: ${usage}`)
}

function intArg (s, what) {
  const n = Number(s)
  if (!Number.isInteger(n) || n < 0) throw new Error(`${what}: not a count: ${s}`)
  return n
}

const commands = {
  async dial ([addr]) {
    needArgs([addr].filter(Boolean), 1, 'dial MULTIADDR')
    const conn = await node.dial(multiaddr(addr), { signal: timeoutSignal() })
    return { connection: describeConnection(conn) }
  },
  async ping ([peer]) {
    needArgs([peer].filter(Boolean), 1, 'ping PEER')
    const conn = connectionTo(peer)
    const rtt = await node.services.ping.ping(conn.remotePeer, { signal: timeoutSignal() })
    return { rtt, connection: conn.id }
  },
  async echo ([peer, len, seed]) {
    needArgs([peer, len].filter(Boolean), 2, 'echo PEER LEN [SEED]')
    const conn = connectionTo(peer)
    const result = await echoOnce(conn, intArg(len, 'LEN'), seed === undefined ? 1 : intArg(seed, 'SEED'))
    return { ...result, connection: conn.id }
  },
  async 'echo-many' ([peer, n, len]) {
    needArgs([peer, n, len].filter(Boolean), 3, 'echo-many PEER N LEN')
    const conn = connectionTo(peer)
    const count = intArg(n, 'N')
    const size = intArg(len, 'LEN')
    const runs = []
    for (let i = 1; i <= count; i++) runs.push(echoOnce(conn, size, i))
    const streams = await Promise.all(runs)
    return { streams, connection: conn.id }
  },
  async 'open-unknown' ([peer]) {
    needArgs([peer].filter(Boolean), 1, 'open-unknown PEER')
    const conn = connectionTo(peer)
    try {
      const stream = await conn.newStream(UNKNOWN, { signal: timeoutSignal() })
      stream.abort(new Error('not expected to open'))
      return { opened: true, protocol: stream.protocol, connection: describeConnection(conn) }
    } catch (err) {
      return {
        opened: false,
        errorName: err.name,
        error: err.message,
        connection: describeConnection(conn)
      }
    }
  },
  async identify ([peer]) {
    needArgs([peer].filter(Boolean), 1, 'identify PEER')
    const known = identified.get(peer)
    if (known !== undefined) return { info: known }
    const info = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no identify from ${peer} within ${OP_TIMEOUT_MS} ms`)), OP_TIMEOUT_MS)
      const waiters = identifyWaiters.get(peer) ?? []
      waiters.push((i) => { clearTimeout(timer); resolve(i) })
      identifyWaiters.set(peer, waiters)
    })
    return { info }
  },
  async protocols ([peer]) {
    needArgs([peer].filter(Boolean), 1, 'protocols PEER')
    // What the peer store holds now: identify, then every identify push.
    const conn = node.getConnections().find((c) => c.remotePeer.toString() === peer)
    if (conn === undefined) throw new Error(`not connected to ${peer}`)
    const stored = await node.peerStore.get(conn.remotePeer)
    return { protocols: stored.protocols }
  },
  async connections ([peer]) {
    needArgs([peer].filter(Boolean), 1, 'connections PEER')
    const conns = node.getConnections().filter((c) => c.remotePeer.toString() === peer)
    return { connections: conns.map(describeConnection) }
  },
  async close ([peer]) {
    needArgs([peer].filter(Boolean), 1, 'close PEER')
    const conns = node.getConnections().filter((c) => c.remotePeer.toString() === peer)
    if (conns.length === 0) throw new Error(`not connected to ${peer}`)
    await Promise.all(conns.map((c) => c.close({ signal: timeoutSignal() })))
    return { closed: conns.map((c) => c.id) }
  }
}

emit({
  event: 'ready',
  peer: node.peerId.toString(),
  addrs: node.getMultiaddrs().map((a) => a.toString()),
  agent: AGENT
})

serveCommands(node, commands)
