//! The perf demo (`/perf/1.0.0`): upload, then download, then throughput.
//!
//! ```text
//! perf                 server and client in one process, over loopback TCP
//! perf -l PORT         serve perf on /ip4/127.0.0.1/tcp/PORT
//! perf -d MULTIADDR    run against a perf server (.../p2p/<id>)
//! options: --upload BYTES, --download BYTES (default 100 MiB each),
//!          --insecure (/plaintext/2.0.0 instead of /noise; both sides)
//! ```
//!
//! Serve perf on trusted networks only: a client may ask for any amount.

use std::process::ExitCode;
use std::time::Duration;

use sansp2p::node::Security;
use sansp2p_smol::{new_host, random_keypair, Config, Host, Multiaddr};

#[derive(Debug)]
struct Args {
    listen: Option<u16>,
    dial: Option<Multiaddr>,
    upload: u64,
    download: u64,
    insecure: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listen: None,
        dial: None,
        upload: 100 << 20,
        download: 100 << 20,
        insecure: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        let bytes = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("not a byte count: {v:?}"))
        };
        match arg.as_str() {
            "-l" => {
                let v = value("-l")?;
                args.listen = Some(v.parse().map_err(|_| format!("-l: not a port: {v:?}"))?);
            }
            "-d" => {
                let v = value("-d")?;
                args.dial = Some(v.parse().map_err(|e| format!("-d: {v:?}: {e}"))?);
            }
            "--upload" => args.upload = bytes(value("--upload")?)?,
            "--download" => args.download = bytes(value("--download")?)?,
            "--insecure" => args.insecure = true,
            _ => return Err("usage: perf [-l PORT | -d MULTIADDR] [--upload BYTES] [--download BYTES] [--insecure]".into()),
        }
    }
    if args.listen.is_some() && args.dial.is_some() {
        return Err("-l and -d exclude each other".into());
    }
    Ok(args)
}

fn host(args: &Args) -> Result<Host, String> {
    let mut config = Config::new(random_keypair());
    if args.insecure {
        config.security = vec![Security::Plaintext];
    }
    // Long runs on slow links need more than the default 60 s.
    config.perf.timeout = Duration::from_secs(600);
    new_host(config).map_err(|e| e.to_string())
}

/// `bytes` over `time` in MiB/s and Gbit/s.
fn rate(bytes: u64, time: Duration) -> String {
    let secs = time.as_secs_f64().max(1e-9);
    let per_sec = bytes as f64 / secs;
    format!(
        "{bytes} bytes in {time:.3?}: {:.1} MiB/s, {:.2} Gbit/s",
        per_sec / (1 << 20) as f64,
        per_sec * 8.0 / 1e9
    )
}

async fn run(client: &Host, server: &Multiaddr, args: &Args) -> Result<(), String> {
    let peer = client.dial(server).await.map_err(|e| e.to_string())?;
    let report = client
        .perf(peer, args.upload, args.download)
        .await
        .map_err(|e| match std::error::Error::source(&e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        })?;
    println!("upload:   {}", rate(report.uploaded, report.upload));
    println!("download: {}", rate(report.downloaded, report.download));
    let both = report.uploaded.saturating_add(report.downloaded);
    println!("total:    {}", rate(both, report.total));
    Ok(())
}

/// A host serving perf on loopback `port`, and its address with `/p2p/`.
async fn listen(args: &Args, port: u16) -> Result<(Host, Multiaddr), String> {
    let server = host(args)?;
    server.serve_perf(true);
    let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().expect("valid");
    let bound = server.listen(&addr).await.map_err(|e| e.to_string())?;
    let full: Multiaddr = format!("{bound}/p2p/{}", server.local_peer_id())
        .parse()
        .expect("valid");
    println!("I am {full}");
    Ok((server, full))
}

fn main() -> ExitCode {
    let result = parse_args().and_then(|args| {
        smol::block_on(async {
            match (&args.listen, &args.dial) {
                (Some(port), _) => {
                    let _server = listen(&args, *port).await?;
                    std::future::pending().await
                }
                (_, Some(addr)) => run(&host(&args)?, addr, &args).await,
                _ => {
                    let (_server, addr) = listen(&args, 0).await?;
                    run(&host(&args)?, &addr, &args).await
                }
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
