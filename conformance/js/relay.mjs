// A js-libp2p circuit-relay-v2 peer for ../tests/relay_peers.rs: a relay
// client always, a relay server too with --relay-server. The Rust binary
// `rust_relay_peer` (../src/rust_relay_peer.rs) speaks the same protocol, so
// one test helper drives either.
//
// Usage: node relay.mjs --seed N [--port P] [--relay-server
//          [--reservation-ttl-ms MS] [--max-data BYTES] [--max-duration-ms MS]]
//
// The identity is the Ed25519 key whose 32-byte seed is the byte N repeated.
// The node listens on loopback TCP port P (a free one if unset: a test
// restarting a relay gives it its old port back), speaks /noise and
// /yamux/1.0.0, runs identify, ping and echo (/echo/1.0.0, also on limited
// connections) and the circuit relay transport (it can dial and listen on
// /p2p-circuit addresses). With --relay-server it also runs the relay server:
// --reservation-ttl-ms sets the reservation lifetime, --max-data and
// --max-duration-ms the limit of each relayed connection (js-libp2p names
// them defaultDataLimit and defaultDurationLimit; unset, 128 KiB and 2 min).
//
// Protocol on stdin/stdout, one JSON object per line on stdout:
//   at start:  {"event":"ready","impl":"js","peer":ID,"addrs":[...],
//               "agent":...,"relayServer":BOOL}
//   events:    {"event":"connection:open"|"connection:close", ...CONNECTION}
//              {"event":"reservation", ...RESERVATION}  (we hold a new or
//                                                     refreshed reservation)
//              {"event":"reservation:removed","relay":ID}
//              {"event":"reservation:granted","peer":ID,"expire":S,"addrs":[...],
//               "limit":LIMIT,"voucher":HEX,"voucherValid":BOOL}  (relay side)
//   commands, one per stdin line, numbered 1, 2, ... in the order read; they
//   run concurrently and each prints exactly one result line
//   {"seq":N,"cmd":NAME,"ok":true,...} or {"seq":N,"cmd":NAME,"ok":false,
//   "error":MESSAGE,"name":ERROR_NAME,...}:
//     reserve RELAY_ADDR      listen on RELAY_ADDR/p2p-circuit (RELAY_ADDR
//                             ends in /p2p/<relay>); answers once the
//                             reservation is made: {...RESERVATION}
//     dial MULTIADDR          connect (also to /p2p-circuit addresses):
//                             {"connection":CONNECTION}
//     echo PEER LEN [SEED]    one /echo/1.0.0 stream on the newest open
//                             connection to PEER with LEN pseudo-random bytes:
//                             {"seed","len","sent","received","checksum",
//                              "connection":CONNECTION}; a stream that ends
//                             early or breaks is an error line that also
//                             carries "received" and "connection"
//     connections PEER        {"connections":[CONNECTION, ...]}, the open ones
//     close PEER              close every connection to PEER
//   CONNECTION = {"id","peer","direction":"inbound"|"outbound","remoteAddr",
//                 "limited":BOOL,"limits":{"bytes","seconds"}|null,
//                 "encryption","multiplexer","status"}
//   RESERVATION = {"relay":ID,"addrs":[circuit addrs],"expire":UNIX_S,
//                  "limit":null,"voucher":HEX|null,"voucherValid":BOOL|null}
//                 (js-libp2p drops the limit of a RESERVE answer: it only
//                 shows later as "limits" of each relayed connection)
//   LIMIT = {"duration":N|null,"data":N|null}: what the relay puts in its
//           Limit message (the spec says seconds and bytes; js-libp2p's
//           relay writes its duration in milliseconds), null if none
//   "sent" and "checksum" are FNV-1a (32 bits) of the bytes sent and of the
//   bytes echoed; the generator is xorshift32 (see pseudoRandomBytes).
// End of stdin stops the node and exits.
//
//   In CONNECTION, "limits" is js-libp2p's budget of a relayed connection:
//   "bytes" left of Limit.data (reads and writes both count against it),
//   "seconds" left of Limit.duration (read as seconds).
//
// Vouchers: js-libp2p decodes the voucher envelope of a reservation into its
// fields and keeps no raw bytes, on either side. This script encodes those
// fields again the way js-libp2p's protobuf code writes them on the wire
// (fields in ascending order, each once) and checks the signature of the
// result with RecordEnvelope.openAndCertify: "voucherValid" true means the
// payload is byte for byte the one the relay signed. On the relay side the
// voucher is taken from CircuitRelayServer.makeReservation, the method that
// builds it, which this script wraps (there is no event, option or hook for
// it).

