//! The network model, host by host: latency, bandwidth and backpressure,
//! NAT, partitions, loss, crashes, and hostile hosts.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use sansp2p::node::{AttemptError, CloseReason, Event, TransportError};
use sansp2p::{Instant, PeerId};
use sansp2p_sim::{Ctx, Fault, HostId, NetConfig, Sim, Template};

const SINK: &str = "/sink/1.0.0";

/// A host that dials `target` when it boots.
fn dialer(target: (PeerId, Vec<u8>)) -> Template {
    Template::new().on_boot(move |ctx| {
        ctx.node
            .dial(ctx.now, Some(target.0), vec![target.1.clone()])
            .unwrap();
    })
}

fn target(sim: &Sim, h: HostId) -> (PeerId, Vec<u8>) {
    (sim.peer_id(h), sim.addr(h).to_vec())
}

/// Events of every host, with their times.
type Log = Rc<RefCell<Vec<(Instant, HostId, Event)>>>;

fn log(sim: &mut Sim) -> Log {
    let log: Log = Rc::default();
    let l = log.clone();
    sim.observe(move |t, h, e| l.borrow_mut().push((t, h, e.clone())));
    log
}

fn connected(sim: &Sim, a: HostId, b: HostId) -> bool {
    sim.node(a).is_some_and(|n| n.is_connected(&sim.peer_id(b)))
}

#[test]
fn a_connection_costs_the_handshake_round_trips_at_the_configured_latency() {
    let net = NetConfig {
        latency: Duration::from_millis(50),
        jitter: Duration::ZERO,
        ..NetConfig::default()
    };
    let mut sim = Sim::new(1, net);
    let server = sim.add_host(&Template::new());
    let client = sim.add_host(&dialer(target(&sim, server)));
    let log = log(&mut sim);
    sim.set_check_interval(Duration::from_millis(1));
    let took = sim
        .run_until(Duration::from_secs(5), |s| connected(s, client, server))
        .unwrap();
    // TCP (1 RTT), multistream + noise XX + multistream yamux, pipelined by
    // the node: 1.5 RTT more at least, each RTT 100 ms.
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert!(took <= Duration::from_millis(600), "{took:?}");
    let established = log
        .borrow()
        .iter()
        .filter(|(_, _, e)| matches!(e, Event::ConnectionEstablished { .. }))
        .count();
    assert_eq!(established, 2);
}

/// Host `src` streams `total` bytes to `dst`, which reads them all;
/// returns the virtual time it took from the stream's opening.
fn transfer(net: NetConfig, total: usize) -> Duration {
    let mut sim = Sim::new(2, net);
    let got = Rc::new(Cell::new(0usize));
    let g = got.clone();
    let sink = Template::new()
        .on_boot(|ctx| ctx.node.register_protocol(SINK).unwrap())
        .on_event(move |ctx, e| {
            if let Event::StreamReadable { stream } = e {
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n) = ctx.node.stream_read(ctx.now, *stream, &mut buf) {
                    if n == 0 {
                        break;
                    }
                    g.set(g.get() + n);
                }
            }
        });
    let dst = sim.add_host(&sink);
    let dst_peer = sim.peer_id(dst);
    let sent = Rc::new(Cell::new(0usize));
    let opened = Rc::new(Cell::new(None::<Instant>));
    let (s, o) = (sent.clone(), opened.clone());
    let chunk = vec![7u8; 64 * 1024];
    let source = dialer(target(&sim, dst)).on_event(move |ctx, e| {
        let stream = match e {
            Event::Identified { .. } if o.get().is_none() => {
                o.set(Some(ctx.now));
                ctx.node.open_stream(ctx.now, dst_peer, [SINK]).unwrap();
                return;
            }
            Event::StreamOpened { stream, .. } | Event::StreamWritable { stream } => *stream,
            _ => return,
        };
        while s.get() < total {
            let want = (total - s.get()).min(chunk.len());
            match ctx.node.stream_write(ctx.now, stream, &chunk[..want]) {
                Ok(n) if n > 0 => s.set(s.get() + n),
                _ => break,
            }
        }
    });
    sim.add_host(&source);
    sim.set_check_interval(Duration::from_millis(10));
    sim.run_until(Duration::from_secs(120), |_| got.get() == total)
        .expect("every byte arrived");
    sim.now().saturating_duration_since(opened.get().unwrap())
}

