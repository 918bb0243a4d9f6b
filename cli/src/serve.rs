//! `gapless serve`.

use anyhow::{bail, Context};
use gapless_devserver::{DevServer, Options, Profile, RateLimits};
use std::net::SocketAddr;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Where to listen (127.0.0.1 only; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8787")]
    addr: SocketAddr,
    /// The token secret clients must present (`Bearer <token>`).
    #[arg(long, default_value = "dev-secret")]
    token: String,
    /// Fault profile: calm, flaky-mobile or hostile.
    #[arg(long, default_value = "calm")]
    profile: Profile,
    /// Seed of the fault plan.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The real server's rate limits (`real`) or none (`off`); default: the profile's (real
    /// in hostile, off otherwise).
    #[arg(long)]
    limits: Option<LimitsArg>,
    /// Conversations to create (`c0`, `c1`, …).
    #[arg(long, default_value_t = 3)]
    convos: usize,
    /// Messages to post to each, in the background.
    #[arg(long, default_value_t = 0)]
    messages: usize,
    /// Messages per second, in all.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.addr.ip() != std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST) {
        bail!(
            "the dev server listens on 127.0.0.1 only (got {})",
            args.addr
        );
    }
    let runtime = tokio::runtime::Runtime::new().context("tokio runtime")?;
    runtime.block_on(async {
        let mut options = Options::new(args.profile, args.seed);
        options.port = args.addr.port();
        options.secret = args.token.clone();
        if let Some(limits) = args.limits {
            options.faults.rate_limits = limits.rate_limits();
        }
        let limited = options.faults.rate_limits.is_some();
        let server = DevServer::start(options).await?;
        for c in 0..args.convos {
            server.create_convo(&format!("c{c}"));
        }
        if args.messages > 0 {
            server.traffic(args.convos, args.messages, args.rate);
        }
        println!(
            "gapless dev server on {} (profile {:?}, seed {}, rate limits {}, {} conversations c0..c{})",
            server.base_url(),
            args.profile,
            args.seed,
            if limited { "real" } else { "off" },
            args.convos,
            args.convos.saturating_sub(1)
        );
        println!(
            "try: gapless sync --server {} --token {} --convo c0 --db sync.db",
            server.base_url(),
            args.token
        );
        tokio::signal::ctrl_c()
            .await
            .context("waiting for ctrl-c")?;
        println!("stopping");
        Ok(ExitCode::SUCCESS)
    })
}

/// `--limits`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LimitsArg {
    /// The real Catbird server's rate limits.
    Real,
    /// Unlimited.
    Off,
}

impl LimitsArg {
    pub fn rate_limits(self) -> Option<RateLimits> {
        match self {
            LimitsArg::Real => Some(RateLimits::real()),
            LimitsArg::Off => None,
        }
    }
}
