//! go-filecoin's heartbeat between sansp2p nodes, and a peer monitor that
//! alerts once per outage.
//!
//! ```text
//! heartbeat                      # a demo in one process: an aggregator with a
//!                                # monitor and three beaters over loopback TCP;
//!                                # one beater stops and comes back: one alert,
//!                                # one recovery, exit 0
//! heartbeat aggregate -l PORT [--ttl-ms N] [--check-ms N]
//! heartbeat beat MULTIADDR [--period-ms N] [--reconnect-ms N] [--nickname NAME]
//! ```
//! Every mode takes `--seed N` (identity from the byte N) and `--insecure`
//! (plaintext instead of noise). The aggregator prints `I am <addr>`, then
//! `beat <peer> <json>`, `alert <peer> <metric>` and `recovered <peer>
//! <metric>`; a beater prints `beat sent <count>` and its failure reports
//! as `warn …`, `error …` and `info …`.

use std::process::ExitCode;
use std::time::Duration;

use sansp2p::liveness::aggregator::{self, AggregatorConfig};
use sansp2p::liveness::heartbeat::{self, BeaterConfig, Cid, Heartbeat, Level};
use sansp2p::liveness::monitor::{self, MonitorConfig};
use sansp2p::node::{Event, Security};
use sansp2p_smol::{new_host, random_keypair, Config, Host, Multiaddr};

#[derive(Debug, Default)]
struct Common {
    seed: Option<u8>,
    insecure: bool,
}

#[derive(Debug)]
enum Mode {
    Demo,
    Aggregate {
        port: u16,
        ttl: Option<Duration>,
        check: Option<Duration>,
    },
    Beat {
        target: Multiaddr,
        period: Option<Duration>,
        reconnect: Option<Duration>,
        nickname: Option<String>,
    },
}

const USAGE: &str = "usage: heartbeat [aggregate -l PORT [--ttl-ms N] [--check-ms N] | \
                     beat MULTIADDR [--period-ms N] [--reconnect-ms N] [--nickname NAME]] \
                     [--seed N] [--insecure]";

fn parse_args() -> Result<(Mode, Common), String> {
    let mut it = std::env::args().skip(1).peekable();
    let mut common = Common::default();
    let mode_word = it.peek().filter(|a| !a.starts_with('-')).cloned();
    if mode_word.is_some() {
        it.next();
    }
    let mut port = None;
    let (mut ttl, mut check, mut period, mut reconnect, mut nickname) =
        (None, None, None, None, None);
    let mut target = None;
    let millis = |name: &str, v: String| -> Result<Duration, String> {
        v.parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .map(Duration::from_millis)
            .ok_or(format!(
                "{name}: not a number of milliseconds above 0: {v:?}"
            ))
    };
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "-l" | "--listen" => {
                let v = value("-l")?;
                port = Some(v.parse().map_err(|_| format!("-l: not a port: {v:?}"))?);
            }
            "--ttl-ms" => ttl = Some(millis("--ttl-ms", value("--ttl-ms")?)?),
            "--check-ms" => check = Some(millis("--check-ms", value("--check-ms")?)?),
            "--period-ms" => period = Some(millis("--period-ms", value("--period-ms")?)?),
            "--reconnect-ms" => {
                reconnect = Some(millis("--reconnect-ms", value("--reconnect-ms")?)?)
            }
            "--nickname" => nickname = Some(value("--nickname")?),
            "--seed" => {
                let v = value("--seed")?;
                common.seed = Some(
                    v.parse()
                        .map_err(|_| format!("--seed: not a number from 0 to 255: {v:?}"))?,
                );
            }
            "--insecure" => common.insecure = true,
            "-h" | "--help" => return Err(USAGE.into()),
            other if target.is_none() && mode_word.as_deref() == Some("beat") => {
                target = Some(
                    other
                        .parse::<Multiaddr>()
                        .map_err(|e| format!("beat: not a multiaddr: {other:?} ({e})"))?,
                );
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let mode = match mode_word.as_deref() {
        None => Mode::Demo,
        Some("aggregate") => Mode::Aggregate {
            port: port.ok_or(format!("aggregate needs -l PORT\n{USAGE}"))?,
            ttl,
            check,
        },
        Some("beat") => Mode::Beat {
            target: target.ok_or(format!("beat needs the aggregator's MULTIADDR\n{USAGE}"))?,
            period,
            reconnect,
            nickname,
        },
        Some(other) => return Err(format!("unknown mode {other:?}\n{USAGE}")),
    };
    Ok((mode, common))
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
    new_host(config).map_err(|e| report(&e))
}

/// A heartbeat payload counting up from 1, as a chain head would.
fn payload(name: &str) -> impl FnMut() -> Heartbeat + Send + 'static {
    let name = name.to_owned();
    let mut height = 0;
    move || {
        height += 1;
        Heartbeat {
            head: format!("bafy-{name}-{height}"),
            height,
            miner_address: "t01000".into(),
            genesis_cid: Some(Cid("bafy-genesis".into())),
            ..Heartbeat::default()
        }
    }
}