#[test]
fn bandwidth_paces_a_transfer_and_the_socket_buffer_holds_the_sender_back() {
    let total = 4 << 20;
    let base = NetConfig {
        jitter: Duration::ZERO,
        ..NetConfig::default()
    };
    let fast = transfer(base.clone(), total);
    let slow = transfer(
        NetConfig {
            bandwidth: Some(1 << 20),
            ..base.clone()
        },
        total,
    );
    println!("4 MiB: unlimited {fast:?}, 1 MiB/s {slow:?}");
    // 4 MiB at 1 MiB/s: four seconds plus framing and window updates.
    assert!(slow >= Duration::from_secs(4), "{slow:?}");
    assert!(slow <= Duration::from_secs(5), "{slow:?}");
    // Without a limit the yamux window and the latency pace it instead.
    assert!(fast < Duration::from_secs(2), "{fast:?}");
    // A small socket buffer (one frame) slows the unlimited transfer to a
    // round trip per buffer: backpressure reaches the sender.
    let tiny = transfer(
        NetConfig {
            socket_buffer: 64 * 1024,
            ..base
        },
        total,
    );
    println!("4 MiB with a 64 KiB socket buffer: {tiny:?}");
    assert!(tiny > fast * 2, "{tiny:?} vs {fast:?}");
}

