//! Prints the dial plan for the addresses of one peer: one line per address,
//! `<delay in ms> <multiaddr>`, in dial order, after go-libp2p's
//! low-priority filter and default ranking.
//!
//! ```text
//! cargo run -p sansp2p --example dial_plan -- /ip4/1.2.3.4/tcp/4001 /ip4/1.2.3.4/udp/4001/quic-v1
//! ```

use std::process::ExitCode;

use sansp2p::dial::{rank, Addr, RankerConfig};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        eprintln!("error: give the multiaddrs of one peer, e.g. /ip4/1.2.3.4/tcp/4001");
        return ExitCode::FAILURE;
    }
    let mut addrs = Vec::with_capacity(args.len());
    for arg in &args {
        let parsed = arg
            .parse::<multiaddr::Multiaddr>()
            .map_err(|e| e.to_string())
            .and_then(|ma| Addr::try_from(&ma).map_err(|e| e.to_string()));
        match parsed {
            Ok(addr) => addrs.push(addr),
            Err(e) => {
                eprintln!("error: invalid address {arg:?}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let mut plan = rank(addrs, &RankerConfig::default());
    // The ranker lists groups one after another; dial order is by delay
    // (stable, so equal delays keep the ranker's order).
    plan.sort_by_key(|(_, delay)| *delay);
    for (addr, delay) in plan {
        // Every Addr came from a parsed multiaddr, so it converts back.
        let text = addr
            .to_multiaddr()
            .map(|m| m.to_string())
            .unwrap_or_default();
        println!("{} {text}", delay.as_millis());
    }
    ExitCode::SUCCESS
}