/// One line per beater event; `prefix` names the beater in the demo.
fn beater_line(prefix: &str, event: &heartbeat::Event) -> Option<String> {
    let level = |l: Level| match l {
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    };
    Some(match event {
        heartbeat::Event::BeatSent { count } => format!("{prefix}beat sent {count}"),
        heartbeat::Event::Failed {
            level: l,
            failure,
            outage,
            failures,
        } => format!(
            "{prefix}{} heartbeat failed ({failure:?}), {failures} failure(s) in {:.1} s",
            level(*l),
            outage.as_secs_f64()
        ),
        heartbeat::Event::Recovered { outage } => format!(
            "{prefix}{} heartbeat back after {:.1} s",
            level(Level::Info),
            outage.as_secs_f64()
        ),
        _ => return None,
    })
}

/// One line per aggregator or monitor event.
fn aggregator_line(event: &Event) -> Option<String> {
    Some(match event {
        Event::Aggregator(aggregator::Event::Beat {
            peer, heartbeat, ..
        }) => {
            let json = String::from_utf8_lossy(&heartbeat::encode_line(heartbeat))
                .trim_end()
                .to_owned();
            format!("beat {peer} {json}")
        }
        Event::Aggregator(aggregator::Event::Failed { peer, error }) => {
            format!("bad stream from {peer}: {error}")
        }
        Event::Monitor(monitor::Event::Alert { peer, name, .. }) => format!("alert {peer} {name}"),
        Event::Monitor(monitor::Event::Recovered { peer, name, .. }) => {
            format!("recovered {peer} {name}")
        }
        _ => return None,
    })
}

async fn aggregate(
    common: &Common,
    port: u16,
    ttl: Option<Duration>,
    check: Option<Duration>,
) -> Result<(), String> {
    let host = host(common.seed, common.insecure)?;
    let mut config = AggregatorConfig::default();
    if let Some(ttl) = ttl {
        config.metric_ttl = ttl;
    }
    let mut monitor = MonitorConfig::default();
    if let Some(check) = check {
        monitor.check_interval = check;
    }
    let events = host.events();
    host.serve_heartbeat(config, monitor)
        .map_err(|e| report(&e))?;
    let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().expect("valid");
    let bound = host.listen(&addr).await.map_err(|e| report(&e))?;
    println!("I am {bound}/p2p/{}", host.local_peer_id());
    while let Ok(event) = events.recv().await {
        if let Some(line) = aggregator_line(&event) {
            println!("{line}");
        }
    }
    Ok(())
}

async fn beat(
    common: &Common,
    target: &Multiaddr,
    period: Option<Duration>,
    reconnect: Option<Duration>,
    nickname: Option<String>,
) -> Result<(), String> {
    let host = host(common.seed, common.insecure)?;
    let events = host.events();
    host.start_heartbeat(
        target,
        |c| {
            if let Some(p) = period {
                c.period = p;
            }
            if let Some(r) = reconnect {
                c.reconnect = r;
                c.reconnect_max = c.reconnect_max.max(r);
            }
            if let Some(n) = nickname {
                c.nickname = n;
            }
        },
        payload("beater"),
    )
    .map_err(|e| format!("{target}: {}", report(&e)))?;
    while let Ok(event) = events.recv().await {
        if let Event::Heartbeat { event, .. } = event {
            if let Some(line) = beater_line("", &event) {
                println!("{line}");
            }
        }
    }
    Ok(())
}