import { createLibp2p } from 'libp2p'
import { emit, serveCommands } from './lines.mjs'
import { tcp } from '@libp2p/tcp'
import { yamux } from '@libp2p/yamux'
import { noise } from '@chainsafe/libp2p-noise'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { echo } from '@libp2p/echo'
import { circuitRelayServer, circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { RecordEnvelope } from '@libp2p/peer-record'
import { generateKeyPairFromSeed } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'

const AGENT = 'sansp2p-conformance-js-relay/1.0.0'
const ECHO = '/echo/1.0.0'
const VOUCHER_DOMAIN = 'libp2p-relay-rsvp'
// Every network operation gives up after this long, well before the Rust
// side's own deadline, so a stall is reported as an error line.
const OP_TIMEOUT_MS = 15_000
const CHUNK = 64 * 1024

function usage (why) {
  process.stderr.write(`relay.mjs: ${why}\nusage: relay.mjs --seed N [--port P] [--relay-server ` +
    '[--reservation-ttl-ms MS] [--max-data BYTES] [--max-duration-ms MS]]\n')
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
const relayServer = argv.includes('--relay-server')
const reservationTtl = flagNumber(argv, '--reservation-ttl-ms')
const maxData = flagNumber(argv, '--max-data')
const maxDurationMs = flagNumber(argv, '--max-duration-ms')
if (!relayServer && [reservationTtl, maxData, maxDurationMs].some((v) => v !== undefined)) {
  usage('the limits are options of --relay-server')
}

// The test data generator and checksum, the same as in peer.mjs and in
// sansp2p_conformance::peer_process: xorshift32 from a nonzero state derived
// from the seed, one byte (the low 8 bits) per step; FNV-1a, 32 bits.
function pseudoRandomBytes (len, seed) {
  const out = new Uint8Array(len)
  let state = (Math.imul(seed >>> 0, 0x9e3779b9) ^ 0x12345678) >>> 0
  if (state === 0) state = 1
  for (let i = 0; i < len; i++) {
    state = (state ^ (state << 13)) >>> 0
    state = (state ^ (state >>> 17)) >>> 0
    state = (state ^ (state << 5)) >>> 0
    out[i] = state & 0xff
  }
  return out
}

const FNV_START = 0x811c9dc5
function fnvFold (hash, bytes) {
  let h = hash
  for (const b of bytes) h = Math.imul(h ^ b, 0x01000193) >>> 0
  return h
}

const toHex = (bytes) => Buffer.from(bytes).toString('hex')
const toNumber = (v) => (v === undefined || v === null ? null : Number(v))

// Minimal protobuf writer for the voucher envelope: fields in ascending
// order, as every libp2p implementation writes them.
function varint (n) {
  let v = BigInt(n)
  const out = []
  do {
    let byte = Number(v & 0x7fn)
    v >>= 7n
    if (v > 0n) byte |= 0x80
    out.push(byte)
  } while (v > 0n)
  return out
}
function bytesField (field, bytes) {
  return [...varint((field << 3) | 2), ...varint(bytes.length), ...bytes]
}
function varintField (field, n) {
  return [...varint(field << 3), ...varint(n)]
}

// The voucher of a HopMessage reservation (decoded by js-libp2p into
// {publicKey, payloadType, payload: {relay, peer, expiration}, signature})
// as the Envelope bytes that were signed, and whether the signature holds.
async function encodeVoucher (voucher) {
  if (voucher == null) return { voucher: null, voucherValid: null }
  const payload = Uint8Array.from([
    ...bytesField(1, voucher.payload.relay),
    ...bytesField(2, voucher.payload.peer),
    ...varintField(3, voucher.payload.expiration)
  ])
  const envelope = Uint8Array.from([
    ...bytesField(1, voucher.publicKey),
    ...bytesField(2, voucher.payloadType),
    ...bytesField(3, payload),
    ...bytesField(5, voucher.signature)
  ])
  let voucherValid = true
  try {
    await RecordEnvelope.openAndCertify(envelope, VOUCHER_DOMAIN)
  } catch {
    voucherValid = false
  }
  return { voucher: toHex(envelope), voucherValid }
}

function describeLimit (limit) {
  if (limit == null) return null
  return { duration: toNumber(limit.duration), data: toNumber(limit.data) }
}

function describeConnection (conn) {
  const limits = conn.limits
  return {
    id: conn.id,
    peer: conn.remotePeer.toString(),
    direction: conn.direction,
    remoteAddr: conn.remoteAddr.toString(),
    limited: limits != null,
    limits: limits == null ? null : { bytes: toNumber(limits.bytes), seconds: toNumber(limits.seconds) },
    encryption: conn.encryption ?? null,
    multiplexer: conn.multiplexer ?? null,
    status: conn.status
  }
}

async function describeReservation (relay, reservation) {
  return {
    relay: relay.toString(),
    addrs: reservation.addrs.map((a) => multiaddr(a).encapsulate('/p2p-circuit').toString()),
    expire: toNumber(reservation.expire),
    limit: null,
    ...(await encodeVoucher(reservation.voucher))
  }
}

// Report, rather than die of, anything that escapes a command's own handling.
process.on('unhandledRejection', (err) => {
  process.stderr.write(`unhandled rejection: ${err?.stack ?? err}\n`)
})

const services = {
  identify: identify(),
  ping: ping(),
  echo: echo({ runOnLimitedConnection: true, timeout: OP_TIMEOUT_MS })
}
if (relayServer) {
  const reservations = {}
  if (reservationTtl !== undefined) reservations.reservationTtl = reservationTtl
  if (maxData !== undefined) reservations.defaultDataLimit = BigInt(maxData)
  if (maxDurationMs !== undefined) reservations.defaultDurationLimit = maxDurationMs
  services.relay = circuitRelayServer({ reservations })
}

const node = await createLibp2p({
  privateKey: await generateKeyPairFromSeed('Ed25519', new Uint8Array(32).fill(seedByte)),
  nodeInfo: { userAgent: AGENT },
  addresses: { listen: [`/ip4/127.0.0.1/tcp/${port}`] },
  transports: [tcp(), circuitRelayTransport()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services
})

node.addEventListener('connection:open', (evt) => {
  emit({ event: 'connection:open', ...describeConnection(evt.detail) })
})
node.addEventListener('connection:close', (evt) => {
  emit({ event: 'connection:close', ...describeConnection(evt.detail) })
})

// The relay server builds the reservation it grants, voucher included, in
// makeReservation(peer, expire); wrap it to see what it signed.
if (relayServer) {
  const server = node.services.relay
  const makeReservation = server.makeReservation.bind(server)
  server.makeReservation = async (peer, expire) => {
    const reservation = await makeReservation(peer, expire)
    encodeVoucher(reservation.voucher).then((voucher) => {
      emit({
        event: 'reservation:granted',
        peer: peer.toString(),
        expire: toNumber(reservation.expire),
        addrs: reservation.addrs.map((a) => multiaddr(a).toString()),
        limit: describeLimit(server.reservationStore.get(peer)?.limit),
        ...voucher
      })
    }, (err) => process.stderr.write(`voucher: ${err?.stack ?? err}\n`))
    return reservation
  }
}

await node.start()

// The circuit relay transport's reservation store reports every reservation
// we make or refresh (there is no public API for it).
const relayTransport = node.components.transportManager.getTransports()
  .find((t) => t[Symbol.toStringTag] === '@libp2p/circuit-relay-v2-transport')
if (relayTransport === undefined) throw new Error('no circuit relay transport')
const reservationStore = relayTransport.reservationStore
reservationStore.addEventListener('relay:created-reservation', (evt) => {
  const { relay, details } = evt.detail
  describeReservation(relay, details.reservation).then((r) => {
    emit({ event: 'reservation', ...r })
  }, (err) => process.stderr.write(`reservation event: ${err?.stack ?? err}\n`))
})
reservationStore.addEventListener('relay:removed', (evt) => {
  emit({ event: 'reservation:removed', relay: evt.detail.relay.toString() })
})

function timeoutSignal () {
  return AbortSignal.timeout(OP_TIMEOUT_MS)
}

function failure (name, message, details) {
  const err = new Error(message)
  err.name = name
  err.details = details
  return err
}

// The newest open connection to a peer given by its id string.
function connectionTo (peer) {
  const conns = node.getConnections().filter((c) => c.remotePeer.toString() === peer && c.status === 'open')
  if (conns.length === 0) throw failure('NotConnectedError', `not connected to ${peer}`)
  return conns[conns.length - 1]
}

// One echo stream on `conn`: sends `len` bytes from `seed` (honouring back
// pressure) while reading the echo, half-closes, reads to the end.
async function echoOnce (conn, len, seed) {
  const signal = timeoutSignal()
  const data = pseudoRandomBytes(len, seed)
  const sent = fnvFold(FNV_START, data)
  const progress = { received: 0, checksum: FNV_START }
  const details = () => ({ seed, len, sent, ...progress, connection: describeConnection(conn) })
  try {
    const stream = await conn.newStream(ECHO, { signal, runOnLimitedConnection: true })
    const reading = (async () => {
      for await (const chunk of stream) {
        const bytes = chunk instanceof Uint8Array ? chunk : chunk.subarray()
        progress.received += bytes.length
        progress.checksum = fnvFold(progress.checksum, bytes)
      }
    })()
    // Awaited below; this only keeps an early failure (a reset while we are
    // still sending) from counting as an unhandled rejection meanwhile.
    reading.catch(() => {})
    for (let off = 0; off < len; off += CHUNK) {
      if (!stream.send(data.subarray(off, off + CHUNK))) await stream.onDrain({ signal })
    }
    await stream.close({ signal })
    await Promise.race([
      reading,
      new Promise((resolve, reject) => {
        signal.addEventListener('abort', () => reject(signal.reason))
      })
    ])
  } catch (err) {
    throw failure(err?.name ?? 'Error', String(err?.message ?? err), details())
  }
  if (progress.received !== len) {
    throw failure('ShortEchoError', `the echo ended after ${progress.received} of ${len} bytes`, details())
  }
  return details()
}

function intArg (s, what) {
  const n = Number(s)
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${what}: not a count: ${s}`)
  return n
}

function needArgs (args, n, usageLine) {
  if (args.filter((a) => a !== undefined).length < n) throw new Error(`usage: ${usageLine}`)
}

const commands = {
  async reserve ([addr]) {
    needArgs([addr], 1, 'reserve RELAY_MULTIADDR')
    const relayAddr = multiaddr(addr)
    const relay = relayAddr.getComponents().filter((c) => c.name === 'p2p').pop()?.value
    if (relay == null) throw new Error(`no /p2p/<relay> in ${addr}`)
    await node.components.transportManager.listen([relayAddr.encapsulate('/p2p-circuit')])
    // The direct connection the reservation was made on.
    const conn = node.getConnections().find((c) => c.remotePeer.toString() === relay && c.limits == null)
    const held = conn === undefined ? undefined : reservationStore.getReservation(conn.remotePeer)
    if (held == null) throw new Error(`listening on ${addr}/p2p-circuit made no reservation`)
    return describeReservation(conn.remotePeer, held)
  },
  async dial ([addr]) {
    needArgs([addr], 1, 'dial MULTIADDR')
    const conn = await node.dial(multiaddr(addr), { signal: timeoutSignal() })
    return { connection: describeConnection(conn) }
  },
  async echo ([peer, len, seed]) {
    needArgs([peer, len], 2, 'echo PEER LEN [SEED]')
    return echoOnce(connectionTo(peer), intArg(len, 'LEN'), seed === undefined ? 1 : intArg(seed, 'SEED'))
  },
  async connections ([peer]) {
    needArgs([peer], 1, 'connections PEER')
    const conns = node.getConnections().filter((c) => c.remotePeer.toString() === peer)
    return { connections: conns.map(describeConnection) }
  },
  async close ([peer]) {
    needArgs([peer], 1, 'close PEER')
    const conns = node.getConnections().filter((c) => c.remotePeer.toString() === peer)
    if (conns.length === 0) throw failure('NotConnectedError', `not connected to ${peer}`)
    await Promise.all(conns.map((c) => c.close({ signal: timeoutSignal() })))
    return { closed: conns.map((c) => c.id) }
  }
}

emit({
  event: 'ready',
  impl: 'js',
  peer: node.peerId.toString(),
  addrs: node.getMultiaddrs().map((a) => a.toString()),
  agent: AGENT,
  relayServer
})

serveCommands(node, commands)