#[test]
fn a_private_host_is_not_reachable_but_dials_out_through_its_nat() {
    let mut sim = Sim::new(3, NetConfig::default());
    let private = sim.add_host(&Template::new().private());
    let public = sim.add_host(&dialer(target(&sim, private)));
    let outbound = sim.add_host(&dialer(target(&sim, public)).private());
    let log = log(&mut sim);
    sim.run_for(Duration::from_secs(30));
    assert!(!connected(&sim, public, private));
    assert!(connected(&sim, outbound, public));
    let log = log.borrow();
    // The SYN is dropped: the attempt times out rather than being refused.
    assert!(log.iter().any(|(_, h, e)| *h == public
        && matches!(e, Event::DialFailed { errors, .. }
            if errors.iter().any(|(_, err)| matches!(err, AttemptError::Timeout)))));
    // The public host sees the NAT's address, 8.x.y.z.
    let seen = log
        .iter()
        .find_map(|(_, h, e)| match e {
            Event::ConnectionEstablished { remote_addr, .. } if *h == public => {
                Some(remote_addr.clone())
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(&seen[..2], &[0x04, 8]);
}

#[test]
fn bytes_wait_out_a_short_partition_and_a_long_one_resets_the_connection() {
    for (cut, survives) in [
        (Duration::from_secs(5), true),
        (Duration::from_secs(40), false),
    ] {
        let mut sim = Sim::new(4, NetConfig::default());
        let a = sim.add_host(&Template::new());
        let b = sim.add_host(&dialer(target(&sim, a)));
        let log = log(&mut sim);
        sim.run_until(Duration::from_secs(5), |s| connected(s, a, b))
            .unwrap();
        sim.partition([b]);
        // A ping sent into the cut waits for it to heal.
        let peer_a = sim.peer_id(a);
        let now = sim.now();
        sim.node_mut(b).unwrap().ping(now, peer_a).unwrap();
        sim.run_for(cut);
        sim.heal();
        sim.run_for(Duration::from_secs(2));
        let log = log.borrow();
        let pinged = log
            .iter()
            .any(|(_, h, e)| *h == b && matches!(e, Event::PingSuccess { .. }));
        let reset = log.iter().any(|(_, _, e)| {
            matches!(
                e,
                Event::ConnectionClosed {
                    reason: CloseReason::Transport,
                    ..
                }
            )
        });
        assert_eq!(pinged, survives, "cut {cut:?}: ping");
        assert_eq!(reset, !survives, "cut {cut:?}: reset");
        assert_eq!(connected(&sim, a, b), survives);
    }
}

#[test]
fn a_crash_resets_the_peers_connections_and_a_restart_keeps_the_identity() {
    let mut sim = Sim::new(5, NetConfig::default());
    let a = sim.add_host(&Template::new());
    let b = sim.add_host(&dialer(target(&sim, a)));
    let log = log(&mut sim);
    sim.run_until(Duration::from_secs(5), |s| connected(s, b, a))
        .unwrap();
    let peer = sim.peer_id(b);
    sim.kill(b);
    assert!(sim.node(b).is_none());
    sim.run_for(Duration::from_secs(1));
    assert!(!connected(&sim, a, b));
    assert!(log.borrow().iter().any(|(_, h, e)| *h == a
        && matches!(
            e,
            Event::ConnectionClosed {
                reason: CloseReason::Transport,
                ..
            }
        )));
    sim.restart(b);
    assert_eq!(sim.node(b).unwrap().local_peer_id(), peer);
    // It boots again: dials `a` as its template says.
    sim.run_until(Duration::from_secs(5), |s| connected(s, b, a))
        .unwrap();
    assert_eq!(sim.directory().get(b).generation, 1);
    assert_eq!(sim.host_stats(a).established, 2);
}

#[test]
fn a_dial_to_a_crashed_host_is_refused() {
    let mut sim = Sim::new(6, NetConfig::default());
    let a = sim.add_host(&Template::new());
    sim.run_for(Duration::from_millis(1));
    sim.kill(a);
    let b = sim.add_host(&dialer(target(&sim, a)));
    let log = log(&mut sim);
    sim.run_for(Duration::from_secs(1));
    assert!(log.borrow().iter().any(|(_, h, e)| *h == b
        && matches!(e, Event::DialFailed { errors, .. }
            if errors.iter().any(|(_, err)| *err == AttemptError::Transport(TransportError::Refused)))));
}

#[test]
fn connection_loss_resets_connections_at_the_configured_rate() {
    let net = NetConfig {
        reset_rate: 0.05,
        ..NetConfig::default()
    };
    let mut sim = Sim::new(7, net);
    let server = sim.add_host(&Template::new());
    let t = target(&sim, server);
    // Clients ping the server every second (traffic to lose), and redial
    // whenever they lost it.
    fn tick(ctx: &mut Ctx<'_>, server: (PeerId, Vec<u8>)) {
        if ctx.node.ping(ctx.now, server.0).is_err() {
            let _ = ctx
                .node
                .dial(ctx.now, Some(server.0), vec![server.1.clone()]);
        }
        ctx.after(Duration::from_secs(1), move |ctx| tick(ctx, server));
    }
    let client = Template::new().on_boot(move |ctx| tick(ctx, t.clone()));
    sim.add_hosts(10, &client);
    let log = log(&mut sim);
    sim.run_for(Duration::from_secs(30));
    let resets = sim.stats().resets;
    println!("{resets} connections lost; {:?}", sim.stats());
    // About 10 clients x 30 pings x 4 chunks x 5 %, less while redialing.
    assert!(resets >= 20, "{resets}");
    // Each loss ends one of the server's connections, established or not,
    // unless the server was closing it already.
    let ended = log
        .borrow()
        .iter()
        .filter(|(_, h, e)| {
            *h == server
                && matches!(
                    e,
                    Event::ConnectionClosed {
                        reason: CloseReason::Transport,
                        ..
                    } | Event::InboundUpgradeFailed { .. }
                )
        })
        .count();
    let ended = ended as u64;
    assert!(
        ended <= resets && ended + resets / 10 >= resets,
        "{ended} of {resets}"
    );
}

#[test]
fn a_hostile_host_gets_typed_failures_and_harms_no_one_else() {
    for fault in [
        Fault::Mutate { probability: 0.01 },
        Fault::Truncate { after: 100 },
    ] {
        let mut sim = Sim::new(8, NetConfig::default());
        let server = sim.add_host(&Template::new());
        let honest = dialer(target(&sim, server));
        let good = sim.add_hosts(5, &honest);
        let bad = sim.add_hosts(5, &honest);
        for &h in &bad {
            sim.set_fault(h, Some(fault));
        }
        let log = log(&mut sim);
        sim.run_for(Duration::from_secs(30));
        for &h in &good {
            assert!(
                connected(&sim, h, server),
                "{fault:?}: honest {h} connected"
            );
        }
        let bad_peers: Vec<PeerId> = bad.iter().map(|&h| sim.peer_id(h)).collect();
        let still = bad.iter().filter(|&&h| connected(&sim, server, h)).count();
        assert_eq!(still, 0, "{fault:?}: no hostile host stays connected");
        // The server saw failures, as events: failed upgrades or closed
        // connections, never a panic.
        let failures = log
            .borrow()
            .iter()
            .filter(|(_, h, e)| {
                *h == server
                    && match e {
                        Event::InboundUpgradeFailed { .. } => true,
                        Event::ConnectionClosed {
                            peer: Some(p),
                            reason,
                            ..
                        } => bad_peers.contains(p) && *reason != CloseReason::Local,
                        _ => false,
                    }
            })
            .count();
        assert!(failures >= bad.len(), "{fault:?}: {failures} failures");
    }
}

#[test]
fn a_directory_sample_finds_the_few_hosts_that_qualify() {
    let mut sim = Sim::new(9, NetConfig::default());
    let hosts = sim.add_hosts(400, &Template::new());
    sim.run_for(Duration::from_millis(1));
    let me = hosts[0];
    // Two qualify out of 400 (hosts 6 and 262, addresses x.0.0.7 and
    // x.0.1.7): random draws alone would mostly miss them.
    let few = |h: &sansp2p_sim::HostInfo| h.addr[4] == 7;
    let mut rng = sim.rng().clone();
    let found = sim.directory().sample(&mut rng, 5, me, few);
    let found: Vec<PeerId> = found.into_iter().map(|(p, _)| p).collect();
    assert_eq!(found.len(), 2);
    for h in [hosts[6], hosts[262]] {
        assert!(found.contains(&sim.peer_id(h)));
    }
    let all = sim.directory().sample(&mut rng, 1000, me, |_| true);
    assert_eq!(all.len(), 399, "everyone but me");
    let distinct: std::collections::BTreeSet<_> = all.iter().map(|(p, _)| *p).collect();
    assert_eq!(distinct.len(), 399);
}

#[test]
fn a_host_that_goes_behind_a_nat_keeps_its_connections_but_takes_no_new_ones() {
    let mut sim = Sim::new(10, NetConfig::default());
    let server = sim.add_host(&Template::new());
    let first = sim.add_host(&dialer(target(&sim, server)));
    sim.run_until(Duration::from_secs(5), |s| connected(s, first, server))
        .unwrap();
    sim.set_private(server, true);
    let late = sim.add_host(&dialer(target(&sim, server)));
    sim.run_for(Duration::from_secs(20));
    assert!(connected(&sim, first, server));
    assert!(!connected(&sim, late, server));
    sim.set_private(server, false);
    let now = sim.now();
    let t = target(&sim, server);
    sim.node_mut(late)
        .unwrap()
        .dial(now, Some(t.0), vec![t.1])
        .unwrap();
    sim.run_until(Duration::from_secs(5), |s| connected(s, late, server))
        .expect("public again");
}
