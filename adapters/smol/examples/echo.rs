//! The echo demo.
//!
//! ```text
//! echo                 listener and dialer in one process, over loopback TCP
//! echo -l PORT         listen on /ip4/127.0.0.1/tcp/PORT and echo /echo/1.0.0 streams
//! echo -d MULTIADDR    dial, send "Hello, world!\n" on /echo/1.0.0, print the reply;
//!                      a circuit address (.../p2p/<relay>/p2p-circuit/p2p/<peer>)
//!                      is dialed through the relay
//! options: --seed N (0-255: identity from 32 bytes of N),
//!          --insecure (/plaintext/2.0.0 instead of /noise; both sides must agree),
//!          with -l: --relay MULTIADDR (repeatable: a static relay kept by
//!          AutoRelay: reserved, refreshed, reserved again after a restart;
//!          prints `I am <circuit addr>` when an address appears,
//!          `refreshed reservation on <id>, expires in N s`, `lost relay <id>: <why>`),
//!          --serve-relay (be a circuit relay v2 for others), --relay-ttl SECS
//!          (its reservation lifetime; default 3600)
//! ```
//!
//! Through a relay on one machine:
//!
//! ```text
//! echo -l 4001 --serve-relay --seed 1              # prints I am /ip4/127.0.0.1/tcp/4001/p2p/R
//! echo -l 4002 --seed 2 --relay /ip4/127.0.0.1/tcp/4001/p2p/R
//!                                                  # prints I am .../p2p/R/p2p-circuit/p2p/B
//! echo -d /ip4/127.0.0.1/tcp/4001/p2p/R/p2p-circuit/p2p/B
//! ```

use std::process::ExitCode;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use sansp2p::node::Security;
use sansp2p::protocols::identify;
use sansp2p::relay::finder::FinderConfig;
use sansp2p_smol::{new_host, random_keypair, Config, Host, Multiaddr};

const ECHO: &str = "/echo/1.0.0";
const MESSAGE: &[u8] = b"Hello, world!\n";

#[derive(Debug, Default)]
struct Args {
    listen: Option<u16>,
    dial: Option<Multiaddr>,
    seed: Option<u8>,
    insecure: bool,
    relays: Vec<Multiaddr>,
    serve_relay: bool,
    relay_ttl: Option<u64>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "-l" | "--listen" => {
                let v = value("-l")?;
                args.listen = Some(v.parse().map_err(|_| format!("-l: not a port: {v:?}"))?);
            }
            "-d" | "--dial" => {
                let v = value("-d")?;
                args.dial = Some(
                    v.parse()
                        .map_err(|e| format!("-d: not a multiaddr: {v:?} ({e})"))?,
                );
            }
            "--seed" => {
                let v = value("--seed")?;
                args.seed = Some(
                    v.parse()
                        .map_err(|_| format!("--seed: not a number from 0 to 255: {v:?}"))?,
                );
            }
            "--insecure" => args.insecure = true,
            "--relay" => {
                let v = value("--relay")?;
                let addr: Multiaddr = v
                    .parse()
                    .map_err(|e| format!("--relay: not a multiaddr: {v:?} ({e})"))?;
                if !addr.iter().any(|p| matches!(p, multiaddr::Protocol::P2p(_))) {
                    return Err(format!("--relay: {addr} needs /p2p/<relay id>"));
                }
                args.relays.push(addr);
            }
            "--serve-relay" => args.serve_relay = true,
            "--relay-ttl" => {
                let v = value("--relay-ttl")?;
                let secs = v.parse().ok().filter(|s| *s > 0);
                args.relay_ttl = Some(secs.ok_or(format!("--relay-ttl: not a number of seconds above 0: {v:?}"))?);
            }
            "-h" | "--help" => {
                return Err("usage: echo [-l PORT [--relay MULTIADDR]... [--serve-relay [--relay-ttl SECS]] | -d MULTIADDR] [--seed N] [--insecure]".into())
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if args.listen.is_some() && args.dial.is_some() {
        return Err("-l and -d exclude each other".into());
    }
    if args.listen.is_none() && (!args.relays.is_empty() || args.serve_relay) {
        return Err("--relay and --serve-relay go with -l".into());
    }
    if args.relay_ttl.is_some() && !args.serve_relay {
        return Err("--relay-ttl goes with --serve-relay".into());
    }
    Ok(args)
}

/// An error and its causes, on one line.
fn report(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        line = format!("{line}: {c}");
        cause = c.source();
    }
    line
}

fn host(seed: Option<u8>, insecure: bool) -> Result<Host, String> {
    let key = match seed {
        Some(n) => sansp2p::Keypair::from_secret_bytes([n; 32]),
        None => random_keypair(),
    };
    let mut config = Config::new(key);
    if insecure {
        config.security = vec![Security::Plaintext];
    }
    let host = new_host(config).map_err(|e| report(&e))?;
    // Echo also runs on relayed connections, within the relay's limits.
    host.allow_on_limited(ECHO);
    Ok(host)
}

fn show_identify(who: &str, info: &identify::Info) {
    let addrs: Vec<String> = info
        .listen_addrs
        .iter()
        .map(|a| {
            Multiaddr::try_from(a.clone())
                .map(|m| m.to_string())
                .unwrap_or_else(|_| "?".into())
        })
        .collect();
    println!(
        "{who} learned by identify: agent {:?}, protocol version {:?}",
        info.agent_version, info.protocol_version
    );
    println!("    protocols: {}", info.protocols.join(" "));
    println!("    listen addrs: {}", addrs.join(" "));
    if let Some(obs) = info
        .observed_addr
        .clone()
        .and_then(|a| Multiaddr::try_from(a).ok())
    {
        println!("    observed us at: {obs}");
    }
}