/// The one-process demo; returns whether the monitor said exactly one
/// alert and one recovery, both for the stopped beater.
async fn demo(common: &Common) -> Result<bool, String> {
    let period = Duration::from_millis(300);
    let aggregator = host(Some(common.seed.unwrap_or(1)), common.insecure)?;
    let agg_events = aggregator.events();
    let config = AggregatorConfig {
        metric_ttl: AggregatorConfig::ttl_for_period(period),
        ..AggregatorConfig::default()
    };
    let mut monitor = MonitorConfig::default();
    monitor.check_interval = Duration::from_millis(250);
    aggregator
        .serve_heartbeat(config, monitor)
        .map_err(|e| report(&e))?;
    let any = "/ip4/127.0.0.1/tcp/0".parse().expect("valid");
    let bound = aggregator.listen(&any).await.map_err(|e| report(&e))?;
    let target: Multiaddr = format!("{bound}/p2p/{}", aggregator.local_peer_id())
        .parse()
        .expect("valid");
    println!("aggregator: I am {target}");

    let (tx, rx) = smol::channel::unbounded::<monitor::Event>();
    smol::spawn(async move {
        while let Ok(event) = agg_events.recv().await {
            if let Some(line) = aggregator_line(&event) {
                println!("aggregator: {line}");
            }
            if let Event::Monitor(e) = event {
                let _ = tx.send(e).await;
            }
        }
    })
    .detach();

    let mut beaters = Vec::new();
    for i in 0..3u8 {
        let name = format!("beater{}", i + 1);
        let h = host(
            Some(common.seed.unwrap_or(1).wrapping_add(i + 1)),
            common.insecure,
        )?;
        let events = h.events();
        let prefix = format!("{name}: ");
        smol::spawn(async move {
            while let Ok(event) = events.recv().await {
                if let Event::Heartbeat { event, .. } = event {
                    if let Some(line) = beater_line(&prefix, &event) {
                        println!("{line}");
                    }
                }
            }
        })
        .detach();
        let tune = |c: &mut BeaterConfig| {
            c.period = period;
            c.reconnect = Duration::from_millis(500);
        };
        let beat = h
            .start_heartbeat(&target, tune, payload(&name))
            .map_err(|e| report(&e))?;
        println!(
            "{name}: {} beats to the aggregator every {period:?}",
            h.local_peer_id()
        );
        beaters.push((name, h, beat));
    }

    smol::Timer::after(Duration::from_secs(2)).await;
    let (name, stopped, beat) = &beaters[1];
    let stopped_id = stopped.local_peer_id();
    println!("{name}: stops beating");
    stopped.stop_heartbeat(*beat);
    // The alert, then a while longer down: no second alert.
    let first = smol::future::or(async { rx.recv().await.ok() }, async {
        smol::Timer::after(Duration::from_secs(10)).await;
        None
    })
    .await;
    smol::Timer::after(Duration::from_secs(2)).await;
    println!("{name}: beats again");
    let tune = |c: &mut BeaterConfig| c.period = period;
    stopped
        .start_heartbeat(&target, tune, payload(name))
        .map_err(|e| report(&e))?;
    let second = smol::future::or(async { rx.recv().await.ok() }, async {
        smol::Timer::after(Duration::from_secs(10)).await;
        None
    })
    .await;
    // A second more: nothing else may come.
    smol::Timer::after(Duration::from_secs(1)).await;
    let mut rest = Vec::new();
    while let Ok(e) = rx.try_recv() {
        rest.push(e);
    }
    let ok = matches!(&first, Some(monitor::Event::Alert { peer, .. }) if *peer == stopped_id)
        && matches!(&second, Some(monitor::Event::Recovered { peer, .. }) if *peer == stopped_id)
        && rest.is_empty();
    let alerts = [&first, &second]
        .iter()
        .filter(|e| matches!(e, Some(monitor::Event::Alert { .. })))
        .count()
        + rest
            .iter()
            .filter(|e| matches!(e, monitor::Event::Alert { .. }))
            .count();
    let recoveries = [&first, &second]
        .iter()
        .filter(|e| matches!(e, Some(monitor::Event::Recovered { .. })))
        .count()
        + rest
            .iter()
            .filter(|e| matches!(e, monitor::Event::Recovered { .. }))
            .count();
    println!("monitor: {alerts} alert(s), {recoveries} recovery(ies), for {stopped_id}");
    Ok(ok)
}

fn main() -> ExitCode {
    let (mode, common) = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("heartbeat: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = smol::block_on(async {
        match mode {
            Mode::Demo => demo(&common).await,
            Mode::Aggregate { port, ttl, check } => {
                aggregate(&common, port, ttl, check).await.map(|()| true)
            }
            Mode::Beat {
                target,
                period,
                reconnect,
                nickname,
            } => beat(&common, &target, period, reconnect, nickname)
                .await
                .map(|()| true),
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("heartbeat: the monitor did not say one alert and one recovery");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("heartbeat: {e}");
            ExitCode::FAILURE
        }
    }
}