async fn serve_echo(host: Host) -> Result<(), String> {
    let incoming = host.accept(ECHO).map_err(|e| report(&e))?;
    while let Some((_peer, mut stream)) = incoming.next().await {
        smol::spawn(async move {
            let mut buf = Vec::new();
            if stream.read_to_end(&mut buf).await.is_ok() {
                let _ = stream.write_all(&buf).await;
            }
            let _ = stream.close().await;
        })
        .detach();
    }
    Ok(())
}

async fn echo_once(host: &Host, peer: sansp2p::PeerId) -> Result<Vec<u8>, String> {
    let mut stream = host.open_stream(peer, ECHO).await.map_err(|e| report(&e))?;
    stream.write_all(MESSAGE).await.map_err(|e| report(&e))?;
    stream.close().await.map_err(|e| report(&e))?;
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .await
        .map_err(|e| report(&e))?;
    Ok(reply)
}

async fn listen(args: &Args, port: u16) -> Result<(), String> {
    let host = host(args.seed, args.insecure)?;
    let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().expect("valid");
    if args.serve_relay {
        let mut relay = sansp2p::relay::ServerConfig::default();
        if let Some(secs) = args.relay_ttl {
            relay.reservation_ttl = Duration::from_secs(secs);
        }
        host.serve_relay(relay);
    }
    let bound = host.listen(&addr).await.map_err(|e| report(&e))?;
    println!("I am {bound}/p2p/{}", host.local_peer_id());
    if !args.relays.is_empty() {
        let relays = args
            .relays
            .iter()
            .map(|a| {
                let id = sansp2p::addr::classify(&a.to_vec())
                    .ok()
                    .and_then(|i| i.peer)
                    .ok_or_else(|| format!("--relay: {a} needs /p2p/<relay id>"))?;
                Ok((id, vec![a.to_vec()]))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let mut config = FinderConfig::with_static_relays(relays);
        // The demo's relays are on loopback; go keeps only public ones.
        config.public_addrs_only = false;
        let events = host.events();
        host.enable_autorelay(config).map_err(|e| report(&e))?;
        smol::spawn(report_autorelay(host.clone(), events)).detach();
    }
    serve_echo(host).await
}

/// Prints what AutoRelay does: new circuit addresses, refreshes, losses.
async fn report_autorelay(host: Host, events: sansp2p_smol::Events) {
    use sansp2p::node::Event;
    use sansp2p::relay::finder::Event as Relay;
    let us = host.local_peer_id();
    let mut shown: Vec<Vec<u8>> = Vec::new();
    while let Ok(event) = events.recv().await {
        let Event::AutoRelay(event) = event else {
            continue;
        };
        match event {
            Relay::AddrsChanged { addrs } => {
                for addr in addrs.iter().filter(|a| !shown.contains(a)) {
                    let addr = Multiaddr::try_from(addr.clone()).expect("a valid address");
                    println!("I am {addr}/p2p/{us}");
                }
                shown = addrs;
            }
            Relay::Refreshed { relay, expire } => println!(
                "refreshed reservation on {relay}, expires in {} s",
                host.time_until(expire).as_secs()
            ),
            Relay::RelayRemoved { relay, reason } => println!("lost relay {relay}: {reason:?}"),
            _ => {}
        }
    }
}

async fn dial(args: &Args, addr: &Multiaddr) -> Result<(), String> {
    let host = host(args.seed, args.insecure)?;
    let peer = host.dial(addr).await.map_err(|e| report(&e))?;
    let reply = echo_once(&host, peer).await?;
    println!("read reply: {:?}", String::from_utf8_lossy(&reply));
    Ok(())
}

async fn both(args: &Args) -> Result<(), String> {
    let listener = host(args.seed, args.insecure)?;
    let dialer = host(args.seed.map(|n| n.wrapping_add(1)), args.insecure)?;
    let bound = listener
        .listen(&"/ip4/127.0.0.1/tcp/0".parse().expect("valid"))
        .await
        .map_err(|e| report(&e))?;
    println!("listener: {} at {bound}", listener.local_peer_id());
    println!("dialer:   {}", dialer.local_peer_id());
    smol::spawn(serve_echo(listener.clone())).detach();

    let target: Multiaddr = format!("{bound}/p2p/{}", listener.local_peer_id())
        .parse()
        .expect("valid");
    let peer = dialer.dial(&target).await.map_err(|e| report(&e))?;
    for conn in dialer.connections(&peer) {
        println!(
            "connected: security {}, muxer {}",
            conn.security.protocol(),
            conn.muxer
        );
    }
    let timeout = Duration::from_secs(5);
    let info = dialer
        .wait_identified(&peer, timeout)
        .await
        .ok_or("the listener did not identify")?;
    show_identify("dialer", &info);
    let info = listener
        .wait_identified(&dialer.local_peer_id(), timeout)
        .await
        .ok_or("the dialer did not identify")?;
    show_identify("listener", &info);
    let rtt = dialer.ping(peer).await.map_err(|e| report(&e))?;
    println!("ping: {rtt:?}");
    let reply = echo_once(&dialer, peer).await?;
    println!("read reply: {:?}", String::from_utf8_lossy(&reply));
    if reply != MESSAGE {
        return Err("the echo differs from what was sent".into());
    }
    Ok(())
}

fn main() -> ExitCode {
    let result = parse_args().and_then(|args| {
        smol::block_on(async {
            match (&args.listen, &args.dial) {
                (Some(port), _) => listen(&args, *port).await,
                (_, Some(addr)) => dial(&args, addr).await,
                _ => both(&args).await,
            }
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
